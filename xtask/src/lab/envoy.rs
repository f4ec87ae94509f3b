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
    /// Resolve `upstream` by DNS (a LOGICAL_DNS cluster) with this server.
    pub dns: Option<Dns<'a>>,
}

pub struct Dns<'a> {
    pub resolver: &'a str,
    /// Envoy 1.40's new DNS implementation drains connections to a changed
    /// address; `false` gives the classic behaviour users hit.
    pub new_implementation: bool,
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
    let (cluster_type, dns_config) = match &s.dns {
        Some(d) => (
            "LOGICAL_DNS",
            format!(
                r#"
    dns_lookup_family: V4_ONLY
    dns_refresh_rate: 1s
    respect_dns_ttl: true
    typed_dns_resolver_config:
      name: envoy.network.dns_resolver.cares
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig
        resolvers:
        - socket_address: {{ address: {}, port_value: 53 }}
        use_resolvers_as_fallback: false"#,
                d.resolver
            ),
        ),
        None => ("STATIC", String::new()),
    };
    let runtime = match &s.dns {
        Some(d) => format!(
            r#"layered_runtime:
  layers:
  - name: static
    static_layer:
      envoy.reloadable_features.enable_new_dns_implementation: {}
"#,
            d.new_implementation
        ),
        None => String::new(),
    };
    format!(
        r#"{runtime}static_resources:
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
    type: {cluster_type}
    connect_timeout: 1s{dns_config}{protocol_options}
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
