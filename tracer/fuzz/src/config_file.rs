//! Config files (`--config`): TOML parsed into settings, then resolved with
//! the defaults as every subcommand does.

use tracer::config::{Config, Environment, parse_file};

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(settings) = parse_file(text, "fuzz.toml") else {
        return;
    };
    let env = Environment {
        in_cluster: false,
        node_name: None,
        hostname: "node-1".to_owned(),
    };
    let Ok(config) = Config::from_settings(settings, &env) else {
        return;
    };
    // What resolution promises the probes and the analysis.
    let probes = &config.probes;
    assert!(probes.ring_bytes.is_power_of_two() && probes.ring_bytes >= 4096);
    assert!(probes.max_connections >= 1);
    assert!(!probes.drain_interval.is_zero());
    let analysis = &config.analysis;
    assert!(analysis.peer_cap >= 1);
    assert!(!analysis.attribution_window.is_zero());
    // Durations travel as u64 nanoseconds (to the programs, in the analysis).
    for duration in [
        probes.reuse_event_min_idle,
        probes.drain_interval,
        analysis.attribution_window,
        analysis.termination_window,
        analysis.settle,
    ] {
        assert!(
            u64::try_from(duration.as_nanos()).is_ok(),
            "{duration:?} does not fit u64 nanoseconds"
        );
    }
}
