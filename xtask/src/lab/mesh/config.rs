//! Envoy configurations of the mesh's two sidecars, as Istio shapes them:
//! the caller's outbound sidecar originates mTLS to the server pod; the
//! server pod's inbound sidecar, behind iptables REDIRECT, terminates it
//! (client certificate required) and forwards plaintext to the app.
//! Their access logs carry what the per-request joins need.

use std::{path::Path, time::Duration};

use super::certs::Identity;

/// The access log line of both sidecars (see `access_log::Line`): the
/// brief's seven fields, then the attempt count (a retried request shows
/// > 1) and the path.
pub(crate) const LOG_FORMAT: &str = "%START_TIME% %DURATION% %RESPONSE_CODE% %RESPONSE_FLAGS% \
     %DOWNSTREAM_REMOTE_ADDRESS% %UPSTREAM_LOCAL_ADDRESS% %UPSTREAM_TRANSPORT_FAILURE_REASON% \
     %UPSTREAM_REQUEST_ATTEMPT_COUNT% %REQ(:PATH)%";

/// Which end of the mTLS hop a sidecar is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Plaintext from the caller, mTLS upstream.
    Outbound,
    /// mTLS from the peer sidecar, plaintext to the app.
    Inbound,
}

pub(crate) struct MeshSidecar<'a> {
    pub(crate) side: Side,
    pub(crate) listen: &'a str,
    pub(crate) port: u16,
    pub(crate) upstream: &'a str,
    pub(crate) upstream_port: u16,
    /// The server pod's service name, in the SNI as Istio writes it.
    pub(crate) service_host: &'a str,
    /// This sidecar's certificate and the root it trusts.
    pub(crate) identity: &'a Identity,
    /// The SPIFFE identity the peer sidecar must present.
    pub(crate) peer_spiffe: &'a str,
    /// The upstream pool's idle timeout (Envoy's default is 1 h).
    pub(crate) pool_idle: Option<Duration>,
    /// The connection manager's idle timeout on downstream connections.
    pub(crate) downstream_idle: Option<Duration>,
    /// The route's `retry_on` (no retries when `None`).
    pub(crate) retry_on: Option<&'a str>,
    pub(crate) access_log: &'a Path,
}

pub(crate) fn config(s: &MeshSidecar) -> String {
    let name = match s.side {
        Side::Outbound => "outbound",
        Side::Inbound => "inbound",
    };
    let tls = common_tls(s);
    // The outbound sidecar presents its certificate to the server pod; the
    // inbound one requires the caller's.
    let (listener_tls, cluster_tls) = match s.side {
        Side::Outbound => (
            String::new(),
            format!(
                r#"
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: outbound_.{port}_._.{host}
{tls}"#,
                port = s.upstream_port,
                host = s.service_host,
            ),
        ),
        Side::Inbound => (
            format!(
                r#"
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
{}"#,
                indent(&tls, 2)
            ),
            String::new(),
        ),
    };
    // On an idle HTTP/1 connection Envoy first drains (the next response
    // says `Connection: close`) and closes only after `drain_timeout` (5 s
    // by default), then waits `delayed_close_timeout` (1 s) for the peer to
    // close first: both shortened, the sidecar itself closes idle
    // connections (close_notify and FIN).
    let downstream_idle = s.downstream_idle.map_or(String::new(), |t| {
        format!(
            "\n          common_http_protocol_options: {{ idle_timeout: {}s }}\n          drain_timeout: 0.05s\n          delayed_close_timeout: 0s",
            t.as_secs_f64()
        )
    });
    let pool_idle = s.pool_idle.map_or(String::new(), |t| {
        format!(
            r#"
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        common_http_protocol_options:
          idle_timeout: {}s
        explicit_http_config:
          http_protocol_options: {{}}"#,
            t.as_secs_f64()
        )
    });
    let retry = s.retry_on.map_or(String::new(), |on| {
        format!(", retry_policy: {{ retry_on: \"{on}\", num_retries: 2 }}")
    });
    format!(
        r#"static_resources:
  listeners:
  - name: {name}
    address:
      socket_address: {{ address: {listen}, port_value: {port} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}{downstream_idle}
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {log}
              log_format:
                text_format_source:
                  inline_string: "{LOG_FORMAT}\n"
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: upstream{retry} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router{listener_tls}
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s{pool_idle}{cluster_tls}
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: {upstream}, port_value: {upstream_port} }}
"#,
        listen = s.listen,
        port = s.port,
        log = s.access_log.display(),
        upstream = s.upstream,
        upstream_port = s.upstream_port,
    )
}

