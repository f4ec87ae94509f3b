//! `conntracer diagnose`: the findings for a pod or the whole node, each with
//! its evidence and the fix as ready-to-apply Istio YAML. Reads a running
//! daemon's `/findings`, or traces for `--duration` itself.

mod fetch;
mod render;

use std::time::Duration;

use anyhow::Context as _;

use super::{resolve, serve, start};
use crate::{
    analysis::findings::Scope,
    cli::{DiagnoseArgs, Output},
    config::Settings,
    output::findings::FindingsReport,
    session::Until,
};

pub async fn run(args: DiagnoseArgs) -> anyhow::Result<()> {
    let scope = Scope {
        namespace: args.namespace.clone(),
        pod: args.pod.clone(),
    };
    let report = match args.duration {
        Some(duration) => trace_for(&args, duration, &scope).await?,
        None => fetch::findings(args.daemon, &scope)
            .await
            .with_context(|| {
                format!(
                    "no daemon answered on {} (start `conntracer daemon`, point --daemon at it, or use --duration 60 to trace here)",
                    args.daemon
                )
            })?,
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => print!("{}", render::report(&report)),
    }
    Ok(())
}

async fn trace_for(
    args: &DiagnoseArgs,
    duration: Duration,
    scope: &Scope,
) -> anyhow::Result<FindingsReport> {
    let config = resolve(&args.common, Settings::default())?;
    let (mut session, listener, _watchers) = start(&config).await?;
    let served = listener
        .map(|listener| serve(&mut session, listener, &config))
        .transpose()?;
    eprintln!(
        "conntracer: tracing for {} to diagnose...",
        humantime::format_duration(duration)
    );
    let finished = session
        .run(Until {
            duration: Some(duration),
            settle: true,
        })
        .await?;
    if let Some(served) = served {
        served.stop().await;
    }
    Ok(FindingsReport::now(
        finished.pipeline.analysis.findings(scope),
    ))
}
