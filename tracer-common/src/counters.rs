//! Indices of the per-CPU counter array (`COUNTERS`) the programs bump when
//! something is lost or skipped; userspace sums them across CPUs and exports them.

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// The ring buffer was full: an event was dropped.
    EventsLost = 0,
    /// The socket map refused an insert (it is LRU, so this is rare: memory pressure).
    SockMapFull = 1,
    /// A connected socket was destroyed with no entry: it predates the tracer
    /// or its entry was evicted from the LRU map.
    UntrackedClose = 2,
    /// The listener map refused an insert.
    ListenerMapFull = 3,
    /// The DNS ring buffer was full: a DNS answer was dropped.
    DnsLost = 4,
}

impl Counter {
    pub const ALL: [Counter; 5] = [
        Counter::EventsLost,
        Counter::SockMapFull,
        Counter::UntrackedClose,
        Counter::ListenerMapFull,
        Counter::DnsLost,
    ];
    /// Length of the `COUNTERS` array.
    pub const COUNT: u32 = Self::ALL.len() as u32;
}
