//! The findings document: what `/findings` serves and `diagnose` prints.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::{analysis::findings::Finding, units::serde_rfc3339};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FindingsReport {
    /// The node's hostname.
    pub node: String,
    #[serde(with = "serde_rfc3339")]
    pub generated: SystemTime,
    pub findings: Vec<Finding>,
}

impl FindingsReport {
    pub fn now(findings: Vec<Finding>) -> Self {
        Self {
            node: hostname(),
            generated: SystemTime::now(),
            findings,
        }
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
