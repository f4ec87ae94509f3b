//! The mesh stage: two sidecars with mTLS between them, as Istio runs them.
//!
//! caller (`client.py`, one connection per request, in `frontend`)
//! → outbound Envoy (uid 1337, 127.0.0.1:15001)
//! → mTLS to cart_ip:8080 → iptables REDIRECT in `cart`
//! → inbound Envoy on 15006 (client certificate required)
//! → the app on 127.0.0.1:8080.
//!
//! Next to the daemon runs `conntracer trace` for the scenario's namespace:
//! each request the caller's sidecar logged is joined to the daemon's 503
//! record and to the failure at the far hop (`join`), and the scenarios
//! assert per request, then on the metrics.

mod access_log;
mod certs;
mod checks;
mod config;
mod join;
mod records;
mod scenarios;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::Result;

pub(super) use scenarios::SCENARIOS;

use self::{
    access_log::Line,
    config::{MeshSidecar, Side},
    records::{Answered, FailureSeen, Seen503, Trace},
};
use super::{
    Lab, SETTLE,
    procs::Proc,
    scenarios::Scenario,
    scrape,
    stage::{Load, Stage, spawn_envoy_config},
};

/// How a scenario sets the mesh up.
#[derive(Clone, Copy)]
pub(crate) struct MeshOptions {
    /// Seconds the app lets a keep-alive connection idle.
    pub(crate) app_idle: f64,
    /// The inbound sidecar's pool idle timeout towards the app.
    pub(crate) inbound_pool_idle: Option<Duration>,
    /// The inbound sidecar's idle timeout on the mTLS connections it accepted.
    pub(crate) inbound_downstream_idle: Option<Duration>,
    /// The inbound route's `retry_on`.
    pub(crate) inbound_retry: Option<&'static str>,
}

impl Default for MeshOptions {
    fn default() -> Self {
        Self {
            app_idle: 30.0,
            inbound_pool_idle: None,
            inbound_downstream_idle: None,
            inbound_retry: None,
        }
    }
}

pub(crate) const CALLER_POD: &str = "frontend";
pub(crate) const SERVER_POD: &str = "cart";
const OUTBOUND_PORT: u16 = 15001;
const INBOUND_PORT: u16 = 15006;
const APP: &str = "127.0.0.1:8080";

/// The stage and what the mesh adds; everything stops when dropped.
pub(crate) struct MeshStage {
    /// Stops before the stage (fields drop in order): the trace first.
    pub(crate) trace: Trace,
    pub(crate) stage: Stage,
    pub(crate) front: String,
    /// The scenario's own traffic starts here (after readiness and baseline).
    pub(crate) since: SystemTime,
    outbound_log: PathBuf,
    inbound_log: PathBuf,
}

/// Everything a scenario is judged on, read once the traffic settled.
pub(crate) struct Collected {
    pub(crate) outbound: Vec<Line>,
    pub(crate) inbound: Vec<Line>,
    pub(crate) seen: Vec<Seen503>,
    pub(crate) failures: Vec<FailureSeen>,
    pub(crate) answered: Vec<Answered>,
    pub(crate) metrics: Vec<scrape::Sample>,
}

