//! `powerfleet`: the command-line entry point. Parses arguments and wires the crates together.

mod bench;
mod demo;
mod export;
mod fleet;
mod observe;
mod options;
mod output;
mod progress;
mod report;
mod sample;
mod selection;
mod workers;

use clap::{Parser, Subcommand};

/// Exact power sampling (p^α via Metropolis-Hastings) from language models.
#[derive(Parser, Debug)]
#[command(name = "powerfleet", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format of the long-running commands.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "POWERFLEET_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: observe::LogFormat,
    /// Export traces over OTLP/HTTP to this collector (e.g. http://otel-collector:4318); off when
    /// unset.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run chains on all cores of this machine, without Redis.
    Sample(Box<sample::SampleArgs>),
    /// Measure sampling and fleet throughput (see docs/performance.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// List the built-in toy models.
    Models,
    /// Submit jobs to the queue: one prompt times chains, or a batch file times methods times seeds.
    Submit(Box<fleet::SubmitArgs>),
    /// Run a worker: take jobs from the queue, run their chains, checkpoint every block.
    Worker(fleet::WorkerArgs),
    /// Run a results collector: store finished jobs in SQL, exactly once.
    Collector(fleet::CollectorArgs),
    /// Show the status of a job, batch or correlation id.
    Status(fleet::StatusArgs),
    /// Cancel a job, a batch or every job under a correlation id.
    Cancel(fleet::CancelArgs),
    /// List the live workers and the model names each one serves.
    Workers(workers::WorkersArgs),
    /// Export finished jobs of a batch or correlation id.
    Results(fleet::ResultsArgs),
    /// Report on a benchmark batch: accuracy, pass@k, majority vote, acceptance, cost and latency
    /// per method, and which methods solved each problem; optionally figures. Given several
    /// runs, compare them: accuracy with 95% intervals, pass@k, cost, and per-problem paired
    /// differences from the first.
    Report(report::ReportArgs),
    /// Write a run (a batch id, correlation id or label=NAME) as a directory evaluation tools
    /// read: manifest.json, samples.jsonl, results.json and figures/.
    Export(export::ExportArgs),
    /// Serve the HTTP API: submit, status, cancel.
    Serve(fleet::ServeArgs),
    /// The whole fleet on this machine: a built-in batch on the toy models, with a private
    /// redis-server if none is running.
    Demo(demo::DemoArgs),
}

fn main() {
    powerfleet_backends::install_tls_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sample(args) => sample::run(*args),
        Command::Bench(args) => bench::run(args),
        Command::Models => {
            list_models();
            Ok(())
        }
        Command::Submit(args) => block_on(fleet::submit(*args)),
        Command::Worker(args) => {
            let _tracing =
                observe::init_tracing(cli.log_format, "info", cli.otlp_endpoint.as_deref());
            block_on(fleet::worker(args))
        }
        Command::Collector(args) => {
            let _tracing =
                observe::init_tracing(cli.log_format, "info", cli.otlp_endpoint.as_deref());
            block_on(fleet::collector(args))
        }
        Command::Status(args) => block_on(fleet::status_cmd(args)),
        Command::Cancel(args) => block_on(fleet::cancel(args)),
        Command::Workers(args) => block_on(workers::workers(args)),
        Command::Results(args) => block_on(fleet::results(args)),
        Command::Report(args) => block_on(report::run(args)),
        Command::Export(args) => block_on(export::run(args)),
        Command::Serve(args) => {
            let _tracing =
                observe::init_tracing(cli.log_format, "info", cli.otlp_endpoint.as_deref());
            block_on(fleet::serve(args))
        }
        Command::Demo(args) => {
            let _tracing =
                observe::init_tracing(cli.log_format, "warn", cli.otlp_endpoint.as_deref());
            block_on(demo::run(args))
        }
    };
    if let Err(err) = result {
        // The reader went away (`powerfleet ... | head`): nothing is wrong, stop quietly.
        let broken_pipe = err.chain().any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if broken_pipe {
            std::process::exit(0);
        }
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn list_models() {
    for name in powerfleet_models::builtin::names() {
        let model = powerfleet_models::builtin::load(name)
            .expect("listed")
            .expect("built-in models are valid");
        println!(
            "toy:{name:<12} {} tokens  {}",
            model.vocab().len(),
            model.description().unwrap_or("")
        );
    }
}

pub(crate) fn block_on<T, F: std::future::Future<Output = anyhow::Result<T>>>(
    f: F,
) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?
        .block_on(f)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler can be installed");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
