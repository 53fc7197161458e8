//! The library's progress events drawn as indicatif bars, and clap parsers for the library's
//! named enums.

use std::str::FromStr;
use std::sync::Mutex;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use indicatif::{ProgressBar, ProgressStyle};
use knowlens::progress::Progress;

/// One bar per stage: position, rate and ETA when the stage's size is known, a spinner when not.
/// Log lines print above the bar.
#[derive(Default)]
pub struct Bars {
    bar: Mutex<Option<ProgressBar>>,
}

impl Bars {
    fn with<R>(&self, f: impl FnOnce(&ProgressBar) -> R) -> Option<R> {
        self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(f)
    }
}

impl Progress for Bars {
    fn start(&self, label: &str, total: Option<u64>) {
        let pb = match total {
            Some(n) => {
                let pb = ProgressBar::new(n);
                pb.set_style(
                    ProgressStyle::with_template(&format!(
                        "{{spinner}} {label} [{{bar:40}}] {{pos}}/{{len}} ({{per_sec}}, {{elapsed_precise}} < {{eta_precise}}) {{msg}}"
                    ))
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                pb
            }
            None => {
                let pb = ProgressBar::new_spinner();
                pb.set_style(
                    ProgressStyle::with_template(&format!("{{spinner}} {label} {{elapsed_precise}} {{msg}}"))
                        .expect("valid template"),
                );
                pb.enable_steady_tick(std::time::Duration::from_millis(200));
                pb
            }
        };
        if let Some(old) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).replace(pb) {
            old.finish();
        }
    }

    fn set_position(&self, pos: u64) {
        self.with(|pb| {
            pb.set_position(pos);
            // The rate and ETA count only the work of this process.
            pb.reset_eta();
        });
    }

    fn advance(&self, n: u64) {
        self.with(|pb| pb.inc(n));
    }

    fn message(&self, msg: &str) {
        self.with(|pb| pb.set_message(msg.to_string()));
    }

    fn log(&self, line: &str) {
        // Suspending the bar (rather than `println`) also prints when the bar is hidden.
        if self.with(|pb| pb.suspend(|| eprintln!("{line}"))).is_none() {
            eprintln!("{line}");
        }
    }

    fn finish(&self) {
        if let Some(pb) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            pb.finish();
        }
    }
}

/// Log lines only, no bars (`--no-progress`).
pub struct LogOnly;

impl Progress for LogOnly {
    fn log(&self, line: &str) {
        eprintln!("{line}");
    }
}

/// A clap parser for a library enum with `FromStr`: `--help` lists `names`, and a wrong value is
/// rejected by clap with the list.
pub fn named<T>(names: &'static [&'static str]) -> impl TypedValueParser<Value = T>
where
    T: FromStr<Err = anyhow::Error> + Clone + Send + Sync + 'static,
{
    PossibleValuesParser::new(names).try_map(|s| s.parse::<T>())
}
