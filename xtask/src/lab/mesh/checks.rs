//! What a mesh scenario is judged on: first per request (each access log
//! line of the caller's sidecar joined to the daemon's 503 record and the
//! far hop's failure), then the metric deltas agreeing with the requests
//! (no 503 counted twice, by the seen-503 counter and the proxy-answered
//! one), the diagnosis and the alert.

use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use super::{
    CALLER_POD, Collected, MeshStage, SERVER_POD,
    access_log::Line,
    join::{Evidence, Joined, Request, Tally, join},
};
use crate::lab::{Lab, Outcome};

/// Problems shown per failed check (the rest are in the scenario's logs).
const SHOWN: usize = 3;

/// The metric deltas of the scenario's namespace.
struct Counts {
    /// `http_503_total` of the caller's pod under the scenario's cause.
    attributed: f64,
    all_503: f64,
    unattributed: f64,
    answered: f64,
    failures: f64,
    all_failures: f64,
    stale: f64,
    all_stale: f64,
}

impl Counts {
    fn read(ms: &MeshStage, c: &Collected, cause: &str) -> Self {
        let ns = ms.stage.namespace();
        let d = |name: &str, want: &[(&str, &str)]| {
            let mut want = want.to_vec();
            want.push(("namespace", &ns));
            ms.stage.delta(&c.metrics, name, &want)
        };
        Self {
            attributed: d(
                "conntracer_http_503_total",
                &[("pod", CALLER_POD), ("cause", cause)],
            ),
            all_503: d("conntracer_http_503_total", &[]),
            unattributed: d("conntracer_http_503_total", &[("cause", "unattributed")]),
            answered: d("conntracer_proxy_answered_503_total", &[]),
            failures: d("conntracer_connection_failures_total", &[("cause", cause)]),
            all_failures: d("conntracer_connection_failures_total", &[]),
            stale: d(
                "conntracer_stale_connection_failures_total",
                &[("cause", cause)],
            ),
            all_stale: d("conntracer_stale_connection_failures_total", &[]),
        }
    }

    fn line(&self, cause: &str) -> String {
        format!(
            "metrics: http_503_total{{pod=\"{CALLER_POD}\",cause=\"{cause}\"}} = {} (all causes {}, unattributed {}), \
             proxy_answered_503_total = {}, connection_failures_total{{cause=\"{cause}\"}} = {} (all {}), \
             stale = {} (all {})",
            self.attributed,
            self.all_503,
            self.unattributed,
            self.answered,
            self.failures,
            self.all_failures,
            self.stale,
            self.all_stale
        )
    }
}

fn summary(c: &Collected) -> Vec<String> {
    let log = |who: &str, lines: &[Line]| {
        let mut flags: Vec<&str> = lines
            .iter()
            .filter(|l| l.code == 503)
            .map(|l| l.flags.as_str())
            .collect();
        flags.sort_unstable();
        flags.dedup();
        format!(
            "{who}: {} requests, {} x 503 (flags {}), {} retried",
            lines.len(),
            lines.iter().filter(|l| l.code == 503).count(),
            flags.join(","),
            lines.iter().filter(|l| l.attempts > 1).count()
        )
    };
    let in_pod = |pod: &str| c.failures.iter().filter(|f| f.pod == pod).count();
    vec![
        log("caller's sidecar", &c.outbound),
        log("inbound sidecar", &c.inbound),
        format!(
            "daemon (trace): {} 503 records ({} attributed, {} passthrough), failures {} in {SERVER_POD}, {} in {CALLER_POD} ({} stale), {} proxy_answered_503",
            c.seen.len(),
            c.seen.iter().filter(|s| s.attributed()).count(),
            c.seen.iter().filter(|s| s.passthrough).count(),
            in_pod(SERVER_POD),
            in_pod(CALLER_POD),
            c.failures.iter().filter(|f| f.stale).count(),
            c.answered.len()
        ),
    ]
}

fn evidence(c: &Collected) -> Evidence<'_> {
    Evidence {
        outbound: &c.outbound,
        inbound: &c.inbound,
        seen: &c.seen,
        failures: &c.failures,
        far_pod: SERVER_POD,
        app: MeshStage::app_addr(),
    }
}

