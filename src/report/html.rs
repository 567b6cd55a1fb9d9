//! The HTML report: one self-contained page (no external assets, no scripts) for the person
//! deciding whether to shift traffic. The verdict comes first, then the evidence.
//!
//! Every value that comes from outcomes or requests is untrusted user data and goes through
//! [`escape`]; nothing is written raw except this module's own markup.

use std::fmt::Write;

use super::{LatencyReport, Report};
use crate::judge::histogram::Percentiles;
use crate::judge::readiness::{CheckState, ReadinessState};
use crate::judge::stats::Totals;

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;max-width:72em;color:#222}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}\
th:first-child,td:first-child,td.text{text-align:left}.verdict{font-size:1.6em;padding:.4em .8em;display:inline-block}\
.ready{background:#d4f5d4}.notready{background:#fbd4d4}.inconclusive{background:#fdf0c8}\
.pass{color:#186a18}.fail{color:#a01010;font-weight:bold}.wait{color:#8a6100;font-weight:bold}\
pre{background:#f6f6f6;padding:.5em;overflow-x:auto;font-size:.9em}.add{background:#dfd}.del{background:#fdd}\
.group{border-left:4px solid #ccc;padding-left:1em;margin:1.5em 0}code{background:#f0f0f0}";

/// Renders the whole page.
pub fn render(report: &Report) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>shadowdiff report</title><style>{STYLE}</style></head><body>\n"
    );
    let _ = writeln!(out, "<h1>shadowdiff report</h1><p>{}</p>", escape(&report.generator));
    readiness(&mut out, report);
    totals(&mut out, report);
    if let Some(accounting) = &report.accounting {
        accounting_table(&mut out, accounting);
    }
    super::evidence::breakdowns(&mut out, report);
    languages(&mut out, report);
    latency(&mut out, &report.latency);
    super::evidence::timeline(&mut out, report);
    super::evidence::paths(&mut out, report);
    groups(&mut out, report);
    malformed(&mut out, report);
    out.push_str("</body></html>\n");
    out
}

fn readiness(out: &mut String, report: &Report) {
    let r = &report.readiness;
    let (class, words) = match r.state {
        ReadinessState::Ready => ("ready", "Celery is READY to take traffic".to_string()),
        ReadinessState::NotReady => ("notready", "Celery is NOT READY to take traffic".to_string()),
        ReadinessState::Inconclusive => ("inconclusive", format!("INCONCLUSIVE: {}", super::needed_in_words(report))),
    };
    let _ = writeln!(out, "<div class=\"verdict {class}\">{}</div>", escape(&words));
    out.push_str("<h2>Readiness checks</h2><table><tr><th>check</th><th>limit</th><th>observed</th><th>95% bound</th><th>result</th><th>detail</th></tr>\n");
    for check in &r.checks {
        let (class, word) = match check.state {
            CheckState::Pass => ("pass", "pass".to_string()),
            CheckState::Fail => ("fail", "FAIL".to_string()),
            CheckState::Inconclusive => match check.samples_needed {
                Some(n) => ("wait", format!("needs ~{n} more")),
                None => ("wait", "no data yet".to_string()),
            },
        };
        let bound =
            if check.bound == check.observed { "-".into() } else { check.bound.map_or_else(|| "-".into(), number) };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{word}</td><td class=\"text\">{}</td></tr>",
            escape(check.name),
            check.limit,
            check.observed.map_or_else(|| "-".into(), number),
            bound,
            escape(&check.detail)
        );
    }
    out.push_str("</table>\n");
}

/// Whole numbers without decimals, fractions with six significant digits.
pub(super) fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.6}")
    }
}

fn totals_row(out: &mut String, label: &str, t: &Totals) {
    let _ = writeln!(
        out,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        escape(label),
        t.evaluations,
        t.matched,
        t.equivalent,
        t.mismatch,
        t.shadow_error,
        t.shadow_lost,
        t.legacy_failed
    );
}

