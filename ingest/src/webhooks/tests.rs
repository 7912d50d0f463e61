//! Normalisation of the real GitHub and GitLab payloads in `../shared/fixtures`.
//!
//! Where no fixture has the case (a merged pull request, an issue labelled `incident`, a
//! running pipeline …), the test edits the nearest real fixture and says what it changed.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use cdlake_schemas::{Event, Origin, cdevents};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::{Meaning, Normalised, Provider, normalise, parse_time, purl};

const DELIVERY: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
/// 2026-01-01T00:00:00Z.
const INGESTED: i64 = 1_767_225_600_000_000;

fn fixtures(provider: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures")
        .join(provider)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every GitHub fixture as (event name = its folder, path).
fn github_files() -> Vec<(String, PathBuf)> {
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
fn gitlab_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures("gitlab"))
        .expect("gitlab fixtures")
        .map(|f| f.expect("entry").path())
        .filter(|f| f.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// The `X-Gitlab-Event` header GitLab sends with a body of this `object_kind`.
fn gitlab_header(object_kind: &str) -> &'static str {
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

fn event(result: Result<Normalised, cdevents::Rejection>) -> Event {
    match result {
        Ok(Normalised::Event(e)) => *e,
        Ok(Normalised::Ping) => panic!("expected an event, got a ping"),
        Err(e) => panic!("rejected: {e}"),
    }
}

fn github_text(kind: &str, text: &str) -> Event {
    event(normalise(
        Origin::Github,
        kind,
        DELIVERY,
        text.as_bytes(),
        INGESTED,
    ))
}

/// A GitHub fixture `<kind>/<file>`, as delivered.
fn github(kind: &str, file: &str) -> Event {
    github_text(kind, &read(&fixtures("github").join(kind).join(file)))
}

/// A GitHub fixture after `edit`.
fn github_edited(kind: &str, file: &str, edit: impl FnOnce(&mut Value)) -> Event {
    let mut v = json_of(&fixtures("github").join(kind).join(file));
    edit(&mut v);
    github_text(kind, &v.to_string())
}

fn gitlab_text(text: &str) -> Event {
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
fn gitlab(file: &str) -> Event {
    gitlab_text(&read(&fixtures("gitlab").join(file)))
}

fn gitlab_edited(file: &str, edit: impl FnOnce(&mut Value)) -> Event {
    let mut v = json_of(&fixtures("gitlab").join(file));
    edit(&mut v);
    gitlab_text(&v.to_string())
}

fn json_of(path: &Path) -> Value {
    serde_json::from_str(&read(path)).expect("fixture is JSON")
}

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .expect("time in range")
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// A row as readable text: every column but the identity and provenance (checked for every
/// fixture by [`every_github_fixture_normalises`]) and the payload; absent columns omitted.
fn summary(e: &Event) -> String {
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
fn check_row(e: &Event, origin: &str, text: &str) {
    assert_eq!(e.event_id, DELIVERY);
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

const RELEASE_PURL: &str = "pkg:github/Codertocat/Hello-World@0.0.1";

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

// ---- GitHub ----

#[test]
fn github_ping_is_answered_not_stored() {
    for file in [
        "payload.json",
        "with-app_id.payload.json",
        "with-organization.payload.json",
    ] {
        let text = read(&fixtures("github/ping").join(file));
        assert_eq!(
            normalise(Origin::Github, "ping", DELIVERY, text.as_bytes(), INGESTED),
            Ok(Normalised::Ping)
        );
    }
}

#[test]
fn github_deployment_status_success_is_one_service_deployed() {
    let e = github("deployment_status", "payload.json");
    assert_eq!(
        summary(&e),
        "\
type: dev.cdevents.service.deployed.0.2.0
subject: service / deployed
time: 2019-05-15T15:20:55Z
subject_id: Codertocat/Hello-World
source: https://github.com/Codertocat/Hello-World
repository: Codertocat/Hello-World
service: Codertocat/Hello-World
environment: production
artifact_id: pkg:github/Codertocat/Hello-World@f95f852bd8fca8fcc58a9a2d6c842781e32a215e
outcome: success
"
    );
    // Of the three deployment_status fixtures, the two in state success are deployments.
    let deployed = [
        "gh-pages.payload.json",
        "payload.json",
        "with-installation.payload.json",
    ]
    .iter()
    .filter(|f| github("deployment_status", f).subject == "service")
    .count();
    assert_eq!(deployed, 2);
}

#[test]
fn github_deployment_status_in_progress_stays_as_is() {
    let e = github("deployment_status", "gh-pages.payload.json");
    assert_eq!(
        summary(&e),
        "\
type: github.deployment_status.created
subject: deployment_status / created
time: 2022-01-03T01:28:40Z
subject_id: 209916254
source: https://github.com/Codertocat/Hello-World
repository: Codertocat/Hello-World
service: Codertocat/Hello-World
environment: github-pages
artifact_id: pkg:github/Codertocat/Hello-World@f95f852bd8fca8fcc58a9a2d6c842781e32a215e
outcome: in_progress
url: https://github.com/CorsixTH/CorsixTH/runs/4687056418?check_suite_focus=true
"
    );
}

#[test]
fn github_deployment_status_names_a_better_service_and_url() {
    let e = github_edited("deployment_status", "payload.json", |v| {
        v["deployment"]["payload"] = json!({"service": "checkout"});
        v["deployment_status"]["environment"] = Value::Null;
        v["deployment"]["environment"] = json!("prod-eu");
        v["deployment_status"]["target_url"] = json!("https://ci.example/run/1");
    });
    assert_eq!(e.subject_id, "checkout");
    assert_eq!(e.service.as_deref(), Some("checkout"));
    assert_eq!(e.environment.as_deref(), Some("prod-eu"));
    assert_eq!(e.url.as_deref(), Some("https://ci.example/run/1"));
}

#[test]
fn github_deployment_request_is_not_a_deployment() {
    for file in [
        "payload.json",
        "with-installation.payload.json",
        "gh-pages.payload.json",
    ] {
        let e = github("deployment", file);
        assert_eq!(e.event_type, "github.deployment.created", "{file}");
        assert_ne!(e.subject, "service", "{file}");
    }
    assert_eq!(
        summary(&github("deployment", "payload.json")),
        "\
type: github.deployment.created
subject: deployment / created
time: 2019-05-15T15:20:53Z
subject_id: 145988746
source: https://github.com/Codertocat/Hello-World
repository: Codertocat/Hello-World
service: Codertocat/Hello-World
environment: production
artifact_id: pkg:github/Codertocat/Hello-World@f95f852bd8fca8fcc58a9a2d6c842781e32a215e
"
    );
}

#[test]
fn github_pull_request_opened_and_reopened_create_a_change() {
    assert_eq!(
        summary(&github("pull_request", "opened.payload.json")),
        "\
type: dev.cdevents.change.created.0.3.0
subject: change / created
time: 2019-05-15T15:20:33Z
subject_id: Codertocat/Hello-World#2
source: https://github.com/Codertocat/Hello-World
repository: Codertocat/Hello-World
change_id: Codertocat/Hello-World#2
url: https://github.com/Codertocat/Hello-World/pull/2
"
    );
    assert_eq!(
        github("pull_request", "opened.with-null-body.json").event_type,
        "dev.cdevents.change.created.0.3.0"
    );
    // reopened: at updated_at (edited to differ from created_at).
    let e = github_edited("pull_request", "reopened.payload.json", |v| {
        v["pull_request"]["updated_at"] = json!("2019-05-16T09:00:00Z");
    });
    assert_eq!(e.event_type, "dev.cdevents.change.created.0.3.0");
    assert_eq!(rfc3339(e.time), "2019-05-16T09:00:00Z");
}

#[test]
fn github_pull_request_closed_unmerged_is_abandoned() {
    // The fixture's pull request is closed without being merged.
    assert_eq!(
        summary(&github("pull_request", "closed.payload.json")),
        "\
type: dev.cdevents.change.abandoned.0.2.0
subject: change / abandoned
time: 2019-05-15T15:21:18Z
subject_id: Codertocat/Hello-World#2
source: https://github.com/Codertocat/Hello-World
repository: Codertocat/Hello-World
change_id: Codertocat/Hello-World#2
url: https://github.com/Codertocat/Hello-World/pull/2
"
    );
}

#[test]
fn github_pull_request_closed_merged_is_merged_with_its_merge_commit() {
    // No fixture is merged: the closed one, merged one second before it was closed.
    let e = github_edited("pull_request", "closed.payload.json", |v| {
        v["pull_request"]["merged"] = json!(true);
        v["pull_request"]["merged_at"] = json!("2019-05-15T15:21:17Z");
    });
    assert_eq!(
        summary(&e),
        "\
type: dev.cdevents.change.merged.0.2.0
subject: change / merged
time: 2019-05-15T15:21:17Z
subject_id: Codertocat/Hello-World#2
source: https://github.com/Codertocat/Hello-World
repository: Codertocat/Hello-World
change_id: Codertocat/Hello-World#2
artifact_id: pkg:github/Codertocat/Hello-World@c4295bd74fb0f4fda03689c3df3f2803b658fd85
url: https://github.com/Codertocat/Hello-World/pull/2
"
    );
}

#[test]
fn github_pull_request_other_actions() {
    let e = github("pull_request", "synchronize.payload.json");
    assert_eq!(e.event_type, "dev.cdevents.change.updated.0.2.0");
    assert_eq!(e.change_id.as_deref(), Some("Codertocat/Hello-World#2"));
    for (file, action) in [
        ("labeled.payload.json", "labeled"),
        ("assigned.payload.json", "assigned"),
        ("ready_for_review.payload.json", "ready_for_review"),
        ("review_requested.payload.json", "review_requested"),
    ] {
        let e = github("pull_request", file);
        assert_eq!(e.event_type, format!("github.pull_request.{action}"));
        assert_eq!((&*e.subject, &*e.predicate), ("pull_request", action));
        assert_eq!(e.change_id.as_deref(), Some("Codertocat/Hello-World#2"));
        assert_eq!(e.subject_id, "Codertocat/Hello-World#2");
    }
}

#[test]
fn github_push_to_a_branch_updates_a_change_at_the_commit_time() {
    assert_eq!(
        summary(&github("push", "with-new-branch.payload.json")),
        "\
type: dev.cdevents.change.updated.0.2.0
subject: change / updated
time: 2019-05-15T15:19:25Z
subject_id: Codertocat/Hello-World@6113728f27ae82c7b1a177c8d03f9e96e0adf246
source: https://github.com/Codertocat/Hello-World
repository: Codertocat/Hello-World
change_id: Codertocat/Hello-World@6113728f27ae82c7b1a177c8d03f9e96e0adf246
artifact_id: pkg:github/Codertocat/Hello-World@6113728f27ae82c7b1a177c8d03f9e96e0adf246
url: https://github.com/Codertocat/Hello-World/commit/6113728f27ae82c7b1a177c8d03f9e96e0adf246
"
    );
}

#[test]
fn github_push_deleting_a_tag_is_no_change() {
    // Four of the six push fixtures delete the tag `simple-tag`: `after` is all zeros and
    // there is no head commit, so the time is `repository.pushed_at` (epoch seconds).
    assert_eq!(
        summary(&github("push", "payload.json")),
        "\
type: github.push
subject: push / received
time: 2019-05-15T15:20:57Z
subject_id: Codertocat/Hello-World@refs/tags/simple-tag
source: https://github.com/Codertocat/Hello-World
repository: Codertocat/Hello-World
url: https://github.com/Codertocat/Hello-World/compare/6113728f27ae...000000000000
"
    );
    // A tag pushed (not deleted) is not a change either, but names its commit.
    let e = github_edited("push", "with-new-branch.payload.json", |v| {
        v["ref"] = json!("refs/tags/v1.0.0");
    });
    assert_eq!(e.event_type, "github.push");
    assert_eq!(e.change_id, None);
    assert_eq!(
        e.artifact_id.as_deref(),
        Some("pkg:github/Codertocat/Hello-World@6113728f27ae82c7b1a177c8d03f9e96e0adf246")
    );
}

#[test]
fn github_workflow_run_completed_finishes_a_pipeline_run() {
    // The run's `name` is empty in the fixture: the workflow's name stands in.
    assert_eq!(
        summary(&github("workflow_run", "completed.payload.json")),
        "\
type: dev.cdevents.pipelinerun.finished.0.2.0
subject: pipelinerun / finished
time: 2020-10-05T16:33:49Z
subject_id: 289782451
source: https://github.com/octo-org/octo-repo
repository: octo-org/octo-repo
artifact_id: pkg:github/octo-org/octo-repo@3484a3fb816e0859fd6e1cea078d76385ff50625
pipeline: test
run_id: 289782451
outcome: success
url: https://github.com/octo-org/octo-repo/actions/runs/289782451
trace_id: c28519925e1146098df64713b1779b41
"
    );
    let failed = github_edited(
        "workflow_run",
        "completed.with-pull-requests.payload.json",
        |v| {
            v["workflow_run"]["conclusion"] = json!("failure");
            v["workflow_run"]["name"] = json!("CI");
        },
    );
    assert_eq!(failed.outcome.as_deref(), Some("failure"));
    assert_eq!(failed.pipeline.as_deref(), Some("CI"));
}

#[test]
fn github_workflow_run_requested_queues_and_in_progress_starts() {
    for file in [
        "requested.payload.json",
        "requested.with-conclusion.payload.json",
    ] {
        let e = github("workflow_run", file);
        assert_eq!(
            e.event_type, "dev.cdevents.pipelinerun.queued.0.2.0",
            "{file}"
        );
        assert_eq!(rfc3339(e.time), "2020-10-05T16:33:24Z", "{file}");
        assert_eq!(e.run_id.as_deref(), Some("289782451"));
        assert_eq!(e.outcome, None, "{file}");
    }
    let e = github_edited("workflow_run", "requested.payload.json", |v| {
        v["action"] = json!("in_progress");
        v["workflow_run"]["status"] = json!("in_progress");
    });
    assert_eq!(e.event_type, "dev.cdevents.pipelinerun.started.0.2.0");
    assert_eq!(rfc3339(e.time), "2020-10-05T16:33:49Z", "run_started_at");
}

#[test]
fn github_workflow_job_is_a_task_run() {
    assert_eq!(
        summary(&github(
            "workflow_job",
            "completed.failure.with-organization.payload.json"
        )),
        "\
type: dev.cdevents.taskrun.finished.0.2.0
subject: taskrun / finished
time: 2021-08-05T10:38:16Z
subject_id: 289782451
source: https://github.com/Codertocat/Hello-World
repository: Codertocat/Hello-World
artifact_id: pkg:github/Codertocat/Hello-World@3484a3fb816e0859fd6e1cea078d76385ff50625
pipeline: CodeQL
run_id: 2202229078
task: linters
outcome: failure
url: https://github.com/octo-org/octo-repo/runs/1291536064
trace_id: dfe7d9f05e3dc54f4d215a481011594b
"
    );
    let ok = github(
        "workflow_job",
        "completed.success.with-organization.payload.json",
    );
    assert_eq!(ok.outcome.as_deref(), Some("success"));
    let started = github("workflow_job", "in_progress.with-queued-steps.payload.json");
    assert_eq!(started.event_type, "dev.cdevents.taskrun.started.0.2.0");
    assert_eq!(rfc3339(started.time), "2023-06-26T03:31:36Z");
    assert_eq!(started.run_id.as_deref(), Some("5373506832"));
    assert_eq!(
        started.task.as_deref(),
        Some("Do examples need to be regenerated?")
    );
    assert_eq!(started.outcome, None);
    for (file, action) in [
        ("queued.payload.json", "queued"),
        ("queued.with-deployment.payload.json", "queued"),
        ("waiting.payload.json", "waiting"),
    ] {
        let e = github("workflow_job", file);
        assert_eq!(
            e.event_type,
            format!("github.workflow_job.{action}"),
            "{file}"
        );
        assert!(e.task.is_some() && e.run_id.is_some(), "{file}");
    }
}

#[test]
fn github_check_run_is_a_task_run_of_its_suite() {
    assert_eq!(
        summary(&github("check_run", "created.payload.json")),
        "\
type: dev.cdevents.taskrun.started.0.2.0
subject: taskrun / started
time: 2019-05-15T15:21:12Z
subject_id: 128620228
source: https://github.com/Codertocat/Hello-World
repository: Codertocat/Hello-World
artifact_id: pkg:github/Codertocat/Hello-World@ec26c3e57ca3a959ca5aad62de7213c562f8c821
run_id: 118578147
task: Octocoders-linter
url: https://github.com/Codertocat/Hello-World/runs/128620228
"
    );
    let failed = github("check_run", "completed.1.payload.json");
    assert_eq!(failed.event_type, "dev.cdevents.taskrun.finished.0.2.0");
    assert_eq!(failed.outcome.as_deref(), Some("failure"));
    assert_eq!(
        github("check_run", "completed.payload.json")
            .outcome
            .as_deref(),
        Some("success")
    );
    let again = github("check_run", "rerequested.payload.json");
    assert_eq!(again.event_type, "github.check_run.rerequested");
    assert_eq!(again.task.as_deref(), Some("randscape"));
    assert_eq!(
        github("check_run", "requested_action.payload.json").event_type,
        "github.check_run.requested_action"
    );
}

#[test]
fn github_release_published_publishes_the_tag() {
    assert_eq!(
        summary(&github("release", "published.payload.json")),
        format!(
            "\
type: dev.cdevents.artifact.published.0.2.0
subject: artifact / published
time: 2019-05-15T15:20:53Z
subject_id: {RELEASE_PURL}
source: https://github.com/Codertocat/Hello-World
repository: Codertocat/Hello-World
artifact_id: {RELEASE_PURL}
url: https://github.com/Codertocat/Hello-World/releases/tag/0.0.1
"
        )
    );
    for (file, action) in [
        ("created.payload.json", "created"),
        ("released.json", "released"),
        ("prereleased.payload.json", "prereleased"),
        ("edited.payload.json", "edited"),
        ("deleted.payload.json", "deleted"),
    ] {
        let e = github("release", file);
        assert_eq!(e.event_type, format!("github.release.{action}"), "{file}");
        assert_eq!(e.artifact_id.as_deref(), Some(RELEASE_PURL), "{file}");
    }
    assert_eq!(
        rfc3339(github("release", "created.payload.json").time),
        "2019-05-15T15:19:25Z"
    );
}

#[test]
fn github_issues_without_the_incident_label_stay_as_is() {
    // Every issues fixture is labelled `bug` (or nothing).
    for (kind, path) in github_files().into_iter().filter(|(k, _)| k == "issues") {
        let e = github_text(&kind, &read(&path));
        assert!(
            e.event_type.starts_with("github.issues."),
            "{}",
            path.display()
        );
        assert_eq!(e.service, None);
    }
    assert_eq!(
        summary(&github("issues", "opened.payload.json")),
        "\
type: github.issues.opened
subject: issues / opened
time: 2019-05-15T15:20:18Z
subject_id: Codertocat/Hello-World#1
source: https://github.com/Codertocat/Hello-World
repository: Codertocat/Hello-World
url: https://github.com/Codertocat/Hello-World/issues/1
"
    );
}

fn add_label(v: &mut Value, name: &str) {
    v["issue"]["labels"]
        .as_array_mut()
        .expect("labels")
        .push(json!({"id": 1, "name": name, "color": "ff0000", "default": false}));
}

#[test]
fn github_incident_issue_opened_is_detected_in_production() {
    let e = github_edited("issues", "opened.payload.json", |v| {
        add_label(v, "Incident")
    });
    assert_eq!(
        summary(&e),
        "\
type: dev.cdevents.incident.detected.0.2.0
subject: incident / detected
time: 2019-05-15T15:20:18Z
subject_id: Codertocat/Hello-World#1
source: https://github.com/Codertocat/Hello-World
repository: Codertocat/Hello-World
service: Codertocat/Hello-World
environment: production
url: https://github.com/Codertocat/Hello-World/issues/1
"
    );
    let staging = github_edited("issues", "opened.payload.json", |v| {
        add_label(v, "incident");
        add_label(v, "env:staging");
    });
    assert_eq!(staging.environment.as_deref(), Some("staging"));
    let eu = github_edited("issues", "opened.payload.json", |v| {
        add_label(v, "Environment: prod-eu");
        add_label(v, "incident");
    });
    assert_eq!(eu.environment.as_deref(), Some("prod-eu"));
}

#[test]
fn github_incident_labelled_reopened_and_closed() {
    // Labelled `incident`: detected when labelled (at updated_at, edited to differ).
    let labeled = github_edited("issues", "labeled.payload.json", |v| {
        v["label"]["name"] = json!("incident");
        v["issue"]["updated_at"] = json!("2019-05-15T16:00:00Z");
    });
    assert_eq!(labeled.event_type, "dev.cdevents.incident.detected.0.2.0");
    assert_eq!(rfc3339(labeled.time), "2019-05-15T16:00:00Z");
    // Labelled something else while already an incident: no new detection.
    let other = github_edited("issues", "labeled.payload.json", |v| {
        add_label(v, "incident")
    });
    assert_eq!(other.event_type, "github.issues.labeled");
    assert_eq!(other.service.as_deref(), Some("Codertocat/Hello-World"));
    // Reopened: detected again at updated_at.
    let reopened = github_edited("issues", "reopened.payload.json", |v| {
        add_label(v, "incident")
    });
    assert_eq!(reopened.event_type, "dev.cdevents.incident.detected.0.2.0");
    assert_eq!(rfc3339(reopened.time), "2021-10-11T16:40:56Z");
    // Closed (no fixture: the reopened one, which still has its earlier `closed_at`, closed).
    let closed = github_edited("issues", "reopened.payload.json", |v| {
        add_label(v, "incident");
        v["action"] = json!("closed");
        v["issue"]["state"] = json!("closed");
    });
    assert_eq!(
        summary(&closed),
        "\
type: dev.cdevents.incident.resolved.0.2.0
subject: incident / resolved
time: 2021-07-05T18:07:10Z
subject_id: Codertocat/Hello-World#1
source: https://github.com/Codertocat/Hello-World
repository: Codertocat/Hello-World
service: Codertocat/Hello-World
environment: production
url: https://github.com/Codertocat/Hello-World/issues/1
"
    );
}

#[test]
fn github_other_events_are_stored_as_is() {
    assert_eq!(
        summary(&github("check_suite", "completed.payload.json")),
        "\
type: github.check_suite.completed
subject: check_suite / completed
time: 2019-05-15T15:21:14Z
subject_id: 118578147
source: https://github.com/Codertocat/Hello-World
repository: Codertocat/Hello-World
artifact_id: pkg:github/Codertocat/Hello-World@ec26c3e57ca3a959ca5aad62de7213c562f8c821
outcome: success
"
    );
    // An event with no action and no repository: typed by its name, at ingestion time.
    let e = github_text("star", r#"{"starred_at": null}"#);
    assert_eq!(
        summary(&e),
        "\
type: github.star
subject: star / received
time: 2026-01-01T00:00:00Z
subject_id: 72d3162e-cc78-11e3-81ab-4c9367dc0958
source: github
"
    );
}

// ---- GitLab ----

#[test]
fn gitlab_merge_request_opened_creates_a_change() {
    assert_eq!(
        summary(&gitlab("merge_request.json")),
        "\
type: dev.cdevents.change.created.0.3.0
subject: change / created
time: 2013-12-03T17:23:34Z
subject_id: gitlabhq/gitlab-test!1
source: http://example.com/gitlabhq/gitlab-test
repository: gitlabhq/gitlab-test
change_id: gitlabhq/gitlab-test!1
url: http://example.com/diaspora/merge_requests/1
"
    );
}

#[test]
fn gitlab_merge_request_actions() {
    let with = |action: &str, edit: fn(&mut Value)| {
        gitlab_edited("merge_request.json", |v| {
            v["object_attributes"]["action"] = json!(action);
            v["object_attributes"]["updated_at"] = json!("2013-12-04 10:00:00 UTC");
            edit(v);
        })
    };
    let merged = with("merge", |v| {
        v["object_attributes"]["state"] = json!("merged");
        v["object_attributes"]["merge_commit_sha"] =
            json!("da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    });
    assert_eq!(merged.event_type, "dev.cdevents.change.merged.0.2.0");
    assert_eq!(rfc3339(merged.time), "2013-12-04T10:00:00Z", "updated_at");
    assert_eq!(
        merged.artifact_id.as_deref(),
        Some("pkg:gitlab/gitlabhq/gitlab-test@da1560886d4f094c3e6c9ef40349f7d38b5d27d7")
    );
    let merged_at = with("merge", |v| {
        v["object_attributes"]["merged_at"] = json!("2013-12-04T09:59:58.000Z");
    });
    assert_eq!(
        rfc3339(merged_at.time),
        "2013-12-04T09:59:58Z",
        "merged_at wins"
    );
    assert_eq!(merged_at.artifact_id, None, "no merge_commit_sha");
    let reopened = with("reopen", |_| {});
    assert_eq!(reopened.event_type, "dev.cdevents.change.created.0.3.0");
    assert_eq!(rfc3339(reopened.time), "2013-12-04T10:00:00Z");
    let closed = with("close", |_| {});
    assert_eq!(closed.event_type, "dev.cdevents.change.abandoned.0.2.0");
    let updated = with("update", |_| {});
    assert_eq!(updated.event_type, "dev.cdevents.change.updated.0.2.0");
    let approved = with("approved", |_| {});
    assert_eq!(approved.event_type, "gitlab.merge_request.approved");
    assert_eq!(
        approved.change_id.as_deref(),
        Some("gitlabhq/gitlab-test!1")
    );
}

#[test]
fn gitlab_push_updates_a_change_at_the_pushed_commit_time() {
    assert_eq!(
        summary(&gitlab("push.json")),
        "\
type: dev.cdevents.change.updated.0.2.0
subject: change / updated
time: 2012-01-03T21:36:29Z
subject_id: mike/diaspora@da1560886d4f094c3e6c9ef40349f7d38b5d27d7
source: http://example.com/mike/diaspora
repository: mike/diaspora
change_id: mike/diaspora@da1560886d4f094c3e6c9ef40349f7d38b5d27d7
artifact_id: pkg:gitlab/mike/diaspora@da1560886d4f094c3e6c9ef40349f7d38b5d27d7
url: http://example.com/mike/diaspora/commit/da1560886d4f094c3e6c9ef40349f7d38b5d27d7
"
    );
    let deleted = gitlab_edited("push.json", |v| {
        v["after"] = json!("0000000000000000000000000000000000000000");
        v["checkout_sha"] = Value::Null;
        v["commits"] = json!([]);
    });
    assert_eq!(deleted.event_type, "gitlab.push");
    assert_eq!(deleted.subject_id, "mike/diaspora@refs/heads/master");
    assert_eq!(deleted.time, INGESTED, "nothing in the payload says when");
}

#[test]
fn gitlab_tag_push_is_stored_as_is() {
    assert_eq!(
        summary(&gitlab("tag_push.json")),
        "\
type: gitlab.tag_push
subject: tag_push / received
time: 2012-01-03T21:36:29Z
subject_id: jsmith/example@82b3d5ae55f7080f1e6022629cdb57bfae7cccc7
source: http://example.com/jsmith/example
repository: jsmith/example
artifact_id: pkg:gitlab/jsmith/example@82b3d5ae55f7080f1e6022629cdb57bfae7cccc7
url: http://example.com/jsmith/example/commit/82b3d5ae55f7080f1e6022629cdb57bfae7cccc7
"
    );
}

#[test]
fn gitlab_pipeline_success_finishes_a_pipeline_run() {
    assert_eq!(
        summary(&gitlab("pipeline.json")),
        "\
type: dev.cdevents.pipelinerun.finished.0.2.0
subject: pipelinerun / finished
time: 2016-08-12T15:26:29Z
subject_id: 31
source: http://192.168.64.1:3005/gitlab-org/gitlab-test
repository: gitlab-org/gitlab-test
artifact_id: pkg:gitlab/gitlab-org/gitlab-test@bcbb5ec396a2c0f828686f14fac9b80b780504f2
pipeline: gitlab-org/gitlab-test
run_id: 31
outcome: success
url: http://192.168.64.1:3005/gitlab-org/gitlab-test/-/pipelines/31
"
    );
}

#[test]
fn gitlab_pipeline_statuses() {
    let with = |status: &str| {
        gitlab_edited("pipeline.json", |v| {
            v["object_attributes"]["status"] = json!(status);
            v["object_attributes"]["finished_at"] = Value::Null;
        })
    };
    for (status, ty) in [
        ("created", "dev.cdevents.pipelinerun.queued.0.2.0"),
        ("pending", "dev.cdevents.pipelinerun.queued.0.2.0"),
        ("running", "dev.cdevents.pipelinerun.started.0.2.0"),
        ("failed", "dev.cdevents.pipelinerun.finished.0.2.0"),
        ("canceled", "dev.cdevents.pipelinerun.finished.0.2.0"),
        ("skipped", "dev.cdevents.pipelinerun.finished.0.2.0"),
        ("manual", "gitlab.pipeline.manual"),
    ] {
        let e = with(status);
        assert_eq!(e.event_type, ty, "{status}");
        assert_eq!(
            rfc3339(e.time),
            "2016-08-12T15:23:28Z",
            "{status}: created_at"
        );
        let finished = e.predicate == "finished";
        assert_eq!(e.outcome.as_deref(), finished.then_some(status), "{status}");
    }
}

#[test]
fn gitlab_job_is_a_task_run_of_its_pipeline() {
    // Job hooks have no `project`: the project comes from `repository.homepage`.
    assert_eq!(
        summary(&gitlab("job.json")),
        "\
type: dev.cdevents.taskrun.finished.0.2.0
subject: taskrun / finished
time: 2023-01-10T13:50:54Z
subject_id: 3580121225
source: https://gitlab.com/jsmithy2/release-tools-fake
repository: jsmithy2/release-tools-fake
environment: production
artifact_id: pkg:gitlab/jsmithy2/release-tools-fake@95d49d1efbd941908580e79d65e4b5ecaf4a8305
pipeline: jsmithy2/release-tools-fake
run_id: 743121198
task: auto_deploy:start
outcome: success
url: https://gitlab.com/jsmithy2/release-tools-fake/-/jobs/3580121225
"
    );
    assert_eq!(
        summary(&gitlab("build.json")),
        "\
type: gitlab.build.created
subject: build / created
time: 2021-02-23T02:41:37.886Z
subject_id: 1977
source: http://192.168.64.1:3005/gitlab-org/gitlab-test
repository: gitlab-org/gitlab-test
artifact_id: pkg:gitlab/gitlab-org/gitlab-test@2293ada6b400935a1378653304eaf6221e0fdb8f
pipeline: gitlab-org/gitlab-test
run_id: 2366
task: test
url: http://192.168.64.1:3005/gitlab-org/gitlab-test/-/jobs/1977
"
    );
    let running = gitlab_edited("build.json", |v| {
        v["build_status"] = json!("running");
        v["build_started_at"] = json!("2021-02-23 02:41:40 UTC");
    });
    assert_eq!(running.event_type, "dev.cdevents.taskrun.started.0.2.0");
    assert_eq!(rfc3339(running.time), "2021-02-23T02:41:40Z");
    assert_eq!(running.outcome, None);
    let failed = gitlab_edited("job.json", |v| v["build_status"] = json!("failed"));
    assert_eq!(failed.outcome.as_deref(), Some("failed"));
}

#[test]
fn gitlab_deployment_success_is_service_deployed_of_the_full_sha() {
    // The hook names only `short_sha`; `commit_url` ends with the full one. The time has an
    // offset: 21:50 at +02:00.
    assert_eq!(
        summary(&gitlab("deployment.json")),
        "\
type: dev.cdevents.service.deployed.0.2.0
subject: service / deployed
time: 2021-04-28T19:50:00Z
subject_id: root/test-deployment-webhooks
source: http://10.126.0.2:3000/root/test-deployment-webhooks
repository: root/test-deployment-webhooks
service: root/test-deployment-webhooks
environment: staging
artifact_id: pkg:gitlab/root/test-deployment-webhooks@279484c09fbe69ededfced8c1bb6e6d24616b468
outcome: success
url: http://10.126.0.2:3000/root/test-deployment-webhooks/-/jobs/796
"
    );
    let running = gitlab_edited("deployment.json", |v| {
        v["status"] = json!("running");
        v["commit_url"] = Value::Null;
    });
    assert_eq!(running.event_type, "gitlab.deployment.running");
    assert_eq!(running.subject_id, "15");
    assert_eq!(running.outcome.as_deref(), Some("running"));
    assert_eq!(
        running.artifact_id.as_deref(),
        Some("pkg:gitlab/root/test-deployment-webhooks@279484c0"),
        "without commit_url, the short sha"
    );
}

#[test]
fn gitlab_release_created_publishes_the_tag() {
    assert_eq!(
        summary(&gitlab("release.json")),
        "\
type: dev.cdevents.artifact.published.0.2.0
subject: artifact / published
time: 2021-02-25T21:23:34Z
subject_id: pkg:gitlab/exm-namespace/example-project@1.0.0
source: http://example.com/exm-namespace/example-project
repository: exm-namespace/example-project
artifact_id: pkg:gitlab/exm-namespace/example-project@1.0.0
url: http://example.com/exm-namespace/example-project/-/releases/1.0.0
"
    );
    let upcoming = gitlab_edited("release.json", |v| {
        v["released_at"] = json!("2021-03-01 00:00:00 UTC");
    });
    assert_eq!(rfc3339(upcoming.time), "2021-02-25T21:23:34Z", "created_at");
    let updated = gitlab_edited("release.json", |v| v["action"] = json!("update"));
    assert_eq!(updated.event_type, "gitlab.release.update");
    assert_eq!(
        updated.artifact_id.as_deref(),
        Some("pkg:gitlab/exm-namespace/example-project@1.0.0")
    );
}

#[test]
fn gitlab_issue_without_incident_stays_as_is() {
    // The fixture has severity and escalation fields but is labelled only `API`.
    assert_eq!(
        summary(&gitlab("issue.json")),
        "\
type: gitlab.issue.open
subject: issue / open
time: 2013-12-03T17:15:43Z
subject_id: gitlabhq/gitlab-test#23
source: http://example.com/gitlabhq/gitlab-test
repository: gitlabhq/gitlab-test
url: http://example.com/diaspora/issues/23
"
    );
}

fn incident_label(v: &mut Value) {
    v["labels"]
        .as_array_mut()
        .expect("labels")
        .push(json!({"id": 207, "title": "incident", "type": "ProjectLabel"}));
}

#[test]
fn gitlab_incident_issue_is_detected_and_resolved() {
    let opened = gitlab_edited("issue.json", incident_label);
    assert_eq!(
        summary(&opened),
        "\
type: dev.cdevents.incident.detected.0.2.0
subject: incident / detected
time: 2013-12-03T17:15:43Z
subject_id: gitlabhq/gitlab-test#23
source: http://example.com/gitlabhq/gitlab-test
repository: gitlabhq/gitlab-test
service: gitlabhq/gitlab-test
environment: production
url: http://example.com/diaspora/issues/23
"
    );
    let typed = gitlab_edited("issue.json", |v| {
        v["object_attributes"]["issue_type"] = json!("incident");
        v["object_attributes"]["labels"]
            .as_array_mut()
            .unwrap()
            .push(json!({"title": "env::staging"}));
    });
    assert_eq!(typed.event_type, "dev.cdevents.incident.detected.0.2.0");
    assert_eq!(typed.environment.as_deref(), Some("staging"));
    let closed = gitlab_edited("issue.json", |v| {
        incident_label(v);
        v["object_attributes"]["action"] = json!("close");
        v["object_attributes"]["state"] = json!("closed");
        v["object_attributes"]["updated_at"] = json!("2013-12-03 18:00:00 UTC");
    });
    assert_eq!(closed.event_type, "dev.cdevents.incident.resolved.0.2.0");
    assert_eq!(rfc3339(closed.time), "2013-12-03T18:00:00Z", "updated_at");
    let closed_at = gitlab_edited("issue.json", |v| {
        incident_label(v);
        v["object_attributes"]["action"] = json!("close");
        v["object_attributes"]["closed_at"] = json!("2013-12-03 17:59:00 UTC");
    });
    assert_eq!(rfc3339(closed_at.time), "2013-12-03T17:59:00Z", "closed_at");
    // An update that adds the label detects it; other updates do not.
    let labelled = gitlab_edited("issue.json", |v| {
        v["object_attributes"]["action"] = json!("update");
        v["changes"]["labels"]["current"]
            .as_array_mut()
            .unwrap()
            .push(json!({"title": "Incident"}));
    });
    assert_eq!(labelled.event_type, "dev.cdevents.incident.detected.0.2.0");
    let edited = gitlab_edited("issue.json", |v| {
        incident_label(v);
        v["object_attributes"]["action"] = json!("update");
    });
    assert_eq!(edited.event_type, "gitlab.issue.update");
    assert_eq!(edited.environment.as_deref(), Some("production"));
}

#[test]
fn gitlab_kind_comes_from_the_header_when_the_body_has_none() {
    let mut v = json_of(&fixtures("gitlab").join("pipeline.json"));
    let with_kind = gitlab_text(&v.to_string());
    v.as_object_mut().unwrap().remove("object_kind");
    let text = v.to_string();
    let e = event(normalise(
        Origin::Gitlab,
        "Pipeline Hook",
        DELIVERY,
        text.as_bytes(),
        INGESTED,
    ));
    assert_eq!(e.event_type, with_kind.event_type);
    assert_eq!(e.run_id, with_kind.run_id);
    let unknown = normalise(
        Origin::Gitlab,
        "Mystery Hook",
        DELIVERY,
        text.as_bytes(),
        INGESTED,
    );
    assert_eq!(
        unknown.unwrap_err().0,
        "GitLab delivery has no `object_kind` and its X-Gitlab-Event header \"Mystery Hook\" is not a known hook (e.g. \"Merge Request Hook\")"
    );
    let other = event(normalise(
        Origin::Gitlab,
        "",
        DELIVERY,
        br#"{"object_kind": "note", "object_attributes": {"id": 1244, "note": "LGTM", "created_at": "2015-05-17 18:21:36 UTC", "url": "http://example.com/n/1244"}}"#,
        INGESTED,
    ));
    assert_eq!(other.event_type, "gitlab.note");
    assert_eq!(other.subject_id, "1244");
    assert_eq!(rfc3339(other.time), "2015-05-17T18:21:36Z");
}

// ---- rejections ----

fn rejection(origin: Origin, kind: &str, delivery: &str, body: &[u8]) -> String {
    match normalise(origin, kind, delivery, body, INGESTED) {
        Err(r) => r.0,
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
    assert_eq!(
        rejection(Origin::CdEvents, "push", DELIVERY, b"{}"),
        "webhook normalisation is for GitHub or GitLab deliveries, not cdevents"
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
fn pointers(v: &Value, prefix: String, depth: usize, out: &mut Vec<String>) {
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

fn replacements() -> Vec<Value> {
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
