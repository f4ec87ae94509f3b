//! Offsets resolved from real tracepoint `format` files and raw BTF recorded
//! from kernels 6.1, 6.12 and 6.18 (`../shared/kernels`), plus a 5.4 layout.

use std::path::{Path, PathBuf};

use tracer::{
    kernel::{
        btf::KernelBtf,
        format::TracepointFormat,
        layouts::{self, LayoutError},
        tracefs::{Tracefs, TracefsError},
    },
    probes::{
        modes::{ActivitySource, DnsSource, NoSocketResets},
        setup::KernelSetup,
        spec::PROBES,
    },
};
use tracer_common::config::{AddrEncoding, Field};

const KERNELS: [&str; 3] = [
    "6.1.0-56-cloud-amd64",
    "6.12.117+deb12-cloud-amd64",
    "6.18.44-fc-v657",
];

fn kernels_dir() -> PathBuf {
    let dir = std::env::var_os("CONNTRACER_SHARED_KERNELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/kernels"));
    assert!(
        dir.is_dir(),
        "recorded kernel data not found at {} (clone the repo beside shared/, or set CONNTRACER_SHARED_KERNELS)",
        dir.display()
    );
    dir
}

fn recorded(kernel: &str) -> Tracefs {
    Tracefs::at(kernels_dir().join(kernel))
}

fn f(offset: u16, size: u16) -> Field {
    Field { offset, size }
}

#[test]
fn state_change_layout_is_the_same_on_6_1_6_12_6_18() {
    for kernel in KERNELS {
        let format = recorded(kernel).format("sock/inet_sock_set_state").unwrap();
        let layout = layouts::state_change(&format).unwrap();
        assert_eq!(layout.skaddr, f(8, 8), "{kernel}");
        assert_eq!(
            (layout.oldstate, layout.newstate),
            (f(16, 4), f(20, 4)),
            "{kernel}"
        );
        assert_eq!(layout.protocol, f(30, 2), "{kernel}");
        assert_eq!(layout.tuple.encoding, AddrEncoding::Fields as u16);
        assert_eq!(
            (layout.tuple.sport, layout.tuple.dport),
            (f(24, 2), f(26, 2))
        );
        assert_eq!(
            (layout.tuple.saddr, layout.tuple.daddr),
            (f(32, 4), f(36, 4))
        );
        assert_eq!(
            (layout.tuple.saddr_v6, layout.tuple.daddr_v6),
            (f(40, 16), f(56, 16))
        );
    }
}

#[test]
fn pre_5_6_state_change_has_a_one_byte_protocol() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/5.4-inet_sock_set_state.format"),
    )
    .unwrap();
    let layout = layouts::state_change(&TracepointFormat::parse(&text).unwrap()).unwrap();
    assert_eq!(layout.protocol, f(30, 1));
    // Every address moves up by one byte.
    assert_eq!(
        (layout.tuple.saddr, layout.tuple.daddr),
        (f(31, 4), f(35, 4))
    );
    assert_eq!(
        (layout.tuple.saddr_v6, layout.tuple.daddr_v6),
        (f(39, 16), f(55, 16))
    );
}

#[test]
fn send_reset_changed_layout_between_6_1_and_6_12() {
    let old =
        layouts::send_reset(&recorded(KERNELS[0]).format("tcp/tcp_send_reset").unwrap()).unwrap();
    assert_eq!(old.reason, Field::ABSENT, "6.1 reports no reset reason");
    assert_eq!(old.tuple.encoding, AddrEncoding::Fields as u16);
    assert_eq!((old.tuple.sport, old.tuple.family), (f(28, 2), f(32, 2)));
    assert_eq!((old.tuple.saddr, old.tuple.saddr_v6), (f(34, 4), f(42, 16)));

    for kernel in &KERNELS[1..] {
        let new =
            layouts::send_reset(&recorded(kernel).format("tcp/tcp_send_reset").unwrap()).unwrap();
        assert_eq!(new.reason, f(28, 4), "{kernel}");
        assert_eq!(
            new.tuple.encoding,
            AddrEncoding::Sockaddr as u16,
            "{kernel}"
        );
        assert_eq!(
            (new.tuple.saddr, new.tuple.daddr),
            (f(32, 28), f(60, 28)),
            "{kernel}"
        );
        assert_eq!(new.state, f(24, 4));
    }
}

