//! Live progress: one line per step transition, on stderr so stdout stays for results.

use std::io::{IsTerminal as _, Write as _};

use castle_core::events::{Event, EventSink};

/// Prints events as they come. On a terminal the step names are bold; elsewhere the
/// lines are plain, for logs.
#[derive(Debug)]
pub struct Progress {
    quiet: bool,
    tty: bool,
}

impl Progress {
    /// `json` runs print nothing but their final JSON.
    pub fn new(json: bool) -> Self {
        Self {
            quiet: json,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn name(&self, step: &str) -> String {
        if self.tty {
            format!("\x1b[1m{step:<12}\x1b[0m")
        } else {
            format!("{step:<12}")
        }
    }
}

fn secs(ms: u64) -> String {
    format!("{:>7.1}s", ms as f64 / 1000.0)
}

impl EventSink for Progress {
    fn emit(&self, event: &Event) {
        if self.quiet {
            return;
        }
        let line = match event {
            Event::RunStarted {
                action,
                steps,
                run_id,
            } => format!("castle {action}: {} steps (run {run_id})", steps.len()),
            Event::StepSkipped {
                step,
                reason,
                at_ms,
            } => format!("{} {} skipped: {reason}", secs(*at_ms), self.name(step)),
            Event::StepStarted {
                step,
                attempt: 1,
                at_ms,
            } => format!("{} {} started", secs(*at_ms), self.name(step)),
            Event::StepStarted {
                step,
                attempt,
                at_ms,
            } => format!("{} {} attempt {attempt}", secs(*at_ms), self.name(step)),
            Event::StepProgress {
                step,
                message,
                at_ms,
            } => format!("{} {} {message}", secs(*at_ms), self.name(step)),
            Event::StepRetried {
                step,
                error,
                delay_ms,
                at_ms,
                ..
            } => {
                format!(
                    "{} {} transient failure, retrying in {:.1}s: {error}",
                    secs(*at_ms),
                    self.name(step),
                    *delay_ms as f64 / 1000.0
                )
            }
            Event::StepFinished {
                step,
                duration_ms,
                at_ms,
                ..
            } => {
                format!(
                    "{} {} done in {:.1}s",
                    secs(*at_ms),
                    self.name(step),
                    *duration_ms as f64 / 1000.0
                )
            }
            Event::StepFailed {
                step, error, at_ms, ..
            } => format!("{} {} FAILED: {error}", secs(*at_ms), self.name(step)),
            Event::StepBlocked {
                step,
                reason,
                at_ms,
            } => format!("{} {} {reason}", secs(*at_ms), self.name(step)),
            Event::StateNotice { message } => format!("state: {message}"),
            Event::RunFinished {
                status,
                makespan_ms,
                ..
            } => format!("run {status} in {:.1}s", *makespan_ms as f64 / 1000.0),
            _ => return,
        };
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{line}");
    }
}
