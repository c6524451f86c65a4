//! The run report: per-step timings, the makespan, each step's slack and the
//! critical path (with what lies behind each step on it), as JSON, a text table and
//! an SVG timeline.
//!
//! Slack and gain come from the run's own times: a step starts when its last
//! dependency ends plus whatever else it waited for (a free slot of the executor),
//! and that extra wait is kept as it was when a step is imagined shorter.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::events::Event;

/// A stretch of a step's time, named by what the step reported when it ended
/// ("3 nodes Ready": the stretch was spent until the nodes were Ready).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// The step's progress message that closed the stretch, or what else did: a
    /// failed attempt, the backoff before the next, the step's end.
    pub until: String,
    /// Start, in ms from the run's start.
    pub start_ms: u64,
    /// End, in ms from the run's start.
    pub end_ms: u64,
}

impl Phase {
    /// End minus start.
    pub fn duration_ms(&self) -> u64 {
        self.end_ms.saturating_sub(self.start_ms)
    }
}

/// One step's part in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepTiming {
    /// The step.
    pub id: String,
    /// The node whose lane it is drawn in, for a per-node unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Its dependencies.
    pub deps: Vec<String>,
    /// `done`, `skipped`, `failed`, `blocked`, `cancelled` or `pending`.
    pub status: String,
    /// Start, in ms from the run's start.
    pub start_ms: Option<u64>,
    /// End, in ms from the run's start.
    pub end_ms: Option<u64>,
    /// End minus start.
    pub duration_ms: u64,
    /// Attempts made.
    pub attempts: u32,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How much later it could have ended without the run ending later; `None` when
    /// it did not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_ms: Option<u64>,
    /// How much sooner the run would have ended had this step taken no time: the
    /// most that shortening it can gain. 0 off the critical path, and on a critical
    /// stretch that another step runs beside for as long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gain_ms: Option<u64>,
    /// From its last dependency's end to its start: what it waited for besides its
    /// dependencies (a free slot of the executor, the journal's write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<u64>,
    /// Where its time went, as its progress messages tell it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<Phase>,
    /// What it installed, in a line each (a HelmRelease, its chart and version):
    /// the `report` list of the step's outputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// How long it waited for a slot of a shared, bounded resource (a clone slot
    /// on a storage): the `slot` of the step's outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<SlotWait>,
}

/// A step's wait for a slot of a bounded resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotWait {
    /// The resource (`clone slot on pve/local-lvm`).
    pub name: String,
    /// How many may hold it at once.
    pub capacity: usize,
    /// How long the step waited for it.
    pub waited_ms: u64,
}

impl StepTiming {
    pub(crate) fn new(id: &str, deps: &[String]) -> Self {
        Self {
            id: id.to_string(),
            node: None,
            deps: deps.to_vec(),
            status: "pending".into(),
            start_ms: None,
            end_ms: None,
            duration_ms: 0,
            attempts: 0,
            error: None,
            slack_ms: None,
            gain_ms: None,
            waited_ms: None,
            phases: Vec::new(),
            notes: Vec::new(),
            slot: None,
        }
    }

    /// Takes the `report` lines of a step's outputs.
    pub(crate) fn noting(&mut self, outputs: &serde_json::Value) {
        self.slot = outputs
            .get("slot")
            .and_then(|w| serde_json::from_value(w.clone()).ok());
        self.notes = outputs
            .get("report")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
            .map(str::to_string)
            .collect();
    }
}

/// What a run did and where its time went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The run's id.
    pub run_id: String,
    /// `create` or `destroy`.
    pub action: String,
    /// The cluster.
    pub cluster: String,
    /// `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// From the first start to the last end.
    pub makespan_ms: u64,
    /// The chain of steps that decided the makespan, first to last.
    pub critical_path: Vec<String>,
    /// Every step, in graph order.
    pub steps: Vec<StepTiming>,
    /// Real seconds per modelled second when the run was against the lab's
    /// simulators (its `time_scale`): the report shows modelled time beside the
    /// wall clock. `None` for real systems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_scale: Option<f64>,
}

impl Report {
    /// Computes makespan, each step's slack, gain and extra wait, and the critical
    /// path from the steps' timings.
    pub fn build(
        run_id: &str,
        action: &str,
        cluster: &str,
        status: &str,
        mut steps: Vec<StepTiming>,
    ) -> Self {
        let ran: Vec<&StepTiming> = steps.iter().filter(|s| s.end_ms.is_some()).collect();
        let first = ran.iter().filter_map(|s| s.start_ms).min().unwrap_or(0);
        let last = ran.iter().filter_map(|s| s.end_ms).max().unwrap_or(0);
        let critical_path = critical_path(&steps);
        Schedule::of(&steps).annotate(&mut steps);
        Self {
            run_id: run_id.to_string(),
            action: action.to_string(),
            cluster: cluster.to_string(),
            status: status.to_string(),
            makespan_ms: last.saturating_sub(first),
            critical_path,
            steps,
            time_scale: None,
        }
    }

