//! Mismatch examples as the report shows them: redacted, bounded and with line diffs.
//!
//! Outcomes and requests are user data: code may be confidential and outputs may be huge.
//! An example therefore shows configured request fields only as a length and a hash, cuts
//! long values, and turns long text into a unified line diff of bounded size.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use similar::TextDiff;

use crate::fixture::Evaluation;
use crate::judge::compare::{DiffKind, Difference};
use crate::judge::pointer::Pattern;

/// What examples keep and how many.
#[derive(Debug, Clone)]
pub struct ExamplePolicy {
    /// Examples kept per mismatch group.
    pub examples_per_group: usize,
    /// Mismatch groups kept; mismatches of further groups are counted only.
    pub max_groups: usize,
    /// Request fields shown only as length and hash.
    pub redact: Vec<Pattern>,
    /// Longest string shown in an example, in bytes; longer ones are cut.
    pub max_value_bytes: usize,
    /// Most lines of a text diff shown.
    pub max_diff_lines: usize,
}

impl Default for ExamplePolicy {
    fn default() -> Self {
        ExamplePolicy {
            examples_per_group: 3,
            max_groups: 200,
            redact: vec![Pattern::parse("/code").unwrap_or_else(|_| unreachable!("valid pointer"))],
            max_value_bytes: 4096,
            max_diff_lines: 200,
        }
    }
}

/// One mismatching evaluation as shown in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// Which evaluation.
    pub eval_id: String,
    /// Its request, redacted; absent when not recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<Value>,
    /// Where and how the outcomes differ.
    pub differences: Vec<ShownDifference>,
}

/// One difference of an example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShownDifference {
    /// JSON pointer of the place.
    pub path: String,
    /// How the values differ.
    pub kind: DiffKind,
    /// The legacy value, cut to size; absent when missing there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy: Option<Value>,
    /// The shadow value, cut to size; absent when missing there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Value>,
    /// A unified line diff (legacy → shadow) for text places.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

impl Example {
    /// Builds the example for one mismatching evaluation.
    pub fn new(policy: &ExamplePolicy, evaluation: &Evaluation, differences: &[Difference]) -> Example {
        Example::from_parts(policy, &evaluation.eval_id, evaluation.request.clone(), differences)
    }

    /// Builds the example from the evaluation's id and request, whichever form the
    /// evaluation was in (replay's borrowed evaluations build the request only for this).
    pub fn from_parts(
        policy: &ExamplePolicy,
        eval_id: &str,
        request: Option<Value>,
        differences: &[Difference],
    ) -> Example {
        Example {
            eval_id: eval_id.to_string(),
            request: request.map(|request| redact_owned(request, &policy.redact)),
            differences: differences.iter().map(|d| show(policy, d)).collect(),
        }
    }
}

fn show(policy: &ExamplePolicy, difference: &Difference) -> ShownDifference {
    let diff = match (&difference.legacy, &difference.shadow) {
        (Some(Value::String(legacy)), Some(Value::String(shadow))) if difference.is_text => {
            Some(line_diff(legacy, shadow, policy.max_diff_lines))
        }
        _ => None,
    };
    let cut = |value: &Option<Value>| value.as_ref().map(|v| truncate(v, policy.max_value_bytes));
    ShownDifference {
        path: difference.path.clone(),
        kind: difference.kind,
        legacy: cut(&difference.legacy),
        shadow: cut(&difference.shadow),
        diff,
    }
}

/// A unified diff of two texts, at most `max_lines` lines; the diff gives up refining after
/// a short time on pathological inputs rather than stall a report.
pub fn line_diff(legacy: &str, shadow: &str, max_lines: usize) -> String {
    // Normalised text has its final newlines dropped; put one back on both sides so the
    // diff does not report "No newline at end of file" for a difference nobody has.
    let (legacy_owned, shadow_owned);
    let (legacy, shadow) = if !legacy.ends_with('\n') && !shadow.ends_with('\n') {
        legacy_owned = format!("{legacy}\n");
        shadow_owned = format!("{shadow}\n");
        (legacy_owned.as_str(), shadow_owned.as_str())
    } else {
        (legacy, shadow)
    };
    let diff = TextDiff::configure().timeout(Duration::from_millis(200)).diff_lines(legacy, shadow);
    let text = diff.unified_diff().context_radius(3).header("legacy", "shadow").to_string();
    let total = text.lines().count();
    if total <= max_lines {
        return text;
    }
    let mut kept: String = text.lines().take(max_lines).flat_map(|l| [l, "\n"]).collect();
    kept.push_str(&format!("... {} more diff lines not shown\n", total - max_lines));
    kept
}

fn truncate(value: &Value, max_bytes: usize) -> Value {
    match value {
        Value::String(text) if text.len() > max_bytes => {
            let mut end = max_bytes;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            Value::String(format!("{}... [{} more bytes]", &text[..end], text.len() - end))
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| truncate(v, max_bytes)).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), truncate(v, max_bytes))).collect()),
        other => other.clone(),
    }
}

/// Replaces each field named by a pattern with `{"redacted": true, "bytes": N, "fnv1a64": H}`,
/// so that examples can still tell equal code from different code without showing it.
pub fn redact(request: &Value, patterns: &[Pattern]) -> Value {
    redact_owned(request.clone(), patterns)
}

/// [`redact`] of a value the caller no longer needs.
fn redact_owned(mut copy: Value, patterns: &[Pattern]) -> Value {
    for pattern in patterns {
        let Some(tokens) = pattern.literal_tokens() else { continue };
        let Some(pointer) = tokens.iter().try_fold(&mut copy, |v, t| match v {
            Value::Object(map) => map.get_mut(*t),
            Value::Array(items) => t.parse::<usize>().ok().and_then(move |i| items.get_mut(i)),
            _ => None,
        }) else {
            continue;
        };
        let text = match &*pointer {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        *pointer = serde_json::json!({"redacted": true, "bytes": text.len(), "fnv1a64": fnv1a64(text.as_bytes())});
    }
    copy
}

fn fnv1a64(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn code_is_shown_as_length_and_hash() {
        let request = json!({"eval_id": "e", "code": "print('secret')", "language": "python"});
        let shown = redact(&request, &ExamplePolicy::default().redact);
        assert_eq!(shown["eval_id"], "e");
        assert_eq!(shown["code"], json!({"redacted": true, "bytes": 15, "fnv1a64": fnv1a64(b"print('secret')")}));
        assert!(!shown.to_string().contains("secret"));
    }

    #[test]
    fn line_diff_is_unified_and_bounded() {
        let diff = line_diff("a\nb\nc\n", "a\nB\nc\n", 100);
        assert_eq!(diff, "--- legacy\n+++ shadow\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n");
        // Normalised texts without a final newline diff the same, without a marker.
        assert_eq!(line_diff("a\nb\nc", "a\nB\nc", 100), diff);
        let long_l: String = (0..1000).map(|i| format!("{i}\n")).collect();
        let long_r: String = (0..1000).map(|i| format!("x{i}\n")).collect();
        let cut = line_diff(&long_l, &long_r, 10);
        assert_eq!(cut.lines().count(), 11);
        assert!(cut.ends_with("more diff lines not shown\n"));
    }

    #[test]
    fn long_values_are_cut_on_a_char_boundary() {
        let cut = truncate(&json!("éééé"), 3);
        assert_eq!(cut, json!("é... [6 more bytes]"));
    }
}
