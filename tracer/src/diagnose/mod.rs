//! `conntracer diagnose`: the findings for a pod or the whole node, each with
//! its evidence and the fix as ready-to-apply Istio YAML. Reads a running
//! daemon's `/findings`, or traces for `--duration` itself.

mod fetch;
mod render;

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use clap::Args;

use crate::{
    analysis::AnalysisConfig,
    cli::{Output, ProbeArgs},
    daemon::http::FindingsResponse,
    pipeline::Pipeline,
    startup,
};

#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    /// Only findings for pods in this namespace.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Only findings for this pod.
    #[arg(long)]
    pub pod: Option<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// The daemon to ask.
    #[arg(long, default_value = crate::daemon::config::DEFAULT_LISTEN)]
    pub daemon: SocketAddr,
    /// Do not ask a daemon: trace this long and diagnose what was seen.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub probes: ProbeArgs,
}

pub async fn run(args: DiagnoseArgs) -> anyhow::Result<()> {
    let response = match args.duration {
        Some(duration) => trace_for(&args, duration).await?,
        None => fetch::findings(args.daemon, args.namespace.as_deref(), args.pod.as_deref())
            .await
            .with_context(|| {
                format!(
                    "no daemon answered on {} (start `conntracer daemon`, point --daemon at it, or use --duration 60s to trace here)",
                    args.daemon
                )
            })?,
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&response)?),
        Output::Table => print!("{}", render::report(&response)),
    }
    Ok(())
}

async fn trace_for(args: &DiagnoseArgs, duration: Duration) -> anyhow::Result<FindingsResponse> {
    let mut tracer = startup::start(&args.probes)?;
    eprintln!(
        "conntracer: tracing for {} to diagnose...",
        humantime::format_duration(duration)
    );
    let mut pipeline = Pipeline::new(
        AnalysisConfig::default(),
        args.probes.max_connections as usize,
        tracer.setup.reset_reasons.clone(),
    );
    let deadline = tokio::time::Instant::now() + duration;
    let mut observations = Vec::new();
    loop {
        let done = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => true,
            _ = tracer.reader.wait() => false,
        };
        pipeline.ingest(&mut tracer.reader, &mut observations, |_, _, _| {});
        observations.clear();
        if done {
            break;
        }
    }
    // Let pending failures and 503s settle.
    tokio::time::sleep(pipeline.analyzer.config().attribution_window + Duration::from_millis(300))
        .await;
    pipeline.tick(&mut observations);
    drop(tracer);
    let mismatches = pipeline.analyzer.mismatches(&mut pipeline.pods);
    let findings = pipeline.analyzer.findings.report(
        &mismatches,
        args.namespace.as_deref(),
        args.pod.as_deref(),
    );
    Ok(FindingsResponse {
        node: crate::daemon::http::hostname(),
        generated: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        findings: findings
            .into_iter()
            .map(|f| serde_json::to_value(f).expect("serializable"))
            .collect(),
    })
}