/// Requests whose 503 the daemon recorded more than once, and 503 records
/// no 503 of the caller explains.
fn double_counts(joined: &Joined, failed: &mut Vec<String>) {
    let twice: Vec<&Request> = joined
        .requests
        .iter()
        .filter(|r| r.seen.len() > 1)
        .collect();
    if !twice.is_empty() {
        failed.push(format!(
            "{} requests counted more than once, e.g. {}",
            twice.len(),
            twice[0].describe()
        ));
    }
    if let Some(first) = joined.unexplained.first() {
        failed.push(format!(
            "{} 503 records for requests that got no 503, e.g. {}",
            joined.unexplained.len(),
            first.describe()
        ));
    }
}

fn push_problems(failed: &mut Vec<String>, what: String, tally: &Tally) {
    failed.push(what);
    failed.extend(tally.problems.iter().take(SHOWN).map(|p| format!("  {p}")));
}

/// What a fault scenario expects of the caller's 503s.
pub(super) struct Expect {
    pub(super) cause: &'static str,
    /// The fraction that must be attributed, per request and in the metrics.
    pub(super) min: f64,
    /// The far hop's failures are stale-connection failures.
    pub(super) stale: bool,
}

/// The caller's 503s, made at the far hop by `cause`: per request, at least
/// `min` of them counted once under `cause`, paired with the failure the
/// inbound sidecar hit; that failure not counted again as proxy-answered.
pub(super) fn far_fault(
    ms: &MeshStage,
    lab: &Lab,
    c: &Collected,
    expect: &Expect,
    name: &'static str,
    client: Value,
) -> Result<Outcome> {
    let &Expect { cause, min, stale } = expect;
    let joined = join(&evidence(c));
    let with_503: Vec<&Request> = joined
        .requests
        .iter()
        .filter(|r| r.out.code == 503)
        .collect();
    let tally = Tally::of(with_503.iter().copied(), |r| {
        r.attributed_at_far_hop(cause, SERVER_POD)
    });
    let counts = Counts::read(ms, c, cause);
    let mut lines = vec![format!("client: {client}")];
    lines.extend(summary(c));
    lines.push(format!(
        "per request: {} of the caller's {} 503s counted once under {cause}, paired with the far hop's failure ({:.1} %)",
        tally.passed,
        tally.checked,
        100.0 * tally.fraction()
    ));
    lines.push(counts.line(cause));
    let mut failed = Vec::new();
    let envoy_503 = with_503.len() as f64;
    if tally.fraction() < min {
        push_problems(
            &mut failed,
            format!(
                "only {} of {} 503s attributed per request (need {:.0} %)",
                tally.passed,
                tally.checked,
                100.0 * min
            ),
            &tally,
        );
    }
    double_counts(&joined, &mut failed);
    // A far failure a seen 503 took must not be proxy-answered too.
    let taken: Vec<_> = with_503
        .iter()
        .filter_map(|r| r.seen.first()?.failure.as_ref()?.local)
        .collect();
    let again: Vec<_> = c
        .answered
        .iter()
        .filter(|a| a.local.is_some_and(|l| taken.contains(&l)))
        .collect();
    if let Some(first) = again.first() {
        failed.push(format!(
            "{} failures counted both as a seen 503 and as proxy-answered, e.g. {}",
            again.len(),
            first.describe()
        ));
    }
    if counts.attributed < min * envoy_503 {
        failed.push(format!(
            "metrics: {} of the caller's {envoy_503} 503s counted under {cause}",
            counts.attributed
        ));
    }
    if counts.all_503 > envoy_503 {
        failed.push(format!(
            "metrics: {} 503s counted, the caller's sidecar wrote {envoy_503}",
            counts.all_503
        ));
    }
    let attributed_all = counts.all_503 - counts.unattributed;
    if attributed_all + counts.answered > envoy_503 {
        failed.push(format!(
            "metrics: {attributed_all} attributed 503s + {} proxy-answered > {envoy_503} failed requests (counted twice)",
            counts.answered
        ));
    }
    if counts.failures < 1.0 || (stale && counts.stale < 1.0) {
        failed.push(format!(
            "metrics: no {}failure with cause {cause}",
            if stale { "stale " } else { "" }
        ));
    }
    diagnosis(ms, lab, cause, &mut lines, &mut failed)?;
    if counts.attributed > 2.0 {
        alert(ms, cause, &mut lines, &mut failed);
    }
    ms.stage.dashboard_data(&mut lines);
    Ok(Outcome {
        name,
        lines,
        failed,
        not_reproduced: with_503
            .is_empty()
            .then(|| "the caller's sidecar logged no 503".to_owned()),
    })
}

