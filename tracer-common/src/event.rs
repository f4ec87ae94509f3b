//! What the programs keep per socket and what they send to userspace.
//!
//! One fixed-size record, [`ConnEvent`], for every kind: the header says what
//! happened, the rest is a copy of the socket's [`SockState`] at that moment.
//! Only lifecycle edges and failures are sent, so the size does not matter on
//! the data path.

/// What happened.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A socket started listening (`listen()`, process context).
    Listen = 1,
    /// A listening socket closed.
    ListenClose = 2,
    /// An outgoing connection was established (SYN_SENT → ESTABLISHED).
    Connect = 3,
    /// An incoming connection was established (SYN_RECV → ESTABLISHED).
    Accept = 4,
    /// A reset was sent or received.
    Reset = 5,
    /// The socket was destroyed; `state.stats` holds its whole life.
    Close = 6,
    /// A request was written on a connection after an idle gap of at least
    /// `ProbeConfig::reuse_event_min_idle_ns`.
    Reuse = 7,
    /// A TCP segment starting with an HTTP/1.x status line of interest
    /// (`http_status`) left a socket. Only the tuple and status are known:
    /// userspace joins it to the connection.
    HttpStatus = 8,
    /// A connection that existed before the tracer started, found by the
    /// start-up enumeration (never sent by the ring buffer: userspace makes
    /// it from a `SeedRecord`). Listeners found so come as `Listen` with
    /// `flags::SEEDED`.
    Seeded = 9,
}

impl EventKind {
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Listen,
            2 => Self::ListenClose,
            3 => Self::Connect,
            4 => Self::Accept,
            5 => Self::Reset,
            6 => Self::Close,
            7 => Self::Reuse,
            8 => Self::HttpStatus,
            9 => Self::Seeded,
            _ => return None,
        })
    }
}

/// Which end of the connection the traced socket is.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Unknown = 0,
    /// We connected.
    Client = 1,
    /// We accepted.
    Server = 2,
    /// A listening socket.
    Listener = 3,
}

/// For [`EventKind::Reset`]: which way the reset went.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetSide {
    None = 0,
    Sent = 1,
    Received = 2,
}

/// The process that owns a socket, read in process context (connect, listen,
/// or the first send/receive of an accepted socket).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    /// Process id (thread group id).
    pub tgid: u32,
    /// Thread id.
    pub pid: u32,
    pub uid: u32,
    pub _pad: u32,
    pub cgroup_id: u64,
    /// The thread's `comm`, NUL-padded.
    pub comm: [u8; 16],
}

/// Addresses and ports; ports in host order, IPv4 addresses in the first four bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tuple {
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub _pad: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Bits of [`ConnStats::flags`].
pub mod flags {
    /// Reached ESTABLISHED.
    pub const ESTABLISHED: u32 = 1 << 0;
    /// We sent a FIN (close() or shutdown(SHUT_WR)).
    pub const FIN_OUT: u32 = 1 << 1;
    /// The peer sent a FIN.
    pub const FIN_IN: u32 = 1 << 2;
    /// A reset arrived.
    pub const RST_IN: u32 = 1 << 3;
    /// We sent a reset.
    pub const RST_OUT: u32 = 1 << 4;
    /// Reached CLOSE.
    pub const CLOSED: u32 = 1 << 5;
    /// The kernel reported a reset reason (`rst_reason` is valid).
    pub const RST_REASON: u32 = 1 << 6;
    /// Opened before the tracer started: found by the start-up enumeration
    /// (opening time and, until its first I/O, owner unknown).
    pub const SEEDED: u32 = 1 << 7;
    /// Speaks HTTP/2 in cleartext (its first payload was the h2 preface):
    /// writes of control frames only are not requests (`proto`).
    pub const H2C: u32 = 1 << 8;
    /// Speaks TLS (its first payload was a ClientHello): alert-sized records
    /// (`close_notify`) are not requests (`proto`).
    pub const TLS: u32 = 1 << 9;
    /// An h2c peer sent GOAWAY (it is closing the connection gracefully).
    pub const H2_GOAWAY_IN: u32 = 1 << 10;
    /// An h2c peer reset a stream (RST_STREAM).
    pub const H2_RST_STREAM_IN: u32 = 1 << 11;
}

