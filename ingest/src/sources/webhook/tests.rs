//! Normalisation of the real GitHub and GitLab payloads in `../shared/fixtures`: every
//! fixture, the rejections and the shared helpers here; each provider's cases in its folder
//! (`github/tests.rs`, `gitlab/tests.rs`), with the helpers of this module.
//!
//! Where no fixture has the case (a merged pull request, an issue labelled `incident`, a
//! running pipeline …), the test edits the nearest real fixture and says what it changed.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

pub(in crate::sources) use cdlake_schemas::{Event, Origin, cdevents};
use proptest::prelude::*;
pub(in crate::sources) use serde_json::{Value, json};

pub(in crate::sources) use super::{Meaning, Provider, parse_time, purl};
pub(in crate::sources) use crate::sources::Normalised;

/// A delivery normalised by its provider's folder.
pub(in crate::sources) fn normalise(
    origin: Origin,
    kind: &str,
    delivery: &str,
    body: &[u8],
    ingested_at: i64,
) -> Result<Normalised, cdevents::Rejection> {
    match origin {
        Origin::Github => crate::sources::github::normalise(kind, delivery, body, ingested_at),
        Origin::Gitlab => crate::sources::gitlab::normalise(kind, delivery, body, ingested_at),
        other => panic!("{} is not a webhook origin", other.as_str()),
    }
}

pub(in crate::sources) const DELIVERY: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
/// 2026-01-01T00:00:00Z.
pub(in crate::sources) const INGESTED: i64 = 1_767_225_600_000_000;

pub(in crate::sources) fn fixtures(provider: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures")
        .join(provider)
}

pub(in crate::sources) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every GitHub fixture as (event name = its folder, path).
pub(in crate::sources) fn github_files() -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    for dir in std::fs::read_dir(fixtures("github")).expect("github fixtures") {
        let dir = dir.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        let kind = dir.file_name().unwrap().to_string_lossy().into_owned();
        for file in std::fs::read_dir(&dir).expect("event folder") {
            let file = file.expect("entry").path();
            if file.extension().is_some_and(|x| x == "json") {
                files.push((kind.clone(), file));
            }
        }
    }
    files.sort();
    files
}

/// Every GitLab fixture (skipping LICENSE).
pub(in crate::sources) fn gitlab_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures("gitlab"))
        .expect("gitlab fixtures")
        .map(|f| f.expect("entry").path())
        .filter(|f| f.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// The `X-Gitlab-Event` header GitLab sends with a body of this `object_kind`.
pub(in crate::sources) fn gitlab_header(object_kind: &str) -> &'static str {
    match object_kind {
        "merge_request" => "Merge Request Hook",
        "push" => "Push Hook",
        "tag_push" => "Tag Push Hook",
        "pipeline" => "Pipeline Hook",
        "build" => "Job Hook",
        "deployment" => "Deployment Hook",
        "release" => "Release Hook",
        "issue" => "Issue Hook",
        other => panic!("no header known for object_kind {other}"),
    }
}

pub(in crate::sources) fn event(result: Result<Normalised, cdevents::Rejection>) -> Event {
    match result {
        Ok(Normalised::Event(e)) => *e,
        Ok(Normalised::Ping) => panic!("expected an event, got a ping"),
        Ok(Normalised::Spans(_)) => panic!("expected an event, got spans"),
        Err(e) => panic!("rejected: {e}"),
    }
}

pub(in crate::sources) fn github_text(kind: &str, text: &str) -> Event {
    event(normalise(
        Origin::Github,
        kind,
        DELIVERY,
        text.as_bytes(),
        INGESTED,
    ))
}

/// A GitHub fixture `<kind>/<file>`, as delivered.
pub(in crate::sources) fn github(kind: &str, file: &str) -> Event {
    github_text(kind, &read(&fixtures("github").join(kind).join(file)))
}

/// A GitHub fixture after `edit`.
pub(in crate::sources) fn github_edited(
    kind: &str,
    file: &str,
    edit: impl FnOnce(&mut Value),
) -> Event {
    let mut v = json_of(&fixtures("github").join(kind).join(file));
    edit(&mut v);
    github_text(kind, &v.to_string())
}

