//! Maps on the per-event path, keyed by ids, addresses and label values:
//! foldhash instead of SipHash (several times cheaper on short keys). Still
//! randomly seeded, and every such map is bounded (label caps, table and
//! topology limits), so collisions chosen by a peer cannot grow a bucket far.

pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