    /// Splits each step's time into [`Phase`]s at its progress messages, attempts
    /// and retries, from the run's events.
    pub fn add_phases(&mut self, events: &[Event]) {
        let mut open: BTreeMap<String, (u64, Vec<Phase>)> = BTreeMap::new();
        let mut close = |step: &str, until: String, at: u64, reopen: bool| {
            if let Some((from, phases)) = open.get_mut(step) {
                if at > *from {
                    phases.push(Phase {
                        until,
                        start_ms: *from,
                        end_ms: at,
                    });
                    *from = at;
                }
            } else if reopen {
                open.insert(step.to_string(), (at, Vec::new()));
            }
        };
        for e in events {
            match e {
                Event::StepStarted {
                    step,
                    attempt,
                    at_ms,
                } => close(
                    step.as_str(),
                    format!("the backoff before attempt {attempt}"),
                    *at_ms,
                    true,
                ),
                Event::StepProgress {
                    step,
                    message,
                    at_ms,
                } => close(step.as_str(), message.clone(), *at_ms, false),
                Event::StepRetried {
                    step,
                    attempt,
                    error,
                    at_ms,
                    ..
                } => close(
                    step.as_str(),
                    format!("attempt {attempt} failed: {error}"),
                    *at_ms,
                    false,
                ),
                Event::StepFinished { step, at_ms, .. } => {
                    close(step.as_str(), "the step's end".into(), *at_ms, false);
                }
                Event::StepFailed {
                    step, error, at_ms, ..
                } => close(
                    step.as_str(),
                    format!("the failure: {}", error.message),
                    *at_ms,
                    false,
                ),
                _ => {}
            }
        }
        for s in &mut self.steps {
            if let Some((_, phases)) = open.remove(&s.id) {
                s.phases = merge_reports(phases);
            }
        }
    }

    /// The modelled span for a wall-clock one, when the run was in the lab.
    fn modelled_ms(&self, ms: u64) -> Option<u64> {
        self.time_scale
            .filter(|s| *s > 0.0)
            .map(|s| (ms as f64 / s).round() as u64)
    }

    fn modelled(&self, ms: u64) -> Option<String> {
        self.modelled_ms(ms).map(seconds)
    }

