//! Configuration, resolved once for every subcommand: flags, then the TOML
//! file (`--config`), then the embedded defaults (zero configuration on a
//! plain host). Flags and the file are the same [`Settings`], so every key
//! has a flag and every flag a key; a bad value is an error naming both.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use serde::Deserialize;

use crate::{
    analysis::{AnalysisConfig, direction::DirectionClassifier, proxy::ProxyMatcher},
    probes::LoadOptions,
    units::serde_duration_opt,
};

/// Where the daemon serves by default (loopback: ad-hoc use on a node).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9477";
/// The daemon's one-per-node lock (`--lock-file`).
pub const DEFAULT_LOCK_FILE: &str = "/run/conntracer/daemon.lock";

/// One layer of settings (the flags, or the file); every key optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default, deserialize_with = "deserialize_listen")]
    pub listen: Option<SocketAddr>,
    pub findings: Option<bool>,
    pub http_max_connections: Option<usize>,
    #[serde(default, deserialize_with = "serde_duration_opt::deserialize")]
    pub http_timeout: Option<Duration>,
    pub proxy_uids: Option<Vec<u32>>,
    pub proxy_comms: Option<Vec<String>>,
    pub cluster_cidrs: Option<Vec<IpNet>>,
    #[serde(default, deserialize_with = "serde_duration_opt::deserialize")]
    pub attribution_window: Option<Duration>,
    #[serde(default, deserialize_with = "serde_duration_opt::deserialize")]
    pub termination_window: Option<Duration>,
    pub peer_cap: Option<usize>,
    pub pod_cap: Option<usize>,
    pub findings_cap: Option<usize>,
    pub peer_addresses: Option<bool>,
    pub max_connections: Option<u32>,
    pub ring_bytes: Option<u32>,
    #[serde(default, deserialize_with = "serde_duration_opt::deserialize")]
    pub reuse_event_min_idle: Option<Duration>,
    #[serde(default, deserialize_with = "serde_duration_opt::deserialize")]
    pub drain_interval: Option<Duration>,
    pub http_peek: Option<bool>,
    pub dns: Option<bool>,
    /// Name pods from this kubeconfig's cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Use Kubernetes metadata: `true` requires it, `false` turns it off
    /// [default: on inside a cluster or with a kubeconfig].
    pub kubernetes: Option<bool>,
    /// This node's name, as Kubernetes knows it [default: `$NODE_NAME`, else the hostname].
    pub node_name: Option<String>,
}

impl Settings {
    /// `self` where set, else `lower`.
    fn over(self, lower: Settings) -> Settings {
        Settings {
            listen: self.listen.or(lower.listen),
            findings: self.findings.or(lower.findings),
            http_max_connections: self.http_max_connections.or(lower.http_max_connections),
            http_timeout: self.http_timeout.or(lower.http_timeout),
            proxy_uids: self.proxy_uids.or(lower.proxy_uids),
            proxy_comms: self.proxy_comms.or(lower.proxy_comms),
            cluster_cidrs: self.cluster_cidrs.or(lower.cluster_cidrs),
            attribution_window: self.attribution_window.or(lower.attribution_window),
            termination_window: self.termination_window.or(lower.termination_window),
            peer_cap: self.peer_cap.or(lower.peer_cap),
            pod_cap: self.pod_cap.or(lower.pod_cap),
            findings_cap: self.findings_cap.or(lower.findings_cap),
            peer_addresses: self.peer_addresses.or(lower.peer_addresses),
            max_connections: self.max_connections.or(lower.max_connections),
            ring_bytes: self.ring_bytes.or(lower.ring_bytes),
            reuse_event_min_idle: self.reuse_event_min_idle.or(lower.reuse_event_min_idle),
            drain_interval: self.drain_interval.or(lower.drain_interval),
            http_peek: self.http_peek.or(lower.http_peek),
            dns: self.dns.or(lower.dns),
            kubeconfig: self.kubeconfig.or(lower.kubeconfig),
            kubernetes: self.kubernetes.or(lower.kubernetes),
            node_name: self.node_name.or(lower.node_name),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: String,
        #[source]
        error: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{flag} / {key}: {problem}")]
    Invalid {
        flag: &'static str,
        key: &'static str,
        problem: String,
    },
}

fn invalid(flag: &'static str, key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        flag,
        key,
        problem: problem.into(),
    }
}

/// Where pod names come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Network namespace names under `/run/netns` (no cluster).
    NetnsNames,
    /// The Kubernetes API: in-cluster service account, or this kubeconfig.
    Kubernetes {
        kubeconfig: Option<PathBuf>,
        node: String,
    },
}

