//! One tracing session: bring the probes up, drain both ring buffers through
//! the pipeline on every wake-up, hand what comes out to the outputs, answer
//! queries, stop on a signal, a deadline or an output's request, and detach
//! everything on the way out. `trace`, `daemon` and `diagnose` are this
//! session with different outputs plugged in.

pub mod health;
pub mod query;
pub mod seed;

use std::time::Duration;

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracer_common::counters::Counter;

use crate::{
    analysis::Observation,
    config::Config,
    conntrack::table::Applied,
    events::{Clock, Event},
    metadata::{PodName, Pods},
    pipeline::{Pipeline, Skipped},
    probes::{self, StartError, Tracer, counters::CounterTotals},
};
pub use health::Health;
pub use query::Query;

/// Whether an output wants the session to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop cleanly (e.g. the reader of stdout went away).
    Stop,
}

/// Where a session's results go. Every method has a default that ignores.
pub trait Output {
    /// Whether [`event`](Output::event) should be called (it costs a pod
    /// lookup per event, so only outputs that print events ask for it).
    fn wants_events(&self) -> bool {
        false
    }
    /// A connection event as the connection table applied it.
    fn event(&mut self, _event: &Event, _applied: &Applied, _pod: &PodName) {}
    /// A conclusion of the analysis.
    fn observation(&mut self, _observation: &Observation) {}
    /// After each drain, with the session's state: refresh, write, flush.
    fn drained(&mut self, _state: &State<'_>) -> std::io::Result<Flow> {
        Ok(Flow::Continue)
    }
}

/// What outputs may read after each drain.
pub struct State<'a> {
    pub pipeline: &'a Pipeline,
    /// The programs' counters, summed across CPUs.
    pub kernel: CounterTotals,
    /// Ring buffer records shorter than their type (a build mismatch).
    pub short_records: u64,
    /// Kernel monotonic time of this drain.
    pub now_ns: u64,
}

/// How a session ends besides a signal.
#[derive(Debug, Clone, Copy, Default)]
pub struct Until {
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// After stopping, wait for pending failures and 503s to settle (two
    /// attribution windows) and drain once more.
    pub settle: bool,
}

/// What a finished session leaves behind.
pub struct Finished {
    pub pipeline: Pipeline,
    pub kernel: CounterTotals,
    pub short_records: u64,
}

impl Finished {
    pub fn skipped(&self) -> Skipped {
        self.pipeline.skipped
    }
}

pub struct Session {
    tracer: Tracer,
    pipeline: Pipeline,
    outputs: Vec<Box<dyn Output>>,
    queries: Option<mpsc::Receiver<Query>>,
    pub health: Health,
    lost_reported: u64,
    next_audit_ns: u64,
}

/// How often the connection table is audited against the kernel's socket
/// map, and how many entries each round visits (a full pass over 100 000
/// connections takes a few minutes; a round costs a few milliseconds).
const AUDIT_EVERY: Duration = Duration::from_secs(10);
const AUDIT_BUDGET: usize = 4_096;

impl Session {
    /// Loads and attaches the probes with `config`; pods named by `pods`.
    pub fn start(config: &Config, pods: Pods) -> Result<Self, StartError> {
        let mut tracer = probes::start(&config.probes)?;
        let mut pipeline = Pipeline::new(
            config.analysis.clone(),
            pods,
            config.probes.max_connections as usize,
            tracer.setup.reset_reasons.clone(),
        );
        // After attach, so nothing falls between the enumeration and the tracepoints.
        match seed::seed(&mut tracer.probes, &tracer.setup) {
            Ok(seeded) => {
                let c = seeded.counts;
                tracing::info!(
                    "seeded {} connections and {} listeners that existed before start, from {} network namespaces ({} with a known owner)",
                    c.connections,
                    c.listeners,
                    c.namespaces,
                    c.owned
                );
                pipeline.seed(seeded.events, c);
            }
            Err(e) => tracing::warn!(
                "connections opened before start are not tracked: {}",
                crate::errors::chain(&e)
            ),
        }
        let health = Health::new(tracer.probes.program_ids().len());
        release_free_heap();
        Ok(Self {
            tracer,
            pipeline,
            outputs: Vec::new(),
            queries: None,
            health,
            lost_reported: 0,
            next_audit_ns: Clock::mono_now() + AUDIT_EVERY.as_nanos() as u64,
        })
    }

