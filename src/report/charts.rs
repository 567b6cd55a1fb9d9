//! Inline SVG pictures for the HTML report: latency by percentile for both sides, the
//! paired difference, and the run over time. No external resources, no scripts: each chart
//! is plain markup inside the page. Labels are this module's own text or numbers.

use std::fmt::Write;

use super::html::escape;
use crate::judge::histogram::Percentiles;
use crate::judge::timeline::Point;

const LEGACY: &str = "#1f5fbf";
const SHADOW: &str = "#d9730d";
const LABELS: [&str; 5] = ["p50", "p90", "p99", "p99.9", "max"];

fn points(p: &Percentiles) -> [Option<f64>; 5] {
    [p.p50, p.p90, p.p99, p.p999, p.max]
}

/// A log-scaled vertical axis over `values`: decades from the lowest to the highest.
struct LogAxis {
    lo: f64,
    hi: f64,
    top: f64,
    bottom: f64,
}

impl LogAxis {
    fn new(values: impl Iterator<Item = f64>, top: f64, bottom: f64) -> Option<LogAxis> {
        let positive: Vec<f64> = values.filter(|v| *v > 0.0 && v.is_finite()).collect();
        let lo = positive.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = positive.iter().cloned().fold(0.0, f64::max);
        if positive.is_empty() {
            return None;
        }
        let lo = lo.log10().floor();
        Some(LogAxis { lo, hi: hi.log10().ceil().max(lo + 1.0), top, bottom })
    }

    fn y(&self, v: f64) -> f64 {
        self.top + (self.hi - v.max(1e-3).log10()) / (self.hi - self.lo) * (self.bottom - self.top)
    }

    fn grid(&self, out: &mut String, left: f64, right: f64) {
        let mut decade = self.lo;
        while decade <= self.hi {
            let value = 10f64.powf(decade);
            let y = self.y(value);
            let _ = writeln!(
                out,
                "<line x1=\"{left}\" x2=\"{right}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"4\" y=\"{:.1}\" font-size=\"11\">{value} ms</text>",
                y + 4.0
            );
            decade += 1.0;
        }
    }
}

fn open(out: &mut String, width: f64, height: f64, label: &str) {
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"{}\">",
        escape(label)
    );
}

fn legend(out: &mut String, x: f64, y: f64, shadow_name: &str) {
    let _ = writeln!(out, "<text x=\"{x}\" y=\"{y}\" font-size=\"12\" fill=\"{LEGACY}\">legacy</text>");
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{y}\" font-size=\"12\" fill=\"{SHADOW}\">{}</text>",
        x + 80.0,
        escape(shadow_name)
    );
}

fn polyline(out: &mut String, colour: &str, coords: &[(f64, f64)]) {
    if coords.is_empty() {
        return;
    }
    let text: Vec<String> = coords.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ =
        writeln!(out, "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>", text.join(" "));
}

/// Both sides' distribution by percentile, log-scaled.
pub(super) fn percentiles(
    out: &mut String,
    title: &str,
    legacy: &Percentiles,
    shadow: &Percentiles,
    shadow_name: &str,
) {
    let Some(axis) = LogAxis::new(points(legacy).into_iter().chain(points(shadow)).flatten(), 20.0, 200.0) else {
        return;
    };
    let (width, height, left, right) = (480.0, 240.0, 60.0, 460.0);
    let x = |i: usize| left + i as f64 * (right - left) / 4.0;
    let _ = writeln!(out, "<figure><figcaption>{}</figcaption>", escape(title));
    open(out, width, height, title);
    axis.grid(out, left, right);
    for (i, label) in LABELS.iter().enumerate() {
        let _ =
            writeln!(out, "<text x=\"{:.1}\" y=\"218\" font-size=\"11\" text-anchor=\"middle\">{label}</text>", x(i));
    }
    for (p, colour) in [(legacy, LEGACY), (shadow, SHADOW)] {
        let coords: Vec<(f64, f64)> =
            points(p).iter().enumerate().filter_map(|(i, v)| v.map(|v| (x(i), axis.y(v)))).collect();
        polyline(out, colour, &coords);
    }
    legend(out, left + 10.0, height - 4.0, shadow_name);
    out.push_str("</svg></figure>\n");
}

