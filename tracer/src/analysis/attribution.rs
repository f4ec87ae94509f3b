//! Joining the 503s proxies write to their upstream failures: a `503` written
//! by a proxy process on a downstream socket carries the cause of a failure of
//! one of that process's upstream connections (same network namespace, same
//! process) within the window around it; otherwise `unattributed`.

use std::collections::VecDeque;

use super::cause::Cause;

#[derive(Debug, Clone)]
pub struct Seen503 {
    pub at_ns: u64,
    pub netns: u32,
    pub pid: u32,
}

#[derive(Debug, Clone)]
struct RecentFailure {
    at_ns: u64,
    netns: u32,
    pid: u32,
    cause: Cause,
    used: bool,
}

/// A 503 with its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributed503 {
    pub netns: u32,
    pub pid: u32,
    pub at_ns: u64,
    /// `None`: unattributed.
    pub cause: Option<Cause>,
}

#[derive(Debug)]
pub struct Attributor {
    window_ns: u64,
    pending: VecDeque<Seen503>,
    recent: VecDeque<RecentFailure>,
}

impl Attributor {
    pub fn new(window: std::time::Duration) -> Self {
        Self {
            window_ns: window.as_nanos() as u64,
            pending: VecDeque::new(),
            recent: VecDeque::new(),
        }
    }

    pub fn seen_503(&mut self, seen: Seen503) {
        self.pending.push_back(seen);
    }

    pub fn failure(&mut self, at_ns: u64, netns: u32, pid: u32, cause: Cause) {
        self.recent.push_back(RecentFailure {
            at_ns,
            netns,
            pid,
            cause,
            used: false,
        });
    }

    /// Decides every 503 that can be decided by `now_ns`.
    pub fn settle(&mut self, now_ns: u64, out: &mut Vec<Attributed503>) {
        let window = self.window_ns;
        let mut still_pending = VecDeque::new();
        while let Some(p) = self.pending.pop_front() {
            let best = self
                .recent
                .iter_mut()
                .filter(|f| !f.used && f.netns == p.netns && (f.pid == p.pid || p.pid == 0))
                .filter(|f| f.at_ns.abs_diff(p.at_ns) <= window)
                .min_by_key(|f| f.at_ns.abs_diff(p.at_ns));
            match best {
                Some(f) => {
                    f.used = true;
                    out.push(Attributed503 {
                        netns: p.netns,
                        pid: p.pid,
                        at_ns: p.at_ns,
                        cause: Some(f.cause),
                    });
                }
                None if now_ns.saturating_sub(p.at_ns) > window => {
                    out.push(Attributed503 {
                        netns: p.netns,
                        pid: p.pid,
                        at_ns: p.at_ns,
                        cause: None,
                    });
                }
                None => still_pending.push_back(p),
            }
        }
        self.pending = still_pending;
        while self
            .recent
            .front()
            .is_some_and(|f| now_ns.saturating_sub(f.at_ns) > 4 * window)
        {
            self.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn joins_by_netns_process_and_time() {
        let mut a = Attributor::new(Duration::from_secs(1));
        let mut out = Vec::new();
        a.seen_503(Seen503 {
            at_ns: 1000 * MS,
            netns: 1,
            pid: 10,
        });
        a.seen_503(Seen503 {
            at_ns: 1001 * MS,
            netns: 1,
            pid: 10,
        });
        a.seen_503(Seen503 {
            at_ns: 1002 * MS,
            netns: 2,
            pid: 20,
        });
        // The failure can arrive after the 503 that it caused.
        a.failure(999 * MS, 1, 10, Cause::IdleTimeout);
        a.failure(1000 * MS, 1, 99, Cause::PeerReset); // another process
        a.settle(1100 * MS, &mut out);
        assert_eq!(
            out,
            vec![Attributed503 {
                netns: 1,
                pid: 10,
                at_ns: 1000 * MS,
                cause: Some(Cause::IdleTimeout)
            }]
        );
        out.clear();
        a.settle(2500 * MS, &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|o| o.cause.is_none()), "{out:?}");
    }
}
