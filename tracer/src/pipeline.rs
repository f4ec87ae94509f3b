//! The path every kernel record takes, shared by `trace` and `daemon`:
//! decode → connection table → analysis.

use tracer_common::event::ConnEvent;

use crate::{
    analysis::{AnalysisConfig, Analyzer, Observation},
    conntrack::{ConnectionTable, table::Applied},
    events::{Clock, Event},
    kernel::setup::ResetReasons,
    metadata::{PodName, PodResolver},
};

pub struct Pipeline {
    pub clock: Clock,
    pub table: ConnectionTable,
    pub pods: PodResolver,
    pub analyzer: Analyzer,
    /// Records that did not decode (unknown kinds: a build mismatch).
    pub undecodable: u64,
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

    /// Decides what time has settled (failures, 503 attributions).
    pub fn tick(&mut self, observations: &mut Vec<Observation>) {
        self.analyzer.tick(&mut self.pods, observations);
    }
}
