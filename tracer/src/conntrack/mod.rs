//! The connection table: every TCP connection the probes follow, with the
//! connection model of DESIGN.md (role, addresses, timestamps, activity,
//! idle before the latest reuse, how it ended).

pub mod connection;
pub mod end;
pub mod table;

pub use connection::Connection;
pub use end::EndReason;
pub use table::ConnectionTable;