/// Controls: every request answered 200, no 503 anywhere, and no failure
/// counted (stale or not) — per record and in the metrics; no alert but
/// the `expected` ones (warnings about the configuration that are true).
pub(super) fn clean(
    ms: &MeshStage,
    c: &Collected,
    name: &'static str,
    client: Value,
    expected: &[&str],
) -> Result<Outcome> {
    let counts = Counts::read(ms, c, "idle_timeout");
    let mut lines = vec![format!("client: {client}")];
    lines.extend(summary(c));
    lines.push(counts.line("idle_timeout"));
    let mut failed = Vec::new();
    let requests = client["requests"].as_u64().unwrap_or(0);
    let ok = client["status"]["200"].as_u64().unwrap_or(0);
    if requests == 0 || ok != requests || c.outbound.is_empty() {
        failed.push(format!("{ok} of {requests} requests answered 200"));
    }
    let logged_503 = c
        .outbound
        .iter()
        .chain(&c.inbound)
        .filter(|l| l.code == 503);
    if let Some(first) = logged_503.clone().next() {
        failed.push(format!(
            "the sidecars logged {} 503s, e.g. {}",
            logged_503.count(),
            first.describe()
        ));
    }
    if let Some(first) = c.seen.first() {
        failed.push(format!(
            "{} 503 records, e.g. {}",
            c.seen.len(),
            first.describe()
        ));
    }
    if let Some(first) = c.failures.first() {
        failed.push(format!(
            "{} failures recorded ({} stale), e.g. {}",
            c.failures.len(),
            c.failures.iter().filter(|f| f.stale).count(),
            first.describe()
        ));
    }
    if counts.all_failures > 0.0 || counts.all_503 > 0.0 || counts.answered > 0.0 {
        failed.push(format!(
            "metrics: {} failures ({} stale), {} 503s, {} proxy-answered in a control",
            counts.all_failures, counts.all_stale, counts.all_503, counts.answered
        ));
    }
    no_alerts(ms, expected, &mut lines, &mut failed)?;
    Ok(Outcome {
        name,
        lines,
        failed,
        not_reproduced: None,
    })
}

