//! Command-line interface (clap): the flags, and how they become
//! [`Settings`] (the same keys as the config file) and outputs.

use std::{net::IpAddr, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

use crate::{
    config::{DEFAULT_LISTEN, DEFAULT_LOCK_FILE, Settings},
    output::printer::{Filter, Format},
    units::{parse_duration, parse_listen},
};

#[derive(Debug, Parser)]
#[command(
    name = "conntracer",
    version,
    about = "eBPF TCP connection tracer: follows every connection in every network namespace \
             on the node and explains stale-connection failures"
)]
pub struct Cli {
    /// Log filter for diagnostics on stderr (tracing `EnvFilter` syntax).
    #[arg(long, global = true, env = "CONNTRACER_LOG", default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The DaemonSet mode: trace every connection, attribute failures and 503s, serve metrics.
    Daemon(DaemonArgs),
    /// Stream live connection events (connect, accept, close, reset, ...) to the terminal.
    Trace(TraceArgs),
    /// Findings with evidence and the fix (Istio YAML), from the daemon or a local trace.
    Diagnose(DiagnoseArgs),
    /// Preflight: check that this kernel and these privileges can run the tracer.
    Check(CheckArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// One aligned line per event.
    Table,
    /// JSON lines (field names are stable).
    Json,
}

impl From<Output> for Format {
    fn from(o: Output) -> Self {
        match o {
            Output::Table => Format::Table,
            Output::Json => Format::Json,
        }
    }
}

/// Event kinds for `--event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventKindArg {
    Connect,
    Accept,
    Close,
    Reset,
    Reuse,
    Listen,
    #[value(name = "listen_close")]
    ListenClose,
    #[value(name = "http_503")]
    Http503,
    /// A proxy failure no 503 seen here took (its 503 left encrypted, or was retried away).
    #[value(name = "proxy_answered_503")]
    ProxyAnswered503,
    Failure,
    Dns,
    /// Connections that existed before the start (listeners found so are `listen`).
    Seeded,
}

impl EventKindArg {
    pub fn name(self) -> &'static str {
        match self {
            EventKindArg::Connect => "connect",
            EventKindArg::Accept => "accept",
            EventKindArg::Close => "close",
            EventKindArg::Reset => "reset",
            EventKindArg::Reuse => "reuse",
            EventKindArg::Listen => "listen",
            EventKindArg::ListenClose => "listen_close",
            EventKindArg::Http503 => "http_503",
            EventKindArg::ProxyAnswered503 => "proxy_answered_503",
            EventKindArg::Failure => "failure",
            EventKindArg::Dns => "dns",
            EventKindArg::Seeded => "seeded",
        }
    }
}

/// Settings every tracing subcommand takes. Each flag has a config-file key
/// of the same name with `_` for `-`; flags win over the file.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// TOML file with any of these settings as keys (flags win).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve /metrics, /healthz, /readyz and /findings on this address
    /// [daemon default: 127.0.0.1:9477; others: not served].
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,
    /// Serve /findings (pod names, addresses and evidence) [default: true].
    #[arg(long, value_name = "BOOL")]
    pub findings: Option<bool>,
    /// HTTP connections served at once; more are closed at accept [default: 512].
    #[arg(long, value_name = "N")]
    pub http_max_connections: Option<usize>,
    /// An HTTP client must send a whole request head within this long of
    /// connecting or of its last response, else it is closed (slow and idle
    /// clients) [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub http_timeout: Option<Duration>,
    /// A process with this uid is a proxy (repeatable) [default: 1337].
    #[arg(long = "proxy-uid", value_name = "UID")]
    pub proxy_uids: Vec<u32>,
    /// A process (thread) with this command name prefix is a proxy (repeatable)
    /// [default: envoy, pilot-agent, wrk:worker].
    #[arg(long = "proxy-comm", value_name = "COMM")]
    pub proxy_comms: Vec<String>,
    /// Cluster address ranges; anything else is `egress` (repeatable)
    /// [default: RFC 1918 and fc00::/7].
    #[arg(long = "cluster-cidr", value_name = "CIDR")]
    pub cluster_cidrs: Vec<IpNet>,
    /// How far apart a 503 and the upstream failure behind it may be [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub attribution_window: Option<Duration>,
    /// A listener that closed, or a pod the cluster marked terminating, this
    /// recently before a failure makes it `pod_terminating` [default: 2m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub termination_window: Option<Duration>,
    /// Distinct `peer` label values per pod before `other` [default: 20].
    #[arg(long, value_name = "N")]
    pub peer_cap: Option<usize>,
    /// Distinct pods (and so namespaces and workloads) labelled before
    /// `namespace="other", pod="other"`; a pod silent for 10 minutes gives
    /// its place (and its series) to a new one [default: 500].
    #[arg(long, value_name = "N")]
    pub pod_cap: Option<usize>,
    /// Findings kept; the least recently seen is dropped for a new one [default: 1000].
    #[arg(long, value_name = "N")]
    pub findings_cap: Option<usize>,
    /// Label unknown peers by address (unbounded cardinality; off by default).
    #[arg(long)]
    pub peer_addresses: bool,
    /// Connections the kernel map tracks at once (LRU beyond that) [default: 131072].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<u32>,
    /// Event ring buffer size in bytes, a power of two [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    pub ring_bytes: Option<u32>,
    /// Report a `reuse` event when a connection is reused after at least this
    /// idle time [default: 500ms].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub reuse_event_min_idle: Option<Duration>,
    /// How often to drain the event ring buffer [default: 100ms].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub drain_interval: Option<Duration>,
    /// Do not attach the HTTP 503 status peek (cgroup_skb egress program).
    #[arg(long)]
    pub no_http_peek: bool,
    /// Do not attach the DNS answer capture (cgroup_skb ingress program).
    #[arg(long)]
    pub no_dns: bool,
    /// Name pods from the cluster of this kubeconfig (Kubernetes API).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Use the Kubernetes API for pod names (`false`: netns names only)
    /// [default: on in a cluster or with --kubeconfig].
    #[arg(long, value_name = "BOOL")]
    pub kubernetes: Option<bool>,
    /// This node's name in Kubernetes [default: $NODE_NAME, else the hostname].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
}

