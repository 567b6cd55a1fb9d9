//! The HTML sections that show the evidence behind the counts: which evaluations failed
//! and how (breakdowns), which fields differ how often (field-level rates), and the run
//! over time (timeline). Every untrusted value goes through [`escape`].

use std::fmt::Write;

use super::html::{escape, number};
use super::Report;
use crate::judge::breakdown::Entry;
use crate::judge::timeline::Unit;

/// The failure breakdowns, each kind with its count and first eval_ids.
pub(super) fn breakdowns(out: &mut String, report: &Report) {
    let b = &report.breakdown;
    let sections: [(&str, &[Entry]); 3] = [
        ("Shadow errors by kind", &b.shadow_error),
        ("Shadow evaluations lost, by last state seen", &b.shadow_lost),
        ("Legacy failures by reason", &b.legacy_failed),
    ];
    for (title, entries) in sections {
        if entries.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "<h2>{title}</h2><div class=\"scroll\"><table><tr><th>kind</th><th>count</th><th class=\"text\">eval_ids (first)</th></tr>"
        );
        for entry in entries {
            let ids: Vec<String> = entry.eval_ids.iter().map(|id| format!("<code>{}</code>", escape(id))).collect();
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td class=\"text\">{}</td></tr>",
                escape(&entry.kind),
                entry.count,
                ids.join(" ")
            );
        }
        out.push_str("</table></div>\n");
    }
}

/// The field-level rates: how often each place was compared and differed.
pub(super) fn paths(out: &mut String, report: &Report) {
    if report.paths.is_empty() {
        return;
    }
    out.push_str("<h2>Fields: how often each differs</h2><div class=\"scroll\"><table><tr><th>field</th><th>compared</th><th>differed</th><th>rate</th></tr>\n");
    for rate in &report.paths {
        let share = if rate.compared == 0 { 0.0 } else { rate.differed as f64 / rate.compared as f64 };
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{:.3}%</td></tr>",
            escape(&rate.path),
            rate.compared,
            rate.differed,
            share * 100.0
        );
    }
    out.push_str("</table></div>\n");
}

/// The timeline as a table, newest bucket last.
pub(super) fn timeline(out: &mut String, report: &Report) {
    if report.timeline.is_empty() {
        return;
    }
    let (title, start) = match report.timeline_layout.unit {
        Unit::Minute => ("Timeline (per minute, UTC)", "minute"),
        Unit::Position => ("Timeline (by position in the input)", "from evaluation"),
    };
    let _ = writeln!(out, "<h2>{title}</h2>");
    super::charts::timeline(out, &report.timeline, report.shadow_name());
    let _ = writeln!(
        out,
        "<details><summary>the buckets</summary><div class=\"scroll\"><table><tr><th>{start}</th><th>judged</th><th>mismatch</th><th>shadow_error</th><th>shadow_lost</th><th>legacy_failed</th><th>legacy p50/p99 ms</th><th>{} p50/p99 ms</th></tr>",
        report.shadow_name()
    );
    let ms = |v: Option<f64>| v.map_or_else(|| "-".into(), number);
    for point in &report.timeline {
        let when = match report.timeline_layout.unit {
            Unit::Minute => clock(point.start),
            Unit::Position => point.start.to_string(),
        };
        let _ = writeln!(
            out,
            "<tr><td>{when}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{} / {}</td></tr>",
            point.judged,
            point.mismatch,
            point.shadow_error,
            point.shadow_lost,
            point.legacy_failed,
            ms(point.legacy_p50_ms),
            ms(point.legacy_p99_ms),
            ms(point.shadow_p50_ms),
            ms(point.shadow_p99_ms)
        );
    }
    out.push_str("</table></div></details>\n");
}

/// `YYYY-MM-DD HH:MM` of a Unix time, UTC.
pub(super) fn clock(unix_s: u64) -> String {
    // `2026-11-29T10:00:00+00:00`: the date and the minute.
    let text = crate::celery::format_utc(std::time::Duration::from_secs(unix_s));
    text.get(..16).unwrap_or(&text).replace('T', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_reads_utc() {
        assert_eq!(clock(0), "1970-01-01 00:00");
        assert_eq!(clock(1_795_946_400), "2026-11-29 10:00");
        assert_eq!(clock(951_782_400), "2000-02-29 00:00");
    }
}
