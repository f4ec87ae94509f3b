//! Struct member offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).

use std::path::Path;

use btf_rs::{Btf, Type};
use tracer_common::config::{KernelOffsets, SockHead};

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "kernel BTF {0} is missing: conntracer reads struct offsets from it and cannot run without it; \
         use a kernel built with CONFIG_DEBUG_INFO_BTF=y (every major distribution's since 2021), \
         and in a container make the host's /sys/kernel/btf visible"
    )]
    Missing(String),
    // btf_rs's error repeats its I/O cause as its source: printed once, here.
    #[error("cannot read kernel BTF from {path}: {error}")]
    Read { path: String, error: btf_rs::Error },
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {strukt} has no member `{member}` (looking for `{path}`)")]
    NoMember {
        strukt: String,
        member: String,
        path: String,
    },
    #[error("kernel BTF: `{0}` is a bitfield or too far into the struct to read")]
    Unreadable(String),
}

pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn open(path: &Path) -> Result<Self, BtfError> {
        if !path.exists() {
            return Err(BtfError::Missing(path.display().to_string()));
        }
        Btf::from_file(path)
            .map(|btf| Self { btf })
            .map_err(|error| BtfError::Read {
                path: path.display().to_string(),
                error,
            })
    }

    /// Byte offset of `path` (`member.member...`) inside `struct strukt`.
    /// Anonymous structs and unions on the way are searched transparently, as C does.
    pub fn member_offset(&self, strukt: &str, path: &str) -> Result<u32, BtfError> {
        let mut current = self.find_struct(strukt)?;
        let mut current_name = strukt.to_owned();
        let mut bits = 0u32;
        for component in path.split('.') {
            let (offset, member_type) =
                self.find_member(&current, component)?
                    .ok_or_else(|| BtfError::NoMember {
                        strukt: current_name.clone(),
                        member: component.to_owned(),
                        path: format!("{strukt}.{path}"),
                    })?;
            bits += offset;
            current_name = component.to_owned();
            current = member_type;
        }
        if !bits.is_multiple_of(8) {
            return Err(BtfError::Unreadable(format!("{strukt}.{path}")));
        }
        Ok(bits / 8)
    }

    /// The offsets `tracer-common::config::KernelOffsets` documents.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        let small = |strukt: &str, path: &str| -> Result<u16, BtfError> {
            let off = self.member_offset(strukt, path)?;
            u16::try_from(off).map_err(|_| BtfError::Unreadable(format!("{strukt}.{path}")))
        };
        Ok(KernelOffsets {
            sock_net: small("sock", "__sk_common.skc_net")?,
            sock_state: small("sock", "__sk_common.skc_state")?,
            sock_err: small("sock", "sk_err")?,
            net_inum: small("net", "ns.inum")?,
            skb_dev: small("sk_buff", "dev")?,
            netdev_net: small("net_device", "nd_net")?,
            skb_data: small("sk_buff", "data")?,
            skb_len: small("sk_buff", "len")?,
            skb_data_len: small("sk_buff", "data_len")?,
            sock_protocol: small("sock", "sk_protocol")?,
            sock_head: self.sock_head()?,
            sock_v6_rcv_saddr: small("sock", "__sk_common.skc_v6_rcv_saddr")?,
            sock_v6_daddr: small("sock", "__sk_common.skc_v6_daddr")?,
            _pad: 0,
        })
    }

    /// Offset of `skc_daddr`, once the members [`SockHead`] reads after it are
    /// where it expects them.
    fn sock_head(&self) -> Result<u16, BtfError> {
        let at = |m: &str| self.member_offset("sock", &format!("__sk_common.{m}"));
        let base = at("skc_daddr")?;
        let found = (
            0,
            at("skc_rcv_saddr")? - base,
            at("skc_dport")? - base,
            at("skc_num")? - base,
            at("skc_family")? - base,
        );
        if found != SockHead::LAYOUT {
            return Err(BtfError::Unreadable(format!(
                "sock.__sk_common head (members at {found:?}, expected {:?})",
                SockHead::LAYOUT
            )));
        }
        u16::try_from(base).map_err(|_| BtfError::Unreadable("sock.__sk_common.skc_daddr".into()))
    }

    /// Whether cgroup_skb programs may call `bpf_get_netns_cookie`: the
    /// kernel then has the context-generic `bpf_get_netns_cookie` helper
    /// (Linux 6.15 or so) beside the per-program-type ones
    /// (`bpf_get_netns_cookie_sock`, ...), which is all older kernels have.
    pub fn cgroup_skb_has_netns_cookie(&self) -> bool {
        self.btf
            .resolve_types_by_name("bpf_get_netns_cookie")
            .unwrap_or_default()
            .iter()
            .any(|t| matches!(t, Type::Func(_)))
    }

    fn find_struct(&self, name: &str) -> Result<Type, BtfError> {
        self.btf
            .resolve_types_by_name(name)
            .unwrap_or_default()
            .into_iter()
            .find(|t| matches!(t, Type::Struct(s) if !s.members.is_empty()))
            .ok_or_else(|| BtfError::NoStruct(name.to_owned()))
    }

    /// Finds `name` among the members of struct/union `ty`, descending into
    /// anonymous members. Returns the bit offset and the member's type with
    /// typedefs and qualifiers peeled off.
    fn find_member(&self, ty: &Type, name: &str) -> Result<Option<(u32, Type)>, BtfError> {
        let members = match ty {
            Type::Struct(s) | Type::Union(s) => &s.members,
            _ => return Ok(None),
        };
        for member in members {
            let member_name = self.btf.resolve_name(member).unwrap_or_default();
            let Ok(member_type) = self.btf.resolve_chained_type(member) else {
                continue;
            };
            let member_type = self.peel(member_type);
            if member_name == name {
                if member.bitfield_size().is_some_and(|size| size != 0) {
                    return Err(BtfError::Unreadable(name.to_owned()));
                }
                return Ok(Some((member.bit_offset(), member_type)));
            }
            if member_name.is_empty()
                && let Some((inner, found)) = self.find_member(&member_type, name)?
            {
                return Ok(Some((member.bit_offset() + inner, found)));
            }
        }
        Ok(None)
    }

    /// Follows typedefs, const, volatile and type tags to the real type.
    fn peel(&self, mut ty: Type) -> Type {
        for _ in 0..16 {
            let next = match &ty {
                Type::Typedef(t) => self.btf.resolve_chained_type(t),
                Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => {
                    self.btf.resolve_chained_type(t)
                }
                Type::TypeTag(t) => self.btf.resolve_chained_type(t),
                _ => return ty,
            };
            match next {
                Ok(next) => ty = next,
                Err(_) => return ty,
            }
        }
        ty
    }
}
