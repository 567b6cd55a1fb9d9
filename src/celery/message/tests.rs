use super::*;
use crate::celery::{samples, validate_envelope};
use serde_json::json;

/// The envelope of a sample, parsed.
fn sample_json(name: &str) -> Value {
    serde_json::from_str(&samples::read(name)).expect("sample is JSON")
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_else(|| panic!("sample has no string at {pointer}"))
}

/// A spec carrying the ids, origin and reply_to of a captured message, so that the only
/// differences left are those of the encoder.
fn spec_like(sample: &Value, queue: &str) -> TaskSpec {
    TaskSpec {
        args: vec![json!("eval-001"), json!("print(6*7)"), json!("python")],
        origin: text(sample, "/headers/origin").to_owned(),
        task_id: Some(text(sample, "/headers/id").to_owned()),
        delivery_tag: Some(text(sample, "/properties/delivery_tag").to_owned()),
        reply_to: text(sample, "/properties/reply_to").to_owned(),
        ..TaskSpec::new(text(sample, "/headers/task"), queue)
    }
}

fn encode(spec: &TaskSpec) -> EncodedTask {
    let out = encode_task(spec, &PriorityLayout::default()).expect("spec encodes");
    validate_envelope(out.envelope.as_bytes()).expect("encoder output passes the validator");
    out
}

/// Encodes `spec` and checks the bytes and list key against the captured sample.
fn assert_same_as_celery(name: &str, spec: &TaskSpec) {
    let out = encode(spec);
    let want = samples::line(&format!("{name}.json"));
    assert_eq!(out.envelope, want, "envelope of {name}");
    let pretty = sample_json(&format!("{name}.pretty.json"));
    assert_eq!(out.list_key, text(&pretty, "/_redis_list_key"), "list key of {name}");
}

/// A change made to a spec before encoding.
type Adjust = fn(&mut TaskSpec);

#[test]
fn reproduces_captured_messages_byte_for_byte() {
    let cases: Vec<(&str, Adjust)> = vec![
        ("message-default", |_| {}),
        ("message-named-queue", |_| {}),
        ("message-priority-5", |s| s.priority = 5),
        ("message-priority-9", |s| s.priority = 9),
        ("message-priority-named-queue-7", |s| s.priority = 7),
        ("message-timelimits", |s| {
            s.time_limit = Some(Duration::from_secs(30));
            s.soft_time_limit = Some(Duration::from_secs(20));
        }),
        ("message-eta", |s| s.eta = Some("2030-01-02T03:04:05+00:00".into())),
        ("message-countdown", |s| {
            s.eta = Some("2026-11-28T15:38:39.434025+00:00".into());
        }),
        ("message-expires", |s| {
            s.expires = Some(Expires { at: "2026-11-28T15:42:39.438828+00:00".into(), after_ms: 300_000 });
        }),
        ("message-kwargs", |s| {
            s.args.clear();
            s.kwargs = vec![
                ("eval_id".into(), json!("eval-002")),
                ("code".into(), json!("print('hi')")),
                ("language".into(), json!("python")),
            ];
        }),
    ];
    for (name, adjust) in cases {
        let sample = sample_json(&format!("{name}.json"));
        let mut spec = spec_like(&sample, text(&sample, "/properties/delivery_info/routing_key"));
        adjust(&mut spec);
        assert_same_as_celery(name, &spec);
    }
}

#[test]
fn body_is_byte_identical_to_celerys() {
    for (name, args, kwargs) in [
        ("message-default.json", json!(["eval-001", "print(6*7)", "python"]), vec![]),
        (
            "message-kwargs.json",
            json!([]),
            vec![
                ("eval_id".to_owned(), json!("eval-002")),
                ("code".to_owned(), json!("print('hi')")),
                ("language".to_owned(), json!("python")),
            ],
        ),
    ] {
        let sample = sample_json(name);
        let spec = TaskSpec {
            args: args.as_array().cloned().unwrap_or_default(),
            kwargs,
            ..TaskSpec::new("evaluate", "celery")
        };
        let out: Value = serde_json::from_str(&encode(&spec).envelope).expect("JSON");
        assert_eq!(text(&out, "/body"), text(&sample, "/body"), "{name}");
    }
}

