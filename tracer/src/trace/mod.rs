//! `conntracer trace`: an ad-hoc session streaming connection events.

pub mod filter;
pub mod record;
pub mod table;

use std::io::{self, Write};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tracer_common::{counters::Counter, event::EventKind};

use crate::{
    analysis::{AnalysisConfig, Observation},
    cli::{Output, TraceArgs},
    pipeline::Pipeline,
    probes::counters::CounterTotals,
    startup,
};
use filter::Filter;
use record::RecordBuilder;

pub async fn run(args: TraceArgs) -> anyhow::Result<()> {
    let mut tracer = startup::start(&args.probes)?;
    eprintln!(
        "conntracer: tracing TCP connections in every network namespace: {}; Ctrl-C to stop",
        tracer.probes.attached_summary()
    );

    let mut sink = Sink::new(args.output);
    let filter = Filter::from_args(&args);
    let builder = RecordBuilder::new(tracer.setup.reset_reasons.clone());
    let mut pipeline = Pipeline::new(
        AnalysisConfig::default(),
        args.probes.max_connections as usize,
        tracer.setup.reset_reasons.clone(),
    );
    let mut observations = Vec::new();
    let mut records = Vec::new();
    let mut lost_reported = 0;

    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let until_deadline = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_deadline);

    loop {
        let stop = tokio::select! {
            _ = sigint.recv() => true,
            _ = sigterm.recv() => true,
            _ = &mut until_deadline => true,
            _ = tracer.reader.wait() => false,
        };
        // Drain on every wake-up, and once more on the way out.
        pipeline.ingest(
            &mut tracer.reader,
            &mut observations,
            |event, applied, pod| {
                // 503s are shown once attributed (below), not as raw sightings.
                if event.kind != EventKind::HttpStatus {
                    records.push(builder.build(event, applied, pod));
                }
            },
        );
        for obs in observations.drain(..) {
            match obs {
                Observation::Failure(f) => records.push(builder.failure(&f)),
                Observation::Http503(h) => records.push(builder.http_503(&h)),
                Observation::Dns(d) => records.push(builder.dns(&d)),
                _ => {}
            }
        }
        for record in records.drain(..) {
            if filter.matches(&record) && !sink.write(&record)? {
                return Ok(()); // stdout closed (e.g. piped into `head`)
            }
        }
        if !sink.flush()? {
            return Ok(());
        }
        let lost = CounterTotals::read(&tracer.counters).get(Counter::EventsLost);
        if lost > lost_reported {
            tracing::warn!(
                "{} events lost: the ring buffer was full (raise --ring-bytes)",
                lost - lost_reported
            );
            lost_reported = lost;
        }
        if stop {
            break;
        }
    }
    let totals = CounterTotals::read(&tracer.counters);
    eprintln!(
        "conntracer: detaching; events lost: {}, untracked closes: {}, open connections: {}",
        totals.get(Counter::EventsLost),
        totals.get(Counter::UntrackedClose),
        pipeline.table.len()
    );
    drop(tracer); // detaches every program and frees every map
    Ok(())
}

/// Buffered stdout that notices when its reader went away.
struct Sink {
    out: io::BufWriter<io::Stdout>,
    format: Output,
    header_done: bool,
}

impl Sink {
    fn new(format: Output) -> Self {
        Self {
            out: io::BufWriter::new(io::stdout()),
            format,
            header_done: false,
        }
    }

    /// `Ok(false)` once stdout is closed.
    fn write(&mut self, record: &record::TraceRecord) -> io::Result<bool> {
        let result = match self.format {
            Output::Json => serde_json::to_writer(&mut self.out, record)
                .map_err(io::Error::from)
                .and_then(|()| self.out.write_all(b"\n")),
            Output::Table => {
                if !self.header_done {
                    self.header_done = true;
                    writeln!(self.out, "{}", table::HEADER)?;
                }
                writeln!(self.out, "{}", table::line(record))
            }
        };
        closed_is_false(result)
    }

    fn flush(&mut self) -> io::Result<bool> {
        closed_is_false(self.out.flush())
    }
}

fn closed_is_false(result: io::Result<()>) -> io::Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}