pub(in crate::sources) fn gitlab_text(text: &str) -> Event {
    let v: Value = serde_json::from_str(text).expect("json");
    let header = gitlab_header(v["object_kind"].as_str().expect("object_kind"));
    event(normalise(
        Origin::Gitlab,
        header,
        DELIVERY,
        text.as_bytes(),
        INGESTED,
    ))
}

/// A GitLab fixture, with the header its `object_kind` implies.
pub(in crate::sources) fn gitlab(file: &str) -> Event {
    gitlab_text(&read(&fixtures("gitlab").join(file)))
}

pub(in crate::sources) fn gitlab_edited(file: &str, edit: impl FnOnce(&mut Value)) -> Event {
    let mut v = json_of(&fixtures("gitlab").join(file));
    edit(&mut v);
    gitlab_text(&v.to_string())
}

pub(in crate::sources) fn json_of(path: &Path) -> Value {
    serde_json::from_str(&read(path)).expect("fixture is JSON")
}

/// A push's recorded branch and earliest commit time (RFC 3339, UTC).
pub(in crate::sources) fn assert_branch_and_first_commit(
    e: &Event,
    branch: &str,
    first_commit: &str,
) {
    assert_eq!(e.branch.as_deref(), Some(branch), "{}", e.subject_id);
    assert_eq!(
        e.first_commit_at.map(rfc3339).as_deref(),
        Some(first_commit),
        "{}",
        e.subject_id
    );
}

pub(in crate::sources) fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .expect("time in range")
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// A row as readable text: every column but the identity and provenance (checked for every
/// fixture by [`every_github_fixture_normalises`]) and the payload; absent columns omitted.
pub(in crate::sources) fn summary(e: &Event) -> String {
    let mut out = format!(
        "type: {}\nsubject: {} / {}\ntime: {}\nsubject_id: {}\nsource: {}\n",
        e.event_type,
        e.subject,
        e.predicate,
        rfc3339(e.time),
        e.subject_id,
        e.event_source
    );
    let optional = [
        ("repository", &e.repository),
        ("service", &e.service),
        ("environment", &e.environment),
        ("change_id", &e.change_id),
        ("artifact_id", &e.artifact_id),
        ("pipeline", &e.pipeline),
        ("run_id", &e.run_id),
        ("task", &e.task),
        ("outcome", &e.outcome),
        ("url", &e.url),
        ("trace_id", &e.trace_id),
        ("span_id", &e.span_id),
        ("chain_id", &e.chain_id),
        ("team", &e.team),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            out.push_str(&format!("{name}: {v}\n"));
        }
    }
    out
}

/// What every row must satisfy, whatever it came from.
pub(in crate::sources) fn check_row(e: &Event, origin: &str, text: &str) {
    // A GitHub or GitLab row records a fact when it names one (`github::fact`, `gitlab::fact`;
    // checked by `every_github_fixture_normalises` and `a_gitlab_row_is_identified_by_its_fact`),
    // an id with its kind and a `/`; else the delivery's id.
    if !(["github", "gitlab"].contains(&origin) && e.event_id.contains('/')) {
        assert_eq!(e.event_id, DELIVERY);
    }
    assert_eq!(e.origin, origin);
    assert_eq!(e.spec_version, origin);
    assert_eq!(e.ingested_at, INGESTED);
    assert_eq!(e.payload, text, "the payload is the body byte for byte");
    assert!(!e.subject_id.is_empty(), "subject_id is empty");
    assert!(!e.event_source.is_empty(), "event_source is empty");
    match cdevents::parse_type(&e.event_type) {
        Some(ty) => {
            assert_eq!((ty.subject, ty.predicate), (&*e.subject, &*e.predicate));
            let meaning = Meaning::ALL
                .into_iter()
                .find(|m| m.event_type() == e.event_type);
            assert!(meaning.is_some(), "{} is not one we emit", e.event_type);
        }
        None if e.predicate == "received" => {
            assert_eq!(e.event_type, format!("{origin}.{}", e.subject));
        }
        None => assert_eq!(
            e.event_type,
            format!("{origin}.{}.{}", e.subject, e.predicate)
        ),
    }
}

