//! The fix for each cause, as ready-to-apply Istio YAML.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::cause::Cause;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remedy {
    pub summary: String,
    /// Ready-to-apply YAML, documents separated by `---`.
    pub yaml: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Where the fix applies: the destination as Istio names it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Kubernetes namespace of the calling pod.
    pub namespace: String,
    /// The destination's service host (best guess without Kubernetes: the peer pod's name).
    pub host: String,
    pub port: u16,
}

const RETRY_WARNING: &str = "retryOn `reset` re-sends requests whose connection died mid-flight; \
     only enable it for idempotent requests (GET, PUT with the same body, ...) or make the \
     handler idempotent";

fn name(host: &str) -> String {
    host.split('.').next().unwrap_or(host).to_owned()
}

fn retries(t: &Target, retry_on: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {name}-retries
  namespace: {ns}
spec:
  hosts:
  - {host}
  http:
  - route:
    - destination:
        host: {host}
        port:
          number: {port}
    retries:
      attempts: 2
      perTryTimeout: 2s
      retryOn: {retry_on}
",
        name = name(&t.host),
        ns = t.namespace,
        host = t.host,
        port = t.port
    )
}

/// An idle timeout a safe margin below the peer's: 1 s less, or 80 % for short ones.
pub fn idle_timeout_below(peer: Duration) -> Duration {
    let secs = peer.as_secs_f64();
    let below = if secs > 5.0 { secs - 1.0 } else { secs * 0.8 };
    // Whole tenths of a second read better in YAML and stay below.
    Duration::from_millis(((below * 10.0).floor() * 100.0).max(100.0) as u64)
}

/// `800ms`, `59s`: how Istio YAML writes a duration.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

