//! A minimal HTTP/1.1 GET of the daemon's `/findings` (loopback or node
//! address; no TLS, no redirects).

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{analysis::findings::Scope, output::findings::FindingsReport};

pub async fn findings(daemon: SocketAddr, scope: &Scope) -> anyhow::Result<FindingsReport> {
    let mut query = Vec::new();
    if let Some(ns) = &scope.namespace {
        query.push(format!("namespace={}", encode(ns)));
    }
    if let Some(pod) = &scope.pod {
        query.push(format!("pod={}", encode(pod)));
    }
    let path = if query.is_empty() {
        "/findings".to_owned()
    } else {
        format!("/findings?{}", query.join("&"))
    };
    let mut stream = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        TcpStream::connect(daemon),
    )
    .await
    .context("connect timed out")??;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {daemon}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("daemon answered: {}", head.lines().next().unwrap_or(""));
    }
    serde_json::from_str(body).context("daemon sent malformed findings JSON")
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