pub(in crate::sources) const RELEASE_PURL: &str = "pkg:github/Codertocat/Hello-World@0.0.1";

// ---- every fixture ----

#[test]
fn every_github_fixture_normalises() {
    let files = github_files();
    assert!(
        files.len() > 100,
        "only {} GitHub fixtures found",
        files.len()
    );
    let mut pings = 0;
    for (kind, path) in &files {
        let text = read(path);
        let result = normalise(Origin::Github, kind, DELIVERY, text.as_bytes(), INGESTED);
        let name = path.display();
        match result {
            Ok(Normalised::Ping) => {
                assert_eq!(kind, "ping", "{name}");
                pings += 1;
            }
            Ok(Normalised::Event(e)) => {
                assert_ne!(kind, "ping", "{name}");
                check_row(&e, "github", &text);
                // The identity is the fact: the kind's, or the delivery where it names none.
                assert!(
                    e.event_id == DELIVERY
                        || e.event_id.starts_with(&format!("{kind}/"))
                        || (kind == "registry_package"
                            && e.event_id.starts_with("registry_package/")),
                    "{name}: event_id {}",
                    e.event_id
                );
                let other_delivery = event(normalise(
                    Origin::Github,
                    kind,
                    "another-delivery",
                    text.as_bytes(),
                    INGESTED,
                ));
                let known = !matches!(kind.as_str(), "check_suite" | "ping")
                    && !name.to_string().contains("release/edited");
                assert_eq!(
                    other_delivery.event_id == e.event_id,
                    known,
                    "{name}: a fact delivered twice is one row; a delivery naming no fact keeps its id"
                );
                let body: Value = serde_json::from_str(&text).unwrap();
                let source = body["repository"]["html_url"].as_str().unwrap_or("github");
                assert_eq!(e.event_source, source, "{name}");
                assert_eq!(
                    e.repository.as_deref(),
                    body["repository"]["full_name"].as_str(),
                    "{name}"
                );
                // Redelivered later, it is the same row: its time comes from the payload, so a
                // duplicate lands in the same date partition.
                let later = event(normalise(
                    Origin::Github,
                    kind,
                    DELIVERY,
                    text.as_bytes(),
                    INGESTED + 3_600_000_000,
                ));
                assert_eq!(later.time, e.time, "{name}: time is not from the payload");
                assert_eq!(
                    Event {
                        ingested_at: e.ingested_at,
                        ..later
                    },
                    *e,
                    "{name}"
                );
            }
            Ok(Normalised::Spans(_)) => panic!("{name}: spans"),
            Err(reason) => panic!("{name} rejected: {reason}"),
        }
    }
    assert_eq!(pings, 3);
}

#[test]
fn every_gitlab_fixture_normalises_with_or_without_its_header() {
    let files = gitlab_files();
    assert_eq!(files.len(), 9, "{files:?}");
    for path in &files {
        let text = read(path);
        let name = path.display();
        let e = gitlab_text(&text);
        check_row(&e, "gitlab", &text);
        assert!(e.repository.is_some(), "{name}: no repository");
        assert_ne!(e.event_source, "gitlab", "{name}: no project URL");
        for header in ["", "Some Future Hook", "System Hook"] {
            let without = event(normalise(
                Origin::Gitlab,
                header,
                DELIVERY,
                text.as_bytes(),
                INGESTED,
            ));
            assert_eq!(without, e, "{name} with header {header:?}");
        }
        let later = event(normalise(
            Origin::Gitlab,
            "",
            DELIVERY,
            text.as_bytes(),
            INGESTED + 1,
        ));
        assert_eq!(later.time, e.time, "{name}: time is not from the payload");
    }
}

#[test]
fn cdevents_types_are_those_of_spec_v0_4_1() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/cdevents/v0.4.1/conformance");
    for m in Meaning::ALL {
        let (subject, predicate, _) = m.parts();
        let example = json_of(&dir.join(format!("{subject}_{predicate}.json")));
        assert_eq!(
            example["context"]["type"].as_str(),
            Some(m.event_type().as_str()),
            "{m:?}"
        );
    }
}

