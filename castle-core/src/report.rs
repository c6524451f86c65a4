//! The run report: per-step timings, the makespan and the critical path, as JSON, a
//! text table and an SVG timeline.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One step's part in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepTiming {
    /// The step.
    pub id: String,
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
    /// What it installed, in a line each (a HelmRelease, its chart and version):
    /// the `report` list of the step's outputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl StepTiming {
    pub(crate) fn new(id: &str, deps: &[String]) -> Self {
        Self {
            id: id.to_string(),
            deps: deps.to_vec(),
            status: "pending".into(),
            start_ms: None,
            end_ms: None,
            duration_ms: 0,
            attempts: 0,
            error: None,
            notes: Vec::new(),
        }
    }

    /// Takes the `report` lines of a step's outputs.
    pub(crate) fn noting(&mut self, outputs: &serde_json::Value) {
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
}

impl Report {
    /// Computes makespan and critical path from the steps' timings.
    pub fn build(
        run_id: &str,
        action: &str,
        cluster: &str,
        status: &str,
        steps: Vec<StepTiming>,
    ) -> Self {
        let ran: Vec<&StepTiming> = steps.iter().filter(|s| s.end_ms.is_some()).collect();
        let first = ran.iter().filter_map(|s| s.start_ms).min().unwrap_or(0);
        let last = ran.iter().filter_map(|s| s.end_ms).max().unwrap_or(0);
        let critical_path = critical_path(&steps);
        Self {
            run_id: run_id.to_string(),
            action: action.to_string(),
            cluster: cluster.to_string(),
            status: status.to_string(),
            makespan_ms: last.saturating_sub(first),
            critical_path,
            steps,
        }
    }

    /// The steps that ran, with their times, as an aligned text table.
    pub fn table(&self) -> String {
        let width = self
            .steps
            .iter()
            .map(|s| s.id.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut out = format!(
            "{:<width$}  {:>9}  {:>9}  {:>9}  {:>8}  {}\n",
            "step", "start", "end", "duration", "attempts", "status"
        );
        for s in &self.steps {
            let fmt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), seconds);
            let mark = if self.critical_path.contains(&s.id) {
                " *"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "{:<width$}  {:>9}  {:>9}  {:>9}  {:>8}  {}{mark}",
                s.id,
                fmt(s.start_ms),
                fmt(s.end_ms),
                if s.end_ms.is_some() {
                    seconds(s.duration_ms)
                } else {
                    "-".into()
                },
                s.attempts,
                s.status,
            );
        }
        for s in &self.steps {
            for note in &s.notes {
                let _ = writeln!(out, "{:<width$}  {note}", s.id);
            }
        }
        let _ = writeln!(
            out,
            "makespan {}  critical path (*): {}",
            seconds(self.makespan_ms),
            self.critical_path.join(" -> ")
        );
        out
    }

    /// A timeline picture: one bar per step, the critical path highlighted.
    pub fn svg(&self) -> String {
        let rows: Vec<&StepTiming> = self.steps.iter().collect();
        let label_w = 140.0;
        let chart_w = 640.0;
        let row_h = 26.0;
        let top = 40.0;
        let height = top + row_h * rows.len() as f64 + 40.0;
        let span = self
            .steps
            .iter()
            .filter_map(|s| s.end_ms)
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        let x = |ms: u64| label_w + chart_w * ms as f64 / span;
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="12">"#,
            w = label_w + chart_w + 80.0
        );
        let _ = write!(
            out,
            r#"<text x="8" y="20" font-size="14">{} {} of {}: {} in {}</text>"#,
            escape(&self.cluster),
            escape(&self.action),
            escape(&self.run_id),
            escape(&self.status),
            seconds(self.makespan_ms)
        );
        for (i, s) in rows.iter().enumerate() {
            let y = top + row_h * i as f64;
            let _ = write!(
                out,
                r#"<text x="8" y="{}">{}</text>"#,
                y + 16.0,
                escape(&s.id)
            );
            if let (Some(start), Some(end)) = (s.start_ms, s.end_ms) {
                let critical = self.critical_path.contains(&s.id);
                let fill = match (s.status.as_str(), critical) {
                    ("failed", _) => "#d9534f",
                    ("cancelled", _) => "#999999",
                    (_, true) => "#e8a33d",
                    _ => "#5b8def",
                };
                let width = (x(end) - x(start)).max(2.0);
                let _ = write!(
                    out,
                    r#"<rect class="{}" x="{:.1}" y="{}" width="{width:.1}" height="{}" fill="{fill}"><title>{}: {}</title></rect>"#,
                    if critical { "bar critical" } else { "bar" },
                    x(start),
                    y + 4.0,
                    row_h - 8.0,
                    escape(&s.id),
                    seconds(s.duration_ms)
                );
                let _ = write!(
                    out,
                    r#"<text x="{:.1}" y="{}">{}</text>"#,
                    x(end) + 4.0,
                    y + 16.0,
                    seconds(s.duration_ms)
                );
            } else {
                let _ = write!(
                    out,
                    r##"<text x="{label_w}" y="{}" fill="#888">{}</text>"##,
                    y + 16.0,
                    escape(&s.status)
                );
            }
        }
        let _ = write!(
            out,
            r##"<text x="8" y="{}" fill="#555">critical path: {}</text></svg>"##,
            height - 14.0,
            escape(&self.critical_path.join(" -> "))
        );
        out
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

fn seconds(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
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

    #[test]
    fn the_critical_path_follows_the_latest_dependency() {
        let report = Report::build(
            "r",
            "create",
            "lab",
            "succeeded",
            vec![
                timing("secrets", &[], 0, 10),
                timing("vault", &["secrets"], 10, 50),
                timing("platform", &["secrets"], 10, 120),
                timing("talos", &["platform", "vault"], 120, 200),
                timing("storage", &["talos"], 200, 260),
                timing("gitops", &["talos"], 200, 300),
            ],
        );
        assert_eq!(
            report.critical_path,
            ["secrets", "platform", "talos", "gitops"]
        );
        assert_eq!(report.makespan_ms, 300);
        let svg = report.svg();
        assert_eq!(svg.matches("bar critical").count(), 4);
        assert_eq!(svg.matches("<rect").count(), 6);
        assert!(report.table().contains("gitops"));
    }
}
