use std::path::PathBuf;
use std::sync::Arc;

use cdlake_schemas::Origin;
use cdlake_schemas::lake::TableLog;

use super::*;
use crate::sources::{Normalised, Rules};
use crate::test_support::commit_events_file;

const INGESTED: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap()).unwrap();
    (dir, store)
}

fn fixture(path: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures")
        .join(path);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn row(normalised: Normalised) -> Event {
    match normalised {
        Normalised::Event(e) => *e,
        other => panic!("not a row: {other:?}"),
    }
}

/// Every row of the table, by file.
async fn table(store: &Store, log: &TableLog) -> BTreeMap<String, Vec<Event>> {
    let index = log.refresh().await.unwrap();
    let mut out = BTreeMap::new();
    for f in index.all() {
        let path = f.path.to_string();
        let bytes = store.get(&path).await.unwrap().unwrap();
        out.insert(path.clone(), read_events(bytes, &path).unwrap());
    }
    out
}

#[tokio::test]
async fn renormalising_gives_old_rows_their_fact_identity_once_and_moves_nothing_twice() {
    let (_dir, store) = store();
    let log = TableLog::open(&store, Table::Events).await.unwrap();

    // A pull request closed, as today's normaliser stores it (identified by its fact) ...
    let closed = fixture("github/pull_request/closed.payload.json");
    let fact =
        row(
            crate::sources::github::normalise("pull_request", "d-2", &closed, INGESTED + 60)
                .unwrap(),
        );
    assert!(
        fact.event_id.starts_with("pull_request/"),
        "{}",
        fact.event_id
    );
    // ... and as it was stored before: under its delivery id, ingested first.
    let old = Event {
        event_id: "d-1".into(),
        ingested_at: INGESTED,
        ..fact.clone()
    };
    // A GitLab pipeline stored under its delivery id.
    let pipeline = row(crate::sources::gitlab::normalise(
        "Pipeline Hook",
        "gl-1",
        &fixture("gitlab/pipeline.json"),
        INGESTED,
    )
    .unwrap());
    let old_pipeline = Event {
        event_id: "gl-1".into(),
        ..pipeline.clone()
    };
    // A GitLab job stored by a normaliser that missed its time: on the day it was ingested.
    let job = row(crate::sources::gitlab::normalise(
        "Job Hook",
        "gl-2",
        &fixture("gitlab/job.json"),
        INGESTED,
    )
    .unwrap());
    let old_job = Event {
        event_id: "gl-2".into(),
        time: INGESTED + 7,
        ..job.clone()
    };
    // Rows renormalising leaves alone: a CDEvent (already what its payload says), a row of a
    // source that splits deliveries, and a GitHub payload today's normaliser rejects.
    let cdevent = cdlake_schemas::cdevents::parse(
        &fixture("cdevents/v0.4.1/conformance/pipelinerun_finished.json"),
        Origin::CdEvents,
        INGESTED,
    )
    .unwrap();
    let pagerduty = Event {
        event_id: "pd-1".into(),
        origin: "pagerduty".into(),
        payload: "{}".into(),
        ..old.clone()
    };
    let rejected = Event {
        event_id: "d-3".into(),
        event_type: "github.pull_request.closed".into(),
        payload: r#"{"action":"closed"}"#.into(),
        ..old.clone()
    };
    assert!(matches!(
        crate::sources::renormalise(&rejected, &Rules::default()),
        Some(Err(_))
    ));

    let pr_day = fact.date();
    let old_file = commit_events_file(
        &store,
        &log,
        "old",
        vec![old.clone(), pagerduty.clone(), rejected.clone()],
    )
    .await;
    let fact_file = commit_events_file(&store, &log, "backfill", vec![fact.clone()]).await;
    let cdevent_file = commit_events_file(&store, &log, "cdevent", vec![cdevent.clone()]).await;
    commit_events_file(&store, &log, "gitlab", vec![old_pipeline.clone()]).await;
    commit_events_file(&store, &log, "late", vec![old_job.clone()]).await;
    let before = log.refresh().await.unwrap().version;

    let mut calls = Vec::new();
    let report = renormalise(
        &store,
        &log,
        None,
        &Rules::default(),
        &EncodeOptions::default(),
        |d, n| calls.push((d, n)),
    )
    .await
    .unwrap();
    // The job's own day has no file yet.
    let partitions = [pr_day, pipeline.date(), old_job.date(), cdevent.date()]
        .into_iter()
        .collect::<HashSet<_>>()
        .len();
    assert_eq!(
        report,
        RenormaliseReport {
            partitions,
            // The pull request's day, the pipeline's and the day the job was stored on.
            rewritten: 3,
            rows: 7,
            changed: 3,
            moved: 1,
            duplicates: 1,
            rejected: 1,
            busy: 0,
        },
        "{calls:?}"
    );
    assert_eq!(calls.last(), Some(&(partitions, partitions)));

    let after = table(&store, &log).await;
    let rows: Vec<&Event> = after.values().flatten().collect();
    // One fact, one row: the row already stored under the fact's identity stays.
    let prs: Vec<&&Event> = rows
        .iter()
        .filter(|e| e.event_id == fact.event_id)
        .collect();
    assert_eq!(prs.len(), 1);
    assert_eq!(*prs[0], &fact);
    assert!(!rows.iter().any(|e| e.event_id == "d-1"));
    // The backfilled row's file and the CDEvent's stay; the old file is replaced.
    assert!(after.contains_key(&fact_file) && after.contains_key(&cdevent_file));
    assert!(!after.contains_key(&old_file));
    // The GitLab rows have their facts, the job on its own day again.
    assert!(rows.contains(&&pipeline));
    assert!(rows.contains(&&job));
    let job_file = after
        .iter()
        .find(|(_, rows)| rows.contains(&job))
        .map(|(path, _)| path.clone())
        .unwrap();
    assert!(
        job_file.contains(&format!("date={}/{OUTPUT_PREFIX}", job.date())),
        "{job_file}"
    );
    // What renormalising leaves alone is kept byte for byte.
    for kept in [&cdevent, &pagerduty, &rejected] {
        assert!(rows.contains(&kept), "{kept:?}");
    }
    assert_eq!(rows.len(), 6);

    // Readers of new rows (a live tail) are not shown the rewritten ones again.
    let added: Vec<_> = log.added_since(before).await.unwrap();
    assert!(!added.is_empty());
    assert!(added.iter().all(|(_, files)| files.is_empty()), "{added:?}");

    // Again: every row normalises to itself, nothing is written.
    let version = log.refresh().await.unwrap().version;
    let again = renormalise(
        &store,
        &log,
        None,
        &Rules::default(),
        &EncodeOptions::default(),
        |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!((again.changed, again.rewritten, again.rows), (0, 0, 6));
    assert_eq!(log.refresh().await.unwrap().version, version);
    assert_eq!(table(&store, &log).await, after);

    // `from` skips the days before it.
    let later = renormalise(
        &store,
        &log,
        Some(old_job.date()),
        &Rules::default(),
        &EncodeOptions::default(),
        |_, _| {},
    )
    .await
    .unwrap();
    assert!(later.partitions < partitions, "{later:?}");
}

/// A commit that lost a race is made on the newer version only when the files it replaces are
/// all still there and nothing added since holds one of its rows' identities.
#[tokio::test]
async fn a_rewrite_that_lost_a_race_commits_only_when_nothing_it_writes_was_added() {
    let (_dir, store) = store();
    let log = TableLog::open(&store, Table::Events).await.unwrap();
    let row = |id: &str| Event {
        event_id: id.into(),
        event_source: "test".into(),
        event_type: "dev.cdevents.service.deployed.0.2.0".into(),
        origin: "cdevents".into(),
        time: INGESTED,
        ingested_at: INGESTED,
        subject_id: "svc".into(),
        payload: "{}".into(),
        ..Default::default()
    };
    let day = row("a").date();
    commit_events_file(&store, &log, "a", vec![row("a")]).await;
    let read = log.refresh().await.unwrap();
    let touched = read.files(day).to_vec();
    // The rewrite would write `a` again under the identity of `x`.
    let output: BTreeMap<NaiveDate, HashSet<u128>> =
        [(day, [row("x").identity_key()].into_iter().collect())].into();
    let valid = |now: Arc<FileIndex>| {
        let (store, read, touched, output) = (&store, &read, &touched, &output);
        async move {
            still_valid(store, read, &now, day, touched, output)
                .await
                .unwrap()
        }
    };
    // Another writer adds other rows: still valid on the new version.
    commit_events_file(&store, &log, "b", vec![row("b")]).await;
    assert!(valid(log.refresh().await.unwrap()).await);
    // It adds `x`: the rewrite would store `x` twice.
    commit_events_file(&store, &log, "x", vec![row("x")]).await;
    assert!(!valid(log.refresh().await.unwrap()).await);
    // A compaction replaced the file it rewrites: done again from the new files.
    let (_dir2, store2) = self::store();
    let log2 = TableLog::open(&store2, Table::Events).await.unwrap();
    commit_events_file(&store2, &log2, "a", vec![row("a")]).await;
    let read2 = log2.refresh().await.unwrap();
    let touched2 = read2.files(day).to_vec();
    let index = log2.refresh().await.unwrap();
    log2.commit(Change {
        read_version: index.version,
        kind: CommitKind::Compact,
        add: Vec::new(),
        remove: touched2.clone(),
    })
    .await
    .unwrap();
    let now2 = log2.refresh().await.unwrap();
    assert!(
        !still_valid(&store2, &read2, &now2, day, &touched2, &output)
            .await
            .unwrap()
    );
}

/// `cdlake rebuild --renormalise` applies today's `[[services]]` rules: a push whose files a
/// new rule claims, and an incident of a tool no normaliser makes again, take the rule's
/// service; without the rules the push is again what its normaliser says, and the incident
/// keeps what it was stored with.
#[tokio::test]
async fn renormalising_applies_todays_service_rules() {
    use cdlake_schemas::services::ServiceRule;
    let (_dir, store) = store();
    let log = TableLog::open(&store, Table::Events).await.unwrap();
    let body = br#"{"ref":"refs/heads/feat","created":true,"after":"a100000000000000000000000000000000000001",
        "repository":{"full_name":"acme/mono","default_branch":"main"},
        "commits":[{"id":"a100000000000000000000000000000000000001","timestamp":"2026-01-01T08:00:00Z","distinct":true,
                    "added":["services/billing/a.rs"],"modified":[],"removed":[]}],
        "head_commit":{"timestamp":"2026-01-01T08:00:00Z"}}"#;
    let push = row(crate::sources::github::normalise("push", "d-1", body, INGESTED).unwrap());
    assert_eq!(push.service, None);
    let incident = Event {
        event_id: "pd-1".into(),
        origin: "pagerduty".into(),
        subject: "incident".into(),
        environment: Some("payments-prod".into()),
        service: Some("PX12".into()),
        payload: "{}".into(),
        ..push.clone()
    };
    commit_events_file(&store, &log, "old", vec![push.clone(), incident.clone()]).await;
    let rules = Rules {
        services: vec![
            ServiceRule {
                service: "billing".into(),
                repository: Some("acme/mono".into()),
                paths: vec!["services/billing/**".into()],
                ..ServiceRule::default()
            },
            ServiceRule {
                service: "payments".into(),
                environment_prefix: Some("payments-".into()),
                ..ServiceRule::default()
            },
        ],
        ..Rules::default()
    };
    // With the rules, then without them: the push is its normaliser's again; the incident,
    // which no normaliser makes again, keeps "payments".
    for (rules, changed, push_service) in [(rules, 2, Some("billing")), (Rules::default(), 1, None)]
    {
        let report = renormalise(
            &store,
            &log,
            None,
            &rules,
            &EncodeOptions::default(),
            |_, _| {},
        )
        .await
        .unwrap();
        assert_eq!(report.changed, changed, "{report:?}");
        let mut got: Vec<(String, Option<String>)> = table(&store, &log)
            .await
            .into_values()
            .flatten()
            .map(|e| (e.event_id, e.service))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("pd-1".into(), Some("payments".into())),
                (push.event_id.clone(), push_service.map(str::to_string)),
            ]
        );
    }
}
