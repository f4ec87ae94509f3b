//! Per network namespace: each name's answer history, and the names each IP
//! was recently an answer for. Bounded: names per netns, answers per name.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    net::IpAddr,
};

use serde::Serialize;

use super::parse::DnsAnswer;

const ANSWERS_PER_NAME: usize = 8;
const NAMES_PER_NETNS: usize = 512;
/// Namespaces with a DNS history at most (then all forgotten at once).
const MAX_NETNS: usize = 4096;

/// One distinct answer for a name (same address set), and when it was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnswerSet {
    pub addresses: BTreeSet<IpAddr>,
    pub ttl: u32,
    #[serde(skip)]
    pub first_seen_ns: u64,
    #[serde(skip)]
    pub last_seen_ns: u64,
}

#[derive(Debug, Clone, Default)]
pub struct NameHistory {
    /// Oldest first; the last is the latest answer.
    pub answers: VecDeque<AnswerSet>,
    pub changes: u64,
}

impl NameHistory {
    pub fn latest(&self) -> Option<&AnswerSet> {
        self.answers.back()
    }
}

/// What an answer changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub name: String,
    pub old: BTreeSet<IpAddr>,
    pub new: BTreeSet<IpAddr>,
}

/// Why a connection to `ip` is stale as far as DNS knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Staleness {
    pub name: String,
    /// The answer that contained the IP.
    pub old_answer: Vec<IpAddr>,
    /// The latest answer, which does not (empty for `ttl_expired`).
    pub new_answer: Vec<IpAddr>,
    /// Mono ns when the answer changed (or the TTL ran out).
    #[serde(skip)]
    pub since_ns: u64,
    /// The record expired and no answer has been seen since.
    pub ttl_expired: bool,
}

#[derive(Debug, Default)]
struct NetnsDns {
    names: HashMap<String, NameHistory>,
    /// IP → names it was an answer for.
    by_ip: HashMap<IpAddr, BTreeSet<String>>,
}

#[derive(Debug, Default)]
pub struct DnsHistory {
    netns: HashMap<u32, NetnsDns>,
    /// Answers dropped because a netns had too many names.
    pub dropped: u64,
}

impl DnsHistory {
    /// Records an answer seen in `netns` at `now_ns`; returns the change if
    /// the name's address set differs from its latest answer.
    pub fn record(&mut self, netns: u32, answer: &DnsAnswer, now_ns: u64) -> Option<Change> {
        if answer.addresses.is_empty() {
            return None; // NXDOMAIN, SERVFAIL, or no address records: nothing to join
        }
        if self.netns.len() >= MAX_NETNS && !self.netns.contains_key(&netns) {
            // Pods churn: forget every namespace's history rather than grow.
            self.netns.clear();
        }
        let ns = self.netns.entry(netns).or_default();
        if !ns.names.contains_key(&answer.name) && ns.names.len() >= NAMES_PER_NETNS {
            self.dropped += 1;
            return None;
        }
        let addresses: BTreeSet<IpAddr> = answer.addresses.iter().copied().collect();
        for ip in &addresses {
            ns.by_ip.entry(*ip).or_default().insert(answer.name.clone());
        }
        let history = ns.names.entry(answer.name.clone()).or_default();
        match history.answers.back_mut() {
            Some(latest) if latest.addresses == addresses => {
                latest.last_seen_ns = now_ns;
                latest.ttl = answer.ttl;
                None
            }
            latest => {
                let old = latest.map(|l| l.addresses.clone());
                if history.answers.len() == ANSWERS_PER_NAME {
                    history.answers.pop_front();
                }
                history.answers.push_back(AnswerSet {
                    addresses: addresses.clone(),
                    ttl: answer.ttl,
                    first_seen_ns: now_ns,
                    last_seen_ns: now_ns,
                });
                let old = old?;
                history.changes += 1;
                Some(Change {
                    name: answer.name.clone(),
                    old,
                    new: addresses,
                })
            }
        }
    }

