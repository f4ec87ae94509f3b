//! The mesh scenarios: each runs both sidecars with mTLS between them and
//! asserts per request (see `checks`).

use std::time::Duration;

use anyhow::Result;

use super::{
    MeshOptions, MeshStage,
    checks::{self, Expect},
};
use crate::lab::{Lab, Outcome, scenarios::Scenario};

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "mesh-idle-timeout",
        about: "mTLS between sidecars; the app behind the inbound sidecar closes idle keep-alive connections after 1 s: the caller's 503s get the far hop's idle_timeout",
        run: idle_timeout,
    },
    Scenario {
        name: "mesh-idle-fixed",
        about: "control: the same, with the inbound sidecar's pool idle timeout below the app's",
        run: idle_fixed,
    },
    Scenario {
        name: "mesh-pod-termination",
        about: "mTLS between sidecars; the app behind the inbound sidecar shuts down while requests keep coming",
        run: pod_termination,
    },
    Scenario {
        name: "mesh-app-503",
        about: "the app's own 503s among failures the inbound sidecar retries away: none attributed",
        run: app_503,
    },
    Scenario {
        name: "mesh-tls-idle-close",
        about: "control: the inbound sidecar closes idle mTLS connections (close_notify); no request lost, no failure",
        run: tls_idle_close,
    },
];

/// Gaps right at the app's 1 s idle timeout: the race.
const RACE_GAPS: &str = "0.93,0.96,0.98,0.99,1.2";

fn idle_timeout(lab: &Lab, s: &Scenario, n: u8) -> Result<Outcome> {
    let ms = MeshStage::new(
        lab,
        s,
        n,
        MeshOptions {
            app_idle: 1.0,
            ..MeshOptions::default()
        },
    )?;
    // Warm-up: idle past the app's timeout, so its idle close is seen and learned.
    ms.call(lab, "1.3", "/", 3)?;
    let client = ms.call(lab, RACE_GAPS, "/", 30)?;
    let c = ms.collect()?;
    let expect = Expect {
        cause: "idle_timeout",
        min: 0.95,
        stale: true,
    };
    checks::far_fault(&ms, lab, &c, &expect, s.name, client)
}

fn idle_fixed(lab: &Lab, s: &Scenario, n: u8) -> Result<Outcome> {
    let ms = MeshStage::new(
        lab,
        s,
        n,
        MeshOptions {
            app_idle: 1.0,
            inbound_pool_idle: Some(Duration::from_millis(600)),
            ..MeshOptions::default()
        },
    )?;
    let client = ms.call(lab, RACE_GAPS, "/", 30)?;
    let c = ms.collect()?;
    checks::clean(&ms, &c, s.name, client, &[])
}

fn pod_termination(lab: &Lab, s: &Scenario, n: u8) -> Result<Outcome> {
    let ms = MeshStage::new(lab, s, n, MeshOptions::default())?;
    let app = ms.app_pid();
    // Terminate the app 1.5 s into a 4 s stream of requests.
    let terminator = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        // SAFETY: kill(2) on a child of ours (`ip netns exec` execs the app).
        unsafe { libc::kill(app, libc::SIGTERM) };
    });
    let client = ms.call(lab, "0.1", "/", 40)?;
    terminator.join().expect("terminator");
    let c = ms.collect()?;
    let expect = Expect {
        cause: "pod_terminating",
        min: 0.99,
        stale: false,
    };
    checks::far_fault(&ms, lab, &c, &expect, s.name, client)
}

fn app_503(lab: &Lab, s: &Scenario, n: u8) -> Result<Outcome> {
    let ms = MeshStage::new(
        lab,
        s,
        n,
        MeshOptions {
            inbound_retry: Some("reset,connect-failure"),
            ..MeshOptions::default()
        },
    )?;
    // Every other /flaky is reset by the app (the retry gets a 200); /503
    // follows 50 ms after, where pairing by time alone would take that failure.
    let client = ms.call(lab, "0.05", "/flaky,/503,/", 30)?;
    let c = ms.collect()?;
    checks::passed_through(&ms, &c, s.name, client)
}

fn tls_idle_close(lab: &Lab, s: &Scenario, n: u8) -> Result<Outcome> {
    let ms = MeshStage::new(
        lab,
        s,
        n,
        MeshOptions {
            inbound_downstream_idle: Some(Duration::from_millis(500)),
            ..MeshOptions::default()
        },
    )?;
    // Each gap outlasts the inbound sidecar's idle timeout: every request
    // finds the mTLS connection closed and opens a new one.
    let client = ms.call(lab, "0.8", "/", 20)?;
    let c = ms.collect()?;
    // True here: the peer closes idle connections the caller's pool keeps
    // (the very configuration of the idle race, which these gaps avoid).
    checks::clean(&ms, &c, s.name, client, &["ConntracerIdleTimeoutMismatch"])
}
