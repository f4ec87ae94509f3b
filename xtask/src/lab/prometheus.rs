//! A real Prometheus (Debian's `prometheus`) scraping a scenario's daemon
//! every second with the shipped alert rules, so that the lab can ask it
//! whether the matching alert fires — and the dashboard's queries return data.
//!
//! The rules are deploy/prometheus/rules.yml with their time scales shrunk
//! for a lab that lasts seconds: `for:` becomes 5 s and every range window
//! and offset 2 m (thresholds are unchanged).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{
    procs::{Proc, wait_until},
    scrape,
};

pub struct Prometheus {
    pub addr: SocketAddr,
    _proc: Proc,
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The shipped rules on the lab's time scale.
pub fn lab_rules() -> Result<String> {
    let rules = std::fs::read_to_string(deploy_dir().join("prometheus/rules.yml"))
        .context("reading deploy/prometheus/rules.yml")?;
    Ok(rules
        .lines()
        .map(|line| {
            let shrunk = if line.trim_start().starts_with("for:") {
                format!("{}for: 5s", &line[..line.len() - line.trim_start().len()])
            } else {
                line.to_owned()
            };
            ["[5m]", "[10m]", "[15m]"]
                .iter()
                .fold(shrunk, |l, w| l.replace(w, "[2m]"))
                .replace("offset 5m", "offset 2m")
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

impl Prometheus {
    /// Starts Prometheus scraping `daemon`, listening on `addr`, files in `dir`.
    pub fn start(dir: &Path, daemon: SocketAddr, addr: SocketAddr) -> Result<Self> {
        let dir = dir.join("prometheus");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("rules.yml"), lab_rules()?)?;
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - rules.yml\n\
                 scrape_configs:\n  - job_name: conntracer\n    static_configs:\n      - targets: ['{daemon}']\n"
            ),
        )?;
        let config = dir.join("prometheus.yml");
        let tsdb = dir.join("tsdb");
        let proc = Proc::spawn(
            "prometheus",
            None,
            &[
                "prometheus",
                &format!("--config.file={}", config.display()),
                &format!("--storage.tsdb.path={}", tsdb.display()),
                &format!("--web.listen-address={addr}"),
                "--log.level=warn",
            ],
            &dir.join("prometheus.log"),
        )?;
        wait_until("Prometheus to be ready", Duration::from_secs(30), || {
            scrape::get(addr, "/-/ready").is_ok_and(|(code, _)| code == 200)
        })?;
        Ok(Self { addr, _proc: proc })
    }

    fn api(&self, path: &str) -> Result<Value> {
        let (code, body) = scrape::get(self.addr, path)?;
        let v: Value = serde_json::from_str(&body).context("Prometheus API JSON")?;
        if code != 200 || v["status"] != "success" {
            bail!("Prometheus {path}: {code} {body}");
        }
        Ok(v["data"].clone())
    }

    /// Alerts as (name, state, labels).
    pub fn alerts(&self) -> Result<Vec<(String, String, Value)>> {
        let data = self.api("/api/v1/alerts")?;
        Ok(data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
                    a["state"].as_str().unwrap_or("").to_owned(),
                    a["labels"].clone(),
                )
            })
            .collect())
    }

    /// Waits for `alert` to fire with these labels; the firing alerts seen.
    pub fn wait_firing(
        &self,
        alert: &str,
        labels: &[(&str, &str)],
        within: Duration,
    ) -> Result<()> {
        let matches = |(name, state, l): &(String, String, Value)| {
            name == alert && state == "firing" && labels.iter().all(|(k, v)| l[*k] == *v)
        };
        wait_until(&format!("{alert} to fire"), within, || {
            self.alerts().is_ok_and(|a| a.iter().any(matches))
        })
    }

    /// Number of series a range query over the last five minutes returns
    /// (what a dashboard panel would draw over the scenario).
    pub fn query(&self, expr: &str) -> Result<usize> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let data = self.api(&format!(
            "/api/v1/query_range?query={}&start={}&end={now}&step=1",
            encode(expr),
            now - 300
        ))?;
        Ok(data["result"].as_array().map_or(0, Vec::len))
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every panel expression of the dashboard, its variables matching everything.
pub fn dashboard_queries() -> Result<Vec<(String, String)>> {
    let path = deploy_dir().join("grafana/conntracer.json");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let expr = expr
                    .replace("$namespace", ".*")
                    .replace("$pod", ".*")
                    .replace("$__rate_interval", "1m");
                out.push((panel["title"].as_str().unwrap_or("").to_owned(), expr));
            }
        }
    }
    Ok(out)
}
