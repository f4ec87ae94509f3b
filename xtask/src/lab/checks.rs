//! What a scenario is judged on: for a fault, Envoy's 503s counted under the
//! right cause, the failures, `diagnose`'s finding and the matching alert in
//! Prometheus; for a control, nothing of that at all.

use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use super::{Lab, Outcome, SETTLE, scrape, stage::Stage};

/// The common checks of a fault scenario: Envoy's 503s reproduced, at least
/// 95 % of them counted under `cause`, stale failures (if `stale`) or
/// failures under `cause`, and a diagnose finding naming it with a fix.
pub(super) fn check_fault(
    stage: &Stage,
    lab: &Lab,
    pod: &str,
    cause: &str,
    stale: bool,
    name: &'static str,
) -> Result<Outcome> {
    std::thread::sleep(SETTLE);
    let ns = stage.namespace();
    let log = stage.scenario_log();
    let envoy_503 = log.iter().filter(|(c, _)| *c == 503).count() as f64;
    let mut flags: Vec<String> = log
        .iter()
        .filter(|(c, _)| *c == 503)
        .map(|(_, f)| f.clone())
        .collect();
    flags.sort();
    flags.dedup();
    let m = scrape::metrics(stage.daemon)?;
    let attributed = stage.delta(
        &m,
        "conntracer_http_503_total",
        &[("namespace", &ns), ("pod", pod), ("cause", cause)],
    );
    let all_503 = stage.delta(&m, "conntracer_http_503_total", &[("namespace", &ns)]);
    let failures = stage.delta(
        &m,
        "conntracer_connection_failures_total",
        &[("namespace", &ns), ("cause", cause)],
    );
    let stale_failures = stage.delta(
        &m,
        "conntracer_stale_connection_failures_total",
        &[("namespace", &ns), ("cause", cause)],
    );
    let diagnose = stage.diagnose(lab)?;
    let finding = diagnose["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["cause"] == cause && f["pod"] == pod && f["failures"].as_u64().unwrap_or(0) > 0)
        .cloned();

    let mut lines = vec![
        format!(
            "Envoy access log: {} requests, {envoy_503} x 503 (flags {})",
            log.len(),
            flags.join(",")
        ),
        format!(
            "conntracer_http_503_total{{pod=\"{pod}\",cause=\"{cause}\"}} = {attributed} (all causes: {all_503})"
        ),
        format!(
            "conntracer_connection_failures_total{{cause=\"{cause}\"}} = {failures}, stale = {stale_failures}"
        ),
    ];
    let mut failed = Vec::new();
    let not_reproduced =
        (envoy_503 < 1.0).then(|| "the scenario produced no 503 in Envoy's access log".to_owned());
    if attributed < 0.95 * envoy_503 {
        failed.push(format!(
            "only {attributed} of Envoy's {envoy_503} 503s counted under {cause}"
        ));
    }
    if all_503 > envoy_503 {
        failed.push(format!("counted {all_503} 503s, Envoy wrote {envoy_503}"));
    }
    if failures < 1.0 || (stale && stale_failures < 1.0) {
        failed.push(format!(
            "no {}failure with cause {cause}",
            if stale { "stale " } else { "" }
        ));
    }
    // The shipped alert for this cause fires in a real Prometheus.
    if not_reproduced.is_none() {
        let alert = match cause {
            "idle_timeout" => Some("ConntracerIdleTimeout503s"),
            "pod_terminating" => Some("ConntracerPodTerminating503s"),
            "app_not_listening" => Some("ConntracerAppNotListening503s"),
            _ => None,
        };
        let (alert, labels, count) = match alert {
            Some(a) => (
                a,
                vec![("namespace", ns.as_str()), ("pod", pod)],
                attributed,
            ),
            // Causes without a 503 alert of their own: the stale-failure alert.
            None => (
                "ConntracerStaleConnectionFailures",
                vec![("namespace", ns.as_str()), ("cause", cause)],
                stale_failures,
            ),
        };
        // The alerts count more than two in their window.
        if count <= 2.0 {
            lines.push(format!(
                "Prometheus: {count} counted, below {alert}'s threshold (> 2)"
            ));
        } else {
            match stage
                .prometheus
                .wait_firing(alert, &labels, Duration::from_secs(30))
            {
                Ok(()) => lines.push(format!("Prometheus: {alert} firing")),
                Err(e) => failed.push(format!("Prometheus: {e:#}")),
            }
        }
    }
    stage.dashboard_data(&mut lines);
    match finding {
        Some(f) => {
            lines.push(format!(
                "diagnose: {} — {}",
                f["kind"].as_str().unwrap_or(""),
                f["remedy"]["summary"].as_str().unwrap_or("")
            ));
            if f["remedy"]["yaml"].as_str().unwrap_or("").is_empty() {
                failed.push("the finding has no fix".to_owned());
            }
        }
        None => failed.push(format!(
            "diagnose has no finding with cause {cause} for pod {pod}"
        )),
    }
    Ok(Outcome {
        name,
        lines,
        failed,
        not_reproduced,
    })
}

/// Controls: Envoy writes no 503 and conntracer attributes none.
pub(super) fn check_clean(stage: &Stage, name: &'static str, summary: Value) -> Result<Outcome> {
    std::thread::sleep(SETTLE);
    let ns = stage.namespace();
    let log = stage.scenario_log();
    let envoy_503 = log.iter().filter(|(c, _)| *c == 503).count();
    let m = scrape::metrics(stage.daemon)?;
    let failures = stage.delta(
        &m,
        "conntracer_connection_failures_total",
        &[("namespace", &ns)],
    );
    let http_503 = stage.delta(&m, "conntracer_http_503_total", &[("namespace", &ns)]);
    let opened = stage.delta(
        &m,
        "conntracer_connections_opened_total",
        &[("namespace", &ns)],
    );
    let mut lines = vec![
        format!("client: {summary}"),
        format!(
            "Envoy access log: {} requests, {envoy_503} x 503",
            log.len()
        ),
        format!("conntracer: {opened} connections opened, {failures} failures, {http_503} 503s"),
    ];
    let mut failed = Vec::new();
    if log.is_empty() || opened < 1.0 {
        failed.push("no traffic was seen".to_owned());
    }
    if envoy_503 > 0 {
        failed.push(format!("Envoy wrote {envoy_503} 503s in a control"));
    }
    if failures > 0.0 || http_503 > 0.0 {
        failed.push(format!(
            "{failures} failures and {http_503} 503s attributed in a control"
        ));
    }
    let not_reproduced = None;
    // Give the rules time to evaluate (their `for:` is 5 s here), then none
    // may fire or be pending for this namespace.
    std::thread::sleep(Duration::from_secs(7));
    let alerts: Vec<String> = stage
        .prometheus
        .alerts()?
        .into_iter()
        .filter(|(_, _, l)| l["namespace"] == ns.as_str())
        .map(|(name, state, _)| format!("{name} ({state})"))
        .collect();
    if alerts.is_empty() {
        lines.push("Prometheus: no alert for this namespace".to_owned());
    } else {
        failed.push(format!(
            "Prometheus alerts in a control: {}",
            alerts.join(", ")
        ));
    }
    stage.dashboard_data(&mut lines);
    Ok(Outcome {
        name,
        lines,
        failed,
        not_reproduced,
    })
}
