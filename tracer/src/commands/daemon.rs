//! `conntracer daemon`: the DaemonSet mode. A session that follows every
//! connection on the node and serves metrics, health and findings until
//! SIGTERM.

use super::{bind, identity, resolve, serve};
use crate::{
    cli::DaemonArgs,
    session::{Session, Until},
};

pub async fn run(args: DaemonArgs) -> anyhow::Result<()> {
    let config = resolve(&args.common, DaemonArgs::mode_defaults())?;
    let address = config.listen.expect("the daemon always listens");
    let listener = bind(address).await?;
    let identity = identity(&config).await?;
    let mut session = Session::start(&config, identity.pods)?;
    session.health.kubernetes = identity.kubernetes.as_ref().map(|(c, _)| c.clone());
    let served = serve(&mut session, listener, config.findings)?;
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
