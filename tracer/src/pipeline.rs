//! The path every kernel record takes, shared by `trace` and `daemon`:
//! decode → connection table → analysis.

use tracer_common::event::{ConnEvent, DnsEvent};

const IPPROTO_TCP: u8 = 6;

use crate::{
    analysis::{AnalysisConfig, Analyzer, Observation},
    conntrack::{ConnectionTable, table::Applied},
    dns,
    events::{Clock, Event},
    kernel::setup::ResetReasons,
    metadata::{PodName, PodResolver, cookies::NetnsCookies},
    probes::reader::EventReader,
};

pub struct Pipeline {
    pub clock: Clock,
    pub table: ConnectionTable,
    pub pods: PodResolver,
    pub analyzer: Analyzer,
    /// Records that did not decode (unknown kinds: a build mismatch).
    pub undecodable: u64,
    /// Network namespace cookies (DNS capture) to inodes.
    pub cookies: NetnsCookies,
    /// DNS payloads skipped: malformed or hostile (parse errors), and cut
    /// (longer than the capture, or split across TCP segments).
    pub dns_malformed: u64,
    pub dns_truncated: u64,
    /// Reused drain buffers.
    batch: Vec<ConnEvent>,
    dns_batch: Vec<DnsEvent>,
}

impl Pipeline {
    pub fn new(config: AnalysisConfig, capacity: usize, reset_reasons: ResetReasons) -> Self {
        let clock = Clock::calibrate();
        Self {
            clock,
            table: ConnectionTable::new(capacity),
            pods: PodResolver::new(),
            analyzer: Analyzer::new(config, clock, reset_reasons),
            undecodable: 0,
            cookies: NetnsCookies::default(),
            dns_malformed: 0,
            dns_truncated: 0,
            batch: Vec::new(),
            dns_batch: Vec::new(),
        }
    }

    /// Applies one record; `seen` gets the event as the table saw it.
    pub fn process(
        &mut self,
        raw: &ConnEvent,
        observations: &mut Vec<Observation>,
        mut seen: impl FnMut(&Event, &Applied, &PodName),
    ) {
        let mut event = match Event::decode(raw, &self.clock) {
            Ok(event) => event,
            Err(e) => {
                self.undecodable += 1;
                tracing::debug!("skipping record: {e}");
                return;
            }
        };
        let applied = self.table.apply(&mut event);
        let pod = self.pods.resolve(event.netns);
        seen(&event, &applied, &pod);
        self.analyzer
            .observe(&event, &applied, &mut self.pods, observations);
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
            self.dns_truncated += 1;
            return;
        };
        match dns::parse_response(message) {
            Ok(answer) => {
                let netns = self.cookies.inode(raw.netns_cookie).unwrap_or(0);
                self.analyzer
                    .observe_dns(netns, answer, raw.ts_ns, &mut self.pods, observations);
            }
            Err(e) => {
                self.dns_malformed += 1;
                tracing::debug!("skipping DNS payload: {e}");
            }
        }
    }

    /// Drains both ring buffers through the pipeline (DNS answers first, so a
    /// connection opened right after its lookup finds its name), then ticks.
    /// `seen` gets every connection event as the table saw it.
    pub fn ingest(
        &mut self,
        reader: &mut EventReader,
        observations: &mut Vec<Observation>,
        mut seen: impl FnMut(&Event, &Applied, &PodName),
    ) {
        let mut dns = std::mem::take(&mut self.dns_batch);
        reader.drain_dns(&mut dns);
        for raw in dns.drain(..) {
            self.process_dns(&raw, observations);
        }
        self.dns_batch = dns;
        let mut batch = std::mem::take(&mut self.batch);
        reader.drain(&mut batch);
        for raw in batch.drain(..) {
            self.process(&raw, observations, &mut seen);
        }
        self.batch = batch;
        self.tick(observations);
    }

    /// Decides what time has settled (failures, 503 attributions).
    pub fn tick(&mut self, observations: &mut Vec<Observation>) {
        self.analyzer.tick(&mut self.pods, observations);
    }
}
