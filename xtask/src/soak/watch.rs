//! What the soak samples from the daemon's process: memory, CPU, and the
//! BPF programs and maps it holds (from /proc/PID/fdinfo, so a concurrent
//! tracer's programs are never counted).

use std::process::Command;

pub use crate::procfs::{cpu_seconds, rss_mib};

#[derive(Debug, Default, Clone)]
pub struct Held {
    /// (program id, run time ns, runs).
    pub programs: Vec<(u32, u64, u64)>,
    /// (map id, map type, max entries).
    pub maps: Vec<(u32, u32, u32)>,
}

/// The BPF programs and maps `pid` holds open.
pub fn held(pid: i32) -> Held {
    let mut held = Held::default();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return held;
    };
    for info in fds
        .flatten()
        .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
    {
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(id) = field("prog_id:") {
            let program = (
                id as u32,
                field("run_time_ns:").unwrap_or(0),
                field("run_cnt:").unwrap_or(0),
            );
            if !held.programs.iter().any(|p| p.0 == program.0) {
                held.programs.push(program);
            }
        } else if let Some(id) = field("map_id:") {
            let map = (
                id as u32,
                field("map_type:").unwrap_or(0) as u32,
                field("max_entries:").unwrap_or(0) as u32,
            );
            if !held.maps.iter().any(|m| m.0 == map.0) {
                held.maps.push(map);
            }
        }
    }
    held
}

/// Total BPF run time (ns) and runs of the held programs.
pub fn bpf_totals(held: &Held) -> (u64, u64) {
    held.programs
        .iter()
        .fold((0, 0), |(ns, n), p| (ns + p.1, n + p.2))
}

const BPF_MAP_TYPE_LRU_HASH: u32 = 9;

/// Entries in the daemon's per-socket LRU map (the only LRU hash it holds).
pub fn socket_map_entries(held: &Held) -> Option<u64> {
    let id = held.maps.iter().find(|m| m.1 == BPF_MAP_TYPE_LRU_HASH)?.0;
    let out = Command::new("bpftool")
        .args(["map", "dump", "id", &id.to_string(), "--json"])
        .output()
        .ok()?;
    let entries: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    entries.as_array().map(|a| a.len() as u64)
}

/// Which of `ids` the kernel still has: programs (`prog`) or maps (`map`).
pub fn still_loaded(kind: &str, ids: &[u32]) -> Vec<u32> {
    ids.iter()
        .copied()
        .filter(|id| {
            Command::new("bpftool")
                .args([kind, "show", "id", &id.to_string()])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect()
}