#[test]
fn reset_reason_names_come_from_the_kernels_print_format() {
    let format = recorded(KERNELS[2]).format("tcp/tcp_send_reset").unwrap();
    let names = format.symbolic_values("reason");
    assert_eq!(names.get(&0).map(String::as_str), Some("NOT_SPECIFIED"));
    assert_eq!(names.get(&1).map(String::as_str), Some("NO_SOCKET"));
    assert_eq!(
        names.get(&12).map(String::as_str),
        Some("TCP_ABORT_ON_LINGER")
    );
    assert_eq!(names.len(), 26);
    // 6.1 has no reason field, so no table.
    let old = recorded(KERNELS[0]).format("tcp/tcp_send_reset").unwrap();
    assert!(old.symbolic_values("reason").is_empty());
}

#[test]
fn message_length_tracepoints_are_missing_before_6_3() {
    match recorded(KERNELS[0]).format("sock/sock_send_length") {
        Err(TracefsError::MissingTracepoint(name)) => assert_eq!(name, "sock/sock_send_length"),
        other => panic!("expected a missing tracepoint, got {other:?}"),
    }
    let layout = layouts::msg_length(
        &recorded(KERNELS[2])
            .format("sock/sock_recv_length")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (layout.sk, layout.ret, layout.flags),
        (f(8, 8), f(20, 4), f(24, 4))
    );
}

#[test]
fn a_missing_field_is_a_named_error() {
    let text = std::fs::read_to_string(
        kernels_dir()
            .join(KERNELS[2])
            .join("events/tcp/tcp_destroy_sock/format"),
    )
    .unwrap();
    let without_skaddr: String = text
        .lines()
        .filter(|l| !l.contains(" skaddr;"))
        .collect::<Vec<_>>()
        .join("\n");
    let err = layouts::sock(&TracepointFormat::parse(&without_skaddr).unwrap()).unwrap_err();
    assert_eq!(
        err,
        LayoutError::MissingField {
            tracepoint: "tcp_destroy_sock".into(),
            field: "skaddr"
        }
    );
    assert_eq!(
        err.to_string(),
        "tracepoint tcp_destroy_sock has no field `skaddr` on this kernel"
    );
}

#[test]
fn btf_offsets_resolve_on_every_recorded_kernel() {
    for kernel in KERNELS {
        let btf = KernelBtf::open(&kernels_dir().join(kernel).join("btf/vmlinux")).unwrap();
        let o = btf.kernel_offsets().unwrap();
        // struct sock_common has kept its head for years: skc_state sits at 18.
        assert_eq!(o.sock_state, 18, "{kernel}");
        assert!(
            o.sock_net > o.sock_state && o.sock_net < 136,
            "{kernel}: skc_net at {}",
            o.sock_net
        );
        assert!(o.sock_err > 136, "{kernel}: sk_err at {}", o.sock_err);
        assert!(
            o.net_inum > 0 && o.netdev_net > 0 && o.skb_dev > 0,
            "{kernel}: {o:?}"
        );
        // `dev` sits in an anonymous union inside an anonymous struct of sk_buff.
        assert_eq!(o.skb_dev, 16, "{kernel}");
        // What the BTF tracepoints read of a socket's tuple: the addresses and
        // ports in sock_common's head (skc_addrpair, skc_portpair), the
        // IPv6 addresses further on, the protocol in struct sock itself.
        assert_eq!(o.sock_head, 0, "{kernel}");
        assert!(
            o.sock_v6_daddr > 16 && o.sock_v6_rcv_saddr == o.sock_v6_daddr + 16,
            "{kernel}: {o:?}"
        );
        assert!(
            o.sock_protocol > 136,
            "{kernel}: sk_protocol at {}",
            o.sock_protocol
        );
    }
}

#[test]
fn btf_errors_name_the_member() {
    let btf = KernelBtf::open(&kernels_dir().join(KERNELS[2]).join("btf/vmlinux")).unwrap();
    let err = btf
        .member_offset("sock", "__sk_common.no_such_member")
        .unwrap_err();
    assert!(
        err.to_string().contains("no member `no_such_member`"),
        "{err}"
    );
    assert!(btf.member_offset("no_such_struct_xyz", "a").is_err());
}

