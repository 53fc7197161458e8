//! Progress reporting for the long-running library functions (labeling, SAE training, corpus
//! building), without drawing anything: the library says what it is doing, a front end decides
//! how to show it (the CLI draws indicatif bars; tests and pipelines pass `Silent` or their own).
//!
//! A run is a sequence of stages. Each `start` begins a stage with a label and, when known, the
//! units of work it holds (questions, steps, documents); `set_position` places a resumed stage
//! (work done by an earlier process, so a renderer can leave it out of its rate and ETA),
//! `advance` counts work done now, `message` replaces the stage's status text (running accuracy,
//! loss), `log` is a line for the user that should not disturb the bar, and `finish` ends the
//! stage. A pipeline runner can therefore show one bar per stage with its own ETA.
//!
//! Implementations are `Sync`: stages may advance from worker threads.

/// Receives progress events. Every method has a no-op default.
pub trait Progress: Sync {
    /// Begins a stage of `total` units of work (None: unknown, e.g. a spinner).
    fn start(&self, _label: &str, _total: Option<u64>) {}
    /// Places the current stage at `pos` units already done (when resuming a run).
    fn set_position(&self, _pos: u64) {}
    /// `n` more units of the current stage are done.
    fn advance(&self, _n: u64) {}
    /// The current stage's status text.
    fn message(&self, _msg: &str) {}
    /// A line of information for the user (printed above any bar).
    fn log(&self, _line: &str) {}
    /// Ends the current stage.
    fn finish(&self) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records events, as a pipeline runner would.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Progress for Recorder {
        fn start(&self, label: &str, total: Option<u64>) {
            self.0.lock().unwrap().push(format!("start {label} {total:?}"));
        }
        fn advance(&self, n: u64) {
            self.0.lock().unwrap().push(format!("advance {n}"));
        }
        fn finish(&self) {
            self.0.lock().unwrap().push("finish".into());
        }
    }

    #[test]
    fn defaults_are_no_ops_and_overrides_see_every_event() {
        let p: &dyn Progress = &Silent;
        p.start("x", Some(3));
        p.advance(1);
        p.finish();
        let r = Recorder::default();
        let p: &dyn Progress = &r;
        p.start("questions", Some(2));
        p.advance(2);
        p.message("ignored by the recorder");
        p.finish();
        assert_eq!(*r.0.lock().unwrap(), ["start questions Some(2)", "advance 2", "finish"]);
    }
}
