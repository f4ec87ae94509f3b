//! `cargo xtask fuzz --record-corpus`: the seed corpora, from real traffic
//! where there is some. DNS answers from a real dnsmasq and HTTP responses
//! from a real Envoy, both on 127.0.0.1 with ports of their own; the
//! kernels' real `format` files; the config files the tests and the README
//! use; kernel records built with tracer-common's own types, the DNS ones
//! carrying the recorded answers.

mod dns;
mod http;
mod records;

use std::path::Path;

use anyhow::{Context as _, Result};

use super::workspace;

pub fn all(root: &Path) -> Result<()> {
    let dns = dns::record().context("recording DNS answers from dnsmasq")?;
    // The TCP form goes into DNS ring records only.
    let messages: Vec<_> = dns
        .iter()
        .filter(|(name, _)| !name.starts_with("tcp-"))
        .cloned()
        .collect();
    write(root, "dns_answer", &messages)?;
    let http = http::record().context("recording HTTP responses from Envoy")?;
    write(root, "http_status_line", &http)?;
    write(root, "kernel_records", &records::build(&dns))?;
    write(root, "tracepoint_format", &formats()?)?;
    write(root, "config_file", &configs())?;
    Ok(())
}

/// Replaces `root/target/` with `seeds`.
fn write(root: &Path, target: &str, seeds: &[(String, Vec<u8>)]) -> Result<()> {
    let dir = root.join(target);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes)?;
    }
    println!("xtask: {} seeds in {}", seeds.len(), dir.display());
    Ok(())
}

/// Every distinct `format` file of the recorded kernels (the repository's
/// and, when present, the shared collection beside it).
fn formats() -> Result<Vec<(String, Vec<u8>)>> {
    let root = workspace();
    let mut dirs = vec![root.join("tracer/tests/data/kernels")];
    dirs.extend(
        ["../shared/kernels", "../../shared/kernels"]
            .iter()
            .map(|d| root.join(d))
            .filter(|d| d.is_dir()),
    );
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    let mut found = Vec::new();
    for dir in dirs {
        collect_formats(&dir, &mut found)?;
    }
    found.sort();
    for path in found {
        let bytes = std::fs::read(&path)?;
        if seeds.iter().any(|(_, b)| *b == bytes) {
            continue;
        }
        // KERNEL-SYSTEM-EVENT
        let parts: Vec<String> = path
            .iter()
            .rev()
            .skip(1)
            .take(4)
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let name = format!("{}-{}-{}", parts[3], parts[1], parts[0]);
        seeds.push((name, bytes));
    }
    Ok(seeds)
}

fn collect_formats(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_formats(&path, out)?;
        } else if path.file_name().is_some_and(|n| n == "format") {
            out.push(path);
        }
    }
    Ok(())
}

/// The config files of the tests and the README's keys, each key once.
fn configs() -> Vec<(String, Vec<u8>)> {
    [
        (
            "layers.toml",
            "listen = \"127.0.0.1:9999\"\npeer_cap = 5\nattribution_window = 2\n\
             termination_window = \"30s\"\nring_bytes = 8192\ndns = false\n",
        ),
        (
            "every-key.toml",
            "listen = \"[::]:9477\"\nfindings = true\nproxy_uids = [1337]\n\
             proxy_comms = [\"envoy\", \"pilot-agent\"]\n\
             cluster_cidrs = [\"10.0.0.0/8\", \"fd00::/8\"]\nattribution_window = \"1s\"\n\
             termination_window = \"2m\"\npeer_cap = 20\npeer_addresses = false\n\
             max_connections = 65536\nring_bytes = 4194304\nreuse_event_min_idle = \"500ms\"\n\
             drain_interval = \"50ms\"\nhttp_peek = true\ndns = true\n\
             kubeconfig = \"/root/.kube/config\"\nkubernetes = true\nnode_name = \"node-1\"\n",
        ),
        (
            "ipv6-pod.toml",
            "listen = \"fd00::7:9477\"\nkubernetes = false\n",
        ),
        (
            "fractional.toml",
            "attribution_window = 1.5\ndrain_interval = 0.05\n",
        ),
        ("unknown-key.toml", "listn = \"127.0.0.1:1\"\n"),
        ("bad-duration.toml", "attribution_window = \"soon\"\n"),
        ("bad-cidr.toml", "cluster_cidrs = [\"10.0.0.0/33\"]\n"),
        ("bad-ring.toml", "ring_bytes = 5000\n"),
        ("empty.toml", ""),
    ]
    .into_iter()
    .map(|(name, text)| (name.to_owned(), text.as_bytes().to_vec()))
    .collect()
}
