//! The soak's mixed load, each kind on its own threads inside the soak's
//! pods, until `stop` or its deadline: connection churn as fast as the
//! machine goes, keep-alive request/response, resets (refused connects and
//! abortive closes), DNS queries. Envoy's 503s come from the lab's client.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::bench::workload::in_netns;

/// What the load did, counted as it goes.
#[derive(Default)]
pub struct Counts {
    /// Churn connections completed (connect, accept, close).
    pub churned: AtomicU64,
    pub round_trips: AtomicU64,
    pub refused: AtomicU64,
    pub aborted: AtomicU64,
    pub dns_answers: AtomicU64,
}

/// Shared switches: `stop` ends every loop; `pause` holds the churn (so the
/// daemon's count can be compared with a still number).
#[derive(Default)]
pub struct Control {
    pub stop: AtomicBool,
    pub pause: AtomicBool,
    /// Set by the churn loop while it is between connections and paused.
    pub paused: AtomicBool,
}

pub struct Load {
    pub counts: Arc<Counts>,
    pub control: Arc<Control>,
    threads: Vec<JoinHandle<()>>,
}

/// Where each load runs.
pub struct Pods<'a> {
    pub churn_client: &'a str,
    pub churn_server: &'a str,
    pub churn_addr: SocketAddr,
    pub client: &'a str,
    pub server: &'a str,
    pub echo_addr: SocketAddr,
    /// A port nothing listens on, in the server pod.
    pub closed_addr: SocketAddr,
    pub dns_server: SocketAddr,
    pub dns_name: &'a str,
}

impl Load {
    pub fn start(pods: &Pods, until: Instant) -> Result<Self> {
        let counts = Arc::new(Counts::default());
        let control = Arc::new(Control::default());
        let mut threads = Vec::new();
        let live = {
            let control = control.clone();
            move || !control.stop.load(Ordering::Relaxed) && Instant::now() < until
        };

        // Churn: the server closes first so the client keeps no TIME_WAIT.
        let churn = pods.churn_addr;
        let listener = in_netns(pods.churn_server, move || TcpListener::bind(churn))
            .join()
            .expect("bind")?;
        listener.set_nonblocking(true)?;
        let alive = live.clone();
        threads.push(thread::spawn(move || {
            while alive() {
                match listener.accept() {
                    Ok((conn, _)) => drop(conn),
                    Err(_) => thread::sleep(Duration::from_micros(200)),
                }
            }
        }));
        let (alive, c, ctl) = (live.clone(), counts.clone(), control.clone());
        threads.push(in_netns(pods.churn_client, move || {
            let mut buf = [0u8; 1];
            while alive() {
                if ctl.pause.load(Ordering::Relaxed) {
                    ctl.paused.store(true, Ordering::Relaxed);
                    thread::sleep(Duration::from_millis(5));
                    continue;
                }
                ctl.paused.store(false, Ordering::Relaxed);
                if let Ok(mut s) = TcpStream::connect_timeout(&churn, Duration::from_secs(2)) {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let _ = s.read(&mut buf);
                    c.churned.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));

        // Keep-alive: an echo server and four clients, 64-byte round trips.
        let echo = pods.echo_addr;
        let listener = in_netns(pods.server, move || TcpListener::bind(echo))
            .join()
            .expect("bind")?;
        listener.set_nonblocking(true)?;
        let alive = live.clone();
        threads.push(thread::spawn(move || {
            let mut workers = Vec::new();
            while alive() {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
                        let alive = alive.clone();
                        workers.push(thread::spawn(move || {
                            let mut buf = [0u8; 64];
                            while alive() {
                                match conn.read(&mut buf) {
                                    Ok(0) => break,
                                    Ok(n) => {
                                        if conn.write_all(&buf[..n]).is_err() {
                                            break;
                                        }
                                    }
                                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                                    Err(_) => break,
                                }
                            }
                        }));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
            workers.into_iter().for_each(|w| {
                let _ = w.join();
            });
        }));
        for _ in 0..4 {
            let (alive, c) = (live.clone(), counts.clone());
            threads.push(in_netns(pods.client, move || {
                let Ok(mut s) = TcpStream::connect_timeout(&echo, Duration::from_secs(2)) else {
                    return;
                };
                let _ = s.set_nodelay(true);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [7u8; 64];
                while alive() {
                    if s.write_all(&buf).is_err() || s.read_exact(&mut buf).is_err() {
                        break;
                    }
                    c.round_trips.fetch_add(1, Ordering::Relaxed);
                    // Paced: a request stream, not a second churn.
                    thread::sleep(Duration::from_micros(500));
                }
            }));
        }

        // Resets: a refused connect and an abortive close, every 50 ms.
        let closed = pods.closed_addr;
        let (alive, c) = (live.clone(), counts.clone());
        threads.push(in_netns(pods.client, move || {
            while alive() {
                if TcpStream::connect_timeout(&closed, Duration::from_secs(1)).is_err() {
                    c.refused.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok(s) = TcpStream::connect_timeout(&echo, Duration::from_secs(1)) {
                    // SO_LINGER 0: close sends a reset.
                    let linger = libc::linger {
                        l_onoff: 1,
                        l_linger: 0,
                    };
                    // SAFETY: valid fd and option struct.
                    unsafe {
                        libc::setsockopt(
                            std::os::fd::AsRawFd::as_raw_fd(&s),
                            libc::SOL_SOCKET,
                            libc::SO_LINGER,
                            (&raw const linger).cast(),
                            size_of::<libc::linger>() as u32,
                        );
                    }
                    drop(s);
                    c.aborted.fetch_add(1, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(50));
            }
        }));

        // DNS: a query every 20 ms.
        let (dns, name) = (pods.dns_server, pods.dns_name.to_owned());
        let (alive, c) = (live, counts.clone());
        threads.push(in_netns(pods.client, move || {
            let Ok(sock) = UdpSocket::bind("0.0.0.0:0") else {
                return;
            };
            let _ = sock.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 512];
            let mut id = 0u16;
            while alive() {
                id = id.wrapping_add(1);
                if sock.send_to(&dns_query(id, &name), dns).is_ok()
                    && sock.recv(&mut buf).is_ok_and(|n| n > 12)
                {
                    c.dns_answers.fetch_add(1, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(20));
            }
        }));
        Ok(Self {
            counts,
            control,
            threads,
        })
    }

    /// Holds the churn between connections; returns once it is held.
    pub fn pause_churn(&self) {
        self.control.pause.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.control.paused.load(Ordering::Relaxed) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn resume_churn(&self) {
        self.control.paused.store(false, Ordering::Relaxed);
        self.control.pause.store(false, Ordering::Relaxed);
    }

    pub fn stop(self) -> Arc<Counts> {
        self.control.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        self.counts
    }
}

/// A recursive A query for `name`.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}