#[test]
fn send_task_and_handmade_samples_differ_only_where_expected() {
    // `send_task` writes `ignore_result: null`; we always write a boolean.
    let sample = sample_json("message-send-task.json");
    let out = encode(&spec_like(&sample, "celery"));
    let want = samples::line("message-send-task.json").replace("\"ignore_result\": null", "\"ignore_result\": false");
    assert_eq!(out.envelope, want);

    let sample = sample_json("handmade-full.json");
    let spec =
        TaskSpec { args: vec![json!("hand-1"), json!("print(2+2)"), json!("python")], ..spec_like(&sample, "celery") };
    assert_eq!(encode(&spec).envelope, samples::line("handmade-full.json"));
}

#[test]
fn generated_ids_are_fresh_uuid4_and_consistent() {
    let spec = TaskSpec::new("evaluate", "evals");
    let (a, b) = (encode(&spec), encode(&spec));
    assert_ne!(a.task_id, b.task_id);
    assert_ne!(a.delivery_tag, b.delivery_tag);
    assert_ne!(a.task_id, a.delivery_tag);
    let id = uuid::Uuid::parse_str(&a.task_id).expect("task id is a UUID");
    assert_eq!(id.get_version_num(), 4);
    let env: Value = serde_json::from_str(&a.envelope).expect("JSON");
    assert_eq!(text(&env, "/headers/id"), a.task_id);
    assert_eq!(text(&env, "/headers/root_id"), a.task_id);
    assert_eq!(text(&env, "/properties/correlation_id"), a.task_id);
    assert_eq!(text(&env, "/properties/delivery_tag"), a.delivery_tag);
    assert_eq!(text(&env, "/properties/delivery_info/routing_key"), "evals");
    assert_eq!(env["headers"]["retries"], json!(0));
    assert_eq!(env["headers"]["timelimit"], json!([null, null]));
    assert!(env["properties"].get("expiration").is_none());
}

#[test]
fn every_kind_of_spec_encodes_to_a_valid_envelope() {
    let awkward = json!({"nested": [1, 2.5, {"deep": [null, true]}], "é": "😀"});
    let code = "print(\"it's\")\n\tx = '\\\\'\r\n\u{7f}\u{0}".to_owned() + &"y ".repeat(2000);
    for priority in 0..=9 {
        let spec = TaskSpec {
            priority,
            args: vec![json!("e-1"), json!(code), json!("python"), awkward.clone()],
            kwargs: vec![("shadow".into(), json!(true)), ("n".into(), json!(-3))],
            eta: Some(format_utc(Duration::new(1_900_000_000, 5_000))),
            expires: Some(Expires::after(Duration::from_secs(1_900_000_000), Duration::from_secs(60))),
            time_limit: Some(Duration::from_millis(2500)),
            soft_time_limit: Some(Duration::from_secs(2)),
            ignore_result: priority % 2 == 0,
            ..TaskSpec::new("evaluate", "shadow")
        };
        let out = encode(&spec);
        assert!(out.envelope.is_ascii());
        let env: Value = serde_json::from_str(&out.envelope).expect("JSON");
        assert_eq!(env["headers"]["timelimit"], json!([2.5, 2]));
        assert_eq!(env["properties"]["priority"], json!(priority));
        assert_eq!(text(&env, "/properties/expiration"), "60000");
        let body = BASE64.decode(text(&env, "/body")).expect("base64");
        let body: Value = serde_json::from_slice(&body).expect("body JSON");
        assert_eq!(body[0][1], json!(code), "code survives the round trip");
        assert_eq!(body[0][3], awkward);
        assert_eq!(body[1], json!({"shadow": true, "n": -3}));
    }
}

#[test]
fn expires_after_matches_celerys_expires_300() {
    // message-expires.json was sent with `expires=300` at 15:37:39.438828.
    let now = Duration::new(1_795_880_259, 438_828_000);
    let e = Expires::after(now, Duration::from_secs(300));
    assert_eq!(e.at, "2026-11-28T15:42:39.438828+00:00");
    assert_eq!(e.after_ms, 300_000);
}

#[test]
fn bad_specs_are_refused_with_the_field() {
    let base = TaskSpec::new("evaluate", "celery");
    let cases: Vec<(&str, TaskSpec)> = vec![
        ("task", TaskSpec::new("", "celery")),
        ("queue", TaskSpec::new("evaluate", "")),
        ("priority", TaskSpec { priority: 10, ..base.clone() }),
        ("task_id", TaskSpec { task_id: Some(String::new()), ..base.clone() }),
        ("delivery_tag", TaskSpec { delivery_tag: Some(String::new()), ..base.clone() }),
        ("kwargs", TaskSpec { kwargs: vec![("a".into(), json!(1)), ("a".into(), json!(2))], ..base.clone() }),
        ("eta", TaskSpec { eta: Some("in a minute".into()), ..base.clone() }),
        (
            "expires",
            TaskSpec { expires: Some(Expires { at: "2030-02-30T00:00:00Z".into(), after_ms: 1 }), ..base.clone() },
        ),
    ];
    for (want, spec) in cases {
        match encode_task(&spec, &PriorityLayout::default()) {
            Err(WireError::InvalidSpec { field, .. }) => assert_eq!(field, want),
            other => panic!("{want}: expected InvalidSpec, got {other:?}"),
        }
    }
}

