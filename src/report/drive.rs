//! What a drive report adds (`shadowdiff drive`): the pace asked for and achieved, how
//! long the safety rails held submissions back, the queue depth and in-flight count over
//! time, and which driven `eval_id` stands for which recorded one.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

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
