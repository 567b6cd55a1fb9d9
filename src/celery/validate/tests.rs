use super::*;
use crate::celery::samples;
use serde_json::json;

#[test]
fn every_captured_and_handmade_message_passes() {
    let mut seen = 0;
    for prefix in ["message-", "handmade-"] {
        for (name, text) in samples::all(prefix) {
            validate_envelope(text.as_bytes()).unwrap_or_else(|e| panic!("{name} refused: {e}"));
            seen += 1;
        }
    }
    assert_eq!(seen, 15, "13 captured messages and 2 handmade ones");

    // The envelope kept in the `unacked` hash is the pushed one.
    let entry: Value = serde_json::from_str(&samples::read("redis-unacked-entry.json")).expect("JSON");
    let envelope = serde_json::to_vec(&entry[0]).expect("serializes");
    validate_envelope(&envelope).expect("unacked envelope passes");
}

#[test]
fn control_and_event_messages_are_not_task_messages() {
    for name in ["control-revoke.json", "event-worker-heartbeat.json"] {
        let err = validate_envelope(samples::read(name).as_bytes()).expect_err(name);
        assert!(matches!(err, WireError::MissingField { field: "headers.task" }), "{name}: {err}");
    }
}

/// message-default.json, changed by `change`, then validated.
fn mutated(change: impl FnOnce(&mut Value)) -> Result<(), WireError> {
    let mut v: Value = serde_json::from_str(&samples::read("message-default.json")).expect("JSON");
    change(&mut v);
    validate_envelope(&serde_json::to_vec(&v).expect("serializes"))
}

fn remove(pointer: &str) -> impl FnOnce(&mut Value) + '_ {
    move |v| {
        let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
        let removed = v.pointer_mut(parent).and_then(Value::as_object_mut).and_then(|m| m.remove(key));
        assert!(removed.is_some(), "{pointer} was not in the sample");
    }
}

fn set(pointer: &str, new: Value) -> impl FnOnce(&mut Value) + '_ {
    move |v| *v.pointer_mut(pointer).expect("field exists in the sample") = new
}

fn body_of(decoded: &str) -> Value {
    json!(BASE64.encode(decoded))
}

/// The variant and field of an error, for compact assertions.
fn kind(err: &WireError) -> (&'static str, &'static str) {
    match err {
        WireError::MissingField { field } => ("missing", field),
        WireError::WrongType { field, .. } => ("type", field),
        WireError::BadValue { field, .. } => ("value", field),
        WireError::BadBody { .. } => ("body", "body"),
        WireError::EnvelopeNotJson { .. } => ("not json", ""),
        WireError::EnvelopeNotObject { .. } => ("not object", ""),
        _ => ("other", ""),
    }
}

fn assert_refused(result: Result<(), WireError>, want: (&str, &str), case: &str) {
    match result {
        Ok(()) => panic!("{case}: accepted, expected {want:?}"),
        Err(e) => assert_eq!(kind(&e), want, "{case}: error was: {e}"),
    }
}

#[test]
fn each_required_field_removed_is_refused_by_name() {
    for pointer in [
        "/content-type",
        "/headers",
        "/headers/task",
        "/headers/id",
        "/properties",
        "/properties/delivery_tag",
        "/properties/delivery_info",
        "/properties/delivery_info/exchange",
        "/properties/delivery_info/routing_key",
        "/body",
    ] {
        let field = pointer[1..].replace('/', ".");
        let err = mutated(remove(pointer)).expect_err(pointer);
        assert_eq!(kind(&err), ("missing", field.as_str()), "{pointer}: {err}");
        assert!(err.to_string().contains(&field), "message names the field: {err}");
    }
}

#[test]
fn optional_fields_may_be_removed() {
    for pointer in [
        "/content-encoding",
        "/headers/retries",
        "/headers/eta",
        "/headers/timelimit",
        "/headers/lang",
        "/properties/priority",
        "/properties/correlation_id",
    ] {
        mutated(remove(pointer)).unwrap_or_else(|e| panic!("{pointer}: {e}"));
    }
}

