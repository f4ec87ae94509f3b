//! Where a session's results go, each pluggable into any subcommand:
//! - [`printer`]: trace records as a table or JSON lines on stdout;
//! - [`metrics`]: the Prometheus registry (`/metrics`);
//! - [`findings`]: the `/findings` document `diagnose` reads;
//! - [`http`]: serves metrics, health and findings.

pub mod findings;
pub mod http;
pub mod metrics;
pub mod printer;
