//! DNS answers seen in each network namespace, and what they mean for the
//! connections opened to their addresses.

pub mod history;
pub mod parse;

pub use history::{Change, DnsHistory, Staleness};
pub use parse::{DnsAnswer, DnsError, parse_response};
