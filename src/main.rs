//! The `knowlens` command line. Every command prints a human-readable table by default and
//! stable JSON with `--json`.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
