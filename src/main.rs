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

/// The library never prints; its notices (fetching, skipped rows, resumed files) arrive here
/// through `log` and go to stderr, warnings marked as such.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info && m.target().starts_with("knowlens")
    }

    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            match r.level() {
                log::Level::Warn | log::Level::Error => eprintln!("warning: {}", r.args()),
                _ => eprintln!("{}", r.args()),
            }
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLog = StderrLog;

fn main() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
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
