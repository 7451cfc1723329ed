//! `burrow-bench`: Burrow's native benchmarks, run side by side on loopback.
//!
//! `burrow-bench run` starts real burrowd (embedded relay), burrow-agent, `burrow
//! port-forward` processes, sshd for `ssh -L`, a sink and an echo server, measures every
//! comparison alternating round by round, and writes `bench/results/native.json`.
//! `burrow-bench render` turns every `bench/results/*.json` into `BENCHMARKS.md` and
//! `bench/plot.svg`. `bench/run.sh` does both after building the release binaries.
//!
//! Benchmarks are not tests: nothing here asserts a timing; missed targets are reported.

mod agents;
mod load;
mod report;
mod scenario;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Burrow's native benchmark driver.
#[derive(Debug, Parser)]
struct Cli {
    /// Directory of the per-suite result files.
    #[arg(long, default_value = "bench/results")]
    results_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure and write `<results-dir>/native.json`.
    Run(scenario::Options),
    /// Runs one measurement alone and prints it, writing no results: for trying a change to
    /// one figure without the whole suite.
    Probe {
        what: Probe,
        /// Runs, each with fresh processes.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// Merge `<results-dir>/*.json` into a Markdown report and an SVG plot.
    Render {
        /// The Markdown report.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// The plot, written next to the report's links as given.
        #[arg(long, default_value = "bench/plot.svg")]
        plot: PathBuf,
        /// Hand-written findings appended to the report, if the file exists.
        #[arg(long, default_value = "bench/findings.md")]
        findings: PathBuf,
    },
}

/// What `probe` measures.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Probe {
    /// The agent's resident memory: idle, one tunnel, 100 streams, after they close.
    AgentMemory,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(options) => {
            ensure_bin_dir()?;
            let results = scenario::run(&options)?;
            std::fs::create_dir_all(&cli.results_dir)
                .with_context(|| format!("creating {}", cli.results_dir.display()))?;
            let path = cli.results_dir.join(format!("{}.json", results.suite));
            let text = serde_json::to_string_pretty(&results)?;
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
            Ok(())
        }
        Command::Probe { what, repeat } => {
            ensure_bin_dir()?;
            match what {
                Probe::AgentMemory => scenario::probe_agent_memory(repeat),
            }
        }
        Command::Render {
            out,
            plot,
            findings,
        } => {
            let all = report::load_all(&cli.results_dir)?;
            report::plot(&all, &plot)?;
            let rel = relative_to(&plot, out.parent());
            let findings = match std::fs::read_to_string(&findings) {
                Ok(text) => Some(text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e).with_context(|| format!("reading {}", findings.display())),
            };
            std::fs::write(&out, report::markdown(&all, &rel, findings.as_deref()))
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!("wrote {} and {}", out.display(), plot.display());
            Ok(())
        }
    }
}

/// Without `BURROW_BIN_DIR`, runs this command again with it set to this executable's
/// directory: burrow-bench is built into the same target directory as Burrow's binaries.
fn ensure_bin_dir() -> anyhow::Result<()> {
    if std::env::var_os("BURROW_BIN_DIR").is_none() {
        let exe = std::env::current_exe().context("locating burrow-bench")?;
        if let Some(dir) = exe.parent() {
            rerun_with_bin_dir(dir);
        }
    }
    Ok(())
}

fn rerun_with_bin_dir(dir: &std::path::Path) {
    // burrow-e2e finds burrowd, burrow-agent and burrow through this variable. Setting the
    // environment is `unsafe` in edition 2024 and the workspace forbids unsafe code, so
    // re-execute ourselves with it set instead.
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let status = std::process::Command::new(std::env::current_exe().unwrap_or_default())
        .args(args)
        .env("BURROW_BIN_DIR", dir)
        .status();
    std::process::exit(match status {
        Ok(s) => s.code().unwrap_or(1),
        Err(_) => 1,
    });
}

fn relative_to(path: &std::path::Path, base: Option<&std::path::Path>) -> String {
    match base {
        Some(b) if !b.as_os_str().is_empty() => {
            path.strip_prefix(b).unwrap_or(path).display().to_string()
        }
        _ => path.display().to_string(),
    }
}