pub fn for_cause(cause: Cause, t: &Target, learned_peer_idle: Option<Duration>) -> Remedy {
    match cause {
        Cause::IdleTimeout => idle_timeout(t, learned_peer_idle),
        Cause::PodTerminating => Remedy {
            summary: format!(
                "{} stopped listening while callers still held pooled connections: drain before exit, \
                 keep the sidecar up until the app is done, and retry on reset",
                t.host
            ),
            yaml: format!(
                "# On the destination's Deployment: stop receiving traffic before the app exits,
# and keep the sidecar alive while in-flight requests drain.
spec:
  template:
    metadata:
      annotations:
        proxy.istio.io/config: |
          terminationDrainDuration: 20s
          holdApplicationUntilProxyStarts: true
    spec:
      terminationGracePeriodSeconds: 45
      containers:
      - name: app
        lifecycle:
          preStop:
            exec:
              command: [\"sleep\", \"15\"]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {name}-outlier
  namespace: {ns}
spec:
  host: {host}
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 5s
      baseEjectionTime: 30s
---
{retries}",
                name = name(&t.host),
                ns = t.namespace,
                host = t.host,
                retries = retries(t, "reset,connect-failure,refused-stream")
            ),
            warnings: vec![RETRY_WARNING.to_owned()],
        },
        Cause::AppNotListening => Remedy {
            summary: format!(
                "nothing listens on the address the sidecar forwards to (port {}): bind the app to 0.0.0.0 \
                 (or ::), not 127.0.0.1; since Istio 1.10 the sidecar forwards to the pod IP",
                t.port
            ),
            yaml: format!(
                "# On the destination's Deployment: make the app listen on every address.
spec:
  template:
    spec:
      containers:
      - name: app
        env:
        - name: HOST        # or the app's own bind flag, e.g. --bind 0.0.0.0:{port}
          value: \"0.0.0.0\"
        ports:
        - containerPort: {port}
",
                port = t.port
            ),
            warnings: Vec::new(),
        },
        Cause::DnsStale => Remedy {
            summary: format!(
                "pooled connections outlived the DNS answer for {}: bound the pool's connection lifetime, \
                 let Istio re-resolve the name, and retry on connect failures and resets",
                t.host
            ),
            yaml: format!(
                "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: {name}
  namespace: {ns}
spec:
  hosts:
  - {host}
  location: MESH_EXTERNAL
  resolution: DNS
  ports:
  - number: {port}
    name: tcp-{port}
    protocol: TCP
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {name}-pool
  namespace: {ns}
spec:
  host: {host}
  trafficPolicy:
    connectionPool:
      http:
        maxConnectionDuration: 60s
---
{retries}",
                name = name(&t.host),
                ns = t.namespace,
                host = t.host,
                port = t.port,
                retries = retries(t, "connect-failure,reset")
            ),
            warnings: vec![RETRY_WARNING.to_owned()],
        },
        Cause::PeerReset => Remedy {
            summary: format!(
                "{} reset connections with requests in flight (not an idle close): retry on reset, and \
                 find why the destination aborts them (crashes, SO_LINGER 0 closes, request limits)",
                t.host
            ),
            yaml: retries(t, "reset,connect-failure"),
            warnings: vec![RETRY_WARNING.to_owned()],
        },
        Cause::Unknown => Remedy {
            summary: format!(
                "connections to {} failed (reset, refused or closed with a request in flight) without a \
                 pattern conntracer can name: retry on reset and connect failures, and look at the \
                 destination's logs around these times",
                t.host
            ),
            yaml: retries(t, "reset,connect-failure"),
            warnings: vec![RETRY_WARNING.to_owned()],
        },
    }
}

fn idle_timeout(t: &Target, learned: Option<Duration>) -> Remedy {
    let (idle, why) = match learned {
        Some(peer) => {
            let idle = idle_timeout_below(peer);
            (
                idle,
                format!(
                    "below the {} after which {} closes idle connections",
                    format_duration(peer),
                    t.host
                ),
            )
        }
        None => (
            Duration::from_secs(30),
            "below the destination's keep-alive timeout (not learned yet)".to_owned(),
        ),
    };
    Remedy {
        summary: format!(
            "the pool reuses connections {} has already closed for idleness: set the pool's idleTimeout to {} ({why}), \
             and retry on reset",
            t.host,
            format_duration(idle)
        ),
        yaml: format!(
            "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {name}-idle-timeout
  namespace: {ns}
spec:
  host: {host}
  trafficPolicy:
    connectionPool:
      http:
        idleTimeout: {idle}
      tcp:
        idleTimeout: {idle}
---
{retries}",
            name = name(&t.host),
            ns = t.namespace,
            host = t.host,
            idle = format_duration(idle),
            retries = retries(t, "reset,connect-failure")
        ),
        warnings: vec![RETRY_WARNING.to_owned()],
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize as _;
    use serde_yaml::Value;

    use super::*;

    fn target() -> Target {
        Target {
            namespace: "shop".into(),
            host: "cart.shop.svc.cluster.local".into(),
            port: 8080,
        }
    }

    /// The YAML documents of a remedy, parsed.
    fn documents(r: &Remedy) -> Vec<Value> {
        serde_yaml::Deserializer::from_str(&r.yaml)
            .map(|doc| Value::deserialize(doc).expect("valid YAML"))
            .collect()
    }

    /// The one document of `kind`.
    fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
        let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
        assert_eq!(found.len(), 1, "one {kind} in {docs:?}");
        found[0]
    }

    fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
        path.split('.')
            .fold(v, |v, key| match key.parse::<usize>() {
                Ok(i) => &v[i],
                Err(_) => &v[key],
            })
    }

    /// The VirtualService retries for the host, with `retry_on`.
    fn assert_retries(docs: &[Value], retry_on: &str) {
        let vs = kind(docs, "VirtualService");
        assert_eq!(at(vs, "apiVersion"), "networking.istio.io/v1");
        assert_eq!(at(vs, "metadata.namespace"), "shop");
        assert_eq!(at(vs, "spec.hosts.0"), "cart.shop.svc.cluster.local");
        let route = at(vs, "spec.http.0");
        assert_eq!(
            at(route, "route.0.destination.host"),
            "cart.shop.svc.cluster.local"
        );
        assert_eq!(at(route, "route.0.destination.port.number"), 8080);
        assert_eq!(at(route, "retries.retryOn"), retry_on);
        assert_eq!(at(route, "retries.attempts"), 2);
    }

    #[test]
    fn idle_timeout_sits_below_the_peer() {
        assert_eq!(
            idle_timeout_below(Duration::from_secs(60)),
            Duration::from_secs(59)
        );
        assert_eq!(
            idle_timeout_below(Duration::from_secs(2)),
            Duration::from_millis(1600)
        );
        assert_eq!(
            idle_timeout_below(Duration::from_millis(1005)),
            Duration::from_millis(800)
        );
    }

    #[test]
    fn idle_timeout_fix_sets_the_pool_idle_timeout_below_the_peers() {
        let r = for_cause(Cause::IdleTimeout, &target(), Some(Duration::from_secs(2)));
        let docs = documents(&r);
        let dr = kind(&docs, "DestinationRule");
        assert_eq!(at(dr, "spec.host"), "cart.shop.svc.cluster.local");
        assert_eq!(at(dr, "metadata.namespace"), "shop");
        let pool = at(dr, "spec.trafficPolicy.connectionPool");
        assert_eq!(at(pool, "http.idleTimeout"), "1600ms");
        assert_eq!(at(pool, "tcp.idleTimeout"), "1600ms");
        assert_retries(&docs, "reset,connect-failure");
        assert!(
            r.summary.contains("1600ms") && r.summary.contains("2s"),
            "{}",
            r.summary
        );
        assert_eq!(r.warnings, [RETRY_WARNING]);
        // Not learned yet: a conservative default, said so.
        let unknown = for_cause(Cause::IdleTimeout, &target(), None);
        let docs = documents(&unknown);
        let pool = at(
            kind(&docs, "DestinationRule"),
            "spec.trafficPolicy.connectionPool",
        );
        assert_eq!(at(pool, "http.idleTimeout"), "30s");
        assert!(unknown.summary.contains("not learned yet"));
    }

    #[test]
    fn dns_stale_fix_re_resolves_and_bounds_connection_lifetime() {
        let r = for_cause(Cause::DnsStale, &target(), None);
        let docs = documents(&r);
        let se = kind(&docs, "ServiceEntry");
        assert_eq!(at(se, "spec.hosts.0"), "cart.shop.svc.cluster.local");
        assert_eq!(at(se, "spec.resolution"), "DNS");
        assert_eq!(at(se, "spec.ports.0.number"), 8080);
        let dr = kind(&docs, "DestinationRule");
        assert_eq!(at(dr, "spec.host"), "cart.shop.svc.cluster.local");
        assert_eq!(
            at(
                dr,
                "spec.trafficPolicy.connectionPool.http.maxConnectionDuration"
            ),
            "60s"
        );
        assert_retries(&docs, "connect-failure,reset");
    }

    #[test]
    fn pod_terminating_fix_drains_and_ejects() {
        let r = for_cause(Cause::PodTerminating, &target(), None);
        let docs = documents(&r);
        // The Deployment patch (no kind: it is a patch), the outlier detection, the retries.
        let patch = docs
            .iter()
            .find(|d| d["kind"].is_null())
            .expect("a Deployment patch");
        assert_eq!(
            at(patch, "spec.template.spec.terminationGracePeriodSeconds"),
            45
        );
        assert_eq!(
            at(
                patch,
                "spec.template.spec.containers.0.lifecycle.preStop.exec.command.1"
            ),
            "15"
        );
        let proxy_config = at(patch, "spec.template.metadata.annotations")["proxy.istio.io/config"]
            .as_str()
            .expect("proxy config annotation");
        assert!(proxy_config.contains("terminationDrainDuration: 20s"));
        let dr = kind(&docs, "DestinationRule");
        assert_eq!(at(dr, "spec.host"), "cart.shop.svc.cluster.local");
        assert_eq!(
            at(
                dr,
                "spec.trafficPolicy.outlierDetection.consecutive5xxErrors"
            ),
            3
        );
        assert_retries(&docs, "reset,connect-failure,refused-stream");
    }

    #[test]
    fn app_not_listening_fix_binds_every_address_on_the_port() {
        let r = for_cause(Cause::AppNotListening, &target(), None);
        let docs = documents(&r);
        assert_eq!(docs.len(), 1);
        let container = at(&docs[0], "spec.template.spec.containers.0");
        assert_eq!(at(container, "env.0.value"), "0.0.0.0");
        assert_eq!(at(container, "ports.0.containerPort"), 8080);
        assert!(r.summary.contains("port 8080") && r.summary.contains("0.0.0.0"));
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn peer_reset_and_unknown_fixes_retry() {
        for cause in [Cause::PeerReset, Cause::Unknown] {
            let r = for_cause(cause, &target(), None);
            let docs = documents(&r);
            assert_eq!(docs.len(), 1, "{cause:?}");
            assert_retries(&docs, "reset,connect-failure");
            assert!(r.summary.contains("cart.shop.svc.cluster.local"));
        }
    }
}
