//! What a drive report adds (`shadowdiff drive`): the pace asked for and achieved, how
//! long the safety rails held submissions back, the queue depth and in-flight count over
//! time, and which driven `eval_id` stands for which recorded one.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::html::escape;
use super::Report;

/// The drive's own section of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriveContext {
    /// Where evaluations were sent: `celery`, `http` (the HTTP shadow) or `legacy`.
    pub target: &'static str,
    /// Which side of the report is the one driven now (`shadow` or `legacy`); the other is
    /// the recorded outcome it is compared with.
    pub driven_side: &'static str,
    /// `rate` (evaluations per second), `speed` (times the recorded rate) or `unpaced`.
    pub pacing: &'static str,
    /// The rate or speed factor asked for.
    pub pacing_value: Option<f64>,
    /// Most evaluations in flight at once.
    pub concurrency: usize,
    /// Recorded evaluations read.
    pub planned: u64,
    /// Evaluations submitted.
    pub submitted: u64,
    /// Evaluations never submitted (the drive was interrupted).
    pub not_submitted: u64,
    /// Whether Ctrl-C (or SIGTERM) stopped the drive: the report is partial.
    pub interrupted: bool,
    /// Seconds from the first submission to the last.
    pub submitting_s: f64,
    /// Seconds from the start to the report.
    pub elapsed_s: f64,
    /// Submissions per second achieved (over `submitting_s`).
    pub achieved_rate: f64,
    /// Milliseconds submissions were held back, by rail (`in_flight_cap`, `queue_depth`,
    /// `breaker_open`, `memory_budget`, `shadow_unavailable`).
    pub held_ms: BTreeMap<&'static str, u64>,
    /// Samples over the drive, one a second.
    pub samples: Vec<DriveSample>,
    /// Driven ids and the recorded evaluations they stand for, in submission order.
    pub ids: Vec<DrivenId>,
}

/// One sample of the drive's progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriveSample {
    /// Seconds since the start.
    pub at_s: f64,
    /// Submitted so far.
    pub submitted: u64,
    /// Judged so far.
    pub judged: u64,
    /// In flight now.
    pub in_flight: u64,
    /// Messages waiting in the Celery queue (Celery only).
    pub queue_depth: Option<u64>,
}

/// A driven evaluation's id and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrivenId {
    /// The id it was sent with.
    pub driven: String,
    /// The recorded id (the report's verdicts and examples use this one).
    pub recorded: String,
    /// The recording it was read from.
    pub file: String,
    /// Its line there.
    pub line: u64,
}

/// The drive's lines of the terminal summary.
pub fn render_text(report: &Report) -> String {
    let Some(drive) = &report.drive else { return String::new() };
    let mut out = String::new();
    let asked = match (drive.pacing, drive.pacing_value) {
        ("rate", Some(rate)) => format!("asked {rate}/s"),
        ("speed", Some(factor)) => format!("asked {factor}x the recorded rate"),
        _ => "unpaced".to_owned(),
    };
    let _ = writeln!(
        out,
        "drive: {} of {} submitted to {} in {:.1} s: {:.1}/s achieved ({asked}), concurrency {}{}",
        drive.submitted,
        drive.planned,
        drive.target,
        drive.submitting_s,
        drive.achieved_rate,
        drive.concurrency,
        if drive.interrupted { "; INTERRUPTED, partial report" } else { "" },
    );
    let side = if drive.driven_side == "legacy" { &report.latency.legacy } else { &report.latency.shadow };
    let p = &side.outcome_ms;
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    let _ = writeln!(
        out,
        "drive: time to outcome at that load: p50 {} ms, p99 {} ms, max {} ms",
        ms(p.p50),
        ms(p.p99),
        ms(p.max)
    );
    if let Some(deepest) = drive.samples.iter().filter_map(|s| s.queue_depth).max() {
        let _ = writeln!(out, "drive: deepest Celery queue {deepest}");
    }
    for (rail, held) in &drive.held_ms {
        let _ = writeln!(out, "drive: held {held} ms by {rail}");
    }
    out
}