#[test]
fn bodies_that_crash_or_are_dropped_are_refused() {
    let cases = [
        body_of(r#"[["a"], {}]"#),
        body_of(r#"{"args": [], "kwargs": {}}"#),
        body_of(r#"[[], {}, {}, {}]"#),
        body_of(r#"["abc", {}, {}]"#),
        body_of(r#"[[], [], {}]"#),
        body_of(r#"[[], {}, "embed"]"#),
        body_of("not json"),
        json!("%%% not base64 %%%"),
        json!("W1tdLCB7fSwge31d="),
    ];
    for body in cases {
        let case = format!("body {body}");
        assert_refused(mutated(set("/body", body)), ("body", "body"), &case);
    }
    // A 3-element body with a null embed is fine.
    mutated(set("/body", body_of("[[], {}, null]"))).expect("null embed accepted");
}

#[test]
fn body_without_base64_must_be_json_text() {
    let plain = |body: Value| {
        move |v: &mut Value| {
            v["properties"].as_object_mut().expect("object").remove("body_encoding");
            v["body"] = body;
        }
    };
    mutated(plain(json!(r#"[["e"], {}, {}]"#))).expect("JSON text body accepted");
    assert_refused(mutated(plain(json!([["e"], {}, {}]))), ("type", "body"), "array");
    assert_refused(mutated(plain(json!(r#"[["e"], {}]"#))), ("body", "body"), "2 elements");
    assert_refused(
        mutated(set("/properties/body_encoding", json!("gzip"))),
        ("value", "properties.body_encoding"),
        "gzip",
    );
}

#[test]
fn wrong_types_and_values_are_refused() {
    let cases: Vec<(&str, Value, (&str, &str))> = vec![
        ("/content-type", json!("application/x-python-serialize"), ("value", "content-type")),
        ("/content-type", json!(null), ("type", "content-type")),
        ("/content-encoding", json!("latin-1"), ("value", "content-encoding")),
        ("/headers", json!([]), ("type", "headers")),
        ("/headers/task", json!(null), ("type", "headers.task")),
        ("/headers/id", json!(42), ("type", "headers.id")),
        ("/headers/id", json!(""), ("value", "headers.id")),
        ("/headers/retries", json!(null), ("type", "headers.retries")),
        ("/headers/retries", json!("0"), ("type", "headers.retries")),
        ("/headers/retries", json!(1.5), ("type", "headers.retries")),
        ("/headers/eta", json!("next tuesday"), ("value", "headers.eta")),
        ("/headers/eta", json!("2030-01-02T03:04:05+0"), ("value", "headers.eta")),
        ("/headers/expires", json!(1_795_880_311), ("type", "headers.expires")),
        ("/headers/timelimit", json!([30]), ("type", "headers.timelimit")),
        ("/headers/timelimit", json!("30"), ("type", "headers.timelimit")),
        ("/properties", json!("x"), ("type", "properties")),
        ("/properties/delivery_tag", json!(7), ("type", "properties.delivery_tag")),
        ("/properties/delivery_tag", json!(""), ("value", "properties.delivery_tag")),
        ("/properties/delivery_info", json!(null), ("type", "properties.delivery_info")),
        ("/properties/delivery_info/exchange", json!(null), ("type", "properties.delivery_info.exchange")),
        ("/properties/priority", json!(10), ("value", "properties.priority")),
        ("/properties/priority", json!(-1), ("value", "properties.priority")),
        ("/properties/priority", json!("5"), ("type", "properties.priority")),
        ("/properties/priority", json!(null), ("type", "properties.priority")),
        ("/body", json!(["a"]), ("type", "body")),
    ];
    for (pointer, value, want) in cases {
        let case = format!("{pointer} = {value}");
        assert_refused(mutated(set(pointer, value)), want, &case);
    }
}

#[test]
fn accepted_datetimes_and_values() {
    for eta in ["2030-01-02T03:04:05Z", "2030-01-02T03:04:05.123456789", "2030-01-02T03:04:05-05:00", ""] {
        mutated(set("/headers/eta", json!(eta))).unwrap_or_else(|e| panic!("{eta}: {e}"));
    }
    mutated(set("/headers/timelimit", json!([2.5, null]))).expect("float limit");
    mutated(set("/headers/timelimit", json!(null))).expect("null limit");
    mutated(set("/properties/priority", json!(9))).expect("priority 9");
    mutated(set("/properties/delivery_info/exchange", json!("celery"))).expect("named exchange");
}

#[test]
fn non_objects_are_refused() {
    assert_refused(validate_envelope(b"not json at all"), ("not json", ""), "text");
    assert_refused(validate_envelope(b""), ("not json", ""), "empty");
    assert_refused(validate_envelope(b"[1, 2, 3]"), ("not object", ""), "array");
    assert_refused(validate_envelope(b"null"), ("not object", ""), "null");
    let err = validate_envelope(b"{\"body\": ").expect_err("truncated");
    assert!(err.to_string().contains("{\\\"body\\\": "), "preview in message: {err}");
}

#[test]
fn the_one_pass_check_accepts_every_valid_sample() {
    for prefix in ["message-", "handmade-"] {
        for (name, text) in samples::all(prefix) {
            assert!(fast::accepts(text.as_bytes()), "{name} left to the full validator");
        }
    }
}

/// Every leaf and object of message-default.json replaced by each of a set of values (and
/// removed), and the body by bodies of every shape: whatever the one-pass check accepts,
/// the full validator accepts too.
#[test]
fn the_one_pass_check_accepts_nothing_the_full_validator_refuses() {
    let sample: Value = serde_json::from_str(&samples::read("message-default.json")).expect("JSON");
    let replacements = [
        json!(null),
        json!(0),
        json!(-1),
        json!(10),
        json!(3.5),
        json!(-0.0),
        json!(1e300),
        json!(true),
        json!(""),
        json!("x"),
        json!("base64"),
        json!("utf-8"),
        json!("UTF-8"),
        json!("2026-13-01T00:00:00"),
        json!("2026-11-29T10:00:00.000000+00:00"),
        json!([]),
        json!([1, 2]),
        json!([null, 2.5]),
        json!(["a", "b"]),
        json!({}),
        json!({"exchange": "", "routing_key": "q"}),
        body_of("[[], {}, null]"),
        body_of("[[], {}]"),
        body_of("[{}, {}, {}]"),
        body_of("[[], {}, []]"),
        json!("[[], {}, {}]"),
    ];
    let mut pointers = Vec::new();
    collect_pointers(&sample, String::new(), &mut pointers);
    let (mut accepted, mut refused) = (0, 0);
    let mut check = |doc: &Value, case: &str| {
        let bytes = serde_json::to_vec(doc).expect("serializes");
        if fast::accepts(&bytes) {
            accepted += 1;
            validate_document(&bytes).unwrap_or_else(|e| panic!("{case}: accepted in one pass, refused in full: {e}"));
        } else {
            refused += 1;
        }
    };
    for pointer in &pointers {
        for new in &replacements {
            let mut doc = sample.clone();
            *doc.pointer_mut(pointer).expect("pointer") = new.clone();
            check(&doc, &format!("{pointer} = {new}"));
        }
        let (parent, key) = pointer.rsplit_once('/').expect("a parent");
        let mut doc = sample.clone();
        doc.pointer_mut(parent).and_then(Value::as_object_mut).expect("object").remove(key);
        check(&doc, &format!("{pointer} removed"));
    }
    for (name, doc) in [("a list", json!([1, 2])), ("a string", json!("x")), ("null", json!(null))] {
        check(&doc, name);
    }
    assert!(accepted > 100 && refused > 100, "accepted {accepted}, refused {refused}");
}

fn collect_pointers(value: &Value, at: String, out: &mut Vec<String>) {
    if let Value::Object(members) = value {
        for (key, member) in members {
            let pointer = format!("{at}/{key}");
            out.push(pointer.clone());
            collect_pointers(member, pointer, out);
        }
    }
}
