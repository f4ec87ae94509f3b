//! Command-line interface (clap).

use std::{net::IpAddr, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::probes::LoadOptions;

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
    Daemon(crate::daemon::config::DaemonArgs),
    /// Stream live connection events (connect, accept, close, reset, ...) to the terminal.
    Trace(TraceArgs),
    /// Findings with evidence and the fix (Istio YAML), from the daemon or a local trace.
    Diagnose(crate::diagnose::DiagnoseArgs),
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
    Failure,
    Dns,
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
            EventKindArg::Failure => "failure",
            EventKindArg::Dns => "dns",
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
    /// Stop after this long (e.g. `30s`, `5m`); default: until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub probes: ProbeArgs,
}

/// Tuning shared by every mode that loads the probes.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Connections the kernel map tracks at once (LRU beyond that).
    #[arg(long, default_value_t = LoadOptions::default().max_connections)]
    pub max_connections: u32,
    /// Event ring buffer size in bytes (power of two).
    #[arg(long, default_value_t = LoadOptions::default().ring_bytes)]
    pub ring_bytes: u32,
    /// Report a `reuse` event when a connection is reused after at least this idle time.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "500ms")]
    pub reuse_event_min_idle: Duration,
    /// How often to drain the event ring buffer.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
    pub drain_interval: Duration,
    /// Do not attach the HTTP 503 status peek (cgroup_skb egress program).
    #[arg(long)]
    pub no_http_peek: bool,
    /// Do not attach the DNS answer capture (cgroup_skb ingress program).
    #[arg(long)]
    pub no_dns: bool,
}

impl ProbeArgs {
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            max_connections: self.max_connections,
            ring_bytes: self.ring_bytes,
            reuse_event_min_idle: self.reuse_event_min_idle,
            http_peek: !self.no_http_peek,
            dns_capture: !self.no_dns,
            ..LoadOptions::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also load the programs into the kernel (verifier check), then unload them.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub load: bool,
}
