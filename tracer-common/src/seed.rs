//! State from before the start: the `iter/tcp` program walks the TCP sockets
//! of the network namespace its iterator was opened in, seeds `SOCKS` and
//! `LISTENERS` with the ones that already exist, and writes one
//! [`SeedRecord`] per socket to the iterator's file for userspace.
//!
//! The kernel knows neither when such a connection opened nor who owns it;
//! what it does know (the last packet, bytes, which side sent last) becomes
//! a [`ConnStats`] here, in one pure function both sides agree on.

use crate::{
    event::{ConnStats, Role, SockState, flags},
    tcp::*,
};

/// Byte offsets the seeding program reads, resolved from kernel BTF (the
/// `KernelOffsets` of the main config give the netns and state).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeedOffsets {
    /// `struct sock` → `__sk_common.skc_family` (u16).
    pub family: u16,
    /// `__sk_common.skc_num`: local port, host order (u16).
    pub num: u16,
    /// `__sk_common.skc_dport`: remote port, network order (u16).
    pub dport: u16,
    /// `__sk_common.skc_rcv_saddr` (IPv4, 4 bytes).
    pub rcv_saddr: u16,
    /// `__sk_common.skc_daddr` (IPv4, 4 bytes).
    pub daddr: u16,
    /// `__sk_common.skc_v6_rcv_saddr` (16 bytes).
    pub v6_rcv_saddr: u16,
    /// `__sk_common.skc_v6_daddr` (16 bytes).
    pub v6_daddr: u16,
    /// `struct tcp_sock` → `tcp_mstamp` (u64, µs of CLOCK_MONOTONIC): the
    /// most recent packet sent or received.
    pub tcp_mstamp: u16,
    /// `tcp_sock.bytes_received` (u64).
    pub bytes_received: u16,
    /// `tcp_sock.bytes_acked` (u64).
    pub bytes_acked: u16,
    /// `tcp_sock.snd_una` (u32).
    pub snd_una: u16,
    /// `tcp_sock.snd_nxt` (u32).
    pub snd_nxt: u16,
    /// `tcp_sock.lsndtime` (u32 jiffies): last data sent.
    pub lsndtime: u16,
    /// `tcp_sock.inet_conn.icsk_ack.lrcvtime` (u32 jiffies): last data received.
    pub lrcvtime: u16,
    /// `tcp_sock.data_segs_in` (u32).
    pub data_segs_in: u16,
    /// `tcp_sock.data_segs_out` (u32).
    pub data_segs_out: u16,
    /// `struct sock` → `sk_socket` (pointer), for the socket's inode.
    pub sk_socket: u16,
    /// `struct socket_alloc` → `vfs_inode`, minus `socket_alloc.socket`:
    /// from a `struct socket *` to its inode.
    pub socket_inode: u16,
    /// `struct inode` → `i_ino` (unsigned long).
    pub inode_ino: u16,
    pub _pad: u16,
}

/// One socket that existed when the iterator ran, as the program saw it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeedRecord {
    /// `struct sock` address: the `SOCKS` key.
    pub sock: u64,
    /// Inode of the socket's file (`socket:[N]` in `/proc/PID/fd`), 0 if it has none.
    pub inode: u64,
    /// `bpf_ktime_get_ns` when it was seen.
    pub seen_ns: u64,
    /// TCP state when it was seen.
    pub tcp_state: u32,
    /// 1 when this program created the `SOCKS`/`LISTENERS` entry, 0 when
    /// the tracepoints already had one (the socket changed state after attach).
    pub inserted: u32,
    /// What was seeded (`stats.flags` has [`flags::SEEDED`]).
    pub state: SockState,
}

impl SeedRecord {
    pub const SIZE: usize = core::mem::size_of::<SeedRecord>();
}

/// What the seeding program does with a socket in a given TCP state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seed {
    /// A listening socket: its port goes into `LISTENERS`.
    Listener,
    /// A full socket with a connection (or a connect under way).
    Connection,
    /// Not a full socket (TIME_WAIT, request socks), or nothing to follow.
    Skip,
}

