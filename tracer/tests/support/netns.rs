//! Network namespaces made by the tests.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU8, Ordering},
    thread,
};

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Self {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name]);
        let ns = Self {
            name: name.to_owned(),
        };
        ns.exec(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS...`
    pub fn exec(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full);
    }

    /// Runs `f` on a new thread inside this namespace. The thread's name
    /// becomes its `comm`, which the tracer reports.
    pub fn run<T: Send + 'static>(&self, comm: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(comm, f)
            .join()
            .expect("thread in netns panicked")
    }

    pub fn spawn<T: Send + 'static>(
        &self,
        comm: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        thread::Builder::new()
            .name(comm.to_owned())
            .spawn(move || {
                let ns = File::open(&path).expect("open netns");
                // SAFETY: valid fd; setns only affects this thread.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            })
            .expect("spawn thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Two pods, `NAMESPACE.client` and `NAMESPACE.server`, joined by a veth pair,
/// with private IPv4 and IPv6 addresses of their own.
pub struct PodPair {
    pub namespace: String,
    pub client: Netns,
    pub server: Netns,
    pub client_v4: IpAddr,
    pub server_v4: IpAddr,
    pub client_v6: IpAddr,
    pub server_v6: IpAddr,
}

impl PodPair {
    pub fn new() -> Self {
        static SUBNET: AtomicU8 = AtomicU8::new(0);
        let tag = super::unique_tag();
        let namespace = format!("ct{tag}");
        let client = Netns::new(&format!("{namespace}.client"));
        let server = Netns::new(&format!("{namespace}.server"));
        // Distinct subnets per pair so pairs in one test never overlap.
        let (a, b) = (
            (std::process::id() % 200) as u8 + 20,
            SUBNET.fetch_add(1, Ordering::Relaxed),
        );
        let client_v4 = IpAddr::V4(Ipv4Addr::new(10, a, b, 1));
        let server_v4 = IpAddr::V4(Ipv4Addr::new(10, a, b, 2));
        let client_v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, a as u16, b as u16, 0, 0, 0, 0, 1));
        let server_v6 = IpAddr::V6(Ipv6Addr::new(0xfd00, a as u16, b as u16, 0, 0, 0, 0, 2));
        let (vc, vs) = (format!("vc{tag}"), format!("vs{tag}"));
        ip(&["link", "add", &vc, "type", "veth", "peer", "name", &vs]);
        ip(&["link", "set", &vc, "netns", &client.name]);
        ip(&["link", "set", &vs, "netns", &server.name]);
        for (ns, dev, v4, v6) in [
            (&client, &vc, client_v4, client_v6),
            (&server, &vs, server_v4, server_v6),
        ] {
            ns.exec(&["addr", "add", &format!("{v4}/24"), "dev", dev]);
            ns.exec(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
            ns.exec(&["link", "set", dev, "up"]);
        }
        Self {
            namespace,
            client,
            server,
            client_v4,
            server_v4,
            client_v6,
            server_v6,
        }
    }
}
