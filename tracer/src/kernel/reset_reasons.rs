//! The kernel's names for `enum sk_rst_reason` values (Linux 6.10+), read
//! from the `tcp:tcp_send_reset` format's `print fmt`.

use std::collections::BTreeMap;

/// The kernel's names for `enum sk_rst_reason` values, e.g. 1 → `NO_SOCKET`.
#[derive(Debug, Clone, Default)]
pub struct ResetReasons(BTreeMap<u64, String>);

impl ResetReasons {
    pub fn new(names: BTreeMap<u64, String>) -> Self {
        Self(names)
    }

    /// The name, or the number when this kernel did not name it.
    pub fn name(&self, reason: u32) -> String {
        self.0
            .get(&u64::from(reason))
            .cloned()
            .unwrap_or_else(|| reason.to_string())
    }

    pub fn get(&self, reason: u64) -> Option<&str> {
        self.0.get(&reason).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
