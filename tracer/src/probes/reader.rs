//! Draining the ring buffers. The programs submit connection events without
//! waking us (a wake-up costs more than the probe itself), so we drain on a
//! short timer, and early when they force a wake-up because the buffer is
//! filling. DNS answers come through a ring of their own.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    time::Interval,
};
use tracer_common::event::{ConnEvent, DnsEvent};

pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
    /// DNS answers, when the capture is attached.
    dns: Option<AsyncFd<RingBuf<MapData>>>,
    tick: Interval,
    /// Records shorter than their type (a build mismatch); counted, skipped.
    pub malformed: u64,
}

impl EventReader {
    pub fn new(
        ring: RingBuf<MapData>,
        dns: Option<RingBuf<MapData>>,
        drain_every: Duration,
    ) -> std::io::Result<Self> {
        let mut tick = tokio::time::interval(drain_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let dns = dns.map(register).transpose()?;
        Ok(Self {
            ring: register(ring)?,
            dns,
            tick,
            malformed: 0,
        })
    }

    /// Waits for the next timer tick or a forced wake-up (DNS answers always wake).
    pub async fn wait(&mut self) {
        let dns = async {
            match self.dns.as_mut() {
                Some(dns) => {
                    if let Ok(mut guard) = dns.readable_mut().await {
                        guard.clear_ready();
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            guard = self.ring.readable_mut() => {
                if let Ok(mut guard) = guard {
                    guard.clear_ready();
                }
            }
            _ = dns => {}
            _ = self.tick.tick() => {}
        }
    }

    /// Appends every queued connection event to `out`.
    pub fn drain(&mut self, out: &mut Vec<ConnEvent>) {
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            match decode(&item) {
                Some(event) => out.push(event),
                None => self.malformed += 1,
            }
        }
    }

    /// Appends every queued DNS answer to `out`.
    pub fn drain_dns(&mut self, out: &mut Vec<DnsEvent>) {
        let Some(dns) = self.dns.as_mut() else { return };
        let ring = dns.get_mut();
        while let Some(item) = ring.next() {
            match decode_dns(&item) {
                Some(event) => out.push(event),
                None => self.malformed += 1,
            }
        }
    }
}

fn register(ring: RingBuf<MapData>) -> std::io::Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the ring buffer owns its map fd for its whole life, and the
    // AsyncFd owns the ring buffer, so the fd stays open and the same.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// A ring buffer record as a `ConnEvent`, if it is long enough.
pub fn decode(bytes: &[u8]) -> Option<ConnEvent> {
    if bytes.len() < ConnEvent::SIZE {
        return None;
    }
    // SAFETY: ConnEvent is plain old data (every bit pattern valid) and the slice is long enough.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<ConnEvent>()) })
}

/// A DNS ring record as a `DnsEvent`, if it is long enough.
pub fn decode_dns(bytes: &[u8]) -> Option<DnsEvent> {
    if bytes.len() < DnsEvent::SIZE {
        return None;
    }
    // SAFETY: DnsEvent is plain old data (every bit pattern valid) and the slice is long enough.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<DnsEvent>()) })
}
