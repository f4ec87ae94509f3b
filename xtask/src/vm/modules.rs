//! The kernel modules the guest loads from its initramfs, in dependency
//! order, decompressed on the host (busybox insmod takes plain .ko only).

use std::{collections::HashMap, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

/// What the guest needs that a cloud kernel may build as a module: the
/// virtio-fs root and its overlay, the kernel tests' veth pairs, and what
/// iptables (nft backend, REDIRECT) and the lab's bridge use. Built-in ones
/// are skipped.
const WANTED: &[&str] = &[
    "virtio_pci",
    "virtio_rng",
    "virtiofs",
    "overlay",
    "veth",
    "bridge",
    "dummy",
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "ip_tables",
    "iptable_filter",
    "iptable_nat",
    "ip6_tables",
    "ip6table_filter",
    "xt_REDIRECT",
    "xt_conntrack",
    "xt_owner",
    // `-p tcp --dport` and `-j REJECT --reject-with tcp-reset` (dns-change lab).
    // iptables-nft turns these into xt matches or native nft expressions,
    // depending on its version: both kinds.
    "xt_tcpudp",
    "ipt_REJECT",
    "ip6t_REJECT",
    "nft_reject_ipv4",
    "nft_reject_ipv6",
    "nft_reject_inet",
    // Every iptables-nft rule carries a counter; 5.10 builds it as a module.
    "nft_counter",
    "nft_ct",
    "nft_nat",
    "nft_redir",
];

/// Wanted only where the kernel builds them as modules of their own.
const OPTIONAL: &[&str] = &[
    "nft_counter",
    "nft_ct",
    "nft_nat",
    "nft_redir",
    "nft_reject_inet",
];

/// One module to load: its name in the initramfs and its contents.
pub struct Module {
    pub file_name: String,
    pub data: Vec<u8>,
}

/// The wanted modules and their dependencies, each after what it needs.
pub fn load_order(modules_dir: &Path) -> Result<Vec<Module>> {
    let dep =
        std::fs::read_to_string(modules_dir.join("modules.dep")).context("reading modules.dep")?;
    let builtin = std::fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    let deps: HashMap<String, (String, Vec<String>)> = dep
        .lines()
        .filter_map(|line| {
            let (path, needs) = line.split_once(':')?;
            let needs = needs.split_whitespace().map(str::to_owned).collect();
            Some((name_of(path), (path.to_owned(), needs)))
        })
        .collect();
    let builtin: Vec<String> = builtin.lines().map(name_of).collect();

    let mut order = Vec::new();
    for wanted in WANTED {
        if builtin.iter().any(|b| b == wanted) {
            continue;
        }
        let Some((path, _)) = deps.get(*wanted) else {
            // Folded into another module on this kernel (nft_counter is part
            // of nf_tables since 5.13, for one): nothing to load.
            if OPTIONAL.contains(wanted) {
                continue;
            }
            bail!("module {wanted} is neither built in nor in modules.dep");
        };
        visit(path, &deps, &mut order)?;
    }
    order
        .iter()
        .map(|path| {
            Ok(Module {
                file_name: format!("{}.ko", name_of(path)),
                data: read_module(&modules_dir.join(path))?,
            })
        })
        .collect()
}

/// Depth first: a module's dependencies are pushed before it.
fn visit(
    path: &str,
    deps: &HashMap<String, (String, Vec<String>)>,
    order: &mut Vec<String>,
) -> Result<()> {
    if order.iter().any(|p| p == path) {
        return Ok(());
    }
    let (_, needs) = deps
        .get(&name_of(path))
        .with_context(|| format!("{path} is not in modules.dep"))?;
    for need in needs {
        visit(need, deps, order)?;
    }
    order.push(path.to_owned());
    Ok(())
}

/// `kernel/fs/fuse/virtiofs.ko.xz` → `virtiofs`; modprobe treats - and _ alike.
fn name_of(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

fn read_module(path: &Path) -> Result<Vec<u8>> {
    let tool = match path.extension().and_then(|e| e.to_str()) {
        Some("ko") => return std::fs::read(path).with_context(|| format!("reading {path:?}")),
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => bail!("{path:?}: unknown module compression"),
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running {tool} to decompress {path:?}"))?;
    if !out.status.success() {
        bail!("{tool} -dc {path:?} failed ({})", out.status);
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::name_of;

    #[test]
    fn names_drop_directory_suffix_and_dashes() {
        assert_eq!(name_of("kernel/fs/fuse/virtiofs.ko.xz"), "virtiofs");
        assert_eq!(
            name_of("kernel/net/netfilter/xt_REDIRECT.ko"),
            "xt_REDIRECT"
        );
        assert_eq!(
            name_of("kernel/drivers/char/hw_random/virtio-rng.ko"),
            "virtio_rng"
        );
    }
}
