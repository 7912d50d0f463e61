//! The route's authentication and the normalisation of GitHub deliveries; the fixtures and
//! helpers are in `webhook/tests.rs`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::signature_ok;
use crate::sources::webhook::tests::*;

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[test]
fn signatures_accept_any_configured_secret() {
    let body = br#"{"zen":"Keep it logically awesome."}"#;
    let secrets = vec!["old".to_string(), "new".to_string()];
    assert!(signature_ok(&secrets, &sign("old", body), body));
    assert!(signature_ok(&secrets, &sign("new", body), body));
    assert!(!signature_ok(&secrets, &sign("other", body), body));
    assert!(!signature_ok(&secrets, &sign("new", body), b"{}"));
    assert!(!signature_ok(&secrets, "sha1=abc", body));
    assert!(!signature_ok(&secrets, "sha256=zz", body));
}

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
pipeline: pages build and deployment
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
    // The fixture creates its branch: edited into a push to an existing one.
    let pushed = github_edited("push", "with-new-branch.payload.json", |v| {
        v["created"] = json!(false);
    });
    assert_eq!(
        summary(&pushed),
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

pub(in crate::sources) fn add_label(v: &mut Value, name: &str) {
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

#[test]
fn github_pull_requests_carry_their_labels_and_what_they_revert() {
    let e = github("pull_request", "opened.payload.json");
    assert_eq!(e.labels.as_deref(), Some(r#"["bug"]"#));
    assert_eq!(e.reverts, None, "the fixture is no revert");
    // The fixture edited as GitHub's revert button writes a pull request.
    let revert = |title: &str, body: &str| {
        let (title, body) = (title.to_string(), body.to_string());
        github_edited("pull_request", "closed.payload.json", move |v| {
            v["pull_request"]["title"] = json!(title);
            v["pull_request"]["body"] = json!(body);
            v["pull_request"]["labels"] = json!([]);
        })
    };
    let e = revert(
        "Revert \"Update the README with new information.\"",
        "Reverts Codertocat/Hello-World#1",
    );
    assert_eq!(e.reverts.as_deref(), Some("Codertocat/Hello-World#1"));
    assert_eq!(e.labels, None, "no labels is no value");
    let e = revert("Revert \"x\"", "Reverts #1.");
    assert_eq!(e.reverts.as_deref(), Some("Codertocat/Hello-World#1"));
    // `git revert`'s message as the body names the reverted commit.
    let e = revert(
        "Back out the README change",
        "This reverts commit C4295BD74FB0F4FDA03689C3DF3F2803B658FD85.\n\nIt broke the docs.",
    );
    assert_eq!(
        e.reverts.as_deref(),
        Some("pkg:github/Codertocat/Hello-World@c4295bd74fb0f4fda03689c3df3f2803b658fd85")
    );
    // A revert by its title alone: a revert whose target is not named.
    let e = revert("Revert \"x\"", "Reverts the flag flip");
    assert_eq!(e.reverts.as_deref(), Some(""));
    // Prose is no revert: a short sha, words after "Reverts".
    let e = revert(
        "Fix the docs",
        "Reverts the flag flip; this reverts commit c4295bd.",
    );
    assert_eq!(e.reverts, None);
}

#[test]
fn github_pull_requests_and_pushes_record_their_branch_and_pushes_their_first_commit() {
    let e = github("pull_request", "opened.payload.json");
    assert_eq!(e.branch.as_deref(), Some("changes"), "head.ref");
    let fork = github_edited("pull_request", "opened.payload.json", |v| {
        v["pull_request"]["head"]["repo"]["full_name"] = json!("someone/Hello-World");
    });
    assert_eq!(fork.branch, None, "a fork's pushes never come here");
    let e = github("push", "with-new-branch.payload.json");
    assert_eq!(
        (e.branch, e.first_commit_at),
        (None, None),
        "master is the default branch"
    );
    let e = github_edited("push", "with-new-branch.payload.json", |v| {
        v["ref"] = json!("refs/heads/feature");
    });
    assert_branch_and_first_commit(&e, "feature", "2019-05-15T15:19:25Z");
    // An earlier commit GitHub marks as not distinct (pushed before to another branch) is left out.
    let e = github_edited("push", "with-new-branch.payload.json", |v| {
        v["ref"] = json!("refs/heads/feature");
        let mut old = v["commits"][0].clone();
        old["timestamp"] = json!("2019-01-01T00:00:00Z");
        old["distinct"] = json!(false);
        v["commits"].as_array_mut().unwrap().push(old);
    });
    assert_branch_and_first_commit(&e, "feature", "2019-05-15T15:19:25Z");
}

#[test]
fn github_push_creating_a_branch_is_branch_created_with_its_first_commit() {
    let e = github("push", "with-new-branch.payload.json");
    assert_eq!(e.event_type, "dev.cdevents.branch.created.0.2.0");
    assert_eq!(e.subject_id, "Codertocat/Hello-World@refs/heads/master");
    assert_eq!(e.change_id, None);
    // A feature branch created with four commits (a real delivery, `github-extra`).
    let e = github_text(
        "push",
        &read(&fixtures("github-extra").join("push.new_branch.4_commits.json")),
    );
    assert_eq!((&*e.subject, &*e.predicate), ("branch", "created"));
    assert!(
        e.subject_id.ends_with("@refs/heads/db-branch-3"),
        "{}",
        e.subject_id
    );
    // The earliest of its four commits, in UTC.
    assert_branch_and_first_commit(&e, "db-branch-3", "2025-05-21T13:11:42Z");
}

#[test]
fn github_pull_request_edited_updates_the_change() {
    let e = github_edited("pull_request", "opened.payload.json", |v| {
        v["action"] = json!("edited");
        v["pull_request"]["updated_at"] = json!("2019-05-15T16:00:00Z");
    });
    assert_eq!(e.event_type, "dev.cdevents.change.updated.0.2.0");
    assert_eq!(e.change_id.as_deref(), Some("Codertocat/Hello-World#2"));
    assert_eq!(rfc3339(e.time), "2019-05-15T16:00:00Z");
}

#[test]
fn github_container_package_published_is_artifact_published_with_its_oci_purl() {
    // No fixture has a package delivery: the shape of `registry_package` `published` in
    // GitHub's OpenAPI description (github/rest-api-description, webhook-registry-package-
    // published), with the values GHCR sends for a container image.
    let body = |kind: &str, package_type: &str, action: &str| {
        json!({
            "action": action,
            kind: {
                "id": 4187031,
                "name": "Hello-World",
                "namespace": "Codertocat",
                "ecosystem": "CONTAINER",
                "package_type": package_type,
                "html_url": "https://github.com/Codertocat/Hello-World/pkgs/container/hello-world",
                "created_at": "2026-01-10T09:00:00Z",
                "updated_at": "2026-01-10T09:05:00Z",
                "package_version": {
                    "id": 6220012,
                    "version": "sha256:2cf3e1bfe07a1c41e8b5c2f3b0b5e7c8d1f9a9b4c3e2d1f0a9b8c7d6e5f4a3b2",
                    "name": "sha256:2cf3e1bfe07a1c41e8b5c2f3b0b5e7c8d1f9a9b4c3e2d1f0a9b8c7d6e5f4a3b2",
                    "html_url": "https://github.com/Codertocat/Hello-World/pkgs/container/hello-world/6220012",
                    "package_url": "ghcr.io/codertocat/hello-world:1.2.0",
                    "created_at": "2026-01-10T09:00:00Z",
                    "updated_at": "2026-01-10T09:04:00Z",
                    "container_metadata": {
                        "tag": {
                            "name": "1.2.0",
                            "digest": "sha256:2cf3e1bfe07a1c41e8b5c2f3b0b5e7c8d1f9a9b4c3e2d1f0a9b8c7d6e5f4a3b2"
                        }
                    }
                },
                "registry": {"url": "https://ghcr.io/codertocat", "vendor": "GitHub Inc", "type": "docker"}
            },
            "repository": {"full_name": "Codertocat/Hello-World", "html_url": "https://github.com/Codertocat/Hello-World"},
            "sender": {"login": "Codertocat"}
        })
        .to_string()
    };
    let purl = "pkg:oci/hello-world@sha256%3A2cf3e1bfe07a1c41e8b5c2f3b0b5e7c8d1f9a9b4c3e2d1f0a9b8c7d6e5f4a3b2?repository_url=ghcr.io/codertocat/hello-world";
    for kind in ["registry_package", "package"] {
        let e = github_text(kind, &body(kind, "CONTAINER", "published"));
        assert_eq!(
            e.event_type, "dev.cdevents.artifact.published.0.2.0",
            "{kind}"
        );
        assert_eq!(e.artifact_id.as_deref(), Some(purl), "{kind}");
        assert_eq!(e.subject_id, purl);
        assert_eq!(
            rfc3339(e.time),
            "2026-01-10T09:04:00Z",
            "the version's time"
        );
        assert_eq!(e.repository.as_deref(), Some("Codertocat/Hello-World"));
    }
    // An npm package, or another action, stays as-is.
    let npm = github_text(
        "package",
        &body("package", "npm", "published").replace("CONTAINER", "npm"),
    );
    assert_eq!(npm.event_type, "github.package.published");
    assert_eq!(npm.artifact_id, None);
    let updated = github_text("package", &body("package", "CONTAINER", "updated"));
    assert_eq!(updated.event_type, "github.package.updated");
    // A registry with a port: the colon before the last `/` is no tag.
    assert_eq!(
        super::normalise::oci_purl("App", "sha256:ab", Some("registry.local:5000/team/app:v1")),
        "pkg:oci/app@sha256%3Aab?repository_url=registry.local:5000/team/app"
    );
}

/// The identity of a GitHub row is the fact, so the facts a backfill pulls again are the
/// webhooks' rows: each distinct fact has its own id, the same fact one id.
#[test]
fn a_github_row_is_identified_by_its_fact() {
    let row = |kind: &str, body: &serde_json::Value, delivery: &str| {
        event(normalise(
            Origin::Github,
            kind,
            delivery,
            body.to_string().as_bytes(),
            INGESTED,
        ))
    };
    let fixture = |path: &str| json_of(&fixtures("github").join(path));
    let opened = fixture("pull_request/opened.payload.json");
    let closed = fixture("pull_request/closed.payload.json");
    // One pull request, two facts.
    assert_eq!(opened["pull_request"]["id"], closed["pull_request"]["id"]);
    let (o, c) = (
        row("pull_request", &opened, "a"),
        row("pull_request", &closed, "b"),
    );
    assert_ne!(o.event_id, c.event_id);
    assert_eq!(o.event_id, "pull_request/279147437/opened/1557933633000000");
    // The same fact by another delivery, with other extras (a backfill's list object): one id.
    let mut pulled = closed.clone();
    pulled["pull_request"]["comments"] = 9.into();
    pulled.as_object_mut().unwrap().remove("sender");
    assert_eq!(
        row("pull_request", &pulled, "backfill").event_id,
        c.event_id
    );

    // A re-run is another attempt: another fact, also for its jobs.
    let run = fixture("workflow_run/completed.payload.json");
    let mut rerun = run.clone();
    rerun["workflow_run"]["run_attempt"] = 2.into();
    let (first, second) = (
        row("workflow_run", &run, "a"),
        row("workflow_run", &rerun, "b"),
    );
    assert_eq!(first.event_id, "workflow_run/289782451/1/completed");
    assert_eq!(second.event_id, "workflow_run/289782451/2/completed");
    let requested = row(
        "workflow_run",
        &fixture("workflow_run/requested.payload.json"),
        "c",
    );
    assert_eq!(requested.event_id, "workflow_run/289782451/1/requested");

    // Labelling an issue `incident` and `bug` in the same second: two facts.
    let mut labeled = fixture("issues/labeled.payload.json");
    let first = row("issues", &labeled, "a").event_id;
    labeled["label"]["name"] = "incident".into();
    assert_ne!(row("issues", &labeled, "b").event_id, first);

    // A push is its ref and head; a deployment status its id.
    let push = row("push", &fixture("push/payload.json"), "a");
    assert!(push.event_id.starts_with("push/refs/"), "{}", push.event_id);
    let status = row(
        "deployment_status",
        &fixture("deployment_status/payload.json"),
        "a",
    );
    assert_eq!(status.event_id, "deployment_status/209916254/created");

    // A time that is not in the payload names no fact: the delivery id stays.
    let mut timeless = closed.clone();
    for f in ["closed_at", "merged_at", "updated_at"] {
        timeless["pull_request"].as_object_mut().unwrap().remove(f);
    }
    assert_eq!(row("pull_request", &timeless, "d-9").event_id, "d-9");
}