#[test]
fn full_setup_per_recorded_kernel_names_what_is_degraded() {
    for kernel in KERNELS {
        let btf = KernelBtf::open(&kernels_dir().join(kernel).join("btf/vmlinux")).unwrap();
        let setup = KernelSetup::resolve(&recorded(kernel), &btf).unwrap();
        // `net/netif_receive_skb` is not among the recorded events.
        let unavailable: Vec<&str> = setup
            .unavailable
            .iter()
            .map(|u| u.spec.program)
            .filter(|p| *p != "ct_dns_dev")
            .collect();
        let modes = setup.modes;
        if kernel.starts_with("6.1.") {
            assert_eq!(unavailable, ["ct_send_len", "ct_recv_len"]);
            assert_eq!(modes.activity, ActivitySource::Packets);
            assert_eq!(modes.no_socket_resets, NoSocketResets::Packets);
            // The one reason the packet path infers is named as newer kernels name it.
            assert_eq!(setup.reset_reasons.get(1), Some("NO_SOCKET"));
        } else {
            assert!(unavailable.is_empty(), "{kernel}: {unavailable:?}");
            assert_eq!(setup.available.len(), PROBES.len() - 1);
            assert_eq!(setup.reset_reasons.get(1), Some("NO_SOCKET"));
            assert_eq!(modes.activity, ActivitySource::Tracepoints);
            assert_eq!(modes.no_socket_resets, NoSocketResets::Tracepoint);
        }
        // Only 6.18 lets cgroup_skb programs ask for the netns cookie.
        assert_eq!(
            modes.dns == DnsSource::CgroupSkb,
            kernel.starts_with("6.18"),
            "{kernel}: {modes}"
        );
    }
}

#[test]
fn seed_offsets_resolve_on_every_recorded_kernel() {
    let mut mstamps = Vec::new();
    for kernel in KERNELS {
        let btf = KernelBtf::open(&kernels_dir().join(kernel).join("btf/vmlinux")).unwrap();
        let o = btf.seed_offsets().unwrap();
        // sock_common has not moved in these kernels; tcp_sock has (6.8 regrouped it).
        assert_eq!(
            (o.daddr, o.rcv_saddr, o.dport, o.num, o.family),
            (0, 4, 12, 14, 16),
            "{kernel}"
        );
        assert_eq!((o.v6_daddr, o.v6_rcv_saddr), (56, 72), "{kernel}");
        assert!(o.socket_inode > 0 && o.inode_ino > 0, "{kernel}: {o:?}");
        mstamps.push(o.tcp_mstamp);
    }
    assert_eq!(mstamps, [1664, 1704, 1656]);
}

/// Formats read inside the matrix's guest kernels (`tests/data/kernels/`).
fn guest(kernel: &str) -> Tracefs {
    Tracefs::at(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/kernels")
            .join(kernel),
    )
}

#[test]
fn linux_5_10_records_have_no_family_and_still_load() {
    let k = "5.10.0-43-cloud-amd64";
    for event in ["tcp/tcp_destroy_sock", "tcp/tcp_receive_reset"] {
        let layout = layouts::sock(&guest(k).format(event).unwrap()).unwrap();
        assert_eq!(
            layout.tuple.family,
            Field::ABSENT,
            "{event}: told by addresses"
        );
        assert_eq!(
            (layout.tuple.saddr_v6, layout.tuple.daddr_v6),
            (f(28, 16), f(44, 16)),
            "{event}"
        );
    }
    let state =
        layouts::state_change(&guest(k).format("sock/inet_sock_set_state").unwrap()).unwrap();
    assert_eq!(state.tuple.family, f(28, 2), "inet_sock_set_state has it");
    let reset = layouts::send_reset(&guest(k).format("tcp/tcp_send_reset").unwrap()).unwrap();
    assert_eq!(reset.reason, Field::ABSENT);
    assert_eq!(reset.tuple.family, Field::ABSENT);
    assert!(guest(k).format("sock/sock_send_length").is_err());
}

#[test]
fn the_device_dns_tracepoint_has_the_same_record_on_every_guest_kernel() {
    for k in [
        "5.10.0-43-cloud-amd64",
        "6.1.0-57-cloud-amd64",
        "6.12.117+deb12-cloud-amd64",
    ] {
        let layout =
            layouts::net_receive(&guest(k).format("net/netif_receive_skb").unwrap()).unwrap();
        assert_eq!(layout.skbaddr, f(8, 8), "{k}");
        // 6.10+ names the reason; older kernels leave it to the packet path.
        let reset = layouts::send_reset(&guest(k).format("tcp/tcp_send_reset").unwrap()).unwrap();
        assert_eq!(reset.reason.is_present(), k.starts_with("6.12"), "{k}");
    }
}