    pub fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    pub fn add_output(&mut self, output: impl Output + 'static) {
        self.outputs.push(Box::new(output));
    }

    /// Answers queries (e.g. `/findings`) from the session's own task.
    pub fn serve_queries(&mut self) -> mpsc::Sender<Query> {
        let (tx, rx) = mpsc::channel(16);
        self.queries = Some(rx);
        tx
    }

    /// Runs until SIGINT, SIGTERM, `until`, or an output asks to stop; then
    /// detaches every probe.
    pub async fn run(mut self, until: Until) -> std::io::Result<Finished> {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let deadline = until.duration.map(|d| tokio::time::Instant::now() + d);
        let until_deadline = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(until_deadline);
        let mut observations = Vec::new();
        loop {
            let stop = tokio::select! {
                _ = sigint.recv() => true,
                _ = sigterm.recv() => true,
                _ = &mut until_deadline => true,
                Some(query) = recv(&mut self.queries) => {
                    query.answer(&self.pipeline);
                    continue;
                }
                _ = self.tracer.reader.wait() => false,
            };
            // Drain on every wake-up, and once more on the way out.
            let flow = self.drain(&mut observations)?;
            if stop || flow == Flow::Stop {
                break;
            }
        }
        if until.settle {
            // A proxy failure no 503 took is reported two windows after it.
            let window = self.pipeline.analysis.config().attribution_window;
            tokio::time::sleep(2 * window + self.pipeline.analysis.config().settle).await;
            self.drain(&mut observations)?;
        }
        let kernel = CounterTotals::read(&self.tracer.counters);
        let short_records = self.tracer.reader.malformed;
        drop(self.tracer); // detaches every program and frees every map
        Ok(Finished {
            pipeline: self.pipeline,
            kernel,
            short_records,
        })
    }

    /// One drain: records through the pipeline, results to the outputs.
    fn drain(&mut self, observations: &mut Vec<Observation>) -> std::io::Result<Flow> {
        let now_ns = Clock::mono_now();
        let wants_events = self.outputs.iter().any(|o| o.wants_events());
        let outputs = &mut self.outputs;
        let mut tap = |event: &Event, applied: &Applied, pod: &PodName| {
            for output in outputs.iter_mut().filter(|o| o.wants_events()) {
                output.event(event, applied, pod);
            }
        };
        self.pipeline.ingest(
            &mut self.tracer.reader,
            now_ns,
            observations,
            wants_events.then_some(&mut tap as _),
        );
        for observation in observations.drain(..) {
            for output in &mut self.outputs {
                output.observation(&observation);
            }
        }
        if now_ns >= self.next_audit_ns {
            self.next_audit_ns = now_ns.saturating_add(AUDIT_EVERY.as_nanos() as u64);
            let dropped = self
                .pipeline
                .table
                .audit(AUDIT_BUDGET, self.tracer.probes.kernel_tracks());
            if dropped > 0 {
                tracing::debug!("{dropped} connections the kernel no longer tracks were dropped");
            }
            release_free_heap();
        }
        let kernel = CounterTotals::read(&self.tracer.counters);
        self.warn_lost(&kernel);
        let state = State {
            pipeline: &self.pipeline,
            kernel,
            short_records: self.tracer.reader.malformed,
            now_ns,
        };
        let mut flow = Flow::Continue;
        for output in &mut self.outputs {
            if output.drained(&state)? == Flow::Stop {
                flow = Flow::Stop;
            }
        }
        self.health.drained();
        Ok(flow)
    }

    fn warn_lost(&mut self, kernel: &CounterTotals) {
        let lost = kernel.get(Counter::EventsLost);
        if lost > self.lost_reported {
            tracing::warn!(
                "{} events lost: the ring buffer was full (raise --ring-bytes)",
                lost - self.lost_reported
            );
            self.lost_reported = lost;
        }
    }
}

/// Hands the heap's free pages back to the kernel. Start-up parses the
/// kernel's BTF three times (offsets, the loader, the seed iterator): ~28 MiB
/// freed afterwards that glibc otherwise keeps resident for the daemon's
/// life; bursts of connections leave the same behind. A few ms per call.
fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: no preconditions; only returns free memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

async fn recv(queries: &mut Option<mpsc::Receiver<Query>>) -> Option<Query> {
    match queries {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