/// What the daemon allows each HTTP client, so that slow, idle, oversized
/// or garbage clients cannot starve scrapes or grow memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once. A new one past that closes the oldest
    /// connection not in a request (idle, or still sending its head), or,
    /// if every one is in a request, is itself closed.
    pub max_connections: usize,
    /// A connection must send a whole request head within this long of
    /// opening, or of its previous response (the keep-alive idle timeout);
    /// else it is closed. A byte-a-second (slowloris) client is closed too.
    pub timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Everything a session needs, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// Serve /metrics, /healthz, /readyz and /findings here (none: no HTTP).
    pub listen: Option<SocketAddr>,
    /// Serve /findings (it shows pod names, addresses and evidence).
    pub findings: bool,
    /// What each HTTP client is allowed.
    pub http: HttpLimits,
    pub analysis: AnalysisConfig,
    pub probes: LoadOptions,
    pub identity: Identity,
}

/// What the environment says about Kubernetes (read once, passed in so that
/// resolving stays a pure function).
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// `KUBERNETES_SERVICE_HOST` is set: running in a pod.
    pub in_cluster: bool,
    /// `$NODE_NAME` (the DaemonSet sets it from the downward API).
    pub node_name: Option<String>,
    pub hostname: String,
}

impl Environment {
    pub fn read() -> Self {
        Self {
            in_cluster: std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
            node_name: std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()),
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::resolve(
            Settings::default(),
            None,
            Settings::default(),
            &Environment::default(),
        )
        .expect("defaults are valid")
    }
}

impl Config {
    /// Flags over the file over `mode_defaults` (e.g. the daemon's listen
    /// address) over the embedded defaults.
    pub fn resolve(
        flags: Settings,
        file: Option<&Path>,
        mode_defaults: Settings,
        env: &Environment,
    ) -> Result<Self, ConfigError> {
        let from_file = match file {
            Some(path) => read_file(path)?,
            None => Settings::default(),
        };
        Self::from_settings(flags.over(from_file).over(mode_defaults), env)
    }