/// `common_tls_context` at the indentation of an `UpstreamTlsContext`'s fields.
fn common_tls(s: &MeshSidecar) -> String {
    let id = s.identity;
    format!(
        r#"        common_tls_context:
          tls_params:
            tls_minimum_protocol_version: TLSv1_2
            tls_maximum_protocol_version: TLSv1_3
          tls_certificates:
          - certificate_chain: {{ filename: {cert} }}
            private_key: {{ filename: {key} }}
          validation_context:
            trusted_ca: {{ filename: {ca} }}
            match_typed_subject_alt_names:
            - san_type: URI
              matcher: {{ exact: "{peer}" }}"#,
        cert = id.cert.display(),
        key = id.key.display(),
        ca = id.ca.display(),
        peer = s.peer_spiffe,
    )
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn identity() -> Identity {
        Identity {
            cert: PathBuf::from("/c/a.crt"),
            key: PathBuf::from("/c/a.key"),
            ca: PathBuf::from("/c/ca.crt"),
            spiffe: "spiffe://cluster.local/ns/lab/sa/a".into(),
        }
    }

    fn sidecar<'a>(side: Side, id: &'a Identity) -> MeshSidecar<'a> {
        MeshSidecar {
            side,
            listen: "0.0.0.0",
            port: 15006,
            upstream: "127.0.0.1",
            upstream_port: 8080,
            service_host: "b.lab.svc.cluster.local",
            identity: id,
            peer_spiffe: "spiffe://cluster.local/ns/lab/sa/b",
            pool_idle: Some(Duration::from_millis(600)),
            downstream_idle: Some(Duration::from_millis(500)),
            retry_on: Some("reset,connect-failure"),
            access_log: Path::new("/l/access.log"),
        }
    }

    /// Both configurations are YAML whose TLS context sits where Envoy reads it.
    #[test]
    fn tls_sits_on_the_listener_inbound_and_on_the_cluster_outbound() {
        let id = identity();
        for side in [Side::Inbound, Side::Outbound] {
            let yaml: serde_yaml::Value =
                serde_yaml::from_str(&config(&sidecar(side, &id))).expect("valid YAML");
            let resources = &yaml["static_resources"];
            let chain = &resources["listeners"][0]["filter_chains"][0];
            let cluster = &resources["clusters"][0];
            let (tls, plain) = match side {
                Side::Inbound => (&chain["transport_socket"], &cluster["transport_socket"]),
                Side::Outbound => (&cluster["transport_socket"], &chain["transport_socket"]),
            };
            let ctx = &tls["typed_config"];
            assert!(plain.is_null());
            assert_eq!(
                ctx["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0]
                    ["matcher"]["exact"],
                "spiffe://cluster.local/ns/lab/sa/b"
            );
            assert_eq!(
                ctx["require_client_certificate"].as_bool(),
                (side == Side::Inbound).then_some(true)
            );
            let hcm = &chain["filters"][0]["typed_config"];
            assert_eq!(hcm["common_http_protocol_options"]["idle_timeout"], "0.5s");
            assert_eq!(
                hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["retry_policy"]["retry_on"],
                "reset,connect-failure"
            );
            assert_eq!(
                cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
                    ["common_http_protocol_options"]["idle_timeout"],
                "0.6s"
            );
        }
    }
}
