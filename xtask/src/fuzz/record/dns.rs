//! Real answers from Debian's dnsmasq, served on 127.0.0.1 at a free port,
//! authoritative for `fuzz.example` (so unknown names get NXDOMAIN).

use std::{
    io::{Read as _, Write as _},
    net::{TcpStream, UdpSocket},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// (file name, query name, type): A, AAAA, CNAME, several answers, NXDOMAIN,
/// an empty answer; and one over TCP.
const QUERIES: &[(&str, &str, u16)] = &[
    ("a-api", "api.fuzz.example", 1),
    ("aaaa-v6", "v6.fuzz.example", 28),
    ("a-cname-www", "www.fuzz.example", 1),
    ("a-multi", "multi.fuzz.example", 1),
    ("a-nxdomain", "nope.fuzz.example", 1),
    ("aaaa-empty-api", "api.fuzz.example", 28),
    ("txt-api", "api.fuzz.example", 16),
];

struct Dnsmasq(Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn record() -> Result<Vec<(String, Vec<u8>)>> {
    let dir = std::env::temp_dir().join(format!("conntracer-fuzz-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        "203.0.113.9 api.fuzz.example\n\
         203.0.113.21 multi.fuzz.example\n203.0.113.22 multi.fuzz.example\n\
         203.0.113.23 multi.fuzz.example\n",
    )?;
    let port = free_port()?;
    let child = Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--pid-file=",
        ])
        .args(["--listen-address=127.0.0.1", "--bind-interfaces"])
        .arg(format!("--port={port}"))
        .args([
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--local=/fuzz.example/",
        ])
        .arg(format!("--addn-hosts={}", hosts.display()))
        .args([
            "--local-ttl=30",
            "--cname=www.fuzz.example,api.fuzz.example",
        ])
        .args(["--host-record=v6.fuzz.example,fd00::7"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting dnsmasq (`cargo xtask setup` installs it)")?;
    let _dnsmasq = Dnsmasq(child);
    let server = format!("127.0.0.1:{port}");
    let mut seeds = Vec::new();
    for (file, name, qtype) in QUERIES {
        let answer = ask_udp(&server, name, *qtype)?;
        seeds.push((format!("{file}.bin"), answer));
    }
    seeds.push((
        "tcp-a-api.bin".to_owned(),
        ask_tcp(&server, "api.fuzz.example", 1)?,
    ));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(seeds)
}

fn free_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn query(name: &str, qtype: u16) -> Vec<u8> {
    // id 0x4242, recursion desired, one question.
    let mut q = vec![0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q
}

/// Asks until dnsmasq is up (it may still be starting), for 10 s at most.
fn ask_udp(server: &str, name: &str, qtype: u16) -> Result<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        socket.send_to(&query(name, qtype), server)?;
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            return Ok(buf[..n].to_vec());
        }
    }
    bail!("dnsmasq did not answer {name} within 10 s")
}

/// The answer as it arrives over TCP: the two-byte length, then the message.
fn ask_tcp(server: &str, name: &str, qtype: u16) -> Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let q = query(name, qtype);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    stream.write_all(&framed)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut message = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut message)?;
    let mut out = len.to_vec();
    out.extend_from_slice(&message);
    Ok(out)
}