impl CommonArgs {
    /// The flags as a settings layer: only what was given.
    pub fn settings(&self) -> Settings {
        fn given<T: Clone>(list: &[T]) -> Option<Vec<T>> {
            (!list.is_empty()).then(|| list.to_vec())
        }
        Settings {
            listen: self.listen,
            findings: self.findings,
            http_max_connections: self.http_max_connections,
            http_timeout: self.http_timeout,
            proxy_uids: given(&self.proxy_uids),
            proxy_comms: given(&self.proxy_comms),
            cluster_cidrs: given(&self.cluster_cidrs),
            attribution_window: self.attribution_window,
            termination_window: self.termination_window,
            peer_cap: self.peer_cap,
            pod_cap: self.pod_cap,
            findings_cap: self.findings_cap,
            peer_addresses: self.peer_addresses.then_some(true),
            max_connections: self.max_connections,
            ring_bytes: self.ring_bytes,
            reuse_event_min_idle: self.reuse_event_min_idle,
            drain_interval: self.drain_interval,
            http_peek: self.no_http_peek.then_some(false),
            dns: self.no_dns.then_some(false),
            kubeconfig: self.kubeconfig.clone(),
            kubernetes: self.kubernetes,
            node_name: self.node_name.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// One daemon per node: this file is locked (`flock`) while the daemon
    /// runs, and a second daemon is refused; `none` for no lock.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_LOCK_FILE)]
    pub lock_file: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
}

impl DaemonArgs {
    /// The daemon serves on loopback unless told otherwise.
    pub fn mode_defaults() -> Settings {
        Settings {
            listen: Some(DEFAULT_LISTEN.parse().expect("valid default")),
            ..Settings::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Only events in this Kubernetes namespace (repeatable).
    #[arg(long = "namespace", short = 'n', value_name = "NAMESPACE")]
    pub namespaces: Vec<String>,
    /// Only events of this pod, `POD` or `NAMESPACE/POD` (repeatable).
    #[arg(long = "pod", value_name = "POD")]
    pub pods: Vec<String>,
    /// Only connections with this local or remote port (repeatable).
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,
    /// Only connections with this local or remote address (repeatable).
    #[arg(long = "address", value_name = "IP")]
    pub addresses: Vec<IpAddr>,
    /// Only sockets owned by a process with this command name (repeatable).
    #[arg(long = "comm", value_name = "COMM")]
    pub comms: Vec<String>,
    /// Only sockets owned by this process id (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Only these event kinds (repeatable).
    #[arg(long = "event", value_enum, value_name = "KIND")]
    pub events: Vec<EventKindArg>,
    /// Stop after this long (`30`, meaning seconds, `30s`, `5m`); default: until Ctrl-C.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub common: CommonArgs,
}

impl TraceArgs {
    pub fn filter(&self) -> Filter {
        Filter {
            namespaces: self.namespaces.clone(),
            pods: self.pods.clone(),
            ports: self.ports.clone(),
            addresses: self.addresses.clone(),
            comms: self.comms.clone(),
            pids: self.pids.clone(),
            events: self.events.iter().map(|e| e.name()).collect(),
        }
    }
}

#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    /// Only findings for pods in this namespace.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Only findings for this pod.
    #[arg(long)]
    pub pod: Option<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// The daemon to ask.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub daemon: SocketAddr,
    /// Do not ask a daemon: trace this long (`60`, meaning seconds, `60s`, `5m`)
    /// and diagnose what was seen.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also load the programs into the kernel (verifier check), then unload them.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub load: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn bare_numbers_are_seconds_and_flags_become_settings() {
        let cli = Cli::try_parse_from([
            "conntracer",
            "trace",
            "--duration",
            "20",
            "--attribution-window",
            "1.5",
            "--no-dns",
            "--proxy-uid",
            "7",
        ])
        .unwrap();
        let Command::Trace(args) = cli.command else {
            panic!("trace")
        };
        assert_eq!(args.duration, Some(Duration::from_secs(20)));
        let s = args.common.settings();
        assert_eq!(s.attribution_window, Some(Duration::from_millis(1500)));
        assert_eq!(s.dns, Some(false));
        assert_eq!(s.http_peek, None, "not given: the file or default decides");
        assert_eq!(s.proxy_uids, Some(vec![7]));
        let bad = Cli::try_parse_from(["conntracer", "trace", "--duration", "soon"])
            .unwrap_err()
            .to_string();
        assert!(bad.contains("`soon` is not a duration"), "{bad}");
    }
}