    /// The name a connection to `ip` was opened for: the name whose most
    /// recent answer before `at_ns` contained it.
    pub fn name_for(&self, netns: u32, ip: IpAddr, at_ns: u64) -> Option<String> {
        let ns = self.netns.get(&netns)?;
        ns.by_ip
            .get(&ip)?
            .iter()
            .filter_map(|name| {
                let seen = ns
                    .names
                    .get(name)?
                    .answers
                    .iter()
                    .filter(|a| a.addresses.contains(&ip) && a.first_seen_ns <= at_ns);
                seen.map(|a| a.last_seen_ns).max().map(|t| (t, name))
            })
            .max()
            .map(|(_, name)| name.clone())
    }

    /// Whether `ip` had dropped out of `name`'s latest answer by `at_ns`, or
    /// its record expired with no answer seen since (`ttl_expired`).
    pub fn staleness(&self, netns: u32, name: &str, ip: IpAddr, at_ns: u64) -> Option<Staleness> {
        let history = self.netns.get(&netns)?.names.get(name)?;
        let latest = history
            .answers
            .iter()
            .rev()
            .find(|a| a.first_seen_ns <= at_ns)?;
        let containing = history
            .answers
            .iter()
            .rev()
            .find(|a| a.addresses.contains(&ip))?;
        if !latest.addresses.contains(&ip) {
            return Some(Staleness {
                name: name.to_owned(),
                old_answer: containing.addresses.iter().copied().collect(),
                new_answer: latest.addresses.iter().copied().collect(),
                since_ns: latest.first_seen_ns,
                ttl_expired: false,
            });
        }
        let expires = latest
            .last_seen_ns
            .saturating_add(u64::from(latest.ttl) * 1_000_000_000);
        (latest.ttl > 0 && at_ns > expires).then(|| Staleness {
            name: name.to_owned(),
            old_answer: latest.addresses.iter().copied().collect(),
            new_answer: Vec::new(),
            since_ns: expires,
            ttl_expired: true,
        })
    }

    pub fn latest(&self, netns: u32, name: &str) -> Option<&AnswerSet> {
        self.netns.get(&netns)?.names.get(name)?.latest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(name: &str, ips: &[&str], ttl: u32) -> DnsAnswer {
        DnsAnswer {
            name: name.into(),
            rcode: "NoError".into(),
            addresses: ips.iter().map(|i| i.parse().unwrap()).collect(),
            ttl,
            cnames: Vec::new(),
            truncated: false,
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn changes_names_and_staleness() {
        let mut h = DnsHistory::default();
        let old: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(
            h.record(1, &answer("api.example", &["203.0.113.7"], 5), S),
            None
        );
        assert_eq!(
            h.record(1, &answer("api.example", &["203.0.113.7"], 5), 3 * S),
            None,
            "same answer again"
        );
        assert_eq!(h.name_for(1, old, 4 * S).as_deref(), Some("api.example"));
        assert_eq!(h.name_for(2, old, 4 * S), None, "other netns");
        assert_eq!(h.staleness(1, "api.example", old, 4 * S), None);

        let change = h
            .record(1, &answer("api.example", &["203.0.113.9"], 5), 6 * S)
            .unwrap();
        assert_eq!(change.old.into_iter().collect::<Vec<_>>(), vec![old]);
        let stale = h.staleness(1, "api.example", old, 7 * S).unwrap();
        assert_eq!((stale.since_ns, stale.ttl_expired), (6 * S, false));
        assert_eq!(
            stale.new_answer,
            vec!["203.0.113.9".parse::<IpAddr>().unwrap()]
        );
        // Before the change, the connection was fine.
        assert_eq!(h.staleness(1, "api.example", old, 5 * S), None);
    }

    #[test]
    fn ttl_expiry_without_a_refresh() {
        let mut h = DnsHistory::default();
        let ip: IpAddr = "198.51.100.4".parse().unwrap();
        h.record(3, &answer("fw.example", &["198.51.100.4"], 10), S);
        assert_eq!(h.staleness(3, "fw.example", ip, 5 * S), None);
        let s = h.staleness(3, "fw.example", ip, 20 * S).unwrap();
        assert!(s.ttl_expired);
        assert_eq!(s.since_ns, 11 * S);
    }

    #[test]
    fn empty_answers_are_not_history() {
        let mut h = DnsHistory::default();
        assert_eq!(h.record(1, &answer("gone.example", &[], 0), S), None);
        assert!(h.latest(1, "gone.example").is_none());
    }
}