const TOTALS_HEADER: &str = "<tr><th></th><th>evaluations</th><th>match</th><th>equivalent</th><th>mismatch</th><th>shadow_error</th><th>shadow_lost</th><th>legacy_failed</th></tr>\n";

fn totals(out: &mut String, report: &Report) {
    out.push_str("<h2>Totals</h2><table>");
    out.push_str(TOTALS_HEADER);
    totals_row(out, "all", &report.totals.verdicts);
    out.push_str("</table>\n");
    let _ = writeln!(out, "<p>Malformed input lines: {}.</p>", report.totals.malformed);
    if !report.equivalent_by_rule.is_empty() {
        let rules: Vec<String> =
            report.equivalent_by_rule.iter().map(|(name, n)| format!("{} {n}", escape(name))).collect();
        let _ = writeln!(out, "<p>Equivalent by rule: {}.</p>", rules.join(", "));
    }
}

fn accounting_table(out: &mut String, a: &crate::live::state::Accounting) {
    out.push_str("<h2>Every submission accounted for</h2><table>");
    let _ = writeln!(out, "<tr><td>submissions seen</td><td>{}</td></tr>", a.submissions);
    let _ = writeln!(out, "<tr><td>judged</td><td>{}</td></tr>", a.judged);
    let _ = writeln!(out, "<tr><td>pending</td><td>{}</td></tr>", a.pending);
    let _ = writeln!(out, "<tr><td>abandoned at shutdown</td><td>{}</td></tr>", a.abandoned);
    for (reason, count) in &a.not_mirrored {
        let _ = writeln!(out, "<tr><td>not mirrored: {}</td><td>{count}</td></tr>", escape(reason));
    }
    out.push_str("</table>\n");
    let verdict = if a.balanced() { "holds" } else { "DOES NOT HOLD" };
    let _ = writeln!(
        out,
        "<p>submissions = judged + pending + abandoned + not mirrored: {verdict}. Celery retries seen: {}.</p>",
        a.shadow_retries
    );
}

fn languages(out: &mut String, report: &Report) {
    out.push_str("<h2>By language</h2><table>");
    out.push_str(TOTALS_HEADER);
    for (language, lang) in &report.by_language {
        totals_row(out, language, &lang.totals);
    }
    out.push_str("</table>\n");
}

fn cell(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

fn latency(out: &mut String, latency: &LatencyReport) {
    out.push_str("<h2>Latency (ms)</h2><table><tr><th></th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>\n");
    let rows: [(&str, &Percentiles); 5] = [
        ("legacy submit", &latency.legacy.submit_ms),
        ("shadow submit", &latency.shadow.submit_ms),
        ("legacy time to outcome", &latency.legacy.outcome_ms),
        ("shadow time to outcome", &latency.shadow.outcome_ms),
        ("shadow − legacy outcome", &latency.delta.outcome_ms),
    ];
    for (label, p) in rows {
        let _ = writeln!(
            out,
            "<tr><td>{label}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            p.count,
            cell(p.p50),
            cell(p.p90),
            cell(p.p99),
            cell(p.p999),
            cell(p.max)
        );
    }
    out.push_str("</table>\n");
    chart(out, &latency.legacy.outcome_ms, &latency.shadow.outcome_ms);
}

/// An inline SVG of time to outcome by percentile for both systems, log-scaled.
fn chart(out: &mut String, legacy: &Percentiles, shadow: &Percentiles) {
    let points = |p: &Percentiles| [p.p50, p.p90, p.p99, p.p999, p.max];
    let all: Vec<f64> = points(legacy).into_iter().chain(points(shadow)).flatten().filter(|v| *v > 0.0).collect();
    if all.is_empty() {
        return;
    }
    let lo = all.iter().cloned().fold(f64::INFINITY, f64::min).log10().floor();
    let hi = all.iter().cloned().fold(0.0, f64::max).log10().ceil().max(lo + 1.0);
    let (width, height, left, top) = (560.0, 240.0, 60.0, 20.0);
    let x = |i: usize| left + i as f64 * (width - left - 20.0) / 4.0;
    let y = |v: f64| top + (hi - v.max(1e-3).log10()) / (hi - lo) * (height - top - 40.0);
    let _ = writeln!(out, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"time to outcome by percentile\">");
    let mut decade = lo;
    while decade <= hi {
        let _ = writeln!(
            out,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"4\" y=\"{:.1}\" font-size=\"11\">{} ms</text>",
            width - 20.0,
            y(10f64.powf(decade)) + 4.0,
            10f64.powf(decade),
            y = y(10f64.powf(decade))
        );
        decade += 1.0;
    }
    for (i, label) in ["p50", "p90", "p99", "p99.9", "max"].iter().enumerate() {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{label}</text>",
            x(i),
            height - 20.0
        );
    }
    for (p, colour, name, row) in [(legacy, "#1f5fbf", "legacy", 0.0), (shadow, "#d9730d", "shadow (Celery)", 1.0)] {
        let coords: Vec<String> =
            points(p).iter().enumerate().filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", x(i), y(v)))).collect();
        let _ = writeln!(
            out,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            coords.join(" ")
        );
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"{colour}\">{name}</text>",
            left + 10.0 + row * 140.0,
            height - 4.0
        );
    }
    out.push_str("</svg>\n");
}

