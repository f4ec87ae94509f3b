//! `conntracer trace --output json` as a child process.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

pub struct TraceSession {
    child: Option<Child>,
    out: PathBuf,
    pub program_ids: Vec<u32>,
    /// Stderr up to the attach line (warnings about what is degraded).
    pub startup_log: Vec<String>,
    stderr: mpsc::Receiver<String>,
}

impl TraceSession {
    /// Starts tracing with `args` (e.g. `--namespace X`) and waits until the
    /// probes are attached.
    pub fn start(args: &[&str]) -> Self {
        Self::start_wrapped(&[], args)
    }

    /// Like `start`, run under `wrapper` (e.g. `setpriv ... --`).
    pub fn start_wrapped(wrapper: &[&str], args: &[&str]) -> Self {
        let out =
            std::env::temp_dir().join(format!("conntracer-test-{}.jsonl", super::unique_tag()));
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(env!("CARGO_BIN_EXE_conntracer"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_conntracer")),
        };
        let mut child = command
            .args(["trace", "--output", "json"])
            .args(args)
            .env("CONNTRACER_LOG", "warn")
            .stdout(fs::File::create(&out).expect("create trace output file"))
            .stderr(Stdio::piped())
            .spawn()
            .expect("start conntracer");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[conntracer] {line}");
                let _ = tx.send(line);
            }
        });
        let mut session = Self {
            child: Some(child),
            out,
            program_ids: Vec::new(),
            startup_log: Vec::new(),
            stderr: rx,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = session
                .stderr
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("conntracer did not report attached probes within 60 s");
            session.startup_log.push(line.clone());
            if let Some(ids) = line.split("program ids ").nth(1) {
                session.program_ids = ids
                    .split(')')
                    .next()
                    .unwrap()
                    .split(',')
                    .map(|s| s.parse().unwrap())
                    .collect();
                break;
            }
        }
        session
    }

    /// Events written so far.
    pub fn events(&self) -> Vec<Value> {
        fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }

    /// Waits (up to 10 s) until `done` holds for the events seen so far.
    pub fn wait_for(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let events = self.events();
            if done(&events) {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; events:\n{}",
                dump(&events)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops with `signal`, checks the exit and that no program stays loaded,
    /// and returns every event.
    pub fn stop_with(&mut self, signal: i32) -> Vec<Value> {
        let mut child = self.child.take().unwrap();
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = wait_timeout(&mut child, Duration::from_secs(10))
            .expect("conntracer did not exit within 10 s");
        assert!(status.success(), "conntracer exited with {status}");
        self.assert_programs_unloaded();
        self.events()
    }

    /// Stderr lines not consumed yet (complete once the process has exited).
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn stop(mut self) -> Vec<Value> {
        self.stop_with(libc::SIGINT)
    }

    /// Waits for a `--duration` session to end by itself.
    pub fn wait_exit(mut self, within: Duration) -> Vec<Value> {
        let mut child = self.child.take().unwrap();
        let status = wait_timeout(&mut child, within)
            .expect("conntracer did not stop at the end of --duration");
        assert!(status.success(), "conntracer exited with {status}");
        self.assert_programs_unloaded();
        self.events()
    }

    pub fn assert_programs_unloaded(&self) {
        assert!(!self.program_ids.is_empty());
        let left = programs_left_loaded(&self.program_ids);
        assert!(
            left.is_empty(),
            "programs still loaded after exit: {left:?}"
        );
    }
}

fn wait_timeout(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

impl Drop for TraceSession {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_file(&self.out);
    }
}

pub fn dump(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Events of kind `event` matching `pred`.
pub fn select<'a>(
    events: &'a [Value],
    event: &str,
    pred: impl Fn(&Value) -> bool,
) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["event"] == event && pred(e))
        .collect()
}

/// Which of `ids` are still loaded, after waiting up to 5 s for them to go:
/// the kernel frees a detached BTF tracepoint's program after an RCU grace
/// period, not at once.
pub fn programs_left_loaded(ids: &[u32]) -> Vec<u32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let loaded: Vec<u32> = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .map(|p| p.id())
            .collect();
        let left: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|id| loaded.contains(id))
            .collect();
        if left.is_empty() || std::time::Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
