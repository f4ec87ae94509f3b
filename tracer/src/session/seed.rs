//! State from before the start: at attach, every network namespace's TCP
//! sockets and listeners are enumerated (one `iter/tcp` iterator opened
//! inside each namespace), seeded into the kernel's maps by the program,
//! and handed to the pipeline as `seeded` connections and `listen` events,
//! so a restarted daemon follows what it could not see open. Owners are
//! looked up by socket inode in `/proc` (a connection's owner is read again
//! by the probes at its first send or receive).

use std::collections::{HashMap, HashSet};

use tracer_common::{
    event::{ConnEvent, EventKind, ListenerKey, Owner, Role},
    seed::SeedRecord,
};

use crate::{
    metadata::{
        namespaces::{distinct_namespaces, in_namespace},
        netns::host_netns_inode,
        sockets::{SocketOwner, owners},
    },
    probes::{
        Probes,
        seed::{SeedCounts, SeedError},
        setup::KernelSetup,
    },
};

/// The records, in the order the pipeline should see them: listeners
/// first, so the connections' pods already listen.
pub struct Seeded {
    pub events: Vec<ConnEvent>,
    pub counts: SeedCounts,
}

/// Enumerates every network namespace's sockets through the probes.
pub fn seed(probes: &mut Probes, setup: &KernelSetup) -> Result<Seeded, SeedError> {
    probes.load_seed(setup)?;
    let mut records: HashMap<u64, SeedRecord> = HashMap::new();
    let mut namespaces = 0;
    let mut unentered = 0;
    let mut first_error = None;
    let ours = host_netns_inode();
    for (inode, path) in distinct_namespaces() {
        let link = probes.seed_link()?;
        // Our own namespace needs no setns (and so no CAP_SYS_ADMIN).
        let found = if Some(inode) == ours {
            Some(link.read())
        } else {
            in_namespace(&path, move || Some(link.read()))
        };
        match found {
            Some(Ok(found)) => {
                namespaces += 1;
                // A socket shown twice (a full seq buffer) is the same socket.
                records.extend(found.into_iter().map(|r| (r.sock, r)));
            }
            Some(Err(e)) => {
                tracing::debug!("enumerating network namespace {inode}: {e}");
                first_error.get_or_insert(e);
            }
            // Gone since it was listed, or not ours to enter.
            None => {
                tracing::debug!("network namespace {inode} could not be entered");
                unentered += 1;
            }
        }
    }
    if namespaces == 0
        && let Some(e) = first_error
    {
        return Err(e);
    }
    if unentered > 0 {
        tracing::warn!(
            "connections opened before start are not tracked in {unentered} network namespaces that could not be entered (setns needs CAP_SYS_ADMIN; some may have just gone)"
        );
    }
    let inodes: HashSet<u64> = records
        .values()
        .map(|r| r.inode)
        .filter(|i| *i != 0)
        .collect();
    let found = owners(&inodes);
    let mut counts = SeedCounts {
        namespaces,
        ..SeedCounts::default()
    };
    let mut records: Vec<SeedRecord> = records.into_values().collect();
    records.sort_by_key(|r| (r.state.role != Role::Listener as u8, r.seen_ns));
    let mut events = Vec::with_capacity(records.len());
    for mut record in records {
        if let Some(owner) = found.get(&record.inode) {
            record.state.owner = owner_of(owner);
            counts.owned += 1;
        }
        let listener = record.state.role == Role::Listener as u8;
        if listener {
            counts.listeners += 1;
            if record.state.owner.tgid != 0 {
                let key = ListenerKey {
                    netns: record.state.netns,
                    port: record.state.tuple.sport,
                    _pad: 0,
                };
                probes.own_seeded_listener(key, record.state.owner)?;
            }
        } else {
            counts.connections += 1;
        }
        events.push(event(&record, listener));
    }
    Ok(Seeded { events, counts })
}

/// The record as the event the pipeline decodes.
pub fn event(record: &SeedRecord, listener: bool) -> ConnEvent {
    ConnEvent {
        kind: if listener {
            EventKind::Listen
        } else {
            EventKind::Seeded
        } as u8,
        tcp_state: record.tcp_state,
        ts_ns: record.seen_ns,
        sock: record.sock,
        state: record.state,
        ..ConnEvent::default()
    }
}

fn owner_of(owner: &SocketOwner) -> Owner {
    let mut comm = [0u8; 16];
    let bytes = owner.comm.as_bytes();
    let len = bytes.len().min(15);
    comm[..len].copy_from_slice(&bytes[..len]);
    Owner {
        tgid: owner.pid,
        pid: owner.pid,
        uid: owner.uid,
        _pad: 0,
        cgroup_id: owner.cgroup_id,
        comm,
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::{
        event::flags,
        tcp::{AF_INET, TCP_ESTABLISHED, TCP_LISTEN},
    };

    use super::*;
    use crate::events::{Clock, Event};

    #[test]
    fn records_become_seeded_connections_and_listeners() {
        let mut conn = SeedRecord {
            sock: 0xa,
            seen_ns: 5_000,
            tcp_state: TCP_ESTABLISHED,
            ..SeedRecord::default()
        };
        conn.state.role = Role::Client as u8;
        conn.state.netns = 7;
        conn.state.tuple = tracer_common::event::Tuple {
            family: AF_INET,
            sport: 40000,
            dport: 80,
            saddr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            daddr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ..Default::default()
        };
        conn.state.stats.flags = flags::SEEDED | flags::ESTABLISHED;
        conn.state.owner = owner_of(&SocketOwner {
            pid: 42,
            uid: 1337,
            cgroup_id: 9,
            comm: "a-very-long-process-name".into(),
        });
        let ev = Event::decode(
            &event(&conn, false),
            &Clock::with_offset(Default::default()),
        )
        .unwrap();
        assert_eq!(ev.kind, EventKind::Seeded);
        assert!(ev.seeded());
        assert_eq!(ev.role, Role::Client);
        assert_eq!(ev.local.to_string(), "10.0.0.1:40000");
        assert_eq!(ev.remote.to_string(), "10.0.0.2:80");
        assert_eq!((ev.process.pid, ev.process.uid), (42, 1337));
        assert_eq!(ev.process.comm, "a-very-long-pro");
        assert_eq!(ev.mono_ns, 5_000);

        let mut listener = SeedRecord {
            tcp_state: TCP_LISTEN,
            ..conn
        };
        listener.state.role = Role::Listener as u8;
        let ev = Event::decode(
            &event(&listener, true),
            &Clock::with_offset(Default::default()),
        )
        .unwrap();
        assert_eq!(ev.kind, EventKind::Listen);
        assert!(ev.seeded());
    }
}