pub const fn seed_kind(tcp_state: u32) -> Seed {
    match tcp_state {
        TCP_LISTEN => Seed::Listener,
        TCP_SYN_SENT | TCP_ESTABLISHED | TCP_FIN_WAIT1 | TCP_FIN_WAIT2 | TCP_CLOSE_WAIT
        | TCP_LAST_ACK | TCP_CLOSING => Seed::Connection,
        _ => Seed::Skip,
    }
}

/// Which end a connection we did not see open is: a local port someone
/// listens on in the same namespace means it was accepted there.
pub const fn guess_role(local_port_listened: bool) -> Role {
    if local_port_listened {
        Role::Server
    } else {
        Role::Client
    }
}

/// What `struct tcp_sock` says about a connection's past.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSnapshot {
    pub tcp_state: u32,
    /// Last packet either way, µs of CLOCK_MONOTONIC (the clock of `bpf_ktime_get_ns`).
    pub mstamp_us: u64,
    pub bytes_received: u64,
    pub bytes_acked: u64,
    pub snd_una: u32,
    pub snd_nxt: u32,
    /// Jiffies of the last data sent and received.
    pub lsndtime: u32,
    pub lrcvtime: u32,
    pub data_segs_in: u32,
    pub data_segs_out: u32,
}

/// The stats a connection starts with when it is seeded. Opening time is
/// unknown (0); the last packet stands for the last activity, on the side
/// that went last: we sent last when data is unacknowledged, or (for a
/// client) when our last data went out after the last data came in — a
/// request waiting for its answer. Otherwise the receive counts as last,
/// so the next send is a reuse after an idle gap.
pub const fn seeded_stats(s: &TcpSnapshot, role: Role) -> ConnStats {
    let last_ns = s.mstamp_us.wrapping_mul(1000);
    let unacked = s.snd_nxt.wrapping_sub(s.snd_una);
    let sent_after_received = (s.lsndtime.wrapping_sub(s.lrcvtime) as i32) > 0;
    let sent = s.data_segs_out != 0 || unacked != 0;
    let received = s.data_segs_in != 0;
    let send_last = unacked != 0 || (matches!(role, Role::Client) && sent_after_received);
    // Both sides active: one nanosecond apart, in the order they happened.
    let (last_send_ns, last_recv_ns) = match (sent, received) {
        (false, false) => (0, 0),
        (true, false) => (last_ns, 0),
        (false, true) => (0, last_ns),
        (true, true) if send_last => (last_ns, last_ns.saturating_sub(1)),
        (true, true) => (last_ns.saturating_sub(1), last_ns),
    };
    let mut stats = ConnStats {
        start_ns: 0,
        established_ns: 0,
        closed_ns: 0,
        last_send_ns,
        last_recv_ns,
        fin_out_ns: 0,
        fin_in_ns: 0,
        rst_ns: 0,
        // An active opener's SYN counts as one byte acknowledged.
        tx_bytes: s
            .bytes_acked
            .saturating_sub(matches!(role, Role::Client) as u64)
            + unacked as u64,
        rx_bytes: s.bytes_received,
        last_reuse_idle_ns: 0,
        max_reuse_idle_ns: 0,
        peer_close_idle_ns: 0,
        tx_msgs: 0,
        rx_msgs: 0,
        requests: sent as u32,
        flags: flags::SEEDED,
        rst_reason: 0,
        rst_state: 0,
        sk_err: 0,
        io_tid: 0,
    };
    if s.tcp_state != TCP_SYN_SENT {
        stats.flags |= flags::ESTABLISHED;
    }
    // FINs already exchanged: the last packet is the best time we have.
    match s.tcp_state {
        TCP_FIN_WAIT1 | TCP_FIN_WAIT2 => {
            stats.flags |= flags::FIN_OUT;
            stats.fin_out_ns = last_ns;
        }
        TCP_CLOSE_WAIT => {
            stats.flags |= flags::FIN_IN;
            stats.fin_in_ns = last_ns;
        }
        TCP_LAST_ACK | TCP_CLOSING => {
            stats.flags |= flags::FIN_IN | flags::FIN_OUT;
            stats.fin_in_ns = last_ns;
            stats.fin_out_ns = last_ns;
        }
        _ => {}
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle_exchange() -> TcpSnapshot {
        // A request answered at t = 5 s, nothing since.
        TcpSnapshot {
            tcp_state: TCP_ESTABLISHED,
            mstamp_us: 5_000_000,
            bytes_received: 300,
            bytes_acked: 120,
            snd_una: 1000,
            snd_nxt: 1000,
            lsndtime: 100,
            lrcvtime: 100,
            data_segs_in: 2,
            data_segs_out: 1,
        }
    }

    #[test]
    fn only_full_sockets_with_a_connection_are_seeded() {
        assert_eq!(seed_kind(TCP_LISTEN), Seed::Listener);
        assert_eq!(seed_kind(TCP_ESTABLISHED), Seed::Connection);
        assert_eq!(seed_kind(TCP_CLOSE_WAIT), Seed::Connection);
        assert_eq!(seed_kind(TCP_SYN_SENT), Seed::Connection);
        for skip in [
            TCP_TIME_WAIT,
            TCP_NEW_SYN_RECV,
            TCP_SYN_RECV,
            TCP_CLOSE,
            0,
            99,
        ] {
            assert_eq!(seed_kind(skip), Seed::Skip, "{}", state_name(skip));
        }
    }

    #[test]
    fn a_local_port_that_is_listened_on_means_accepted() {
        assert_eq!(guess_role(true), Role::Server);
        assert_eq!(guess_role(false), Role::Client);
    }

    #[test]
    fn an_idle_answered_connection_received_last() {
        let stats = seeded_stats(&idle_exchange(), Role::Client);
        assert_eq!(stats.last_recv_ns, 5_000_000_000);
        assert_eq!(stats.last_send_ns, 4_999_999_999);
        assert_eq!(stats.established_ns, 0);
        assert_eq!(stats.start_ns, 0);
        assert_eq!(stats.requests, 1);
        assert_eq!((stats.tx_bytes, stats.rx_bytes), (119, 300));
        assert_eq!(stats.flags, flags::SEEDED | flags::ESTABLISHED);
    }

    #[test]
    fn unanswered_or_unacknowledged_data_means_we_sent_last() {
        let waiting = TcpSnapshot {
            lsndtime: 101,
            ..idle_exchange()
        };
        let client = seeded_stats(&waiting, Role::Client);
        assert!(client.last_send_ns > client.last_recv_ns);
        // A server answering a jiffy after the request is not waiting for anything.
        let server = seeded_stats(&waiting, Role::Server);
        assert!(server.last_recv_ns > server.last_send_ns);
        let unacked = TcpSnapshot {
            snd_nxt: 1100,
            ..idle_exchange()
        };
        let server = seeded_stats(&unacked, Role::Server);
        assert!(server.last_send_ns > server.last_recv_ns);
        assert_eq!(server.tx_bytes, 220);
        // Jiffies wrap.
        let wrapped = TcpSnapshot {
            lsndtime: 2,
            lrcvtime: u32::MAX - 1,
            ..idle_exchange()
        };
        let client = seeded_stats(&wrapped, Role::Client);
        assert!(client.last_send_ns > client.last_recv_ns);
    }

    #[test]
    fn a_silent_connection_has_no_activity() {
        let silent = TcpSnapshot {
            data_segs_in: 0,
            data_segs_out: 0,
            bytes_received: 0,
            bytes_acked: 0,
            ..idle_exchange()
        };
        let stats = seeded_stats(&silent, Role::Client);
        assert_eq!((stats.last_send_ns, stats.last_recv_ns), (0, 0));
        assert_eq!(stats.requests, 0);
    }

    #[test]
    fn fins_already_exchanged_are_kept() {
        let close_wait = TcpSnapshot {
            tcp_state: TCP_CLOSE_WAIT,
            ..idle_exchange()
        };
        let stats = seeded_stats(&close_wait, Role::Client);
        assert_ne!(stats.flags & flags::FIN_IN, 0);
        assert_eq!(stats.fin_in_ns, 5_000_000_000);
        let connecting = TcpSnapshot {
            tcp_state: TCP_SYN_SENT,
            ..TcpSnapshot::default()
        };
        assert_eq!(seeded_stats(&connecting, Role::Client).flags, flags::SEEDED);
    }
}
