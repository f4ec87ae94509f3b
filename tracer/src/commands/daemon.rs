//! `conntracer daemon`: the DaemonSet mode. A session that follows every
//! connection on the node and serves metrics, health and findings until
//! SIGTERM.

use super::{
    lock::{InstanceLock, lock_path},
    resolve, serve, start,
};
use crate::{cli::DaemonArgs, session::Until};

pub async fn run(args: DaemonArgs) -> anyhow::Result<()> {
    let config = resolve(&args.common, DaemonArgs::mode_defaults())?;
    // Before the port and the probes: a second daemon changes nothing.
    let _lock = match lock_path(&args.lock_file) {
        Some(path) => InstanceLock::acquire(&path)?,
        None => None,
    };
    let (mut session, listener, _watchers) = start(&config).await?;
    let listener = listener.expect("the daemon always listens");
    let served = serve(&mut session, listener, &config)?;
    tracing::info!(
        "conntracer daemon: {}; serving http://{}/metrics",
        session.tracer().probes.attached_summary(),
        served.address
    );
    session.run(Until::default()).await?;
    tracing::info!("conntracer daemon: stopped (probes detached, no more scrapes)");
    served.stop().await;
    Ok(())
}