fn groups(out: &mut String, report: &Report) {
    let _ = writeln!(out, "<h2>Mismatch groups ({})</h2>", report.groups.len());
    if report.ungrouped_mismatches > 0 {
        let _ = writeln!(
            out,
            "<p>{} further mismatches fell beyond the group limit and are counted only.</p>",
            report.ungrouped_mismatches
        );
    }
    for group in &report.groups {
        let languages: Vec<String> =
            group.by_language.iter().map(|(language, n)| format!("{} {n}", escape(language))).collect();
        let _ = writeln!(
            out,
            "<div class=\"group\"><h3>{} × {}</h3><p>by language: {}; fingerprint <code>{}</code></p>",
            group.count,
            escape(&group.paths.join(", ")),
            languages.join(", "),
            escape(&group.fingerprint)
        );
        for example in &group.examples {
            let _ = writeln!(out, "<h4>eval_id <code>{}</code></h4>", escape(&example.eval_id));
            if let Some(request) = &example.request {
                let _ = writeln!(out, "<p>request <code>{}</code></p>", escape(&request.to_string()));
            }
            for difference in &example.differences {
                let _ =
                    writeln!(out, "<p><code>{}</code> ({})</p>", escape(&difference.path), difference.kind.as_str());
                match &difference.diff {
                    Some(diff) => unified(out, diff),
                    None => {
                        let show = |v: &Option<serde_json::Value>| {
                            v.as_ref().map_or_else(|| "(absent)".into(), |v| v.to_string())
                        };
                        let _ = writeln!(
                            out,
                            "<table><tr><th>legacy</th><th>shadow</th></tr><tr><td><code>{}</code></td><td><code>{}</code></td></tr></table>",
                            escape(&show(&difference.legacy)),
                            escape(&show(&difference.shadow))
                        );
                    }
                }
            }
        }
        out.push_str("</div>\n");
    }
}

fn unified(out: &mut String, diff: &str) {
    out.push_str("<pre>");
    for line in diff.lines() {
        let class = match line.as_bytes().first() {
            Some(b'+') if !line.starts_with("+++") => Some("add"),
            Some(b'-') if !line.starts_with("---") => Some("del"),
            _ => None,
        };
        match class {
            Some(class) => {
                let _ = writeln!(out, "<span class=\"{class}\">{}</span>", escape(line));
            }
            None => {
                let _ = writeln!(out, "{}", escape(line));
            }
        }
    }
    out.push_str("</pre>\n");
}

fn malformed(out: &mut String, report: &Report) {
    if report.malformed.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "<h2>Malformed input ({} lines, first {} shown)</h2><table><tr><th>file</th><th>line</th><th>reason</th></tr>",
        report.totals.malformed,
        report.malformed.len()
    );
    for line in &report.malformed {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&line.file),
            line.line,
            escape(&line.reason)
        );
    }
    out.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }
}
