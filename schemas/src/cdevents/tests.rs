use std::path::PathBuf;

use super::*;

fn fixtures() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../shared/fixtures/cdevents")
}

fn conformance(version: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fixtures().join(version).join("conformance");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_conformance_example_parses_and_normalises() {
    for (version, spec) in [("v0.4.1", "0.4.1"), ("v0.5.1", "0.5.1")] {
        let files = conformance(version);
        assert_eq!(
            files.len(),
            45,
            "{version}: expected 45 conformance examples"
        );
        for (name, raw) in files {
            let e = parse(&raw, Origin::CdEvents, 7)
                .unwrap_or_else(|r| panic!("{version}/{name}: {r}"));
            // The file name is `<subject>_<predicate>.json`.
            let (subject, predicate) = name.split_once('_').unwrap();
            assert_eq!(
                (e.subject.as_str(), e.predicate.as_str()),
                (subject, predicate),
                "{name}"
            );
            assert_eq!(e.spec_version, spec, "{version}/{name}");
            assert!(
                e.event_type
                    .starts_with(&format!("dev.cdevents.{subject}.{predicate}."))
            );
            assert_eq!(
                e.payload.as_bytes(),
                raw.as_slice(),
                "payload kept byte for byte"
            );
            assert_eq!((e.origin.as_str(), e.ingested_at), ("cdevents", 7));
            assert!(
                !e.event_id.is_empty() && !e.event_source.is_empty() && !e.subject_id.is_empty()
            );
        }
    }
}

#[test]
fn linking_fields_follow_the_subject() {
    let one = |version: &str, name: &str| {
        let raw = std::fs::read(
            fixtures()
                .join(version)
                .join("conformance")
                .join(format!("{name}.json")),
        )
        .unwrap();
        parse(&raw, Origin::CdEvents, 0).unwrap()
    };
    for v in ["v0.4.1", "v0.5.1"] {
        let d = one(v, "service_deployed");
        assert_eq!(d.service.as_deref(), Some("mySubject123"));
        assert_eq!(d.environment.as_deref(), Some("test123"));
        assert!(
            d.artifact_id
                .as_deref()
                .unwrap()
                .starts_with("pkg:oci/myapp@sha256")
        );
        assert_eq!(d.time, parse_time("2023-03-20T14:27:05.315384Z").unwrap());

        let m = one(v, "change_merged");
        assert_eq!(m.change_id.as_deref(), Some(m.subject_id.as_str()));
        assert!(m.repository.is_some());

        let i = one(v, "incident_detected");
        assert_eq!(i.service.as_deref(), Some("myApp"));
        assert_eq!(i.environment.as_deref(), Some("prod1"));

        let p = one(v, "pipelinerun_finished");
        assert_eq!(p.run_id.as_deref(), Some(p.subject_id.as_str()));
        assert!(p.pipeline.is_some() && p.outcome.is_some());

        let t = one(v, "taskrun_finished");
        assert!(t.task.is_some() && t.run_id.is_some());
    }
    let a = one("v0.4.1", "artifact_packaged");
    assert_eq!(a.change_id.as_deref(), Some("myChange123"));
    assert_eq!(a.artifact_id.as_deref(), Some(a.subject_id.as_str()));
}

#[test]
fn offsets_are_normalised_to_utc() {
    assert_eq!(
        parse_time("2026-01-01T05:30:00+05:30"),
        parse_time("2026-01-01T00:00:00Z")
    );
    assert_eq!(
        parse_time("2026-01-01T00:00:00.000001Z"),
        Some(1_767_225_600_000_001)
    );
    assert_eq!(parse_time("yesterday"), None);
}

#[test]
fn cloudevents_structured_mode_carries_the_cdevent_and_trace_context() {
    let raw = br#"{"specversion":"1.0","id":"ce-1","source":"/tekton","type":"dev.cdevents.pipelinerun.started.0.2.0",
        "time":"2026-05-01T10:00:00Z","traceparent":"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "datacontenttype":"application/json",
        "data":{"context":{"specversion":"0.5.1","id":"ce-1","source":"/tekton","type":"dev.cdevents.pipelinerun.started.0.2.0","timestamp":"2026-05-01T10:00:00Z"},
                "subject":{"id":"run-9","content":{"pipelineName":"build","url":"https://ci/run-9"}}}}"#;
    let e = parse(raw, Origin::CdEvents, 0).unwrap();
    assert_eq!(
        (
            e.event_id.as_str(),
            e.subject.as_str(),
            e.predicate.as_str()
        ),
        ("ce-1", "pipelinerun", "started")
    );
    assert_eq!(
        e.trace_id.as_deref(),
        Some("0af7651916cd43dd8448eb211c80319c")
    );
    assert_eq!(e.span_id.as_deref(), Some("b7ad6b7169203331"));
    assert_eq!(e.pipeline.as_deref(), Some("build"));

    // `data` without a context takes the identity from the envelope.
    let raw = br#"{"specversion":"1.0","id":"ce-2","source":"/x","type":"dev.cdevents.service.deployed.0.3.0",
        "time":"2026-05-01T10:00:00+02:00","data":{"subject":{"id":"checkout","content":{"environment":{"id":"prod"}}}}}"#;
    let e = parse(raw, Origin::CdEvents, 0).unwrap();
    assert_eq!(
        (e.event_id.as_str(), e.event_source.as_str()),
        ("ce-2", "/x")
    );
    assert_eq!(e.time, parse_time("2026-05-01T08:00:00Z").unwrap());
    assert_eq!(e.service.as_deref(), Some("checkout"));
}

