//! Draining the ring buffer. The programs submit without waking us (a wake-up
//! costs more than the probe itself), so we drain on a short timer, and early
//! when they force a wake-up because the buffer is filling.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    time::Interval,
};
use tracer_common::event::ConnEvent;

pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
    tick: Interval,
    /// Records shorter than a `ConnEvent` (a build mismatch); counted, skipped.
    pub malformed: u64,
}

impl EventReader {
    pub fn new(ring: RingBuf<MapData>, drain_every: Duration) -> std::io::Result<Self> {
        let mut tick = tokio::time::interval(drain_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // SAFETY: the ring buffer owns its map fd for its whole life, and the
        // AsyncFd owns the ring buffer, so the fd stays open and the same.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self {
            ring,
            tick,
            malformed: 0,
        })
    }

    /// Waits for the next timer tick or a forced wake-up.
    pub async fn wait(&mut self) {
        tokio::select! {
            guard = self.ring.readable_mut() => {
                if let Ok(mut guard) = guard {
                    guard.clear_ready();
                }
            }
            _ = self.tick.tick() => {}
        }
    }

    /// Appends every queued event to `out`.
    pub fn drain(&mut self, out: &mut Vec<ConnEvent>) {
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            match decode(&item) {
                Some(event) => out.push(event),
                None => self.malformed += 1,
            }
        }
    }
}

/// A ring buffer record as a `ConnEvent`, if it is long enough.
pub fn decode(bytes: &[u8]) -> Option<ConnEvent> {
    if bytes.len() < ConnEvent::SIZE {
        return None;
    }
    // SAFETY: ConnEvent is plain old data (every bit pattern valid) and the slice is long enough.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ConnEvent>()) })
}