    /// Settings already layered, checked and completed with the defaults.
    pub fn from_settings(s: Settings, env: &Environment) -> Result<Self, ConfigError> {
        let analysis_defaults = AnalysisConfig::default();
        let probe_defaults = LoadOptions::default();
        let proxy_defaults = ProxyMatcher::default();

        let peer_cap = s.peer_cap.unwrap_or(analysis_defaults.peer_cap);
        if peer_cap == 0 {
            return Err(invalid("--peer-cap", "peer_cap", "must be at least 1"));
        }
        let at_least_one = |value: Option<usize>, default, flag, key| match value {
            Some(0) => Err(invalid(flag, key, "must be at least 1")),
            value => Ok(value.unwrap_or(default)),
        };
        let pod_cap = at_least_one(s.pod_cap, analysis_defaults.pod_cap, "--pod-cap", "pod_cap")?;
        let findings_cap = at_least_one(
            s.findings_cap,
            analysis_defaults.findings_cap,
            "--findings-cap",
            "findings_cap",
        )?;
        let http_defaults = HttpLimits::default();
        let http_max_connections = at_least_one(
            s.http_max_connections,
            http_defaults.max_connections,
            "--http-max-connections",
            "http_max_connections",
        )?;
        let http_timeout = s.http_timeout.unwrap_or(http_defaults.timeout);
        if http_timeout.is_zero() {
            return Err(invalid(
                "--http-timeout",
                "http_timeout",
                "must be longer than zero",
            ));
        }
        let max_connections = s.max_connections.unwrap_or(probe_defaults.max_connections);
        if max_connections == 0 {
            return Err(invalid(
                "--max-connections",
                "max_connections",
                "must be at least 1",
            ));
        }
        let ring_bytes = s.ring_bytes.unwrap_or(probe_defaults.ring_bytes);
        if !ring_bytes.is_power_of_two() || ring_bytes < 4096 {
            return Err(invalid(
                "--ring-bytes",
                "ring_bytes",
                format!(
                    "ring buffer size {ring_bytes} must be a power of two of at least 4096 bytes"
                ),
            ));
        }
        let drain_interval = representable(
            "--drain-interval",
            "drain_interval",
            s.drain_interval.unwrap_or(probe_defaults.drain_interval),
        )?;
        if drain_interval.is_zero() {
            return Err(invalid(
                "--drain-interval",
                "drain_interval",
                "must be longer than zero",
            ));
        }
        let attribution_window = representable(
            "--attribution-window",
            "attribution_window",
            s.attribution_window
                .unwrap_or(analysis_defaults.attribution_window),
        )?;
        let termination_window = representable(
            "--termination-window",
            "termination_window",
            s.termination_window
                .unwrap_or(analysis_defaults.termination_window),
        )?;
        let reuse_event_min_idle = representable(
            "--reuse-event-min-idle",
            "reuse_event_min_idle",
            s.reuse_event_min_idle
                .unwrap_or(probe_defaults.reuse_event_min_idle),
        )?;
        if attribution_window.is_zero() {
            return Err(invalid(
                "--attribution-window",
                "attribution_window",
                "must be longer than zero",
            ));
        }
        let wanted = s
            .kubernetes
            .unwrap_or(env.in_cluster || s.kubeconfig.is_some());
        let identity = if wanted {
            let node = s
                .node_name
                .or_else(|| env.node_name.clone())
                .unwrap_or_else(|| env.hostname.clone());
            if node.is_empty() {
                return Err(invalid(
                    "--node-name",
                    "node_name",
                    "unknown: set it, or NODE_NAME (the downward API's spec.nodeName)",
                ));
            }
            Identity::Kubernetes {
                kubeconfig: s.kubeconfig,
                node,
            }
        } else {
            Identity::NetnsNames
        };
        Ok(Self {
            identity,
            listen: s.listen,
            findings: s.findings.unwrap_or(true),
            http: HttpLimits {
                max_connections: http_max_connections,
                timeout: http_timeout,
            },
            analysis: AnalysisConfig {
                proxy: ProxyMatcher {
                    uids: s.proxy_uids.unwrap_or(proxy_defaults.uids),
                    comms: s.proxy_comms.unwrap_or(proxy_defaults.comms),
                },
                directions: s
                    .cluster_cidrs
                    .map(DirectionClassifier::new)
                    .unwrap_or_default(),
                attribution_window,
                termination_window,
                peer_cap,
                pod_cap,
                findings_cap,
                peer_addresses: s.peer_addresses.unwrap_or(false),
                ..analysis_defaults
            },
            probes: LoadOptions {
                max_connections,
                ring_bytes,
                reuse_event_min_idle,
                drain_interval,
                http_peek: s.http_peek.unwrap_or(probe_defaults.http_peek),
                dns_capture: s.dns.unwrap_or(probe_defaults.dns_capture),
                ..probe_defaults
            },
        })
    }
}

/// Durations travel as u64 nanoseconds (to the programs, in the analysis),
/// which end after about 584 years; longer ones would wrap to garbage.
fn representable(
    flag: &'static str,
    key: &'static str,
    duration: Duration,
) -> Result<Duration, ConfigError> {
    if u64::try_from(duration.as_nanos()).is_err() {
        return Err(invalid(
            flag,
            key,
            format!("{duration:?} is too long (at most 584 years)"),
        ));
    }
    Ok(duration)
}

/// `listen` as a string, with the same forms as the flag.
fn deserialize_listen<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| crate::units::parse_listen(&t).map_err(serde::de::Error::custom))
        .transpose()
}

fn read_file(path: &Path) -> Result<Settings, ConfigError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: display.clone(),
        error,
    })?;
    parse_file(&text, &display)
}

/// The text of a config file (`path` only names it in errors).
pub fn parse_file(text: &str, path: &str) -> Result<Settings, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        message: match e.span().and_then(|span| key_at(text, span.start)) {
            Some(key) => format!("key `{key}`: {}", e.message()),
            None => e.to_string().trim_end().to_owned(),
        },
        path: path.to_owned(),
    })
}

/// The `key` of the `key = value` line holding byte `offset`.
fn key_at(text: &str, offset: usize) -> Option<&str> {
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    Some(key.trim()).filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests;
