//! The trace printer: every connection event and every conclusion as one
//! record, filtered, written as an aligned table or as JSON lines.

pub mod filter;
pub mod record;
pub mod sink;
pub mod table;

use std::io::{self, Write};

use tracer_common::event::EventKind;

use crate::{
    analysis::Observation,
    conntrack::table::Applied,
    events::Event,
    kernel::reset_reasons::ResetReasons,
    metadata::PodName,
    session::{Flow, Output, State},
};
pub use filter::Filter;
use record::{RecordBuilder, TraceRecord};
use sink::Sink;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One aligned line per record.
    Table,
    /// JSON lines (field names are stable).
    Json,
}

pub struct Printer {
    builder: RecordBuilder,
    filter: Filter,
    records: Vec<TraceRecord>,
    out: Box<dyn Sink>,
    /// One drain's records, written at once.
    batch: Vec<u8>,
    /// Records written so far (for the message when writing fails).
    written: u64,
    format: Format,
    header_done: bool,
}

impl Printer {
    pub fn stdout(format: Format, filter: Filter, reset_reasons: ResetReasons) -> Self {
        Self::with_sink(
            Box::new(sink::Stdout::open()),
            format,
            filter,
            reset_reasons,
        )
    }

    pub fn new(
        out: Box<dyn Write>,
        format: Format,
        filter: Filter,
        reset_reasons: ResetReasons,
    ) -> Self {
        Self::with_sink(Box::new(sink::Plain(out)), format, filter, reset_reasons)
    }

    fn with_sink(
        out: Box<dyn Sink>,
        format: Format,
        filter: Filter,
        reset_reasons: ResetReasons,
    ) -> Self {
        Self {
            builder: RecordBuilder::new(reset_reasons),
            filter,
            records: Vec::new(),
            out,
            batch: Vec::new(),
            written: 0,
            format,
            header_done: false,
        }
    }

    fn render(&mut self, record: &TraceRecord) -> io::Result<()> {
        match self.format {
            Format::Json => {
                serde_json::to_writer(&mut self.batch, record).map_err(io::Error::from)?;
                self.batch.write_all(b"\n")
            }
            Format::Table => {
                if !self.header_done {
                    self.header_done = true;
                    writeln!(self.batch, "{}", table::HEADER)?;
                }
                writeln!(self.batch, "{}", table::line(record))
            }
        }
    }
}

impl Output for Printer {
    fn wants_events(&self) -> bool {
        true
    }

    fn event(&mut self, event: &Event, applied: &Applied, pod: &PodName) {
        // 503s are shown once attributed (an observation), not as raw sightings.
        if event.kind != EventKind::HttpStatus {
            self.records.push(self.builder.build(event, applied, pod));
        }
    }

    fn observation(&mut self, observation: &Observation) {
        let record = match observation {
            Observation::Failure(f) => self.builder.failure(f),
            Observation::Http503(h) => self.builder.http_503(h),
            Observation::ProxyAnswered503(f) => self.builder.proxy_answered_503(f),
            Observation::Dns(d) => self.builder.dns(d),
            _ => return,
        };
        self.records.push(record);
    }

    /// Writes what this drain produced; stops the session once stdout's
    /// reader is gone (e.g. piped into `head`).
    fn drained(&mut self, _state: &State<'_>) -> io::Result<Flow> {
        let mut records = std::mem::take(&mut self.records);
        let mut rendered = 0;
        for record in &records {
            if self.filter.matches(record) {
                self.render(record)?;
                rendered += 1;
            }
        }
        records.clear();
        self.records = records;
        if self.batch.is_empty() {
            return Ok(Flow::Continue);
        }
        let result = self.out.write_batch(&self.batch);
        self.batch.clear();
        match result {
            Ok(()) => {
                self.written += rendered;
                Ok(Flow::Continue)
            }
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Flow::Stop),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!(
                    "cannot write the trace to stdout ({e}); stopped: the {} records written before are complete \
                     (free space or write elsewhere)",
                    self.written
                ),
            )),
        }
    }
}
