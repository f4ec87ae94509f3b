//! The bench workloads, run from threads inside the bench's network
//! namespaces. Every loop is bounded in count and time.

use std::{
    fs::File,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;

/// Runs `f` on a thread inside network namespace `netns`.
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let path = format!("/run/netns/{netns}");
    thread::spawn(move || {
        let ns = File::open(&path).expect("open netns");
        // SAFETY: valid fd; setns affects only this thread.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns {path}"
        );
        f()
    })
}

pub struct Endpoints {
    pub client_ns: String,
    pub server_ns: String,
    pub server: SocketAddr,
}

/// connect → accept → close, `n` times; the server closes first so the
/// client keeps no TIME_WAIT. Returns connections per second.
pub fn connect_close(ep: &Endpoints, n: u32) -> Result<f64> {
    let server = ep.server;
    let listener = in_netns(&ep.server_ns, move || TcpListener::bind(server))
        .join()
        .expect("bind")?;
    let acceptor = thread::spawn(move || {
        for _ in 0..n {
            match listener.accept() {
                Ok((conn, _)) => drop(conn),
                Err(_) => break,
            }
        }
    });
    let started = Instant::now();
    let client = in_netns(&ep.client_ns, move || -> std::io::Result<()> {
        let mut buf = [0u8; 1];
        for _ in 0..n {
            let mut c = TcpStream::connect_timeout(&server, Duration::from_secs(5))?;
            let _ = c.read(&mut buf); // EOF once the server closed
        }
        Ok(())
    });
    client.join().expect("client")?;
    let elapsed = started.elapsed().as_secs_f64();
    acceptor.join().expect("acceptor");
    Ok(f64::from(n) / elapsed)
}

/// Request/response of 64 bytes on `conns` keep-alive connections, `n` round
/// trips in all. Returns round trips per second.
///
/// Each connection's client and server threads share one CPU (connections
/// spread over the CPUs): a round trip then always costs the same two
/// same-CPU wake-ups. Left to the scheduler, whether the two ends of a
/// connection met on one CPU or bounced between two moved the untraced rate
/// between 140 000 and 275 000 per second from one run to the next, which
/// buried a few per cent of tracer cost.
pub fn request_response(ep: &Endpoints, conns: u32, n: u32) -> Result<f64> {
    let server = ep.server;
    let listener = in_netns(&ep.server_ns, move || TcpListener::bind(server))
        .join()
        .expect("bind")?;
    let echo = thread::spawn(move || {
        let mut workers = Vec::new();
        for i in 0..conns {
            let Ok((mut c, _)) = listener.accept() else {
                break;
            };
            workers.push(thread::spawn(move || {
                pin_to_cpu(i);
                let mut buf = [0u8; 64];
                while c.read_exact(&mut buf).is_ok() {
                    if c.write_all(&buf).is_err() {
                        break;
                    }
                }
            }));
        }
        workers.into_iter().for_each(|w| w.join().expect("echo"));
    });
    let per_conn = n / conns;
    // Connected one after the other, so the i-th accepted is the i-th client.
    let clients: Vec<_> = (0..conns)
        .map(|i| {
            let connected = in_netns(&ep.client_ns, move || {
                TcpStream::connect_timeout(&server, Duration::from_secs(5))
            })
            .join()
            .expect("connect");
            (i, connected)
        })
        .map(|(i, connected)| {
            thread::spawn(move || -> std::io::Result<()> {
                pin_to_cpu(i);
                let mut c = connected?;
                c.set_nodelay(true)?;
                let mut buf = [7u8; 64];
                for _ in 0..per_conn {
                    c.write_all(&buf)?;
                    c.read_exact(&mut buf)?;
                }
                Ok(())
            })
        })
        .collect();
    let started = Instant::now();
    for c in clients {
        c.join().expect("client")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    echo.join().expect("echo");
    Ok(f64::from(per_conn * conns) / elapsed)
}

/// Binds the calling thread to CPU `i` modulo the CPUs this process may use.
fn pin_to_cpu(i: u32) {
    // SAFETY: plain libc calls on a zeroed cpu_set_t for the calling thread.
    unsafe {
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut allowed) != 0 {
            return;
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &allowed))
            .collect();
        if cpus.is_empty() {
            return;
        }
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpus[i as usize % cpus.len()], &mut one);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &one);
    }
}

/// New connections at `rate` per second for `seconds`; returns how many were made.
pub fn churn(ep: &Endpoints, rate: u32, seconds: f64) -> Result<u64> {
    let server = ep.server;
    let listener = in_netns(&ep.server_ns, move || TcpListener::bind(server))
        .join()
        .expect("bind")?;
    listener.set_nonblocking(true)?;
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    let acceptor = thread::spawn(move || {
        // Waits in poll(2), not in a sleep: a 100 µs sleep between tries
        // capped the loop at about 17 000/s and made the untraced run the
        // slower one (2026-12-06 full run, churn_20000_per_s).
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((conn, _)) => drop(conn),
                // SAFETY: one valid pollfd; bounded wait so `stop` is seen.
                Err(_) => unsafe {
                    libc::poll(&mut pfd, 1, 10);
                },
            }
        }
        while let Ok((conn, _)) = listener.accept() {
            drop(conn);
        }
    });
    let total = (f64::from(rate) * seconds) as u64;
    let made = in_netns(&ep.client_ns, move || {
        let started = Instant::now();
        let mut made = 0u64;
        let mut buf = [0u8; 1];
        while made < total && started.elapsed().as_secs_f64() < seconds * 3.0 {
            // Pace: connection k is due at k / rate seconds.
            let due = Duration::from_secs_f64(made as f64 / f64::from(rate));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                thread::sleep(wait);
            }
            if let Ok(mut c) = TcpStream::connect_timeout(&server, Duration::from_secs(2)) {
                let _ = c.read(&mut buf);
                made += 1;
            }
        }
        made
    })
    .join()
    .expect("client");
    done.store(true, Ordering::Relaxed);
    acceptor.join().expect("acceptor");
    Ok(made)
}
