//! `conntracer daemon`: the DaemonSet mode. A session that follows every
//! connection on the node and serves metrics, health and findings until
//! SIGTERM.

use super::{resolve, serve, start};
use crate::{cli::DaemonArgs, session::Until};

pub async fn run(args: DaemonArgs) -> anyhow::Result<()> {
    let config = resolve(&args.common, DaemonArgs::mode_defaults())?;
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
