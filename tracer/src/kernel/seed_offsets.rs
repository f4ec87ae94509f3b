//! The struct members the start-up enumeration (`iter/tcp`) reads, from
//! kernel BTF. Resolved apart from the main offsets: when one is missing,
//! only the enumeration is lost.

use tracer_common::seed::SeedOffsets;

use super::btf::{BtfError, KernelBtf};

impl KernelBtf {
    pub fn seed_offsets(&self) -> Result<SeedOffsets, BtfError> {
        let small = |strukt: &str, path: &str| -> Result<u16, BtfError> {
            let off = self.member_offset(strukt, path)?;
            u16::try_from(off).map_err(|_| BtfError::Unreadable(format!("{strukt}.{path}")))
        };
        let common = |member: &str| small("sock", &format!("__sk_common.{member}"));
        let tcp = |member: &str| small("tcp_sock", member);
        // The inode sits after the socket in `struct socket_alloc`.
        let socket_inode = small("socket_alloc", "vfs_inode")?
            .checked_sub(small("socket_alloc", "socket")?)
            .ok_or_else(|| BtfError::Unreadable("socket_alloc.vfs_inode".into()))?;
        Ok(SeedOffsets {
            family: common("skc_family")?,
            num: common("skc_num")?,
            dport: common("skc_dport")?,
            rcv_saddr: common("skc_rcv_saddr")?,
            daddr: common("skc_daddr")?,
            v6_rcv_saddr: common("skc_v6_rcv_saddr")?,
            v6_daddr: common("skc_v6_daddr")?,
            tcp_mstamp: tcp("tcp_mstamp")?,
            bytes_received: tcp("bytes_received")?,
            bytes_acked: tcp("bytes_acked")?,
            snd_una: tcp("snd_una")?,
            snd_nxt: tcp("snd_nxt")?,
            lsndtime: tcp("lsndtime")?,
            lrcvtime: tcp("inet_conn.icsk_ack.lrcvtime")?,
            data_segs_in: tcp("data_segs_in")?,
            data_segs_out: tcp("data_segs_out")?,
            sk_socket: small("sock", "sk_socket")?,
            socket_inode,
            inode_ino: small("inode", "i_ino")?,
            _pad: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn the_running_kernel_has_every_member() {
        let Ok(btf) = KernelBtf::open(Path::new(super::super::btf::VMLINUX)) else {
            return; // no BTF here: the recorded kernels' test covers the logic
        };
        let o = btf.seed_offsets().unwrap();
        assert_eq!(
            o.family, 16,
            "sock_common.skc_family has been at 16 since 2.6"
        );
        assert!(o.tcp_mstamp > o.family && o.lrcvtime > 0 && o.socket_inode > 0);
    }
}
