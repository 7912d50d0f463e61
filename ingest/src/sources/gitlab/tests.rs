//! Normalisation of GitLab deliveries; the fixtures and helpers are in `webhook/tests.rs`.

use crate::sources::webhook::tests::*;

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

pub(in crate::sources) fn incident_label(v: &mut Value) {
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
        unknown.unwrap_err().message,
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

#[test]
fn gitlab_merge_requests_carry_their_labels_and_what_they_revert() {
    let e = gitlab("merge_request.json");
    assert_eq!(e.labels.as_deref(), Some(r#"["API"]"#));
    assert_eq!(e.reverts, None, "the fixture is no revert");
    // The fixture edited as GitLab's revert button writes a merge request.
    let revert = |description: &'static str| {
        gitlab_edited("merge_request.json", move |v| {
            v["object_attributes"]["title"] = json!("Revert \"MS-Viewport\"");
            v["object_attributes"]["description"] = json!(description);
        })
    };
    let e = revert("This reverts merge request !1");
    assert_eq!(e.reverts.as_deref(), Some("gitlabhq/gitlab-test!1"));
    let e = revert("This reverts merge request gitlabhq/other!7.");
    assert_eq!(e.reverts.as_deref(), Some("gitlabhq/other!7"));
    let e = revert(
        "This reverts commit da1560886d4f094c3e6c9ef40349f7d38b5d27d7, reversing\nchanges made to 0b4bc9a49b562e85de7cc9e834518ea6828729b9.",
    );
    assert_eq!(
        e.reverts.as_deref(),
        Some("pkg:gitlab/gitlabhq/gitlab-test@da1560886d4f094c3e6c9ef40349f7d38b5d27d7")
    );
    assert_eq!(revert("").reverts.as_deref(), Some(""), "by its title");
}

#[test]
fn gitlab_merge_requests_and_pushes_record_their_branch_and_pushes_their_first_commit() {
    assert_eq!(
        gitlab("merge_request.json").branch.as_deref(),
        Some("ms-viewport")
    );
    let fork = gitlab_edited("merge_request.json", |v| {
        v["object_attributes"]["source_project_id"] = json!(99);
    });
    assert_eq!(fork.branch, None, "a fork's pushes never come here");
    let e = gitlab("push.json");
    assert_eq!(
        (e.branch, e.first_commit_at),
        (None, None),
        "master is the default branch"
    );
    let e = gitlab_edited("push.json", |v| v["ref"] = json!("refs/heads/feature"));
    // The earlier of its two commits, in UTC.
    assert_branch_and_first_commit(&e, "feature", "2011-12-12T12:27:31Z");
}

#[test]
fn gitlab_push_creating_a_branch_is_branch_created_and_a_skipped_job_finished() {
    let e = gitlab_edited("push.json", |v| {
        v["before"] = json!("0000000000000000000000000000000000000000");
        v["ref"] = json!("refs/heads/feature");
    });
    assert_eq!(e.event_type, "dev.cdevents.branch.created.0.2.0");
    assert_eq!(e.subject_id, "mike/diaspora@refs/heads/feature");
    assert_eq!(e.change_id, None);
    assert_eq!(e.branch.as_deref(), Some("feature"));
    assert_eq!(
        gitlab("push.json").event_type,
        "dev.cdevents.change.updated.0.2.0"
    );
    let skipped = gitlab_edited("job.json", |v| {
        v["build_status"] = json!("skipped");
        v["build_started_at"] = Value::Null;
        v["build_finished_at"] = Value::Null;
    });
    assert_eq!(skipped.event_type, "dev.cdevents.taskrun.finished.0.2.0");
    assert_eq!(skipped.outcome.as_deref(), Some("skipped"));
}

#[test]
fn a_gitlab_row_is_identified_by_its_fact() {
    // Ids computed by hand from the fixtures: the object's id, its action or status and, where
    // those repeat, the payload's time in seconds (2013-12-03T17:23:34Z is 1386091414).
    let expected = [
        ("merge_request.json", "merge_request/99/open/1386091414"),
        ("issue.json", "issue/301/open/1386090943"),
        ("pipeline.json", "pipeline/31/success/1471015589"),
        // A job id above 2^32.
        ("job.json", "build/3580121225/success/1673358654"),
        ("deployment.json", "deployment/15/success"),
        ("release.json", "release/1.0.0/create"),
        (
            "push.json",
            "push/refs/heads/master/da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        ),
        (
            "tag_push.json",
            "tag_push/refs/tags/v1.0.0/82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
        ),
    ];
    for (file, id) in expected {
        assert_eq!(gitlab(file).event_id, id, "{file}");
    }
    // The same fact by another delivery (another webhook, a backfill): one id.
    let again = normalise(
        Origin::Gitlab,
        "Pipeline Hook",
        "another-delivery",
        read(&fixtures("gitlab").join("pipeline.json")).as_bytes(),
        INGESTED + 5,
    );
    assert_eq!(event(again).event_id, gitlab("pipeline.json").event_id);
    // A retried pipeline runs again later: another fact.
    let rerun = gitlab_edited("pipeline.json", |v| {
        v["object_attributes"]["finished_at"] = json!("2016-08-12 16:00:00 UTC");
    });
    assert_eq!(rerun.event_id, "pipeline/31/success/1471017600");
    // The API's times have milliseconds: the same second is the same fact.
    let api = gitlab_edited("pipeline.json", |v| {
        v["object_attributes"]["finished_at"] = json!("2016-08-12T15:26:29.417Z");
    });
    assert_eq!(api.event_id, gitlab("pipeline.json").event_id);
    // A merge happens once: its hook's `updated_at` and the API's `merged_at` are one fact.
    let merged = |time: &str| {
        gitlab_edited("merge_request.json", |v| {
            v["object_attributes"]["action"] = json!("merge");
            v["object_attributes"]["updated_at"] = json!(time);
        })
        .event_id
    };
    assert_eq!(merged("2013-12-04 10:00:00 UTC"), "merge_request/99/merge");
    assert_eq!(merged("2013-12-04T10:00:01.250Z"), "merge_request/99/merge");
    // Two updates in one second are two facts when they change different things.
    let update = |changes: Value| {
        gitlab_edited("issue.json", |v| {
            v["object_attributes"]["action"] = json!("update");
            v["changes"] = changes;
        })
        .event_id
    };
    let assigned = update(json!({"assignees": {"previous": [], "current": [{"id": 1}]}}));
    let labelled = update(json!({"labels": {"previous": [], "current": [{"title": "incident"}]}}));
    assert!(
        assigned.starts_with("issue/301/update/1386090943/"),
        "{assigned}"
    );
    assert_ne!(assigned, labelled);
    // Deleting a branch twice (made again in between) is two facts.
    let deleted = |before: &str| {
        gitlab_edited("push.json", |v| {
            v["after"] = json!("0000000000000000000000000000000000000000");
            v["before"] = json!(before);
        })
        .event_id
    };
    assert_ne!(
        deleted("1111111111111111111111111111111111111111"),
        deleted("2222222222222222222222222222222222222222")
    );
    // Updating a release is no single fact; nor is a merge request without a time.
    let updated = gitlab_edited("release.json", |v| v["action"] = json!("update"));
    assert_eq!(updated.event_id, DELIVERY);
    let timeless = gitlab_edited("merge_request.json", |v| {
        let a = v["object_attributes"].as_object_mut().unwrap();
        a.remove("created_at");
        a.remove("updated_at");
    });
    assert_eq!(timeless.event_id, DELIVERY);
}