/// The drive's section of the HTML page: the pace, the rails, and the samples.
pub fn html(out: &mut String, report: &Report) {
    let Some(drive) = &report.drive else { return };
    out.push_str("<h2>Drive</h2><table>");
    let row = |out: &mut String, label: &str, value: String| {
        let _ = writeln!(out, "<tr><td>{}</td><td>{}</td></tr>", escape(label), escape(&value));
    };
    row(out, "sent to", drive.target.to_owned());
    let asked = match drive.pacing_value {
        Some(value) => format!("{} {value}", drive.pacing),
        None => drive.pacing.to_owned(),
    };
    row(out, "pace asked", asked);
    row(out, "achieved", format!("{:.1}/s over {:.1} s", drive.achieved_rate, drive.submitting_s));
    row(out, "submitted", format!("{} of {}", drive.submitted, drive.planned));
    row(out, "not submitted", drive.not_submitted.to_string());
    row(out, "concurrency", drive.concurrency.to_string());
    for (rail, held) in &drive.held_ms {
        row(out, &format!("held by {rail}"), format!("{held} ms"));
    }
    if drive.interrupted {
        row(out, "interrupted", "yes: this report is partial".to_owned());
    }
    out.push_str("</table>\n<details><summary>Every second</summary><table>");
    out.push_str("<tr><th>s</th><th>submitted</th><th>judged</th><th>in flight</th><th>queue depth</th></tr>");
    for s in &drive.samples {
        let depth = s.queue_depth.map_or_else(|| "-".to_owned(), |d| d.to_string());
        let _ = writeln!(
            out,
            "<tr><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{depth}</td></tr>",
            s.at_s, s.submitted, s.judged, s.in_flight
        );
    }
    out.push_str("</table></details>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::judge::engine::Engine;
    use crate::report::Source;

    fn report(drive: DriveContext) -> Report {
        let engine = Engine::new(Config::default());
        let mut report =
            Report::build(&engine, &engine.new_stats(), Source { mode: "drive", files: vec!["r.jsonl".into()] });
        report.drive = Some(drive);
        report
    }

    fn context() -> DriveContext {
        DriveContext {
            target: "celery",
            driven_side: "shadow",
            pacing: "rate",
            pacing_value: Some(200.0),
            concurrency: 64,
            planned: 2000,
            submitted: 1200,
            not_submitted: 800,
            interrupted: true,
            submitting_s: 6.0,
            elapsed_s: 7.5,
            achieved_rate: 199.8,
            held_ms: BTreeMap::from([("queue_depth", 1500)]),
            samples: vec![DriveSample { at_s: 1.0, submitted: 200, judged: 180, in_flight: 20, queue_depth: Some(7) }],
            ids: vec![DrivenId { driven: "e-drive-1-1".into(), recorded: "e".into(), file: "r.jsonl".into(), line: 1 }],
        }
    }

    #[test]
    fn the_summary_says_pace_achieved_latency_queue_and_holds() {
        let text = render_text(&report(context()));
        assert_eq!(
            text,
            "drive: 1200 of 2000 submitted to celery in 6.0 s: 199.8/s achieved (asked 200/s), concurrency 64; \
             INTERRUPTED, partial report\n\
             drive: time to outcome at that load: p50 - ms, p99 - ms, max - ms\n\
             drive: deepest Celery queue 7\n\
             drive: held 1500 ms by queue_depth\n"
        );
        let json: serde_json::Value = serde_json::from_str(&report(context()).to_json()).expect("json");
        assert_eq!(
            json["drive"]["ids"][0],
            serde_json::json!({"driven": "e-drive-1-1", "recorded": "e", "file": "r.jsonl", "line": 1})
        );
        assert_eq!(json["source"]["mode"], "drive");
    }

    #[test]
    fn the_page_has_a_drive_section() {
        let page = crate::report::html::render(&report(context()));
        assert!(page.contains("drive of r.jsonl"), "context line");
        assert!(page.contains("<tr><td>achieved</td><td>199.8/s over 6.0 s</td></tr>"));
        assert!(page.contains("<tr><td>held by queue_depth</td><td>1500 ms</td></tr>"));
        assert!(page.contains("<tr><td>1</td><td>200</td><td>180</td><td>20</td><td>7</td></tr>"));
    }
}