/// Timestamps (`bpf_ktime_get_ns`, CLOCK_MONOTONIC; 0 = never) and counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// connect() started (SYN_SENT) or the SYN was answered (SYN_RECV).
    pub start_ns: u64,
    pub established_ns: u64,
    /// Reached CLOSE.
    pub closed_ns: u64,
    pub last_send_ns: u64,
    pub last_recv_ns: u64,
    pub fin_out_ns: u64,
    pub fin_in_ns: u64,
    /// First reset, either way.
    pub rst_ns: u64,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    /// Idle time before the most recent reuse (send after a receive).
    pub last_reuse_idle_ns: u64,
    pub max_reuse_idle_ns: u64,
    /// Idle time (since the last send, receive or establishment) when the
    /// peer's first FIN, or else its reset, arrived: the peer's idle timeout.
    pub peer_close_idle_ns: u64,
    pub tx_msgs: u32,
    pub rx_msgs: u32,
    /// Send bursts: the first send, and each send that follows a receive
    /// (h2c control frames and TLS alerts excepted: they are not requests).
    pub requests: u32,
    /// [`flags`] bits.
    pub flags: u32,
    /// `enum sk_rst_reason` of the reset we sent, when `RST_REASON` is set.
    pub rst_reason: u32,
    /// TCP state when the first reset was sent or received.
    pub rst_state: u32,
    /// `sk_err` when the socket reached CLOSE (ECONNREFUSED, ETIMEDOUT, ...).
    pub sk_err: u32,
    /// Thread of the latest send or receive, read in process context by the
    /// `sock_send_length`/`sock_recv_length` tracepoints (0: not seen, or
    /// activity from packets, where the current task is not the writer).
    /// Proxies such as Envoy handle each connection on one worker thread, so
    /// this names the worker; an accepted socket's owner names the listener's.
    pub io_tid: u32,
}

/// What the programs keep per socket (value of the `SOCKS` LRU map, keyed by
/// the `struct sock` address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockState {
    pub tuple: Tuple,
    pub owner: Owner,
    pub stats: ConnStats,
    /// Network namespace inode.
    pub netns: u32,
    /// [`Role`] as u8.
    pub role: u8,
    pub _pad: [u8; 3],
}

/// Key of the `LISTENERS` map: a listening port in a network namespace, so
/// an accepted socket (created in softirq) can inherit the listener's owner.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerKey {
    pub netns: u32,
    pub port: u16,
    pub _pad: u16,
}

/// One ring buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnEvent {
    /// [`EventKind`] as u8.
    pub kind: u8,
    /// [`ResetSide`] as u8.
    pub reset_side: u8,
    pub _pad: [u8; 2],
    /// TCP state at the event (for resets: the socket's state).
    pub tcp_state: u32,
    /// For a reset sent: `enum sk_rst_reason`, valid when `has_reason`.
    pub reset_reason: u32,
    /// 0, [`REASON_REPORTED`] or [`REASON_INFERRED`].
    pub has_reason: u32,
    /// For [`EventKind::HttpStatus`]: the status code.
    pub http_status: u32,
    pub _pad2: u32,
    pub ts_ns: u64,
    /// `struct sock` address: the connection's identity while it lives.
    pub sock: u64,
    pub state: SockState,
}

/// `ConnEvent::has_reason`: the kernel named the reset's reason.
pub const REASON_REPORTED: u32 = 1;
/// `ConnEvent::has_reason`: the reason was inferred from what was seen
/// (a reset from the kernel's control socket: `NO_SOCKET`).
pub const REASON_INFERRED: u32 = 2;

impl ConnEvent {
    pub const SIZE: usize = core::mem::size_of::<ConnEvent>();
}

/// Bytes of a DNS message copied to userspace; longer answers are cut there
/// (`len` says how long it was) and userspace treats them as truncated.
pub const DNS_CAPTURE_MAX: usize = 512;

/// A DNS response (UDP or TCP from port 53) arriving at a socket on the node;
/// sent through its own ring buffer, `DNS_EVENTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsEvent {
    pub ts_ns: u64,
    /// `bpf_get_netns_cookie` of the receiving socket's namespace; userspace
    /// maps it to the namespace inode.
    pub netns_cookie: u64,
    /// Server → receiver: `sport` is 53.
    pub tuple: Tuple,
    /// Socket owner's uid.
    pub uid: u32,
    /// 17 (UDP) or 6 (TCP; `data` then starts with the two-byte length).
    pub protocol: u8,
    pub _pad: [u8; 3],
    /// Namespace inode when the answer was taken from the receiving device
    /// (kernels without the netns cookie in cgroup_skb); 0 when
    /// `netns_cookie` names it instead.
    pub netns: u32,
    pub _pad2: u32,
    /// Payload length in the packet.
    pub len: u32,
    /// Bytes copied into `data`.
    pub captured: u32,
    pub data: [u8; DNS_CAPTURE_MAX],
}

impl DnsEvent {
    pub const SIZE: usize = core::mem::size_of::<DnsEvent>();
}
