//! Open connections by kernel socket, fed by events.

use std::collections::HashMap;

use tracer_common::event::{EventKind, Role};

use super::{Connection, EndReason};
use crate::events::Event;

/// What an event did to the table.
#[derive(Debug)]
pub enum Applied {
    /// The event belongs to an open connection.
    Open { id: u64 },
    /// The connection is over; here it is, whole.
    Closed(Box<Connection>),
    /// Not a connection event (listeners, resets for unknown sockets).
    Untracked,
}

pub struct ConnectionTable {
    open: HashMap<u64, Connection>,
    next_id: u64,
    capacity: usize,
    /// Entries dropped because the table was full.
    pub evicted: u64,
}

impl ConnectionTable {
    pub fn new(capacity: usize) -> Self {
        Self {
            open: HashMap::new(),
            next_id: 1,
            capacity: capacity.max(1),
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Connection> {
        self.open.values()
    }

    pub fn apply(&mut self, ev: &Event) -> Applied {
        match ev.kind {
            EventKind::Listen | EventKind::ListenClose => Applied::Untracked,
            EventKind::Reset if ev.role == Role::Unknown && !self.open.contains_key(&ev.sock) => {
                Applied::Untracked
            }
            EventKind::Close => {
                let mut conn = match self.open.remove(&ev.sock) {
                    Some(mut conn) => {
                        conn.update(ev);
                        conn
                    }
                    // Opened before we started, or its open event was filtered or lost.
                    None => Connection::from_event(self.allocate_id(), ev),
                };
                conn.end = Some(EndReason::from_stats(&conn.stats));
                Applied::Closed(Box::new(conn))
            }
            EventKind::Connect | EventKind::Accept | EventKind::Reset | EventKind::Reuse => {
                let conn = self.upsert(ev);
                if ev.kind == EventKind::Reuse
                    && let Some(idle) = conn.last_reuse_idle()
                {
                    conn.record_reuse(idle);
                }
                Applied::Open { id: conn.id }
            }
        }
    }

    fn upsert(&mut self, ev: &Event) -> &mut Connection {
        if !self.open.contains_key(&ev.sock) && self.open.len() >= self.capacity {
            self.evict_one();
        }
        let id = if self.open.contains_key(&ev.sock) {
            0
        } else {
            self.allocate_id()
        };
        let conn = self
            .open
            .entry(ev.sock)
            .or_insert_with(|| Connection::from_event(id, ev));
        conn.update(ev);
        conn
    }

    /// Drops the connection idle the longest.
    fn evict_one(&mut self) {
        if let Some(sock) = self
            .open
            .iter()
            .min_by_key(|(_, c)| c.last_activity_ns())
            .map(|(s, _)| *s)
        {
            self.open.remove(&sock);
            self.evicted += 1;
        }
    }

    fn allocate_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}