// ---- rejections ----

pub(in crate::sources) fn rejection(
    origin: Origin,
    kind: &str,
    delivery: &str,
    body: &[u8],
) -> String {
    match normalise(origin, kind, delivery, body, INGESTED) {
        Err(r) => r.message,
        Ok(n) => panic!("accepted: {n:?}"),
    }
}

#[test]
fn rejections_say_what_is_wrong() {
    let gh = |kind: &str, body: &str| rejection(Origin::Github, kind, DELIVERY, body.as_bytes());
    let gl = |body: &str| rejection(Origin::Gitlab, "", DELIVERY, body.as_bytes());
    assert!(
        rejection(Origin::Github, "push", DELIVERY, b"{\"after\": \"\xff\"}")
            .starts_with("not valid UTF-8: ")
    );
    assert!(gh("push", "{\"after\": ").starts_with("malformed JSON: "));
    assert!(gl("").starts_with("malformed JSON: "));
    assert_eq!(
        gh("push", "[1]"),
        "GitHub webhook body is not a JSON object"
    );
    assert_eq!(
        gh(
            "pull_request",
            r#"{"action": "opened", "number": 1, "repository": {"full_name": "a/b"}}"#
        ),
        "GitHub pull_request delivery has no `pull_request` object"
    );
    assert_eq!(
        gh(
            "pull_request",
            r#"{"action": "opened", "pull_request": {"number": 1}}"#
        ),
        "GitHub pull_request delivery has no `repository.full_name`"
    );
    assert_eq!(
        gh(
            "pull_request",
            r#"{"action": "opened", "pull_request": {}, "repository": {"full_name": "a/b"}}"#
        ),
        "GitHub pull_request delivery has no `pull_request.number`"
    );
    assert_eq!(
        gh(
            "workflow_run",
            r#"{"action": "completed", "workflow_run": []}"#
        ),
        "GitHub workflow_run delivery has no `workflow_run` object"
    );
    assert_eq!(
        gh(
            "workflow_job",
            r#"{"action": "completed", "workflow_job": {"name": "x"}}"#
        ),
        "GitHub workflow_job delivery has no `workflow_job.id`"
    );
    assert_eq!(
        gh("push", r#"{"repository": {"full_name": "a/b"}}"#),
        "GitHub push delivery has no `after` commit sha"
    );
    assert_eq!(
        gh(
            "deployment_status",
            r#"{"deployment_status": {"state": "success"}}"#
        ),
        "GitHub deployment_status delivery has no `repository.full_name` to name the deployed service"
    );
    assert_eq!(
        gh("", "{}"),
        "GitHub delivery has no event name: send the X-GitHub-Event header"
    );
    assert_eq!(
        gh("pull request", "{}"),
        "X-GitHub-Event \"pull request\" is not a GitHub event name (e.g. pull_request)"
    );
    assert_eq!(
        rejection(Origin::Github, "push", " ", b"{}"),
        "GitHub delivery has no id: send the X-GitHub-Delivery header"
    );
    assert_eq!(
        rejection(Origin::Gitlab, "Push Hook", "", b"{}"),
        "GitLab delivery has no id: send the Idempotency-Key or X-Gitlab-Event-UUID header"
    );
    assert_eq!(
        gl(r#"{"object_kind": "pipeline"}"#),
        "GitLab pipeline delivery has no `object_attributes` object"
    );
    assert_eq!(
        gl(r#"{"object_kind": "merge_request", "object_attributes": {"iid": 1}}"#),
        "GitLab merge_request delivery has no `project.path_with_namespace`"
    );
    assert_eq!(
        gl(r#"{"object_kind": "build", "build_status": "success"}"#),
        "GitLab build delivery has no `build_id`"
    );
    assert_eq!(
        gl(
            r#"{"object_kind": "release", "action": "create", "project": {"path_with_namespace": "a/b"}}"#
        ),
        "GitLab release delivery has no `tag`"
    );
}

// ---- helpers ----

#[test]
fn times_in_every_format_the_providers_write() {
    let t = |s| parse_time(s).map(rfc3339);
    assert_eq!(
        t("2019-05-15T15:20:55Z").as_deref(),
        Some("2019-05-15T15:20:55Z")
    );
    assert_eq!(
        t("2021-02-23T02:41:37.000Z").as_deref(),
        Some("2021-02-23T02:41:37Z")
    );
    assert_eq!(
        t("2012-01-03T23:36:29+02:00").as_deref(),
        Some("2012-01-03T21:36:29Z")
    );
    assert_eq!(
        t("2015-04-20 08:13:45 UTC").as_deref(),
        Some("2015-04-20T08:13:45Z")
    );
    assert_eq!(
        t("2015-04-20 08:13:45.5 UTC").as_deref(),
        Some("2015-04-20T08:13:45.500Z")
    );
    assert_eq!(
        t("2021-04-28 21:50:00 +0200").as_deref(),
        Some("2021-04-28T19:50:00Z")
    );
    assert_eq!(
        t("2021-04-28 21:50:00 -0130").as_deref(),
        Some("2021-04-28T23:20:00Z")
    );
    for bad in [
        "",
        "UTC",
        "yesterday",
        "2021-04-28",
        "2021-13-01 00:00:00 UTC",
        "Z",
    ] {
        assert_eq!(parse_time(bad), None, "{bad:?}");
    }
}

#[test]
fn purls_encode_what_a_version_cannot_hold() {
    assert_eq!(
        purl(Provider::Github, "a/b", "0.0.1"),
        "pkg:github/a/b@0.0.1"
    );
    assert_eq!(
        purl(Provider::Gitlab, "group/sub/proj", "v1.0+build/1 x"),
        "pkg:gitlab/group/sub/proj@v1.0%2Bbuild%2F1%20x"
    );
}

// ---- no input panics ----

/// Every fixture as (origin, header, parsed body).
static ALL: LazyLock<Vec<(Origin, String, Value)>> = LazyLock::new(|| {
    let mut all: Vec<_> = github_files()
        .into_iter()
        .map(|(kind, path)| (Origin::Github, kind, json_of(&path)))
        .collect();
    for path in gitlab_files() {
        let v = json_of(&path);
        let header = gitlab_header(v["object_kind"].as_str().unwrap()).to_string();
        all.push((Origin::Gitlab, header, v));
    }
    all
});

/// JSON pointers to every value of `v` down to `depth` levels.
pub(in crate::sources) fn pointers(v: &Value, prefix: String, depth: usize, out: &mut Vec<String>) {
    if depth == 0 {
        return;
    }
    let children: Vec<(String, &Value)> = match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v))
            .collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => return,
    };
    for (key, child) in children {
        let p = format!("{prefix}/{key}");
        out.push(p.clone());
        pointers(child, p, depth - 1, out);
    }
}

pub(in crate::sources) fn replacements() -> Vec<Value> {
    vec![
        Value::Null,
        json!(0),
        json!(-1),
        json!(u64::MAX),
        json!(1e300),
        json!(""),
        json!(" "),
        json!("success"),
        json!("incident"),
        json!("0000000000000000000000000000000000000000"),
        json!("2021-04-28 21:50:00 +9999"),
        json!("9999-12-31T23:59:59Z"),
        json!(true),
        json!([]),
        json!([{"name": "incident"}, "env:", 3]),
        json!({}),
        json!("é://x/y/"),
    ]
}

#[test]
fn truncated_fixtures_never_panic() {
    for (origin, kind, v) in ALL.iter() {
        let text = v.to_string();
        let bytes = text.as_bytes();
        for cut in (0..bytes.len()).step_by(bytes.len() / 40 + 1) {
            let _ = normalise(*origin, kind, DELIVERY, &bytes[..cut], INGESTED);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any value anywhere in a real fixture, under any header: a row or a rejection.
    #[test]
    fn mutated_fixtures_never_panic(
        fixture in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        with in any::<prop::sample::Index>(),
        header in prop_oneof![Just(None), Just(Some(String::new())), "[a-z_ ]{0,12}".prop_map(Some)],
    ) {
        let (origin, kind, v) = fixture.get(&ALL);
        let mut paths = Vec::new();
        pointers(v, String::new(), 4, &mut paths);
        let mut v = v.clone();
        if !paths.is_empty() {
            let replacements = replacements();
            let path: &String = at.get(&paths);
            if let Some(slot) = v.pointer_mut(path) {
                *slot = with.get(&replacements).clone();
            }
        }
        let kind = header.unwrap_or_else(|| kind.clone());
        let text = v.to_string();
        if let Ok(Normalised::Event(e)) = normalise(*origin, &kind, DELIVERY, text.as_bytes(), INGESTED) {
            prop_assert!(!e.subject_id.is_empty());
            prop_assert!(!e.event_type.is_empty() && !e.subject.is_empty() && !e.predicate.is_empty());
            prop_assert_eq!(&e.payload, &text);
        }
    }

    /// Any bytes: a row or a rejection.
    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256), kind in ".{0,16}") {
        let _ = normalise(Origin::Github, &kind, DELIVERY, &body, INGESTED);
        let _ = normalise(Origin::Gitlab, &kind, DELIVERY, &body, INGESTED);
    }
}

#[test]
fn github_runs_and_jobs_carry_the_collector_trace_id() {
    // sha256("2897824511t")[..16] in hex, computed independently (Python's hashlib).
    let run = github("workflow_run", "completed.payload.json");
    assert_eq!(
        run.trace_id.as_deref(),
        Some("c28519925e1146098df64713b1779b41")
    );
    for file in std::fs::read_dir(fixtures("github").join("workflow_job")).unwrap() {
        let name = file.unwrap().file_name().to_string_lossy().into_owned();
        if !name.ends_with(".payload.json") {
            continue;
        }
        let job = github("workflow_job", &name);
        let raw: Value = serde_json::from_str(&job.payload).unwrap();
        let (id, attempt) = (
            raw["workflow_job"]["run_id"].as_u64().unwrap(),
            raw["workflow_job"]["run_attempt"].as_u64().unwrap(),
        );
        use sha2::Digest;
        let want = hex::encode(&sha2::Sha256::digest(format!("{id}{attempt}t").as_bytes())[..16]);
        assert_eq!(job.trace_id.as_deref(), Some(want.as_str()), "{name}");
    }
}

/// `cdlake rebuild --renormalise` leaves a row stored by today's normaliser as it is: every
/// GitHub and GitLab fixture's row normalises again, from its payload alone, to itself (the
/// GitHub event name, which a row does not keep, is found again from its type and payload).
#[test]
fn every_fixture_row_renormalises_to_itself() {
    let mut rows = Vec::new();
    let extra = [
        "deployment_status.failure.json",
        "push.new_branch.4_commits.json",
    ]
    .map(|f| {
        let kind = f.split('.').next().unwrap().to_string();
        (kind, fixtures("github-extra").join(f))
    });
    for (kind, path) in github_files().into_iter().chain(extra) {
        if let Ok(Normalised::Event(e)) = normalise(
            Origin::Github,
            &kind,
            DELIVERY,
            read(&path).as_bytes(),
            INGESTED,
        ) {
            rows.push((path, *e));
        }
    }
    for path in gitlab_files() {
        rows.push((path.clone(), gitlab_text(&read(&path))));
    }
    assert!(rows.len() > 100, "{}", rows.len());
    for (path, row) in &rows {
        match crate::sources::renormalise(row, &crate::sources::Rules::default()) {
            Some(Ok(again)) => assert_eq!(&again, row, "{}", path.display()),
            other => panic!("{}: {other:?}", path.display()),
        }
    }
    // A row whose time is not in its payload keeps the time it was stored with (the
    // receiver's clock, before the writer's `ingested_at`).
    let mut tag = gitlab_edited("tag_push.json", |v| {
        v["commits"] = json!([]);
    });
    assert_eq!(tag.time, INGESTED, "no time in the payload");
    tag.time = INGESTED - 5_000_000;
    assert_eq!(
        crate::sources::renormalise(&tag, &crate::sources::Rules::default()),
        Some(Ok(tag.clone()))
    );
}
