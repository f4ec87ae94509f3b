use super::*;

/// A config file removed when dropped.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn file(text: &str) -> TempFile {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "conntracer-config-{}-{}.toml",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&path, text).unwrap();
    TempFile(path)
}

#[test]
fn flags_win_over_the_file_which_wins_over_defaults() {
    let f = file(
        "listen = \"127.0.0.1:9999\"\npeer_cap = 5\nattribution_window = 2\n\
         termination_window = \"30s\"\nring_bytes = 8192\ndns = false\n",
    );
    let flags = Settings {
        peer_cap: Some(7),
        ..Settings::default()
    };
    let daemon = Settings {
        listen: Some(DEFAULT_LISTEN.parse().unwrap()),
        ..Settings::default()
    };
    let c = Config::resolve(flags, Some(&f.0), daemon, &Environment::default()).unwrap();
    assert_eq!(c.listen, Some("127.0.0.1:9999".parse().unwrap()));
    assert_eq!(c.analysis.peer_cap, 7);
    assert_eq!(c.analysis.attribution_window, Duration::from_secs(2));
    assert_eq!(c.analysis.termination_window, Duration::from_secs(30));
    assert_eq!(c.probes.ring_bytes, 8192);
    assert!(!c.probes.dns_capture);
    assert!(c.probes.http_peek);
    let plain = Config::default();
    assert_eq!(plain.listen, None);
    assert_eq!(plain.analysis.peer_cap, 20);
    assert_eq!(plain.analysis.pod_cap, 500);
    assert_eq!(plain.analysis.findings_cap, 1000);
    assert_eq!(plain.http.max_connections, 512);
    assert_eq!(plain.http.timeout, Duration::from_secs(10));
    let f =
        file("pod_cap = 7\nfindings_cap = 9\nhttp_max_connections = 3\nhttp_timeout = \"2s\"\n");
    let c = Config::resolve(
        Settings::default(),
        Some(&f.0),
        Settings::default(),
        &Environment::default(),
    )
    .unwrap();
    assert_eq!((c.analysis.pod_cap, c.analysis.findings_cap), (7, 9));
    assert_eq!(
        (c.http.max_connections, c.http.timeout),
        (3, Duration::from_secs(2))
    );
}

/// Durations past u64 nanoseconds wrapped silently where they were
/// converted (`as_nanos() as u64`): found reviewing the config fuzz
/// target's invariant.
#[test]
fn durations_beyond_u64_nanoseconds_are_rejected() {
    for text in [
        "attribution_window = \"1000 years\"\n",
        "termination_window = 1e12\n",
        "reuse_event_min_idle = 18446744074\n",
        "drain_interval = \"600years\"\n",
    ] {
        let settings = parse_file(text, "t.toml").unwrap();
        let err = Config::from_settings(settings, &Environment::default()).unwrap_err();
        assert!(err.to_string().contains("too long"), "{text}: {err}");
    }
    let settings = parse_file("termination_window = \"500 years\"\n", "t.toml").unwrap();
    let c = Config::from_settings(settings, &Environment::default()).unwrap();
    assert!(u64::try_from(c.analysis.termination_window.as_nanos()).is_ok());
}

#[test]
fn kubernetes_is_used_in_a_cluster_or_with_a_kubeconfig() {
    let plain = Environment {
        hostname: "vm".into(),
        ..Environment::default()
    };
    let c = Config::resolve(Settings::default(), None, Settings::default(), &plain).unwrap();
    assert_eq!(c.identity, Identity::NetnsNames);
    let pod = Environment {
        in_cluster: true,
        node_name: Some("node-a".into()),
        hostname: "conntracer-x7".into(),
    };
    let c = Config::resolve(Settings::default(), None, Settings::default(), &pod).unwrap();
    assert_eq!(
        c.identity,
        Identity::Kubernetes {
            kubeconfig: None,
            node: "node-a".into()
        }
    );
    let off = Settings {
        kubernetes: Some(false),
        ..Settings::default()
    };
    let c = Config::resolve(off, None, Settings::default(), &pod).unwrap();
    assert_eq!(c.identity, Identity::NetnsNames);
    let kubeconfig = Settings {
        kubeconfig: Some("/etc/kube/config".into()),
        ..Settings::default()
    };
    let c = Config::resolve(kubeconfig, None, Settings::default(), &plain).unwrap();
    assert_eq!(
        c.identity,
        Identity::Kubernetes {
            kubeconfig: Some("/etc/kube/config".into()),
            node: "vm".into()
        },
        "the hostname names the node when nothing else does"
    );
}

#[test]
fn errors_name_the_flag_or_key_once() {
    let missing = Config::resolve(
        Settings::default(),
        Some(Path::new("/nonexistent/conntracer.toml")),
        Settings::default(),
        &Environment::default(),
    )
    .unwrap_err();
    let chain = format!("{:#}", anyhow::Error::from(missing));
    assert_eq!(
        chain.matches("No such file or directory").count(),
        1,
        "{chain}"
    );
    assert!(chain.starts_with("cannot read config file /nonexistent/conntracer.toml: "));

    let unknown = file("colour = \"blue\"\n");
    let e = Config::resolve(
        Settings::default(),
        Some(&unknown.0),
        Settings::default(),
        &Environment::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("colour"), "{e}");

    let bad = file("termination_window = \"soon\"\n");
    let e = Config::resolve(
        Settings::default(),
        Some(&bad.0),
        Settings::default(),
        &Environment::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("key `termination_window`: `soon` is not a duration"),
        "{e}"
    );

    let zero = Settings {
        peer_cap: Some(0),
        ..Settings::default()
    };
    let e = Config::resolve(zero, None, Settings::default(), &Environment::default())
        .unwrap_err()
        .to_string();
    assert_eq!(e, "--peer-cap / peer_cap: must be at least 1");
    let zero = Settings {
        http_max_connections: Some(0),
        ..Settings::default()
    };
    let e = Config::resolve(zero, None, Settings::default(), &Environment::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "--http-max-connections / http_max_connections: must be at least 1"
    );
    let ring = Settings {
        ring_bytes: Some(5000),
        ..Settings::default()
    };
    let e = Config::resolve(ring, None, Settings::default(), &Environment::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("--ring-bytes / ring_bytes: ring buffer size 5000"),
        "{e}"
    );
}
