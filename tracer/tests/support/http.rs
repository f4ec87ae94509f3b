//! Plain HTTP/1.1 GETs against the daemon's endpoints, and reading its metrics.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// Status and body of `GET path` with `Connection: close`, or `None` if
/// nothing answers within 10 s (a liveness bound, not a timing check).
pub fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let liveness = Duration::from_secs(10);
    let mut s = TcpStream::connect_timeout(&addr, liveness).ok()?;
    s.set_read_timeout(Some(liveness)).ok()?;
    s.set_write_timeout(Some(liveness)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((
        head.split_whitespace().nth(1)?.parse().ok()?,
        body.to_owned(),
    ))
}

/// The sum of `name` over the series of a `/metrics` body whose labels
/// include every one of `labels`.
pub fn metric(body: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    body.lines()
        .filter(|l| {
            l.starts_with(name)
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}