    /// The steps that ran, with their times and slack, as an aligned text table,
    /// then the steps whose shortening would shorten the run and what their time
    /// went to.
    pub fn table(&self) -> String {
        let width = self
            .steps
            .iter()
            .map(|s| s.id.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let lab = self.time_scale.is_some();
        let mut out = String::new();
        if let Some(scale) = self.time_scale {
            let _ = writeln!(
                out,
                "times are wall clock; the lab's simulators ran at time_scale {scale} (real seconds per modelled second), so \"modelled\" = wall / {scale}"
            );
        }
        let _ = write!(
            out,
            "{:<width$}  {:>9}  {:>9}  {:>9}  ",
            "step", "start", "end", "duration"
        );
        if lab {
            let _ = write!(out, "{:>9}  ", "modelled");
        }
        let _ = writeln!(out, "{:>9}  {:>8}  status", "slack", "attempts");
        let fmt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), seconds);
        for s in &self.steps {
            let mark = if self.critical_path.contains(&s.id) {
                " *"
            } else {
                ""
            };
            let ran = s.end_ms.is_some();
            let _ = write!(
                out,
                "{:<width$}  {:>9}  {:>9}  {:>9}  ",
                s.id,
                fmt(s.start_ms),
                fmt(s.end_ms),
                if ran {
                    seconds(s.duration_ms)
                } else {
                    "-".into()
                },
            );
            if lab {
                let modelled = self
                    .modelled(s.duration_ms)
                    .filter(|_| ran)
                    .unwrap_or_else(|| "-".into());
                let _ = write!(out, "{modelled:>9}  ");
            }
            let _ = writeln!(
                out,
                "{:>9}  {:>8}  {}{mark}",
                fmt(s.slack_ms),
                s.attempts,
                s.status,
            );
        }
        for s in &self.steps {
            for note in &s.notes {
                let _ = writeln!(out, "{:<width$}  {note}", s.id);
            }
        }
        for line in self.slot_lines() {
            let _ = writeln!(out, "{line}");
        }
        let _ = write!(out, "makespan {}", seconds(self.makespan_ms));
        if let Some(m) = self.modelled(self.makespan_ms) {
            let _ = write!(out, " ({m} modelled)");
        }
        let _ = writeln!(
            out,
            "  critical path (*): {}",
            self.critical_path.join(" -> ")
        );
        let gains: Vec<&StepTiming> = self
            .steps
            .iter()
            .filter(|s| s.gain_ms.unwrap_or(0) > 0)
            .collect();
        if !gains.is_empty() {
            let _ = writeln!(
                out,
                "shortening these shortens the run (by at most the gain), and what their time went to:"
            );
        }
        for s in gains {
            let mut line = format!("  {:<width$}  {:>9} gain", s.id, fmt(s.gain_ms));
            let mut parts: Vec<String> = Vec::new();
            if let Some(w) = s.waited_ms.filter(|w| *w > 0) {
                parts.push(format!(
                    "started {} after its last dependency ended",
                    seconds(w)
                ));
            }
            let mut phases: Vec<&Phase> = s.phases.iter().collect();
            phases.sort_by_key(|p| std::cmp::Reverse(p.duration_ms()));
            parts.extend(phases.iter().take(3).map(|p| {
                format!(
                    "{} until \"{}\"",
                    seconds(p.duration_ms()),
                    clip(&p.until, 72)
                )
            }));
            if phases.len() > 3 {
                parts.push(format!("{} more", phases.len() - 3));
            }
            if !parts.is_empty() {
                line.push_str("  ");
                line.push_str(&parts.join("; "));
            }
            let _ = writeln!(out, "{line}");
        }
        out
    }

    /// A timeline picture: a time axis (and the modelled seconds beside it in the
    /// lab), one lane per step with its phases and slack, the critical path
    /// highlighted, and a legend.
    pub fn svg(&self) -> String {
        let label_w = LABEL_W;
        let chart_w = 640.0;
        let row_h = ROW_H;
        let axis_h = if self.time_scale.is_some() {
            44.0
        } else {
            30.0
        };
        let top = 30.0 + axis_h;
        let lanes = self.lanes();
        let lanes_h = row_h * lanes.len() as f64;
        let legend_top = top + lanes_h + 16.0;
        let height = legend_top + 7.0 * 18.0 + 10.0;
        let span = self
            .steps
            .iter()
            .filter_map(|s| s.end_ms)
            .max()
            .unwrap_or(0)
            .max(1);
        let x = |ms: u64| label_w + chart_w * ms as f64 / span as f64;
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="12">"#,
            w = label_w + chart_w + 90.0
        );
        let _ = write!(
            out,
            r#"<text x="8" y="20" font-size="14">{} {} of {}: {} in {}{}</text>"#,
            escape(&self.cluster),
            escape(&self.action),
            escape(&self.run_id),
            escape(&self.status),
            seconds(self.makespan_ms),
            self.modelled(self.makespan_ms)
                .map(|m| format!(" ({m} modelled)"))
                .unwrap_or_default()
        );
        // The axis: ticks at a round number of seconds, gridlines through the lanes.
        let tick = tick_ms(span);
        let axis_y = top - 6.0;
        let _ = write!(
            out,
            r##"<g class="axis"><line x1="{label_w}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#333"/>"##,
            label_w + chart_w
        );
        // In the lab the wall clock's labels sit above the modelled seconds.
        let wall_y = axis_y - if self.time_scale.is_some() { 20.0 } else { 6.0 };
        let _ = write!(
            out,
            r##"<text x="8" y="{wall_y}" fill="#333">wall clock</text>"##
        );
        if self.time_scale.is_some() {
            let _ = write!(
                out,
                r##"<text x="8" y="{}" fill="{MODELLED}">modelled</text>"##,
                axis_y - 6.0
            );
        }
        let mut t = 0;
        while t <= span {
            let tx = x(t);
            let _ = write!(
                out,
                r##"<line class="tick" x1="{tx:.1}" y1="{axis_y}" x2="{tx:.1}" y2="{}" stroke="#ddd"/>"##,
                top + lanes_h
            );
            let _ = write!(
                out,
                r##"<text class="wall" x="{tx:.1}" y="{wall_y}" text-anchor="middle" fill="#333">{}</text>"##,
                seconds_short(t)
            );
            if let Some(m) = self.modelled_ms(t) {
                let _ = write!(
                    out,
                    r##"<text class="modelled" x="{tx:.1}" y="{}" text-anchor="middle" fill="{MODELLED}">{}</text>"##,
                    axis_y - 6.0,
                    seconds_short(m)
                );
            }
            t += tick;
        }
        out.push_str("</g>");
        for (i, (label, members)) in lanes.iter().enumerate() {
            let y = top + row_h * i as f64;
            let _ = write!(
                out,
                r#"<text x="8" y="{}">{}</text>"#,
                y + 16.0,
                escape(label)
            );
            let one = members.len() == 1;
            for s in members {
                self.svg_bar(&mut out, s, y, one, &x);
            }
        }
        let legend: [(&str, &str); 4] = [
            (CRITICAL, "critical path: shortening it shortens the run"),
            (OTHER, "a step off the critical path"),
            (FAILED, "failed"),
            (CANCELLED, "cancelled"),
        ];
        let _ = write!(out, r#"<g class="legend">"#);
        for (n, (colour, what)) in legend.iter().enumerate() {
            let ly = legend_top + 18.0 * n as f64;
            let _ = write!(
                out,
                r#"<rect x="8" y="{ly}" width="14" height="12" fill="{colour}"/><text x="28" y="{}">{what}</text>"#,
                ly + 10.0
            );
        }
        let ly = legend_top + 18.0 * 4.0;
        let _ = write!(
            out,
            r##"<rect x="8" y="{ly}" width="14" height="10" fill="none" stroke="#999" stroke-dasharray="3,2"/><text x="28" y="{}">slack: how much later the step could have ended without delaying the run</text>"##,
            ly + 10.0
        );
        let _ = write!(
            out,
            r##"<text x="8" y="{}" fill="#555">lanes: one per step, in graph order, and one per node holding its units (platform/, talos/, join/) side by side; shades inside a bar are its phases (hover: what each waited for)</text>"##,
            ly + 28.0
        );
        let _ = write!(
            out,
            r##"<text x="8" y="{}" fill="#555">critical path: {}</text>"##,
            ly + 46.0,
            escape(&self.critical_path.join(" -> "))
        );
        out.push_str("</g></svg>");
        out
    }

    /// What the bounded resources cost the run, a line each: how many of the
    /// steps that needed a slot waited for one, how long in all, the longest wait.
    pub fn slot_lines(&self) -> Vec<String> {
        // Per resource: its capacity, and each step's wait for it.
        type Waits<'a> = (usize, Vec<(&'a str, u64)>);
        let mut by_name: BTreeMap<&str, Waits<'_>> = BTreeMap::new();
        for s in &self.steps {
            if let Some(w) = &s.slot {
                let e = by_name
                    .entry(w.name.as_str())
                    .or_insert((w.capacity, Vec::new()));
                e.1.push((s.id.as_str(), w.waited_ms));
            }
        }
        by_name
            .into_iter()
            .map(|(name, (capacity, waits))| {
                let waited: Vec<&(&str, u64)> = waits.iter().filter(|(_, w)| *w > 0).collect();
                let total: u64 = waits.iter().map(|(_, w)| w).sum();
                match waited.iter().max_by_key(|(_, w)| *w) {
                    Some((longest, most)) => format!(
                        "{name} ({capacity} at once): {} of {} waited for one, {} in all, at most {} ({longest})",
                        waited.len(),
                        waits.len(),
                        seconds(total),
                        seconds(*most)
                    ),
                    None => format!(
                        "{name} ({capacity} at once): none of {} waited for one",
                        waits.len()
                    ),
                }
            })
            .collect()
    }

    /// The timeline's lanes, in graph order: one per step, and one per node
    /// holding that node's units side by side (`platform/cp-1`, `talos/cp-1`, ...).
    fn lanes(&self) -> Vec<(String, Vec<&StepTiming>)> {
        let mut lanes: Vec<(String, Vec<&StepTiming>)> = Vec::new();
        let mut of_node: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &self.steps {
            match s.node.as_deref() {
                Some(node) => match of_node.get(node) {
                    Some(&i) => lanes[i].1.push(s),
                    None => {
                        of_node.insert(node, lanes.len());
                        lanes.push((format!("node {node}"), vec![s]));
                    }
                },
                None => lanes.push((s.id.clone(), vec![s])),
            }
        }
        lanes
    }

    /// One step's bar in its lane at `y`, with its phases; its slack and its
    /// duration are drawn after it when the lane is its alone (in a node's lane the
    /// node's next unit follows).
    fn svg_bar(
        &self,
        out: &mut String,
        s: &StepTiming,
        y: f64,
        alone: bool,
        x: &dyn Fn(u64) -> f64,
    ) {
        let row_h = ROW_H;
        let (Some(start), Some(end)) = (s.start_ms, s.end_ms) else {
            if alone {
                let _ = write!(
                    out,
                    r##"<text x="{LABEL_W}" y="{}" fill="#888">{}</text>"##,
                    y + 16.0,
                    escape(&s.status)
                );
            }
            return;
        };
        let critical = self.critical_path.contains(&s.id);
        let fill = match (s.status.as_str(), critical) {
            ("failed", _) => FAILED,
            ("cancelled", _) => CANCELLED,
            (_, true) => CRITICAL,
            _ => OTHER,
        };
        if alone && let Some(slack) = s.slack_ms.filter(|s| *s > 0) {
            let _ = write!(
                out,
                r##"<rect class="slack" x="{:.1}" y="{}" width="{:.1}" height="{}" fill="none" stroke="#999" stroke-dasharray="3,2"><title>{}: slack {}</title></rect>"##,
                x(end),
                y + 8.0,
                (x(end + slack) - x(end)).max(1.0),
                row_h - 16.0,
                escape(&s.id),
                seconds(slack)
            );
        }
        let width = (x(end) - x(start)).max(2.0);
        let _ = write!(
            out,
            r##"<rect class="{}" x="{:.1}" y="{}" width="{width:.1}" height="{}" fill="{fill}" stroke="#fff" stroke-width="0.5"><title>{}: {}</title></rect>"##,
            if critical { "bar critical" } else { "bar" },
            x(start),
            y + 4.0,
            row_h - 8.0,
            escape(&s.id),
            seconds(s.duration_ms)
        );
        // Phases: every other one shaded, each naming what it ended with.
        for (n, p) in s.phases.iter().enumerate() {
            let _ = write!(
                out,
                r##"<rect class="phase" x="{:.1}" y="{}" width="{:.1}" height="{}" fill="#000" fill-opacity="{}"><title>{}: {} until {}</title></rect>"##,
                x(p.start_ms),
                y + 4.0,
                (x(p.end_ms) - x(p.start_ms)).max(0.5),
                row_h - 8.0,
                if n % 2 == 0 { "0.0" } else { "0.12" },
                escape(&s.id),
                seconds(p.duration_ms()),
                escape(&p.until)
            );
        }
        if alone {
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{}">{}</text>"#,
                x(end) + 4.0,
                y + 16.0,
                seconds(s.duration_ms)
            );
        }
    }
}

