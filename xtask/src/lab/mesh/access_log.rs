//! The mesh sidecars' access log lines (`config::LOG_FORMAT`), one request each.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, SystemTime},
};

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Line {
    pub(crate) start: SystemTime,
    pub(crate) duration: Duration,
    pub(crate) code: u16,
    /// `%RESPONSE_FLAGS%`, `-` for none.
    pub(crate) flags: String,
    /// The peer of the connection the request came on.
    pub(crate) downstream_remote: Option<SocketAddr>,
    /// The local end of the upstream connection the (last) attempt used;
    /// Envoy leaves it empty (`-`) when no connection was established.
    pub(crate) upstream_local: Option<SocketAddr>,
    pub(crate) failure_reason: String,
    /// Upstream attempts: more than 1 when the route retried.
    pub(crate) attempts: u32,
    pub(crate) path: String,
}

impl Line {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut f = text.split_whitespace();
        let start = humantime::parse_rfc3339(f.next()?).ok()?;
        let duration = Duration::from_millis(f.next()?.parse().unwrap_or(0));
        let code = f.next()?.parse().unwrap_or(0);
        let flags = f.next()?.to_owned();
        let downstream_remote = f.next()?.parse().ok();
        let upstream_local = f.next()?.parse().ok();
        let failure_reason = f.next()?.to_owned();
        let attempts = f.next().and_then(|a| a.parse().ok()).unwrap_or(0);
        let path = f.next().unwrap_or("-").to_owned();
        Some(Self {
            start,
            duration,
            code,
            flags,
            downstream_remote,
            upstream_local,
            failure_reason,
            attempts,
            path,
        })
    }

    /// When Envoy finished the request (its log time plus duration).
    pub(crate) fn end(&self) -> SystemTime {
        self.start + self.duration
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "{} {} {} {} from {} upstream {} attempts {} {}",
            humantime::format_rfc3339_millis(self.start),
            self.code,
            self.path,
            self.flags,
            addr(self.downstream_remote),
            addr(self.upstream_local),
            self.attempts,
            self.failure_reason
        )
    }
}

fn addr(a: Option<SocketAddr>) -> String {
    a.map_or("-".to_owned(), |a| a.to_string())
}

/// Every parsable line of the log at `path` (none if it is missing).
pub(crate) fn read(path: &Path) -> Vec<Line> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(Line::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_line_with_and_without_an_upstream_connection() {
        let l = Line::parse(
            "2026-12-06T03:40:00.123Z 4 503 UC 10.213.1.10:40312 127.0.0.1:51000 - 1 /",
        )
        .unwrap();
        assert_eq!(l.code, 503);
        assert_eq!(l.flags, "UC");
        assert_eq!(
            l.downstream_remote,
            Some("10.213.1.10:40312".parse().unwrap())
        );
        assert_eq!(l.upstream_local, Some("127.0.0.1:51000".parse().unwrap()));
        assert_eq!(l.attempts, 1);
        assert_eq!(l.end(), l.start + Duration::from_millis(4));
        let l = Line::parse(
            "2026-12-06T03:40:00.123Z 1 503 UF 10.213.1.10:40312 - delayed_connect_error:_Connection_refused 1 /",
        )
        .unwrap();
        assert_eq!(l.upstream_local, None);
        assert_eq!(
            l.failure_reason,
            "delayed_connect_error:_Connection_refused"
        );
        assert!(Line::parse("garbage").is_none());
    }
}
