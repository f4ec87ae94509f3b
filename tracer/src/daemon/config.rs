//! Daemon configuration: flags, an optional TOML file (`--config`), and the
//! embedded defaults (zero configuration on a plain host). Flags win over the
//! file; a bad value is an error that names the flag or key.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;
use ipnet::IpNet;
use serde::Deserialize;

use crate::{
    analysis::{AnalysisConfig, direction::DirectionClassifier, proxy::ProxyMatcher},
    cli::ProbeArgs,
};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9477";

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// TOML file with any of the keys below (flags win).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address for /metrics, /healthz, /readyz and /findings [default: 127.0.0.1:9477].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// A process with this uid is a proxy (repeatable) [default: 1337].
    #[arg(long = "proxy-uid", value_name = "UID")]
    pub proxy_uids: Vec<u32>,
    /// A process (thread) with this command name prefix is a proxy (repeatable) [default: envoy, pilot-agent, wrk:worker].
    #[arg(long = "proxy-comm", value_name = "COMM")]
    pub proxy_comms: Vec<String>,
    /// Cluster address ranges; anything else is `egress` (repeatable) [default: RFC 1918 and fc00::/7].
    #[arg(long = "cluster-cidr", value_name = "CIDR")]
    pub cluster_cidrs: Vec<IpNet>,
    /// How far apart a 503 and the upstream failure behind it may be [default: 1s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub attribution_window: Option<Duration>,
    /// A listener closed this recently means its pod is terminating [default: 2m].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub termination_window: Option<Duration>,
    /// Distinct `peer` label values per pod before `other` [default: 20].
    #[arg(long)]
    pub peer_cap: Option<usize>,
    /// Label unknown peers by address (unbounded cardinality; off by default).
    #[arg(long)]
    pub peer_addresses: bool,
    #[command(flatten)]
    pub probes: ProbeArgs,
}

/// The file format; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub proxy_uids: Option<Vec<u32>>,
    pub proxy_comms: Option<Vec<String>>,
    pub cluster_cidrs: Option<Vec<IpNet>>,
    pub attribution_window: Option<String>,
    pub termination_window: Option<String>,
    pub peer_cap: Option<usize>,
    pub peer_addresses: Option<bool>,
}

/// A list flag wins over the file's list when given at all.
fn pick<T: Clone>(flag: &[T], file: &Option<Vec<T>>) -> Option<Vec<T>> {
    if flag.is_empty() {
        file.clone()
    } else {
        Some(flag.to_vec())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("config file {path}: key `{key}`: {message}")]
    Value {
        path: String,
        key: &'static str,
        message: String,
    },
    #[error("--peer-cap / peer_cap must be at least 1")]
    ZeroPeerCap,
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub listen: SocketAddr,
    pub analysis: AnalysisConfig,
}

impl DaemonConfig {
    pub fn resolve(args: &DaemonArgs) -> Result<Self, ConfigError> {
        let (file, path) = match &args.config {
            Some(path) => {
                let display = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: display.clone(),
                    source,
                })?;
                let file: FileConfig =
                    toml::from_str(&text).map_err(|source| ConfigError::Parse {
                        path: display.clone(),
                        source,
                    })?;
                (file, display)
            }
            None => (FileConfig::default(), String::new()),
        };
        let duration =
            |key: &'static str, value: &Option<String>| -> Result<Option<Duration>, ConfigError> {
                value
                    .as_deref()
                    .map(humantime::parse_duration)
                    .transpose()
                    .map_err(|e| ConfigError::Value {
                        path: path.clone(),
                        key,
                        message: e.to_string(),
                    })
            };
        let defaults = AnalysisConfig::default();
        let proxy_defaults = ProxyMatcher::default();
        let cluster = pick(&args.cluster_cidrs, &file.cluster_cidrs);
        let peer_cap = args.peer_cap.or(file.peer_cap).unwrap_or(defaults.peer_cap);
        if peer_cap == 0 {
            return Err(ConfigError::ZeroPeerCap);
        }
        Ok(Self {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default")),
            analysis: AnalysisConfig {
                proxy: ProxyMatcher {
                    uids: pick(&args.proxy_uids, &file.proxy_uids).unwrap_or(proxy_defaults.uids),
                    comms: pick(&args.proxy_comms, &file.proxy_comms)
                        .unwrap_or(proxy_defaults.comms),
                },
                directions: cluster.map(DirectionClassifier::new).unwrap_or_default(),
                attribution_window: args
                    .attribution_window
                    .or(duration("attribution_window", &file.attribution_window)?)
                    .unwrap_or(defaults.attribution_window),
                termination_window: args
                    .termination_window
                    .or(duration("termination_window", &file.termination_window)?)
                    .unwrap_or(defaults.termination_window),
                peer_cap,
                peer_addresses: args.peer_addresses || file.peer_addresses.unwrap_or(false),
                ..defaults
            },
        })
    }
}
