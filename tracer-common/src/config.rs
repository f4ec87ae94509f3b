//! What userspace tells the programs before they load: where each tracepoint
//! field sits in this kernel's record (from tracefs `format` files), where a
//! few struct members sit (from `/sys/kernel/btf/vmlinux`), and tunables.
//!
//! Rust eBPF has no CO-RE relocations yet, so nothing here is compiled in:
//! the loader resolves it on the running kernel and writes it into the
//! read-only global `CONFIG` of the object file.

/// A field of a tracepoint record: byte offset and size. `size == 0` means the
/// running kernel does not have the field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Field {
    pub offset: u16,
    pub size: u16,
}

impl Field {
    pub const ABSENT: Field = Field { offset: 0, size: 0 };

    pub const fn is_present(&self) -> bool {
        self.size != 0
    }
}

/// How a record carries its addresses.
#[repr(u16)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AddrEncoding {
    /// `sport`, `dport`, `family`, `saddr[4]`, `daddr[4]`, `saddr_v6[16]`,
    /// `daddr_v6[16]` as separate fields, ports in host order.
    #[default]
    Fields = 0,
    /// `saddr[28]` / `daddr[28]` each hold a `sockaddr_in` or `sockaddr_in6`
    /// (`tcp:tcp_send_reset` since 6.10): family at +0, port (network order)
    /// at +2, IPv4 address at +4, IPv6 address at +8.
    Sockaddr = 1,
}

/// The addressing fields of a socket tracepoint record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TupleLayout {
    /// [`AddrEncoding`] as u16 (kept an integer so every bit pattern is valid).
    pub encoding: u16,
    pub _pad: u16,
    pub sport: Field,
    pub dport: Field,
    pub family: Field,
    pub saddr: Field,
    pub daddr: Field,
    pub saddr_v6: Field,
    pub daddr_v6: Field,
}

/// `sock:inet_sock_set_state`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateChangeLayout {
    pub skaddr: Field,
    pub oldstate: Field,
    pub newstate: Field,
    /// `__u8` before Linux 5.6, `__u16` since.
    pub protocol: Field,
    pub tuple: TupleLayout,
}

/// `tcp:tcp_receive_reset` and `tcp:tcp_destroy_sock` (one event class).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockLayout {
    pub skaddr: Field,
    pub tuple: TupleLayout,
}

/// `tcp:tcp_send_reset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendResetLayout {
    pub skbaddr: Field,
    pub skaddr: Field,
    pub state: Field,
    /// `enum sk_rst_reason`, absent before 6.10.
    pub reason: Field,
    pub tuple: TupleLayout,
}

/// `sock:sock_send_length` / `sock:sock_recv_length` (Linux 6.3+).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsgLengthLayout {
    pub sk: Field,
    pub family: Field,
    pub protocol: Field,
    pub ret: Field,
    pub flags: Field,
}

/// Byte offsets of struct members, resolved from kernel BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `struct sock` → `__sk_common.skc_net` (a `possible_net_t`, whose first member is `struct net *`).
    pub sock_net: u16,
    /// `struct sock` → `__sk_common.skc_state` (u8).
    pub sock_state: u16,
    /// `struct sock` → `sk_err` (int).
    pub sock_err: u16,
    /// `struct net` → `ns.inum`: the netns inode number `ip netns` and `/proc/PID/ns/net` show.
    pub net_inum: u16,
    /// `struct sk_buff` → `dev`, for resets sent with no socket.
    pub skb_dev: u16,
    /// `struct net_device` → `nd_net` (a `possible_net_t`).
    pub netdev_net: u16,
    /// `struct sk_buff` → `data` (pointer): where a received packet's IP header starts.
    pub skb_data: u16,
    /// `struct sk_buff` → `len` (u32).
    pub skb_len: u16,
    /// `struct sk_buff` → `data_len` (u32): the part of `len` outside the linear area.
    pub skb_data_len: u16,
    /// `struct sock` → `sk_protocol` (u16 since Linux 5.6).
    pub sock_protocol: u16,
    /// `struct sock` → `__sk_common.skc_daddr`: the start of [`SockHead`],
    /// whose layout the loader checks against the kernel's BTF.
    pub sock_head: u16,
    /// `struct sock` → `__sk_common.skc_v6_rcv_saddr` (16 bytes).
    pub sock_v6_rcv_saddr: u16,
    /// `struct sock` → `__sk_common.skc_v6_daddr` (16 bytes).
    pub sock_v6_daddr: u16,
    pub _pad: u16,
}

/// The head of `struct sock_common`, unchanged since Linux 2.6: the IPv4
/// addresses, ports and family a BTF tracepoint reads of a socket in one go.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockHead {
    /// `skc_daddr`: the peer's IPv4 address.
    pub daddr: [u8; 4],
    /// `skc_rcv_saddr`: the local IPv4 address.
    pub rcv_saddr: [u8; 4],
    /// `skc_hash`.
    pub hash: u32,
    /// `skc_dport`: the peer's port, network order.
    pub dport: u16,
    /// `skc_num`: the local port, host order.
    pub num: u16,
    /// `skc_family`.
    pub family: u16,
    pub _pad: u16,
}

impl SockHead {
    /// Where each member sits from `skc_daddr`: (daddr, rcv_saddr, dport, num, family).
    pub const LAYOUT: (u32, u32, u32, u32, u32) = (0, 4, 12, 14, 16);
}

/// `net:netif_receive_skb`: every packet a device hands to the stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetReceiveLayout {
    pub skbaddr: Field,
}

/// Which source each feature uses on this kernel, decided by the loader
/// from tracefs and BTF; the programs branch on these bits (frozen, so the
/// verifier drops the branches a kernel does not take).
pub mod features {
    /// Activity (bytes, requests, idle times) from packets seen by the
    /// cgroup_skb programs, because `sock_send_length`/`sock_recv_length`
    /// (Linux 6.3+) are missing.
    pub const PACKET_ACTIVITY: u32 = 1 << 0;
    /// The HTTP 503 status peek on egress.
    pub const HTTP_PEEK: u32 = 1 << 1;
    /// DNS answers in the cgroup_skb ingress program, named by
    /// `bpf_get_netns_cookie` (accepted there since Linux 6.15 or so).
    pub const DNS_NETNS_COOKIE: u32 = 1 << 2;
    /// Resets sent by the kernel's control socket (no socket matched the
    /// segment) seen as outgoing RST packets, because `tcp_send_reset` only
    /// fires with a socket before Linux 6.10.
    pub const RST_PACKETS: u32 = 1 << 3;
    /// h2c and TLS told from a connection's first payload, and h2c control
    /// frames told from requests (`proto`): egress and ingress.
    pub const PROTOCOLS: u32 = 1 << 4;
}

/// Everything the programs read from `CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeConfig {
    pub state_change: StateChangeLayout,
    pub receive_reset: SockLayout,
    pub destroy_sock: SockLayout,
    pub send_reset: SendResetLayout,
    pub send_length: MsgLengthLayout,
    pub recv_length: MsgLengthLayout,
    pub net_receive: NetReceiveLayout,
    pub kernel: KernelOffsets,
    /// [`features`] bits.
    pub features: u32,
    pub _pad: u32,
    /// A send that reuses a connection after at least this much idle time is
    /// reported as a `reuse` event (shorter gaps are only counted), so a busy
    /// keep-alive connection sends nothing per request.
    pub reuse_event_min_idle_ns: u64,
    /// Wake the reader once this many bytes wait in the ring buffer; below
    /// that, events are submitted without a wake-up and drained on a timer.
    pub wakeup_min_bytes: u64,
}
