//! `powerfleet`: the command-line entry point. Parses arguments and wires the crates together.

mod bench;
mod options;
mod sample;

use clap::{Parser, Subcommand};

/// Exact power sampling (p^α via Metropolis-Hastings) from language models.
#[derive(Parser, Debug)]
#[command(name = "powerfleet", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run chains on all cores of this machine, without Redis.
    Sample(Box<sample::SampleArgs>),
    /// Measure sampling throughput on a toy model, one core against all cores.
    Bench(bench::BenchArgs),
    /// List the built-in toy models.
    Models,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sample(args) => sample::run(*args),
        Command::Bench(args) => bench::run(args),
        Command::Models => {
            list_models();
            Ok(())
        }
    };
    if let Err(err) = result {
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
