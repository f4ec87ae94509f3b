use super::*;
use crate::analysis::direction::Direction;
use std::time::Duration;

fn labels(pod: &str, id: PodId) -> Labels {
    Labels {
        namespace: "shop".into(),
        pod: pod.into(),
        workload: None,
        direction: Direction::Outbound,
        peer: "port-80".into(),
        ids: Some(LabelIds { pod: id, peer: 0 }),
    }
}

fn opened(pod: &str) -> Observation {
    let id = if pod == "cart" { 1 } else { 2 };
    Observation::Opened {
        labels: labels(pod, id),
        role: Role::Client,
    }
}

fn series(m: &Metrics, line_start: &str) -> Vec<String> {
    m.encode()
        .lines()
        .filter(|l| l.starts_with(line_start))
        .map(str::to_owned)
        .collect()
}

#[test]
fn cached_handles_count_into_the_exported_series_until_the_pod_goes() {
    let m = Metrics::new("0", "6.1", &[], false);
    let closed = |pod: &str, id| Observation::Closed {
        labels: labels(pod, id),
        lifetime: Some(Duration::from_secs(2)),
        peer_idle_close: Some(Duration::from_secs(5)),
    };
    for _ in 0..3 {
        m.observe(&opened("cart"));
        m.observe(&closed("cart", 1));
        m.observe(&Observation::Reuse {
            labels: labels("cart", 1),
            idle: Duration::from_secs(1),
        });
        m.observe(&Observation::Reset {
            labels: labels("cart", 1),
            side: ResetSide::Received,
            reason: "peer".into(),
        });
    }
    assert_eq!(
        series(&m, "conntracer_connections_opened_total{"),
        [
            "conntracer_connections_opened_total{namespace=\"shop\",pod=\"cart\",direction=\"outbound\",role=\"client\"} 3"
        ]
    );
    assert!(
        series(&m, "conntracer_resets_total{")[0].ends_with(" 3"),
        "{:?}",
        series(&m, "conntracer_resets_total{")
    );
    for family in [
        "conntracer_connection_lifetime_seconds_count{",
        "conntracer_peer_idle_close_seconds_count{",
        "conntracer_idle_before_reuse_seconds_count{",
    ] {
        let found = series(&m, family);
        assert!(found.len() == 1 && found[0].ends_with(" 3"), "{found:?}");
    }
    assert_eq!(m.series.lock().unwrap().handles.len(), 5);
    m.observe(&Observation::PodForgotten {
        namespace: "shop".into(),
        pod: "cart".into(),
    });
    assert_eq!(m.series.lock().unwrap().handles.len(), 0, "dropped");
    // Labelled again (a new id): a new series from zero, not the old one revived.
    m.observe(&Observation::Opened {
        labels: labels("cart", 7),
        role: Role::Client,
    });
    assert!(series(&m, "conntracer_connections_opened_total{")[0].ends_with(" 1"));
}

#[test]
fn a_workload_named_later_makes_its_own_series() {
    let m = Metrics::new("0", "6.1", &[], false);
    m.observe(&opened("cart"));
    let mut named = labels("cart", 1);
    named.workload = Some("cart".into());
    m.observe(&Observation::Opened {
        labels: named,
        role: Role::Client,
    });
    let found = series(&m, "conntracer_connections_opened_total{");
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|l| l.contains("workload=\"cart\"")));
}

#[test]
fn a_forgotten_pod_loses_its_series_and_no_one_else_does() {
    let m = Metrics::new("0", "6.1", &[], false);
    m.observe(&opened("cart"));
    m.observe(&opened("web"));
    assert!(m.encode().contains("pod=\"cart\""));
    m.observe(&Observation::PodForgotten {
        namespace: "shop".into(),
        pod: "cart".into(),
    });
    let text = m.encode();
    assert!(!text.contains("pod=\"cart\""), "{text}");
    assert!(text.contains("pod=\"web\""), "{text}");
}