/// The app's own 503s, with failures the inbound sidecar retried away
/// around them: each 503 counted once, as a pass-through, never attributed.
pub(super) fn passed_through(
    ms: &MeshStage,
    c: &Collected,
    name: &'static str,
    client: Value,
) -> Result<Outcome> {
    let joined = join(&evidence(c));
    let with_503: Vec<&Request> = joined
        .requests
        .iter()
        .filter(|r| r.out.code == 503)
        .collect();
    let tally = Tally::of(with_503.iter().copied(), |r| r.passed_through());
    // Failures behind requests that a retry turned into a 200.
    let retried: Vec<&Line> = c
        .inbound
        .iter()
        .filter(|l| l.attempts > 1 && l.code == 200)
        .collect();
    let retried_failures = c
        .failures
        .iter()
        .filter(|f| {
            f.pod == SERVER_POD
                && retried
                    .iter()
                    .any(|l| f.time + Duration::from_millis(5) >= l.start && f.time <= l.end())
        })
        .count();
    let counts = Counts::read(ms, c, "peer_reset");
    let mut lines = vec![format!("client: {client}")];
    lines.extend(summary(c));
    lines.push(format!(
        "per request: {} of the app's {} 503s counted once, unattributed ({} marked passthrough); \
         {} requests retried to a 200 with {retried_failures} failures behind them",
        tally.passed,
        tally.checked,
        with_503
            .iter()
            .filter(|r| r.seen.iter().any(|s| s.passthrough))
            .count(),
        retried.len()
    ));
    lines.push(counts.line("peer_reset"));
    let mut failed = Vec::new();
    if tally.passed < tally.checked {
        push_problems(
            &mut failed,
            format!(
                "{} of the app's {} 503s not counted once unattributed",
                tally.checked - tally.passed,
                tally.checked
            ),
            &tally,
        );
    }
    double_counts(&joined, &mut failed);
    let attributed = counts.all_503 - counts.unattributed;
    if attributed > 0.0 {
        failed.push(format!("metrics: {attributed} 503s attributed"));
    }
    if counts.all_503 > with_503.len() as f64 {
        failed.push(format!(
            "metrics: {} 503s counted, the caller's sidecar wrote {}",
            counts.all_503,
            with_503.len()
        ));
    }
    let not_reproduced = if with_503.is_empty() {
        Some("the app answered no 503".to_owned())
    } else if retried_failures == 0 {
        Some("no failure retried to a 200 was seen".to_owned())
    } else {
        None
    };
    Ok(Outcome {
        name,
        lines,
        failed,
        not_reproduced,
    })
}

/// `diagnose` names `cause` (the pod it blames is reported).
fn diagnosis(
    ms: &MeshStage,
    lab: &Lab,
    cause: &str,
    lines: &mut Vec<String>,
    failed: &mut Vec<String>,
) -> Result<()> {
    let diagnose = ms.stage.diagnose(lab)?;
    let finding = diagnose["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["cause"] == cause && f["failures"].as_u64().unwrap_or(0) > 0);
    match finding {
        Some(f) => lines.push(format!(
            "diagnose: {} in {} — {}",
            f["kind"].as_str().unwrap_or(""),
            f["pod"].as_str().unwrap_or(""),
            f["remedy"]["summary"].as_str().unwrap_or("")
        )),
        None => failed.push(format!("diagnose has no finding with cause {cause}")),
    }
    Ok(())
}

/// The shipped 503 alert for `cause` fires in the scenario's Prometheus.
fn alert(ms: &MeshStage, cause: &str, lines: &mut Vec<String>, failed: &mut Vec<String>) {
    let alert = match cause {
        "idle_timeout" => "ConntracerIdleTimeout503s",
        "pod_terminating" => "ConntracerPodTerminating503s",
        _ => return,
    };
    let ns = ms.stage.namespace();
    match ms.stage.prometheus.wait_firing(
        alert,
        &[("namespace", ns.as_str())],
        Duration::from_secs(30),
    ) {
        Ok(()) => lines.push(format!("Prometheus: {alert} firing")),
        Err(e) => failed.push(format!("Prometheus: {e:#}")),
    }
}

/// Controls: once the rules had time to evaluate, no alert for the
/// namespace but the `expected` ones.
fn no_alerts(
    ms: &MeshStage,
    expected: &[&str],
    lines: &mut Vec<String>,
    failed: &mut Vec<String>,
) -> Result<()> {
    std::thread::sleep(Duration::from_secs(7));
    let ns = ms.stage.namespace();
    let (allowed, alerts): (Vec<_>, Vec<_>) = ms
        .stage
        .prometheus
        .alerts()?
        .into_iter()
        .filter(|(_, _, l)| l["namespace"] == ns.as_str())
        .partition(|(name, _, _)| expected.contains(&name.as_str()));
    let names = |alerts: &[(String, String, Value)]| {
        alerts
            .iter()
            .map(|(name, state, _)| format!("{name} ({state})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if alerts.is_empty() {
        lines.push(format!(
            "Prometheus: no alert for this namespace{}",
            if allowed.is_empty() {
                String::new()
            } else {
                format!(" but the expected {}", names(&allowed))
            }
        ));
    } else {
        failed.push(format!(
            "Prometheus alerts in a control: {}",
            names(&alerts)
        ));
    }
    Ok(())
}