#[test]
fn bad_input_is_rejected_with_a_reason_naming_the_problem() {
    let cases: [(&[u8], &str); 9] = [
        (b"{not json", "malformed JSON"),
        (b"[1,2]", "not a JSON object"),
        (b"{}", "neither a CDEvent"),
        (br#"{"context":{"id":"1","source":"s","timestamp":"2026-01-01T00:00:00Z"},"subject":{"id":"x"}}"#, "missing `context.type`"),
        (br#"{"context":{"source":"s","type":"dev.cdevents.change.merged.0.2.0","timestamp":"2026-01-01T00:00:00Z"},"subject":{"id":"x"}}"#, "missing `context.id`"),
        (br#"{"context":{"id":"1","type":"dev.cdevents.change.merged.0.2.0","timestamp":"2026-01-01T00:00:00Z"},"subject":{"id":"x"}}"#, "missing `context.source`"),
        (br#"{"context":{"id":"1","source":"s","type":"dev.cdevents.change.merged.0.2.0","timestamp":"last tuesday"},"subject":{"id":"x"}}"#, "`context.timestamp` \"last tuesday\""),
        (br#"{"context":{"id":"1","source":"s","type":"com.example.build.done","timestamp":"2026-01-01T00:00:00Z"},"subject":{"id":"x"}}"#, "not a CDEvents type"),
        (br#"{"context":{"id":"1","source":"s","type":"dev.cdevents.change.merged.0.2.0","timestamp":"2026-01-01T00:00:00Z"}}"#, "missing `subject`"),
    ];
    for (raw, want) in cases {
        let err = parse(raw, Origin::CdEvents, 0).unwrap_err();
        assert!(
            err.message.contains(want),
            "{:?}: got {err}, want it to mention {want}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn types_are_parsed_strictly() {
    let t = parse_type("dev.cdevents.service.deployed.0.3.0").unwrap();
    assert_eq!(
        (t.subject, t.predicate, t.version),
        ("service", "deployed", "0.3.0")
    );
    assert!(parse_type("dev.cdevents.pipelinerun.queued.0.2.0-draft").is_some());
    assert!(
        parse_type("dev.cdevents.newthing.happened.1.0.0").is_some(),
        "unknown types are CDEvents too"
    );
    assert!(parse_type("dev.cdevents.service.deployed").is_none());
    assert!(parse_type("dev.cdevents.service.deployed.latest").is_none());
    assert!(parse_type("io.cloudevents.service.deployed.0.1.0").is_none());
}

/// The fast path answers exactly what the general path answers, or leaves the input to it.
#[test]
fn the_fast_path_reads_every_example_as_the_general_path_does() {
    let mut fast_hits = 0;
    for version in ["v0.4.1", "v0.5.1"] {
        for (name, raw) in conformance(version) {
            let text = std::str::from_utf8(&raw).unwrap();
            let general = general(text).unwrap_or_else(|e| panic!("{version}/{name}: {e}"));
            if let Some(fast) = fast::cdevent(text) {
                assert_eq!(fast, general, "{version}/{name}");
                fast_hits += 1;
            }
        }
    }
    assert!(
        fast_hits >= 80,
        "the fast path read only {fast_hits} of the conformance examples"
    );
}

#[test]
fn the_fast_path_leaves_unusual_shapes_to_the_general_path() {
    let ok = r#"{"context":{"version":"0.4.1","id":"1","source":"/ci","type":"dev.cdevents.taskrun.started.0.1.1","timestamp":"2026-01-01T00:00:00Z"},"subject":{"id":"t","content":{"taskName":"build","pipelineRun":{"id":"p"},"url":""}},"customData":{"team":"web","other":[1,{"x":null}]}}"#;
    let fast = fast::cdevent(ok).expect("a plain CDEvent takes the fast path");
    assert_eq!(fast, general(ok).unwrap());
    assert_eq!(
        (
            fast.task.as_deref(),
            fast.run_id.as_deref(),
            fast.url,
            fast.team.as_deref()
        ),
        (Some("build"), Some("p"), None, Some("web"))
    );
    for (what, text) in [
        (
            "context as an array",
            r#"{"context":["1","/ci","dev.cdevents.taskrun.started.0.1.1","2026-01-01T00:00:00Z"],"subject":{"id":"t"}}"#,
        ),
        (
            "repeated key",
            r#"{"context":{"id":"1","id":"2","source":"/ci","type":"dev.cdevents.taskrun.started.0.1.1","timestamp":"2026-01-01T00:00:00Z"},"subject":{"id":"t"}}"#,
        ),
        (
            "escaped id",
            r#"{"context":{"id":"a\"b","source":"/ci","type":"dev.cdevents.taskrun.started.0.1.1","timestamp":"2026-01-01T00:00:00Z"},"subject":{"id":"t"}}"#,
        ),
        (
            "content as a string",
            r#"{"context":{"id":"1","source":"/ci","type":"dev.cdevents.taskrun.started.0.1.1","timestamp":"2026-01-01T00:00:00Z"},"subject":{"id":"t","content":"x"}}"#,
        ),
        (
            "customData as a string",
            r#"{"context":{"id":"1","source":"/ci","type":"dev.cdevents.taskrun.started.0.1.1","timestamp":"2026-01-01T00:00:00Z"},"subject":{"id":"t"},"customData":"{\"team\":\"x\"}"}"#,
        ),
        (
            "numeric outcome",
            r#"{"context":{"id":"1","source":"/ci","type":"dev.cdevents.taskrun.finished.0.1.1","timestamp":"2026-01-01T00:00:00Z"},"subject":{"id":"t","content":{"outcome":1}}}"#,
        ),
        (
            "empty id",
            r#"{"context":{"id":"","source":"/ci","type":"dev.cdevents.taskrun.started.0.1.1","timestamp":"2026-01-01T00:00:00Z"},"subject":{"id":"t"}}"#,
        ),
        (
            "bad time",
            r#"{"context":{"id":"1","source":"/ci","type":"dev.cdevents.taskrun.started.0.1.1","timestamp":"yesterday"},"subject":{"id":"t"}}"#,
        ),
        (
            "a CloudEvent",
            r#"{"specversion":"1.0","id":"1","source":"/ci","type":"dev.cdevents.taskrun.started.0.1.1","data":{"context":{},"subject":{"id":"t"}}}"#,
        ),
        ("an array", r#"[{"context":{}}]"#),
    ] {
        assert!(fast::cdevent(text).is_none(), "{what} took the fast path");
        // Whatever the general path says is the answer, as before.
        let _ = parse(text.as_bytes(), Origin::CdEvents, 0);
    }
    // A repeated key: the last value wins, as in the JSON tree.
    let repeated = r#"{"context":{"id":"1","id":"2","source":"/ci","type":"dev.cdevents.taskrun.started.0.1.1","timestamp":"2026-01-01T00:00:00Z"},"subject":{"id":"t"}}"#;
    assert_eq!(
        parse(repeated.as_bytes(), Origin::CdEvents, 0)
            .unwrap()
            .event_id,
        "2"
    );
    let escaped = r#"{"context":{"id":"a\"b","source":"/ci","type":"dev.cdevents.taskrun.started.0.1.1","timestamp":"2026-01-01T00:00:00Z"},"subject":{"id":"t"}}"#;
    assert_eq!(
        parse(escaped.as_bytes(), Origin::CdEvents, 0)
            .unwrap()
            .event_id,
        "a\"b"
    );
}

#[test]
fn a_change_carries_the_labels_and_the_revert_of_its_custom_data() {
    let text = r#"{"context":{"version":"0.4.1","id":"1","source":"/scm","type":"dev.cdevents.change.merged.0.2.0","timestamp":"2026-01-01T00:00:00Z"},"subject":{"id":"acme/app#7","content":{"repository":{"id":"acme/app"}}},"customData":{"labels":["Hotfix",3,"ui"],"reverts":"acme/app#5"}}"#;
    assert!(
        fast::cdevent(text).is_none(),
        "labels and reverts are read by the general path"
    );
    let e = general(text).unwrap();
    assert_eq!(
        e.labels.as_deref(),
        Some(r#"["Hotfix","ui"]"#),
        "strings only"
    );
    assert_eq!(e.reverts.as_deref(), Some("acme/app#5"));
    let plain = text
        .replace(r#","reverts":"acme/app#5""#, "")
        .replace(r#""labels":["Hotfix",3,"ui"]"#, r#""labels":[]"#);
    let e = general(&plain).unwrap();
    assert_eq!((e.labels, e.reverts), (None, None));
    // A revert that names no target.
    let unnamed = plain.replace(r#""labels":[]"#, r#""revert":true"#);
    assert!(fast::cdevent(&unnamed).is_none());
    assert_eq!(general(&unnamed).unwrap().reverts.as_deref(), Some(""));
}