impl MeshStage {
    pub(crate) fn new(lab: &Lab, s: &Scenario, n: u8, opts: MeshOptions) -> Result<Self> {
        let mut stage = Stage::new(lab, s, n)?;
        let namespace = stage.namespace();
        let trace = Trace::start(&lab.conntracer, &stage.dir, &namespace)?;
        let (front, cart_ns, cart_ip) = (
            stage.net.frontend.netns.clone(),
            stage.net.cart.netns.clone(),
            stage.net.cart.ip.clone(),
        );
        stage
            .net
            .redirect_inbound(&stage.net.cart, 8080, INBOUND_PORT)?;
        stage.app(lab, &cart_ns, "127.0.0.1", opts.app_idle)?;
        let certs = certs::make(
            &stage.dir.join("certs"),
            &namespace,
            CALLER_POD,
            SERVER_POD,
            &cart_ip,
        )?;
        let (outbound_log, inbound_log) = (
            stage.dir.join("access-outbound.log"),
            stage.dir.join("access-inbound.log"),
        );
        let service = format!("{SERVER_POD}.{namespace}.svc.cluster.local");
        let inbound = MeshSidecar {
            side: Side::Inbound,
            listen: "0.0.0.0",
            port: INBOUND_PORT,
            upstream: "127.0.0.1",
            upstream_port: 8080,
            service_host: &service,
            identity: &certs.server,
            peer_spiffe: &certs.client.spiffe,
            pool_idle: opts.inbound_pool_idle,
            downstream_idle: opts.inbound_downstream_idle,
            retry_on: opts.inbound_retry,
            access_log: &inbound_log,
        };
        let outbound = MeshSidecar {
            side: Side::Outbound,
            listen: "127.0.0.1",
            port: OUTBOUND_PORT,
            upstream: &cart_ip,
            upstream_port: 8080,
            service_host: &service,
            identity: &certs.client,
            peer_spiffe: &certs.server.spiffe,
            pool_idle: None,
            downstream_idle: None,
            retry_on: None,
            access_log: &outbound_log,
        };
        let dir = stage.dir.clone();
        stage
            .procs
            .push(spawn_sidecar(lab, &dir, &cart_ns, "inbound", &inbound)?);
        stage
            .procs
            .push(spawn_sidecar(lab, &dir, &front, "outbound", &outbound)?);
        // Through both sidecars and mTLS; then the baseline the checks subtract.
        stage.wait_serving(lab, &front, "127.0.0.1", OUTBOUND_PORT)?;
        Ok(Self {
            trace,
            stage,
            front,
            since: SystemTime::now(),
            outbound_log,
            inbound_log,
        })
    }

    /// Runs the caller to completion through its sidecar; its status counts.
    pub(crate) fn call(
        &self,
        lab: &Lab,
        gaps: &str,
        paths: &str,
        count: u32,
    ) -> Result<serde_json::Value> {
        self.stage.client(
            lab,
            &Load {
                netns: &self.front,
                host: "127.0.0.1",
                port: OUTBOUND_PORT,
                gaps,
                paths,
                count,
            },
        )
    }

    /// The app's process id (to terminate it).
    pub(crate) fn app_pid(&self) -> i32 {
        self.stage
            .procs
            .iter()
            .find(|p| p.name == "app")
            .map_or(0, Proc::pid)
    }

    /// Waits for the daemon and the trace to settle, then reads everything.
    pub(crate) fn collect(&self) -> Result<Collected> {
        std::thread::sleep(SETTLE);
        let since = |lines: Vec<Line>| -> Vec<Line> {
            lines
                .into_iter()
                .filter(|l| l.start >= self.since)
                .collect()
        };
        let after = |t: SystemTime| t >= self.since;
        Ok(Collected {
            outbound: since(access_log::read(&self.outbound_log)),
            inbound: since(access_log::read(&self.inbound_log)),
            seen: self
                .trace
                .http_503s()
                .into_iter()
                .filter(|s| after(s.time))
                .collect(),
            failures: self
                .trace
                .failures()
                .into_iter()
                .filter(|f| after(f.time))
                .collect(),
            answered: self
                .trace
                .answered()
                .into_iter()
                .filter(|a| a.time.is_none_or(after))
                .collect(),
            metrics: scrape::metrics(self.stage.daemon)?,
        })
    }

    pub(crate) fn app_addr() -> SocketAddr {
        APP.parse().expect("valid address")
    }
}

/// One sidecar as Istio's sidecar user (uid 1337); `name` tells its files apart.
fn spawn_sidecar(
    lab: &Lab,
    dir: &Path,
    netns: &str,
    name: &str,
    sidecar: &MeshSidecar,
) -> Result<Proc> {
    let stem = format!("envoy-{name}");
    spawn_envoy_config(lab, dir, netns, &stem, &config::config(sidecar))
}