/// A wait that reports what is still missing each time it changes ("Flux: 9 of 10
/// not Ready: ...", "Flux: 8 of 10 ...") is one stretch of waiting: consecutive
/// phases closed by messages with the same one-word subject become one, named by
/// the last report.
fn merge_reports(phases: Vec<Phase>) -> Vec<Phase> {
    let subject = |m: &str| {
        m.split_once(": ")
            .map(|(s, _)| s.to_string())
            .filter(|s| !s.contains(' '))
    };
    let mut out: Vec<Phase> = Vec::new();
    for p in phases {
        match out.last_mut() {
            Some(last)
                if last.end_ms == p.start_ms
                    && subject(&last.until).is_some()
                    && subject(&last.until) == subject(&p.until) =>
            {
                last.end_ms = p.end_ms;
                last.until = p.until;
            }
            _ => out.push(p),
        }
    }
    out
}

/// At most `max` characters, with an ellipsis when cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// The timeline's label column and lane height.
const LABEL_W: f64 = 150.0;
const ROW_H: f64 = 26.0;

const CRITICAL: &str = "#e8a33d";
const OTHER: &str = "#5b8def";
const FAILED: &str = "#d9534f";
const CANCELLED: &str = "#999999";
const MODELLED: &str = "#8a5a00";

