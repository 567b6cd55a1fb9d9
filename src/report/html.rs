//! The HTML report: one self-contained page (no external assets) for the person deciding
//! whether to shift traffic. The verdict comes first, then the evidence: the field-level
//! rates, the mismatch groups (folded), the failures with their eval_ids, the latency
//! pictures and the timeline. It reads at phone width: wide tables scroll sideways, with
//! the pass/fail column first. The live page refreshes itself every few seconds with a
//! small inline script that keeps the scroll position and the folded sections as they are.
//!
//! Every value that comes from outcomes or requests is untrusted user data and goes through
//! [`escape`]; nothing is written raw except this module's own markup.

use std::fmt::Write;

use super::Report;
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

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1em auto;padding:0 1em;max-width:72em;color:#222}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}\
th:first-child,td:first-child,td.text,th.text{text-align:left}td.text{min-width:14em}.scroll{overflow-x:auto;max-width:100%}\
.verdict{font-size:1.5em;padding:.4em .8em;display:inline-block}.context{color:#555}\
.ready{background:#d4f5d4}.notready{background:#fbd4d4}.inconclusive{background:#fdf0c8}\
.pass{color:#186a18}.fail{color:#a01010;font-weight:bold}.wait{color:#8a6100;font-weight:bold}\
.checks td:first-child,.checks th:first-child{position:sticky;left:0;background:#fff}\
pre{background:#f6f6f6;padding:.5em;overflow-x:auto;font-size:.9em}.add{background:#dfd}.del{background:#fdd}\
details.group{border-left:4px solid #ccc;padding-left:1em;margin:1em 0}summary{cursor:pointer;font-weight:bold}\
code{background:#f0f0f0;word-break:break-all}figure{margin:1em 0}figcaption{font-weight:bold;margin:.3em 0}\
svg{max-width:100%;height:auto}.note{background:#eef3fb;padding:.4em .8em}";

/// Replaces the page with a fresh copy every few seconds, keeping the scroll position and
/// which sections are unfolded. Only on the live page.
const REFRESH: &str = "<script>setInterval(async()=>{try{const r=await fetch(location.href,{credentials:'same-origin',headers:{Accept:'text/html'}});if(!r.ok)return;const d=new DOMParser().parseFromString(await r.text(),'text/html');const open=[...document.querySelectorAll('details')].map(e=>e.open);const x=scrollX,y=scrollY;document.body.replaceWith(d.body);document.querySelectorAll('details').forEach((e,i)=>{if(i<open.length)e.open=open[i]});scrollTo(x,y)}catch(e){}},5000)</script>";

/// Renders the whole page.
pub fn render(report: &Report) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let refresh = if report.live.is_some() { REFRESH } else { "" };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>shadowdiff report</title><style>{STYLE}</style>{refresh}</head><body>\n"
    );
    let _ = writeln!(out, "<h1>shadowdiff report</h1>");
    context(&mut out, report);
    readiness(&mut out, report);
    instances(&mut out, report);
    totals(&mut out, report);
    if let Some(accounting) = &report.accounting {
        accounting_table(&mut out, accounting);
    }
    super::drive::html(&mut out, report);
    super::evidence::paths(&mut out, report);
    groups(&mut out, report);
    report.noise.html(&mut out);
    super::evidence::breakdowns(&mut out, report);
    latency(&mut out, report);
    super::evidence::timeline(&mut out, report);
    languages(&mut out, report);
    malformed(&mut out, report);
    out.push_str("</body></html>\n");
    out
}

/// The fleet's instances: which were merged, which were cut off and when.
fn instances(out: &mut String, report: &Report) {
    let (Some(fleet), Some(rows)) = (&report.fleet, &report.instances) else { return };
    let _ = writeln!(
        out,
        "<h2>Instances ({}, run <code>{}</code>, window {})</h2><div class=\"scroll\"><table><tr><th>status</th><th class=\"text\">instance</th><th>last seen (UTC)</th><th>judged</th><th>submissions</th><th>state bytes</th><th class=\"text\">note</th></tr>",
        rows.len(),
        escape(&fleet.run),
        fleet.window
    );
    for row in rows {
        let (class, word) = match row.status {
            "running" => ("pass", "running"),
            "stopped" => ("pass", "stopped"),
            _ => ("fail", "CUT OFF"),
        };
        let note = match (row.status, row.merged) {
            (_, false) => "another comparison config: listed, not summed".to_string(),
            ("cut_off", true) => {
                format!("no state since {} UTC: judgments after that are lost", super::evidence::clock(row.last_seen))
            }
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "<tr><td class=\"{class}\">{word}</td><td class=\"text\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"text\">{}</td></tr>",
            escape(&row.instance),
            super::evidence::clock(row.last_seen),
            row.judged,
            row.submissions,
            row.state_bytes,
            escape(&note)
        );
    }
    let _ = writeln!(out, "</table></div><p>Fleet state in Redis: {} bytes.</p>", fleet.redis_bytes);
}

/// What was compared, when, and the sidecar's state: as of, since, sampling, breaker,
/// shadow kind and queue depths.
fn context(out: &mut String, report: &Report) {
    if let Some(fleet) = &report.fleet {
        let count = report.instances.as_ref().map_or(0, Vec::len);
        let _ = writeln!(
            out,
            "<p class=\"context\">{} · merged over {count} instances of run <code>{}</code>, window {} · as of {} UTC</p>",
            escape(&report.generator),
            escape(&fleet.run),
            fleet.window,
            super::evidence::clock(fleet.as_of)
        );
        return;
    }
    let Some(live) = &report.live else {
        let files = report.source.files.iter().map(|f| escape(f)).collect::<Vec<_>>().join(", ");
        let what = if report.drive.is_some() { "drive" } else { "replay" };
        let _ = writeln!(out, "<p class=\"context\">{}: {what} of {files}</p>", escape(&report.generator));
        return;
    };
    let clock = super::evidence::clock;
    let mut parts = vec![
        format!("as of {} UTC", clock(live.as_of)),
        format!("since {} UTC", clock(live.since)),
        format!("shadow: {}", report.shadow_name()),
        format!("sampling {}%", number(live.sampling_percent)),
        format!("breaker {}", live.breaker.replace('_', "-")),
    ];
    if let Some(depth) = live.celery_queue_length {
        parts.push(format!("Celery queue {depth}"));
    }
    if let Some(depth) = live.legacy_queue_length {
        parts.push(format!("legacy queue {depth}"));
    }
    let _ = writeln!(out, "<p class=\"context\">{} · {}</p>", escape(&report.generator), parts.join(" · "));
}

fn readiness(out: &mut String, report: &Report) {
    let r = &report.readiness;
    let (class, words) = match r.state {
        ReadinessState::Ready => ("ready", format!("{} is READY to take traffic", report.shadow_name())),
        ReadinessState::NotReady => ("notready", format!("{} is NOT READY to take traffic", report.shadow_name())),
        ReadinessState::Inconclusive => ("inconclusive", format!("INCONCLUSIVE: {}", super::needed_in_words(report))),
    };
    let _ = writeln!(out, "<div class=\"verdict {class}\">{}</div>", escape(&words));
    out.push_str("<h2>Readiness checks</h2><div class=\"scroll\"><table class=\"checks\"><tr><th>result</th><th class=\"text\">check</th><th>limit</th><th>observed</th><th>95% bound</th><th class=\"text\">detail</th></tr>\n");
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
            "<tr><td class=\"{class}\">{word}</td><td class=\"text\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"text\">{}{}</td></tr>",
            escape(check.name),
            check.limit,
            check.observed.map_or_else(|| "-".into(), number),
            bound,
            escape(&check.detail),
            if check.name == "max_submit_p99_ms" && shadow_answers_at_once(report) {
                " (in response mode the submission is the whole evaluation)"
            } else {
                ""
            }
        );
    }
    out.push_str("</table></div>\n");
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
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        escape(label),
        t.evaluations,
        t.matched,
        t.equivalent,
        t.mismatch,
        t.noise,
        t.shadow_error,
        t.shadow_lost,
        t.legacy_failed
    );
}

const TOTALS_HEADER: &str = "<tr><th></th><th>evaluations</th><th>match</th><th>equivalent</th><th>mismatch</th><th>noise</th><th>shadow_error</th><th>shadow_lost</th><th>legacy_failed</th></tr>\n";

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

/// True when the shadow's outcome is its submission's answer (`response` mode): then the
/// submit time and the time to outcome are one measurement.
fn shadow_answers_at_once(report: &Report) -> bool {
    report.live.as_ref().is_some_and(|live| live.shadow_outcome_mode == "response")
}

fn latency(out: &mut String, report: &Report) {
    let latency = &report.latency;
    let shadow = report.shadow_name();
    let legacy_once = report.live.as_ref().is_some_and(|live| live.legacy_outcome_mode == "response");
    let shadow_once = shadow_answers_at_once(report);
    out.push_str("<h2>Latency (ms)</h2>");
    for (once, side) in [(legacy_once, "legacy"), (shadow_once, shadow)] {
        if once {
            let _ = writeln!(
                out,
                "<p class=\"note\">The {} outcome is the answer to its submission (response mode): its submit time and its time to outcome are the same measurement, shown once.</p>",
                escape(side)
            );
        }
    }
    out.push_str("<div class=\"scroll\"><table><tr><th></th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>\n");
    let shadow_submit = format!("{shadow} submit");
    let shadow_outcome = format!("{shadow} time to outcome");
    let delta = format!("{shadow} − legacy outcome");
    let rows: [(&str, &Percentiles, bool); 5] = [
        ("legacy submit", &latency.legacy.submit_ms, !legacy_once),
        (&shadow_submit, &latency.shadow.submit_ms, !shadow_once),
        ("legacy time to outcome", &latency.legacy.outcome_ms, true),
        (&shadow_outcome, &latency.shadow.outcome_ms, true),
        (&delta, &latency.delta.outcome_ms, true),
    ];
    for (label, p, shown) in rows {
        if !shown {
            continue;
        }
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(label),
            p.count,
            cell(p.p50),
            cell(p.p90),
            cell(p.p99),
            cell(p.p999),
            cell(p.max)
        );
    }
    out.push_str("</table></div>\n");
    if !(legacy_once && shadow_once) {
        super::charts::percentiles(
            out,
            "Submission time by percentile",
            &latency.legacy.submit_ms,
            &latency.shadow.submit_ms,
            shadow,
        );
    }
    super::charts::percentiles(
        out,
        "Time to outcome by percentile",
        &latency.legacy.outcome_ms,
        &latency.shadow.outcome_ms,
        shadow,
    );
    super::charts::delta(out, &latency.delta.outcome_ms, shadow);
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
            "<details class=\"group\"><summary>{} × {}</summary><p>by language: {}; fingerprint <code>{}</code></p>",
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
        out.push_str("</details>\n");
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
