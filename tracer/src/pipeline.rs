//! The path every kernel record takes: decode → connection table →
//! analysis. The same for every subcommand; the session drives it.

use tracer_common::event::{ConnEvent, DnsEvent};

use crate::{
    analysis::{Analysis, AnalysisConfig, Observation},
    conntrack::{ConnectionTable, table::Applied},
    dns,
    events::{Clock, Event},
    kernel::reset_reasons::ResetReasons,
    metadata::{PodName, Pods, addresses::NetnsAddresses, cookies::NetnsCookies},
    probes::{reader::EventReader, seed::SeedCounts},
};

const IPPROTO_TCP: u8 = 6;

/// Sees every connection event as the table applied it, with its pod.
pub type EventTap<'a> = &'a mut dyn FnMut(&Event, &Applied, &PodName);

/// Records and payloads the pipeline could not use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Records this build cannot read: an unknown kind, an impossible HTTP
    /// status (a build mismatch).
    pub unknown_kind: u64,
    /// DNS payloads that did not parse (malformed or hostile).
    pub dns_malformed: u64,
    /// DNS payloads cut short (longer than the capture, or split across TCP segments).
    pub dns_truncated: u64,
    /// DNS answers seen at a device of a namespace they were only routed
    /// through (kernels that capture DNS at devices).
    pub dns_forwarded: u64,
}

pub struct Pipeline {
    pub clock: Clock,
    pub table: ConnectionTable,
    pub analysis: Analysis,
    /// Network namespace cookies (DNS capture) to inodes.
    pub cookies: NetnsCookies,
    /// Each namespace's addresses, for records named by address only.
    pub addresses: NetnsAddresses,
    pub skipped: Skipped,
    /// What the start-up enumeration found.
    pub seeded: SeedCounts,
    /// Its records, applied first at the next ingest (before anything the
    /// ring buffers hold, which can only be newer).
    seeded_pending: Vec<ConnEvent>,
    /// Reused drain buffers.
    batch: Vec<ConnEvent>,
    dns_batch: Vec<DnsEvent>,
}

impl Pipeline {
    pub fn new(
        config: AnalysisConfig,
        pods: Pods,
        capacity: usize,
        reset_reasons: ResetReasons,
    ) -> Self {
        let clock = Clock::calibrate();
        Self {
            clock,
            table: ConnectionTable::new(capacity),
            analysis: Analysis::new(config, pods, clock, reset_reasons),
            cookies: NetnsCookies::default(),
            addresses: NetnsAddresses::default(),
            skipped: Skipped::default(),
            seeded: SeedCounts::default(),
            seeded_pending: Vec::new(),
            batch: Vec::new(),
            dns_batch: Vec::new(),
        }
    }

    /// Sockets that existed before the start, to apply at the next ingest.
    pub fn seed(&mut self, events: Vec<ConnEvent>, counts: SeedCounts) {
        self.seeded_pending = events;
        self.seeded = counts;
    }

    /// Applies one record read at `now_ns`.
    pub fn process(
        &mut self,
        raw: &ConnEvent,
        now_ns: u64,
        observations: &mut Vec<Observation>,
        tap: Option<EventTap>,
    ) {
        let mut event = match Event::decode(raw, &self.clock) {
            Ok(event) => event,
            Err(e) => {
                self.skipped.unknown_kind += 1;
                tracing::debug!("skipping record: {e}");
                return;
            }
        };
        // A reset from a namespace's control socket: its namespace is the
        // one that owns the address it left from.
        if event.netns == 0 && event.reset.is_some_and(|r| r.inferred) {
            event.netns = self.addresses.owner(event.local.ip()).unwrap_or(0);
        }
        let applied = self.table.apply(&mut event);
        if let Some(tap) = tap {
            let pod = self.analysis.pod(event.netns, event.process.cgroup_id);
            tap(&event, &applied, &pod);
        }
        self.analysis
            .observe(&event, &applied, now_ns, observations);
    }

    /// Parses one captured DNS response and records it for its namespace.
    pub fn process_dns(&mut self, raw: &DnsEvent, observations: &mut Vec<Observation>) {
        let captured = &raw.data[..(raw.captured as usize).min(raw.data.len())];
        let message = if raw.protocol == IPPROTO_TCP {
            dns::parse::tcp_message(captured)
        } else {
            Some(captured)
        };
        let Some(message) =
            message.filter(|_| raw.protocol == IPPROTO_TCP || raw.len == raw.captured)
        else {
            self.skipped.dns_truncated += 1;
            return;
        };
        // Seen at a device (older kernels): keep it only where it was
        // addressed to the namespace, not routed through it.
        let device_netns = (raw.netns != 0).then_some(raw.netns);
        if let Some(netns) = device_netns {
            let (_, _, receiver) = crate::events::tuple_addresses(&raw.tuple);
            if !self.addresses.is_local(netns, receiver.ip()) {
                self.skipped.dns_forwarded += 1;
                return;
            }
        }
        match dns::parse_response(message) {
            Ok(answer) => {
                let netns = device_netns
                    .or_else(|| self.cookies.inode(raw.netns_cookie))
                    .unwrap_or(0);
                self.analysis
                    .observe_dns(netns, answer, raw.ts_ns, observations);
            }
            Err(e) => {
                self.skipped.dns_malformed += 1;
                tracing::debug!("skipping DNS payload: {e}");
            }
        }
    }

    /// Drains both ring buffers (DNS answers first, so a connection opened
    /// right after its lookup finds its name), then decides what `now_ns`
    /// has settled.
    pub fn ingest(
        &mut self,
        reader: &mut EventReader,
        now_ns: u64,
        observations: &mut Vec<Observation>,
        mut tap: Option<EventTap>,
    ) {
        let mut dns = std::mem::take(&mut self.dns_batch);
        reader.drain_dns(&mut dns);
        for raw in dns.drain(..) {
            self.process_dns(&raw, observations);
        }
        self.dns_batch = dns;
        let mut batch = std::mem::take(&mut self.batch);
        batch.append(&mut self.seeded_pending);
        reader.drain(&mut batch);
        for raw in batch.drain(..) {
            let tap: Option<EventTap> = match &mut tap {
                Some(tap) => Some(&mut **tap),
                None => None,
            };
            self.process(&raw, now_ns, observations, tap);
        }
        self.batch = batch;
        self.tick(now_ns, observations);
    }

    /// Decides the failures and 503s that have settled by `now_ns`.
    pub fn tick(&mut self, now_ns: u64, observations: &mut Vec<Observation>) {
        self.analysis.tick(now_ns, observations);
    }
}