/// Found by `tests/prop_celery_message.rs`: kombu's JSON decoder replaces an object of
/// exactly `__type__` and `__value__` by a Python value (`bytes` became `b'...'`) or, for a
/// type it does not know, refuses the message, which the worker then drops without a result.
#[test]
fn values_kombu_would_decode_as_objects_are_refused() {
    let base = TaskSpec::new("evaluate", "celery");
    let marker = json!({"__type__": "x", "__value__": null});
    let cases = [
        ("args", "[1].a[0]", TaskSpec { args: vec![json!(1), json!({"a": [marker.clone()]})], ..base.clone() }),
        (
            "kwargs",
            ".meta",
            TaskSpec {
                kwargs: vec![("meta".into(), json!({"__type__": "bytes", "__value__": "\u{2028}"}))],
                ..base.clone()
            },
        ),
    ];
    for (want, path, spec) in cases {
        match encode_task(&spec, &PriorityLayout::default()) {
            Err(WireError::InvalidSpec { field, reason }) => {
                assert_eq!(field, want);
                assert!(reason.contains(&format!("at {path}:")), "{reason}");
            }
            other => panic!("{want}: expected InvalidSpec, got {other:?}"),
        }
    }
    // Only that exact shape: kombu leaves any other object alone.
    for near in [json!({"__type__": "x"}), json!({"__type__": "x", "__value__": 1, "more": 2}), json!({"__value__": 1})]
    {
        let spec = TaskSpec { args: vec![near.clone()], ..base.clone() };
        assert!(encode_task(&spec, &PriorityLayout::default()).is_ok(), "{near}");
    }
}

#[test]
fn default_priority_layout_is_kombus() {
    let layout = PriorityLayout::default();
    let want = [
        "celery",
        "celery",
        "celery",
        "celery\x06\x163",
        "celery\x06\x163",
        "celery\x06\x163",
        "celery\x06\x166",
        "celery\x06\x166",
        "celery\x06\x166",
        "celery\x06\x169",
    ];
    for (priority, key) in want.iter().enumerate() {
        assert_eq!(layout.key_for("celery", priority as u8), *key, "priority {priority}");
    }
    assert_eq!(layout.key_for("evals", 7).as_bytes(), b"evals\x06\x166");
    assert_eq!(layout.key_for("evals", 200), "evals\x06\x169", "clamped to 9");
    assert_eq!(layout.keys("evals"), ["evals", "evals\x06\x163", "evals\x06\x166", "evals\x06\x169"]);
}

#[test]
fn list_keys_match_every_captured_pretty_sample() {
    let layout = PriorityLayout::default();
    let pretty = samples::all("message-");
    assert!(pretty.len() >= 13, "samples found: {}", pretty.len());
    for (name, _) in pretty {
        let p = sample_json(&name.replace(".json", ".pretty.json"));
        let queue = text(&p, "/properties/delivery_info/routing_key");
        let priority = p["properties"]["priority"].as_u64().expect("priority") as u8;
        assert_eq!(layout.key_for(queue, priority), text(&p, "/_redis_list_key"), "{name}");
    }
}

#[test]
fn custom_priority_layouts() {
    let layout = PriorityLayout::new(vec![0, 5], ":").expect("valid");
    assert_eq!(layout.key_for("q", 4), "q");
    assert_eq!(layout.key_for("q", 5), "q:5");
    assert_eq!(layout.key_for("q", 9), "q:5");
    assert_eq!(layout.steps(), [0, 5]);
    assert_eq!(layout.sep(), ":");
    for steps in [vec![], vec![1, 3], vec![0, 3, 3], vec![0, 6, 3], vec![0, 10]] {
        assert!(
            matches!(PriorityLayout::new(steps.clone(), ":"), Err(WireError::InvalidPriorityLayout { .. })),
            "{steps:?} accepted"
        );
    }
}
