//! Envoy sidecar configurations, as Istio shapes them: an outbound listener
//! the app calls, or an inbound listener that iptables redirects to. Access
//! logs record the response code and `%RESPONSE_FLAGS%`.

use std::{path::Path, time::Duration};

pub struct Sidecar<'a> {
    pub listen: &'a str,
    pub port: u16,
    pub upstream: &'a str,
    pub upstream_port: u16,
    /// The pool's idle timeout (Envoy's default is 1 h).
    pub idle_timeout: Option<Duration>,
    pub access_log: &'a Path,
}

pub fn config(s: &Sidecar) -> String {
    let protocol_options = match s.idle_timeout {
        Some(t) => format!(
            r#"
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        common_http_protocol_options:
          idle_timeout: {}s
        explicit_http_config:
          http_protocol_options: {{}}"#,
            t.as_secs_f64()
        ),
        None => String::new(),
    };
    format!(
        r#"static_resources:
  listeners:
  - name: sidecar
    address:
      socket_address: {{ address: {listen}, port_value: {port} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: sidecar
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {log}
              log_format:
                text_format_source:
                  inline_string: "%START_TIME% %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_TRANSPORT_FAILURE_REASON%\n"
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: upstream }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s{protocol_options}
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

/// Envoy's access log: (response code, flags) per request.
pub fn read_access_log(path: &Path) -> Vec<(u16, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let _time = parts.next()?;
            let code = parts.next()?.parse().ok()?;
            Some((code, parts.next().unwrap_or("-").to_owned()))
        })
        .collect()
}