/// A round tick interval (1, 2 or 5 times a power of ten seconds, or finer) giving
/// at most ten ticks over `span_ms`.
fn tick_ms(span_ms: u64) -> u64 {
    let mut unit = 1u64;
    loop {
        for m in [1, 2, 5] {
            let tick = unit * m;
            if span_ms / tick <= 10 {
                return tick;
            }
        }
        unit *= 10;
    }
}

/// Walks back from the step that ended last, each time to the dependency that ended
/// last: the chain that, made shorter, would shorten the run.
fn critical_path(steps: &[StepTiming]) -> Vec<String> {
    let by_id = |id: &str| steps.iter().find(|s| s.id == id);
    let mut current = steps
        .iter()
        .filter(|s| s.end_ms.is_some())
        .max_by_key(|s| s.end_ms);
    let mut path = Vec::new();
    while let Some(step) = current {
        path.push(step.id.clone());
        current = step
            .deps
            .iter()
            .filter_map(|d| by_id(d))
            .filter(|d| d.end_ms.is_some())
            .max_by_key(|d| d.end_ms);
    }
    path.reverse();
    path
}

/// The steps that ran, as a network: each starts when its last dependency ends
/// plus the extra wait it had.
struct Schedule {
    /// Index into the report's steps, in dependency order.
    order: Vec<usize>,
    /// By index: the dependencies that ran.
    deps: BTreeMap<usize, Vec<usize>>,
    /// By index: duration and extra wait.
    duration: BTreeMap<usize, u64>,
    waited: BTreeMap<usize, u64>,
    /// The run's first start.
    origin: u64,
}

impl Schedule {
    fn of(steps: &[StepTiming]) -> Self {
        let ran: BTreeMap<&str, usize> = steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.start_ms.is_some() && s.end_ms.is_some())
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        let origin = ran
            .values()
            .filter_map(|i| steps[*i].start_ms)
            .min()
            .unwrap_or(0);
        let deps: BTreeMap<usize, Vec<usize>> = ran
            .values()
            .map(|i| {
                let d = steps[*i]
                    .deps
                    .iter()
                    .filter_map(|d| ran.get(d.as_str()).copied())
                    .collect();
                (*i, d)
            })
            .collect();
        let start = |i: usize| steps[i].start_ms.unwrap_or(0);
        let end = |i: usize| steps[i].end_ms.unwrap_or(0);
        let duration = ran
            .values()
            .map(|i| (*i, end(*i).saturating_sub(start(*i))))
            .collect();
        let waited = deps
            .iter()
            .map(|(i, d)| {
                let ready = d.iter().map(|d| end(*d)).max().unwrap_or(origin);
                (*i, start(*i).saturating_sub(ready))
            })
            .collect();
        // Dependency order (Kahn); a cycle, which the graph forbids, would leave
        // steps out rather than loop.
        let mut order = Vec::new();
        let mut placed: std::collections::BTreeSet<usize> = std::collections::BTreeSet::new();
        loop {
            let next: Vec<usize> = deps
                .iter()
                .filter(|(i, d)| !placed.contains(*i) && d.iter().all(|d| placed.contains(d)))
                .map(|(i, _)| *i)
                .collect();
            if next.is_empty() {
                break;
            }
            placed.extend(next.iter().copied());
            order.extend(next);
        }
        Self {
            order,
            deps,
            duration,
            waited,
            origin,
        }
    }

    fn deps(&self, i: usize) -> &[usize] {
        self.deps.get(&i).map_or(&[], Vec::as_slice)
    }

    fn get(map: &BTreeMap<usize, u64>, i: usize) -> u64 {
        map.get(&i).copied().unwrap_or(0)
    }

    /// When the run would end with step `without` taking no time.
    fn end(&self, without: Option<usize>) -> u64 {
        let mut ends: BTreeMap<usize, u64> = BTreeMap::new();
        for &i in &self.order {
            let ready = self
                .deps(i)
                .iter()
                .map(|d| Self::get(&ends, *d))
                .max()
                .unwrap_or(self.origin);
            let took = if without == Some(i) {
                0
            } else {
                Self::get(&self.duration, i)
            };
            ends.insert(i, ready + Self::get(&self.waited, i) + took);
        }
        ends.values().copied().max().unwrap_or(self.origin)
    }

    /// Sets slack, gain and extra wait on every step that ran.
    fn annotate(&self, steps: &mut [StepTiming]) {
        let run_end = self.end(None);
        // Latest finish: the run's end for the last steps, else what lets every
        // dependent start when it did.
        let mut latest: BTreeMap<usize, u64> = self.order.iter().map(|i| (*i, run_end)).collect();
        for &i in self.order.iter().rev() {
            let start_by = Self::get(&latest, i)
                .saturating_sub(Self::get(&self.duration, i))
                .saturating_sub(Self::get(&self.waited, i));
            for d in self.deps(i) {
                if let Some(l) = latest.get_mut(d) {
                    *l = (*l).min(start_by);
                }
            }
        }
        for &i in &self.order {
            let s = &mut steps[i];
            let end = s.end_ms.unwrap_or(0);
            s.slack_ms = Some(Self::get(&latest, i).saturating_sub(end));
            s.gain_ms = Some(run_end.saturating_sub(self.end(Some(i))));
            s.waited_ms = Some(Self::get(&self.waited, i));
        }
    }
}