/// The paired difference (shadow minus legacy) by percentile, as bars around zero.
pub(super) fn delta(out: &mut String, delta: &Percentiles, shadow_name: &str) {
    let values = points(delta);
    let largest = values.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    if largest == 0.0 && values.iter().all(Option::is_none) {
        return;
    }
    let (width, height, left, right, zero, reach) = (480.0, 240.0, 60.0, 460.0, 110.0, 85.0);
    let scale = if largest > 0.0 { reach / largest } else { 0.0 };
    let title = format!("{shadow_name} minus legacy, time to outcome (negative: {shadow_name} faster)");
    let _ = writeln!(out, "<figure><figcaption>{}</figcaption>", escape(&title));
    open(out, width, height, &title);
    let _ = writeln!(out, "<line x1=\"{left}\" x2=\"{right}\" y1=\"{zero}\" y2=\"{zero}\" stroke=\"#888\"/>");
    let _ = writeln!(out, "<text x=\"4\" y=\"{}\" font-size=\"11\">0 ms</text>", zero + 4.0);
    let slot = (right - left) / 5.0;
    for (i, (label, value)) in LABELS.iter().zip(values).enumerate() {
        let x = left + i as f64 * slot + slot * 0.2;
        if let Some(v) = value {
            let length = (v.abs() * scale).max(1.0);
            let (y, colour) = if v < 0.0 { (zero, SHADOW) } else { (zero - length, LEGACY) };
            let _ = writeln!(
                out,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{length:.1}\" fill=\"{colour}\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{v:.1}</text>",
                slot * 0.6,
                x + slot * 0.3,
                if v < 0.0 { zero + length + 12.0 } else { zero - length - 4.0 },
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{label}</text>",
            x + slot * 0.3,
            height - 6.0
        );
    }
    out.push_str("</svg></figure>\n");
}

/// The run over time: the mismatch rate per bucket, and each side's p99 time to outcome.
pub(super) fn timeline(out: &mut String, timeline: &[Point], shadow_name: &str) {
    if timeline.len() < 2 {
        return;
    }
    let (width, left, right) = (720.0, 60.0, 700.0);
    let x = |i: usize| left + i as f64 * (right - left) / (timeline.len() - 1) as f64;
    let rate = |p: &Point| if p.judged == 0 { 0.0 } else { p.mismatch as f64 / p.judged as f64 * 100.0 };
    let top_rate = timeline.iter().map(rate).fold(0.0f64, f64::max).max(1.0);

    let title = "Mismatch rate over the run (% of judged evaluations)";
    let _ = writeln!(out, "<figure><figcaption>{title}</figcaption>");
    open(out, width, 160.0, title);
    for fraction in [0.0, 0.5, 1.0] {
        let y = 140.0 - fraction * 120.0;
        let _ = writeln!(
            out,
            "<line x1=\"{left}\" x2=\"{right}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"4\" y=\"{:.1}\" font-size=\"11\">{:.1}%</text>",
            y + 4.0,
            top_rate * fraction
        );
    }
    let coords: Vec<(f64, f64)> =
        timeline.iter().enumerate().map(|(i, p)| (x(i), 140.0 - rate(p) / top_rate * 120.0)).collect();
    polyline(out, "#a01010", &coords);
    out.push_str("</svg></figure>\n");

    let values = timeline.iter().flat_map(|p| [p.legacy_p99_ms, p.shadow_p99_ms]).flatten();
    let Some(axis) = LogAxis::new(values, 20.0, 200.0) else { return };
    let title = "p99 time to outcome over the run";
    let _ = writeln!(out, "<figure><figcaption>{title}</figcaption>");
    open(out, width, 240.0, title);
    axis.grid(out, left, right);
    for (pick, colour) in [(0, LEGACY), (1, SHADOW)] {
        let coords: Vec<(f64, f64)> = timeline
            .iter()
            .enumerate()
            .filter_map(|(i, p)| if pick == 0 { p.legacy_p99_ms } else { p.shadow_p99_ms }.map(|v| (x(i), axis.y(v))))
            .collect();
        polyline(out, colour, &coords);
    }
    legend(out, left + 10.0, 236.0, shadow_name);
    out.push_str("</svg></figure>\n");
}
