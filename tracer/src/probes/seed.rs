//! The start-up enumeration's program (`ct_seed`, an `iter/tcp` iterator,
//! Linux 5.9+): loading it, and reading one network namespace's sockets
//! through it. A TCP iterator only yields the sockets of the namespace it
//! was opened in, so the caller opens one per namespace, each from a thread
//! that has entered it ([`SeedLink::read`] runs wherever it is called).

use std::io::Read;

use aya::{
    Btf,
    maps::{HashMap, MapError},
    programs::{Iter, ProgramError, links::LinkError},
};
use tracer_common::{
    event::{ListenerKey, Owner},
    seed::SeedRecord,
};

use super::{loader::Probes, setup::KernelSetup};

/// The iterator program in `tracer-ebpf`.
pub const SEED_PROGRAM: &str = "ct_seed";

/// How many sockets a start seeded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeedCounts {
    pub connections: u64,
    pub listeners: u64,
    /// Network namespaces enumerated.
    pub namespaces: u64,
    /// Seeded sockets whose owner was found in `/proc`.
    pub owned: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("kernel BTF lacks a member it reads: {0}")]
    Offsets(String),
    #[error("program {SEED_PROGRAM} is missing from the eBPF object (stale build?)")]
    MissingProgram,
    #[error("cannot read kernel BTF for the TCP iterator")]
    Btf(#[source] aya::BtfError),
    #[error("the TCP socket iterator (iter/tcp, Linux 5.9+) cannot be loaded")]
    Load(#[source] ProgramError),
    #[error("the TCP socket iterator cannot be attached")]
    Attach(#[source] ProgramError),
    #[error("cannot open the TCP socket iterator")]
    Open(#[source] LinkError),
    #[error("reading the TCP socket iterator")]
    Read(#[source] std::io::Error),
    #[error("map LISTENERS")]
    Map(#[source] MapError),
}

impl Probes {
    /// Loads the iterator (it attaches to nothing until [`Probes::seed_link`]).
    pub fn load_seed(&mut self, setup: &KernelSetup) -> Result<(), SeedError> {
        if let Err(reason) = &setup.seed_offsets {
            return Err(SeedError::Offsets(reason.clone()));
        }
        let btf = Btf::from_sys_fs().map_err(SeedError::Btf)?;
        let program: &mut Iter = self
            .ebpf_mut()
            .program_mut(SEED_PROGRAM)
            .ok_or(SeedError::MissingProgram)?
            .try_into()
            .map_err(SeedError::Load)?;
        program.load("tcp", &btf).map_err(SeedError::Load)
    }

    /// A fresh link to open one iterator with (each iterator consumes its link).
    pub fn seed_link(&mut self) -> Result<SeedLink, SeedError> {
        let program: &mut Iter = self
            .ebpf_mut()
            .program_mut(SEED_PROGRAM)
            .ok_or(SeedError::MissingProgram)?
            .try_into()
            .map_err(SeedError::Attach)?;
        let id = program.attach().map_err(SeedError::Attach)?;
        let link = program.take_link(id).map_err(SeedError::Attach)?;
        Ok(SeedLink(link))
    }

    /// Names the owner of a seeded listener (found in userspace), so the
    /// connections it accepts from now on inherit it. A listener the
    /// tracepoints saw open keeps the owner they read.
    pub fn own_seeded_listener(&mut self, key: ListenerKey, owner: Owner) -> Result<(), SeedError> {
        let map =
            self.ebpf_mut()
                .map_mut("LISTENERS")
                .ok_or(SeedError::Map(MapError::InvalidName {
                    name: "LISTENERS".into(),
                }))?;
        let mut listeners: HashMap<_, ListenerKey, Owner> =
            HashMap::try_from(map).map_err(SeedError::Map)?;
        match listeners.get(&key, 0) {
            Ok(current) if current.tgid == 0 => {
                listeners.insert(key, owner, 0).map_err(SeedError::Map)
            }
            _ => Ok(()),
        }
    }
}

/// One iterator's worth of the seeding program; `Send`, so it can be read
/// from a thread inside another network namespace.
pub struct SeedLink(aya::programs::iter::IterLink);

impl SeedLink {
    /// Runs the iterator in the calling thread's network namespace: the
    /// program seeds the maps as it goes and reports each socket.
    pub fn read(self) -> Result<Vec<SeedRecord>, SeedError> {
        let mut file = self.0.into_file().map_err(SeedError::Open)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(SeedError::Read)?;
        Ok(decode(&bytes))
    }
}

/// The records in an iterator's output (a trailing partial record is dropped).
pub fn decode(bytes: &[u8]) -> Vec<SeedRecord> {
    bytes
        .chunks_exact(SeedRecord::SIZE)
        // SAFETY: SeedRecord is plain old data and each chunk is exactly its size.
        .map(|chunk| unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast::<SeedRecord>()) })
        .collect()
}

#[cfg(test)]
mod tests {
    use tracer_common::event::{Role, flags};

    use super::*;

    #[test]
    fn records_decode_back_to_back() {
        let mut a = SeedRecord {
            sock: 0xffff_8881_0000_1000,
            inode: 4242,
            seen_ns: 9,
            tcp_state: 1,
            inserted: 1,
            ..SeedRecord::default()
        };
        a.state.role = Role::Client as u8;
        a.state.stats.flags = flags::SEEDED | flags::ESTABLISHED;
        a.state.tuple.sport = 40000;
        let b = SeedRecord {
            sock: 0xffff_8881_0000_2000,
            tcp_state: 10,
            ..SeedRecord::default()
        };
        let mut bytes = Vec::new();
        for r in [&a, &b] {
            // SAFETY: plain old data, viewed as bytes.
            bytes.extend_from_slice(unsafe {
                std::slice::from_raw_parts((r as *const SeedRecord).cast::<u8>(), SeedRecord::SIZE)
            });
        }
        bytes.extend_from_slice(&[1, 2, 3]);
        assert_eq!(decode(&bytes), vec![a, b]);
        assert!(decode(&bytes[..SeedRecord::SIZE - 1]).is_empty());
    }
}
