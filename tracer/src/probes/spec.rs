//! The programs conntracer attaches, where, and what each one's absence costs.

use tracer_common::config::ProbeConfig;

use super::modes::{ActivitySource, DnsSource, Modes};

use crate::kernel::{
    format::TracepointFormat,
    layouts::{self, LayoutError},
};

pub struct ProbeSpec {
    /// Function name in `tracer-ebpf` (the classic tracepoint program).
    pub program: &'static str,
    /// The same program as a BTF tracepoint (`tp_btf`), preferred where it
    /// attaches: it reads its arguments without `bpf_probe_read`.
    pub btf_program: Option<&'static str>,
    /// `system/event` in tracefs.
    pub tracepoint: &'static str,
    /// Without it the tracer cannot run at all.
    pub required: bool,
    /// What is lost when it is missing (shown by `check` and at start-up).
    pub cost: &'static str,
    /// The format field whose `print fmt` names the kernel's reset reasons.
    pub names_reset_reasons: Option<&'static str>,
    /// Attached only in these modes (a fallback source), or always.
    pub attach_if: fn(&Modes) -> bool,
    /// Writes this tracepoint's record layout into the config.
    pub configure: fn(&TracepointFormat, &mut ProbeConfig) -> Result<(), LayoutError>,
}

impl ProbeSpec {
    pub fn system_and_event(&self) -> (&'static str, &'static str) {
        self.tracepoint
            .split_once('/')
            .expect("spec tracepoints are system/event")
    }
}

fn always(_: &Modes) -> bool {
    true
}

pub const PROBES: &[ProbeSpec] = &[
    ProbeSpec {
        program: "ct_state",
        btf_program: Some("ct_state_btf"),
        tracepoint: "sock/inet_sock_set_state",
        required: true,
        cost: "no connection tracking at all",
        attach_if: always,
        names_reset_reasons: None,
        configure: |f, c| {
            c.state_change = layouts::state_change(f)?;
            Ok(())
        },
    },
    ProbeSpec {
        program: "ct_destroy",
        btf_program: Some("ct_destroy_btf"),
        tracepoint: "tcp/tcp_destroy_sock",
        required: true,
        cost: "connections are never reported closed",
        attach_if: always,
        names_reset_reasons: None,
        configure: |f, c| {
            c.destroy_sock = layouts::sock(f)?;
            Ok(())
        },
    },
    ProbeSpec {
        program: "ct_rst_rx",
        btf_program: None,
        tracepoint: "tcp/tcp_receive_reset",
        required: false,
        cost: "resets received are not seen: peer resets look like plain closes",
        attach_if: always,
        names_reset_reasons: None,
        configure: |f, c| {
            c.receive_reset = layouts::sock(f)?;
            Ok(())
        },
    },
    ProbeSpec {
        program: "ct_rst_tx",
        btf_program: None,
        tracepoint: "tcp/tcp_send_reset",
        required: false,
        cost: "resets sent are not seen (refused connects, SO_LINGER 0 aborts)",
        attach_if: always,
        names_reset_reasons: Some("reason"),
        configure: |f, c| {
            c.send_reset = layouts::send_reset(f)?;
            Ok(())
        },
    },
    ProbeSpec {
        program: "ct_send_len",
        btf_program: Some("ct_send_len_btf"),
        tracepoint: "sock/sock_send_length",
        required: false,
        cost: "activity is counted from packets instead (cgroup_skb: segments, not messages); needs Linux 6.3+",
        attach_if: |modes| modes.activity == ActivitySource::Tracepoints,
        names_reset_reasons: None,
        configure: |f, c| {
            c.send_length = layouts::msg_length(f)?;
            Ok(())
        },
    },
    ProbeSpec {
        program: "ct_recv_len",
        btf_program: Some("ct_recv_len_btf"),
        tracepoint: "sock/sock_recv_length",
        required: false,
        cost: "activity is counted from packets instead (cgroup_skb: segments, not messages); needs Linux 6.3+",
        attach_if: |modes| modes.activity == ActivitySource::Tracepoints,
        names_reset_reasons: None,
        configure: |f, c| {
            c.recv_length = layouts::msg_length(f)?;
            Ok(())
        },
    },
    ProbeSpec {
        program: "ct_dns_dev",
        btf_program: None,
        tracepoint: "net/netif_receive_skb",
        required: false,
        cost: "no DNS answers where cgroup_skb cannot name the namespace (before Linux 6.15)",
        attach_if: |modes| modes.dns == DnsSource::Devices,
        names_reset_reasons: None,
        configure: |f, c| {
            c.net_receive = layouts::net_receive(f)?;
            Ok(())
        },
    },
];
