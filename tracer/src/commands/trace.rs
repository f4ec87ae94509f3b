//! `conntracer trace`: an ad-hoc session streaming connection events; with
//! `--listen` it also serves metrics and findings.

use tracer_common::counters::Counter;

use super::{resolve, serve, start};
use crate::{cli::TraceArgs, config::Settings, output::printer::Printer, session::Until};

pub async fn run(args: TraceArgs) -> anyhow::Result<()> {
    let config = resolve(&args.common, Settings::default())?;
    let (mut session, listener, _watchers) = start(&config).await?;
    eprintln!(
        "conntracer: tracing TCP connections in every network namespace: {}; Ctrl-C to stop",
        session.tracer().probes.attached_summary()
    );
    session.add_output(Printer::stdout(
        args.output.into(),
        args.filter(),
        session.tracer().setup.reset_reasons.clone(),
    ));
    let served = match listener {
        Some(listener) => {
            let served = serve(&mut session, listener, &config)?;
            eprintln!("conntracer: serving http://{}/metrics", served.address);
            Some(served)
        }
        None => None,
    };
    let finished = session
        .run(Until {
            duration: args.duration,
            settle: false,
        })
        .await?;
    if let Some(served) = served {
        served.stop().await;
    }
    let skipped = finished.skipped();
    eprintln!(
        "conntracer: detaching; events lost: {}, untracked closes: {}, open connections: {}, \
         records skipped: {}",
        finished.kernel.get(Counter::EventsLost),
        finished.kernel.get(Counter::UntrackedClose),
        finished.pipeline.table.len(),
        finished.short_records + skipped.unknown_kind,
    );
    Ok(())
}
