//! The `knowlens` command line. Every command prints a human-readable table by default and
//! stable JSON with `--json`.

mod cli;

use clap::Parser;

/// How long candle's worker threads spin on a finished operation before they park (its default
/// is 25,000 spins). With another job on one of two cores, a spinning worker keeps the core its
/// descheduled peer needs, and every small operation waits for a time slice: quantized decoding
/// fell from 28.3 to 9.5 tok/s. At 1,000 spins it keeps 13.3 tok/s there and 27.2 when the
/// machine is quiet (BENCHMARKS.md, issue 11). A value the user sets wins.
const SPIN_LIMIT: &str = "1000";

fn main() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // Before any thread exists and before candle's pool reads it.
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", SPIN_LIMIT);
    }
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
