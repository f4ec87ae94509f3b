//! The trace printer: every connection event and every conclusion as one
//! record, filtered, written as an aligned table or as JSON lines.

pub mod filter;
pub mod record;
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
    out: io::BufWriter<Box<dyn Write>>,
    format: Format,
    header_done: bool,
}

impl Printer {
    pub fn stdout(format: Format, filter: Filter, reset_reasons: ResetReasons) -> Self {
        Self::new(Box::new(io::stdout()), format, filter, reset_reasons)
    }

    pub fn new(
        out: Box<dyn Write>,
        format: Format,
        filter: Filter,
        reset_reasons: ResetReasons,
    ) -> Self {
        Self {
            builder: RecordBuilder::new(reset_reasons),
            filter,
            records: Vec::new(),
            out: io::BufWriter::new(out),
            format,
            header_done: false,
        }
    }

    fn write(&mut self, record: &TraceRecord) -> io::Result<()> {
        match self.format {
            Format::Json => {
                serde_json::to_writer(&mut self.out, record).map_err(io::Error::from)?;
                self.out.write_all(b"\n")
            }
            Format::Table => {
                if !self.header_done {
                    self.header_done = true;
                    writeln!(self.out, "{}", table::HEADER)?;
                }
                writeln!(self.out, "{}", table::line(record))
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
            Observation::Dns(d) => self.builder.dns(d),
            _ => return,
        };
        self.records.push(record);
    }

    /// Writes what this drain produced; stops the session once stdout's
    /// reader is gone (e.g. piped into `head`).
    fn drained(&mut self, _state: &State<'_>) -> io::Result<Flow> {
        let mut records = std::mem::take(&mut self.records);
        let mut result = Ok(());
        for record in &records {
            if self.filter.matches(record) {
                result = self.write(record);
                if result.is_err() {
                    break;
                }
            }
        }
        records.clear();
        self.records = records;
        match result.and_then(|()| self.out.flush()) {
            Ok(()) => Ok(Flow::Continue),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Flow::Stop),
            Err(e) => Err(e),
        }
    }
}