fn seconds(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// An axis label: whole seconds when the tick allows, else tenths.
fn seconds_short(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        seconds(ms)
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(id: &str, deps: &[&str], start: u64, end: u64) -> StepTiming {
        StepTiming {
            status: "done".into(),
            start_ms: Some(start),
            end_ms: Some(end),
            duration_ms: end - start,
            attempts: 1,
            ..StepTiming::new(id, &deps.iter().map(|d| d.to_string()).collect::<Vec<_>>())
        }
    }

    fn build(steps: Vec<StepTiming>) -> Report {
        Report::build("r", "create", "lab", "succeeded", steps)
    }

    /// secrets -> {vault, platform} -> talos -> {storage, gitops}.
    fn rebirth() -> Report {
        build(vec![
            timing("secrets", &[], 0, 10_000),
            timing("vault", &["secrets"], 10_000, 50_000),
            timing("platform", &["secrets"], 10_000, 120_000),
            timing("talos", &["platform", "vault"], 120_000, 200_000),
            timing("storage", &["talos"], 200_000, 260_000),
            timing("gitops", &["talos"], 200_000, 300_000),
        ])
    }

    fn field(report: &Report, pick: fn(&StepTiming) -> Option<u64>) -> Vec<(&str, u64)> {
        report
            .steps
            .iter()
            .filter_map(|s| pick(s).map(|v| (s.id.as_str(), v)))
            .collect()
    }

    #[test]
    fn the_critical_path_follows_the_latest_dependency() {
        let report = rebirth();
        assert_eq!(
            report.critical_path,
            ["secrets", "platform", "talos", "gitops"]
        );
        assert_eq!(report.makespan_ms, 300_000);
    }

    #[test]
    fn slack_is_how_much_later_a_step_could_end_without_delaying_the_run() {
        let report = rebirth();
        assert_eq!(
            field(&report, |s| s.slack_ms),
            [
                ("secrets", 0),
                // talos starts at 120 s, after platform: vault could end 70 s later.
                ("vault", 70_000),
                ("platform", 0),
                ("talos", 0),
                // the run ends with gitops at 300 s.
                ("storage", 40_000),
                ("gitops", 0),
            ]
        );
        // Zero slack is exactly the critical path here.
        let zero: Vec<&str> = report
            .steps
            .iter()
            .filter(|s| s.slack_ms == Some(0))
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(zero, report.critical_path);
    }

    #[test]
    fn the_gain_of_a_critical_step_stops_where_another_path_takes_over() {
        let report = rebirth();
        assert_eq!(
            field(&report, |s| s.gain_ms),
            [
                ("secrets", 10_000),
                ("vault", 0),
                // Without platform, talos waits for vault (50 s) instead of 120 s.
                ("platform", 70_000),
                ("talos", 80_000),
                ("storage", 0),
                // Without gitops, storage ends the run at 260 s.
                ("gitops", 40_000),
            ]
        );
    }

    #[test]
    fn twins_on_the_critical_path_gain_nothing_alone_and_are_not_named() {
        let report = build(vec![
            timing("a", &[], 0, 10),
            timing("b", &["a"], 10, 50),
            timing("c", &["a"], 10, 50),
            timing("d", &["b", "c"], 50, 60),
        ]);
        assert_eq!(
            field(&report, |s| s.slack_ms),
            [("a", 0), ("b", 0), ("c", 0), ("d", 0)]
        );
        assert_eq!(
            field(&report, |s| s.gain_ms),
            [("a", 10), ("b", 0), ("c", 0), ("d", 10)]
        );
        let table = report.table();
        let named = table
            .split_once("shortening these")
            .map(|(_, after)| after.to_string())
            .unwrap_or_default();
        assert!(named.contains("  a ") && named.contains("  d "), "{table}");
        assert!(
            !named.contains("  b ") && !named.contains("  c "),
            "{table}"
        );
    }

    #[test]
    fn a_wait_for_a_slot_is_kept_when_a_step_is_imagined_shorter() {
        // c could start at 10 s but waited 30 s for a free slot.
        let report = build(vec![
            timing("a", &[], 0, 10_000),
            timing("b", &["a"], 10_000, 100_000),
            timing("c", &["a"], 40_000, 120_000),
        ]);
        assert_eq!(
            field(&report, |s| s.waited_ms),
            [("a", 0), ("b", 0), ("c", 30_000)]
        );
        assert_eq!(
            field(&report, |s| s.slack_ms),
            [("a", 0), ("b", 20_000), ("c", 0)]
        );
        // Without c, b ends the run at 100 s.
        assert_eq!(field(&report, |s| s.gain_ms)[2], ("c", 20_000));
        let table = report.table();
        assert!(
            table.lines().any(|l| l.starts_with("  c ")
                && l.ends_with("20.0s gain  started 30.0s after its last dependency ended")),
            "{table}"
        );
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("  a ") && l.ends_with("10.0s gain")),
            "{table}"
        );
    }

    #[test]
    fn steps_that_did_not_run_have_no_slack_and_do_not_bind() {
        let mut skipped = StepTiming::new("secrets", &[]);
        skipped.status = "skipped".into();
        let report = build(vec![
            skipped,
            timing("platform", &["secrets"], 0, 100),
            timing("talos", &["platform"], 100, 150),
        ]);
        assert_eq!(report.steps[0].slack_ms, None);
        assert_eq!(
            field(&report, |s| s.gain_ms),
            [("platform", 100), ("talos", 50)]
        );
        assert!(
            report
                .table()
                .lines()
                .any(|l| l.starts_with("secrets") && l.contains(" - ") && l.ends_with("skipped"))
        );
    }

    #[test]
    fn phases_split_a_step_at_its_progress_retries_and_end() {
        let mut report = build(vec![timing("engine", &[], 0, 100_000)]);
        let started = |attempt, at_ms| Event::StepStarted {
            step: "engine".into(),
            attempt,
            at_ms,
        };
        let progress = |message: &str, at_ms| Event::StepProgress {
            step: "engine".into(),
            message: message.into(),
            at_ms,
        };
        report.add_phases(&[
            started(1, 0),
            progress("3 nodes Ready", 30_000),
            Event::StepRetried {
                step: "engine".into(),
                attempt: 1,
                error: "connection refused".into(),
                delay_ms: 10_000,
                at_ms: 35_000,
            },
            started(2, 45_000),
            Event::StepProgress {
                step: "talos".into(),
                message: "another step's news".into(),
                at_ms: 60_000,
            },
            progress("CoreDNS ready", 90_000),
            Event::StepFinished {
                step: "engine".into(),
                duration_ms: 100_000,
                attempts: 2,
                at_ms: 100_000,
            },
        ]);
        let phases: Vec<(&str, u64, u64)> = report.steps[0]
            .phases
            .iter()
            .map(|p| (p.until.as_str(), p.start_ms, p.end_ms))
            .collect();
        assert_eq!(
            phases,
            [
                ("3 nodes Ready", 0, 30_000),
                ("attempt 1 failed: connection refused", 30_000, 35_000),
                ("the backoff before attempt 2", 35_000, 45_000),
                ("CoreDNS ready", 45_000, 90_000),
                ("the step's end", 90_000, 100_000),
            ]
        );
        let table = report.table();
        assert!(table.contains("100.0s gain"), "{table}");
        assert!(table.contains(
                "45.0s until \"CoreDNS ready\"; 30.0s until \"3 nodes Ready\"; 10.0s until \"the backoff before attempt 2\"; 2 more"
            ), "{table}");
    }

    #[test]
    fn successive_reports_of_one_wait_are_one_phase_and_long_ones_are_clipped() {
        let mut report = build(vec![timing("gitops", &[], 0, 100_000)]);
        let progress = |message: String, at_ms| Event::StepProgress {
            step: "gitops".into(),
            message,
            at_ms,
        };
        let long = "x".repeat(100);
        report.add_phases(&[
            Event::StepStarted {
                step: "gitops".into(),
                attempt: 1,
                at_ms: 0,
            },
            progress("Flux bootstrapped".into(), 30_000),
            progress(format!("Flux: 3 of 3 not Ready: {long}"), 40_000),
            progress("Flux: 2 of 3 not Ready".into(), 50_000),
            progress("Flux: 1 of 3 not Ready".into(), 60_000),
            progress("Flux converged: 3 objects".into(), 95_000),
        ]);
        let phases: Vec<(&str, u64, u64)> = report.steps[0]
            .phases
            .iter()
            .map(|p| (p.until.as_str(), p.start_ms, p.end_ms))
            .collect();
        assert_eq!(
            phases,
            [
                ("Flux bootstrapped", 0, 30_000),
                ("Flux: 1 of 3 not Ready", 30_000, 60_000),
                ("Flux converged: 3 objects", 60_000, 95_000),
            ]
        );
        assert_eq!(clip(&long, 5), "xxxx…");
        assert_eq!(clip("short", 5), "short");
    }

    #[test]
    fn the_table_shows_slack_and_in_the_lab_modelled_time() {
        let mut report = rebirth();
        let table = report.table();
        let header = table.lines().next().unwrap_or_default();
        assert!(
            header.contains("slack") && !header.contains("modelled"),
            "{table}"
        );
        let row = |table: &str, id: &str| {
            table
                .lines()
                .find(|l| l.starts_with(id))
                .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        // start, end, duration, slack, attempts, status
        assert_eq!(
            row(&table, "storage")[1..],
            ["200.0s", "260.0s", "60.0s", "40.0s", "1", "done"]
        );
        assert_eq!(row(&table, "gitops")[4..], ["0.0s", "1", "done", "*"]);
        report.time_scale = Some(0.5);
        let table = report.table();
        assert!(table.starts_with("times are wall clock"), "{table}");
        assert!(
            table.contains("makespan 300.0s (600.0s modelled)"),
            "{table}"
        );
        assert_eq!(
            row(&table, "storage")[1..],
            ["200.0s", "260.0s", "60.0s", "120.0s", "40.0s", "1", "done"]
        );
    }

    #[test]
    fn the_timeline_has_an_axis_a_legend_and_modelled_seconds_in_the_lab() {
        let mut report = build(vec![
            timing("secrets", &[], 0, 10_000),
            timing("platform", &["secrets"], 10_000, 120_000),
            timing("vault", &["secrets"], 10_000, 50_000),
        ]);
        let svg = report.svg();
        assert_eq!(svg.matches("bar critical").count(), 2);
        assert_eq!(svg.matches(r#"class="bar""#).count(), 1);
        // 120 s: a tick every 20 s, 0 to 120.
        assert_eq!(svg.matches(r#"class="tick""#).count(), 7);
        assert!(svg.contains(">120s</text>") && svg.contains(">wall clock</text>"));
        assert!(!svg.contains(r#"class="modelled""#));
        // vault's slack: 70 s, drawn and named.
        assert!(svg.contains("vault: slack 70.0s"), "{svg}");
        for entry in [
            "critical path: shortening it",
            "failed",
            "cancelled",
            "slack:",
            "lanes:",
        ] {
            assert!(svg.contains(entry), "legend lacks {entry}");
        }
        report.time_scale = Some(0.02);
        let svg = report.svg();
        // 20 s of wall clock are 1000 s modelled.
        assert!(svg.contains(r##"fill="#8a5a00">1000s</text>"##), "{svg}");
        assert_eq!(svg.matches(r#"class="modelled""#).count(), 7);
    }

    /// Each node's units share one lane, and what the clone slots cost is a line of
    /// the table.
    #[test]
    fn node_units_share_their_nodes_lane_and_slot_waits_are_summed() {
        let unit = |id: &str, node: &str, deps: &[&str], start, end, waited: Option<u64>| {
            let mut t = timing(id, deps, start, end);
            t.node = Some(node.into());
            t.slot = waited.map(|w| SlotWait {
                name: "clone slot on pve/local-lvm".into(),
                capacity: 1,
                waited_ms: w,
            });
            t
        };
        let report = build(vec![
            timing("platform", &[], 0, 100),
            unit("platform/cp-1", "cp-1", &["platform"], 100, 12_100, Some(0)),
            unit(
                "platform/w-1",
                "w-1",
                &["platform"],
                100,
                24_100,
                Some(12_000),
            ),
            unit(
                "talos/cp-1",
                "cp-1",
                &["platform/cp-1"],
                12_100,
                12_200,
                None,
            ),
            unit("talos/w-1", "w-1", &["platform/w-1"], 24_100, 24_200, None),
        ]);
        let lanes: Vec<(String, usize)> = report
            .lanes()
            .into_iter()
            .map(|(label, members)| (label, members.len()))
            .collect();
        assert_eq!(
            lanes,
            [
                ("platform".to_string(), 1),
                ("node cp-1".to_string(), 2),
                ("node w-1".to_string(), 2)
            ]
        );
        let svg = report.svg();
        assert_eq!(svg.matches(">node cp-1</text>").count(), 1);
        assert!(svg.contains("talos/w-1: 0.1s"), "{svg}");
        assert_eq!(
            report.slot_lines(),
            [
                "clone slot on pve/local-lvm (1 at once): 1 of 2 waited for one, 12.0s in all, at most 12.0s (platform/w-1)"
            ]
        );
        assert!(
            report
                .table()
                .contains("clone slot on pve/local-lvm (1 at once)")
        );
    }

    #[test]
    fn tick_intervals_are_round_and_at_most_ten() {
        assert_eq!(tick_ms(1), 1);
        assert_eq!(tick_ms(300), 50);
        assert_eq!(tick_ms(120_000), 20_000);
        assert_eq!(tick_ms(296_200), 50_000);
        assert_eq!(tick_ms(8_500), 1_000);
    }

    #[test]
    fn old_reports_without_the_new_fields_still_read() {
        let old = r#"{"run_id":"r","action":"create","cluster":"lab","status":"succeeded","makespan_ms":1,"critical_path":["a"],
            "steps":[{"id":"a","deps":[],"status":"done","start_ms":0,"end_ms":1,"duration_ms":1,"attempts":1}]}"#;
        let report: Report = serde_json::from_str(old).unwrap();
        assert_eq!(report.time_scale, None);
        assert_eq!(report.steps[0].slack_ms, None);
    }
}
