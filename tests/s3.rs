//! Every command on an S3 store, against a real S3-compatible server (moto) started on a free
//! port: import, demo history, SQL, DORA, compaction and streaming ingest with exactly-once
//! commits through conditional puts; and the same history on an `az://` store, against Azurite
//! (Microsoft's Azure Storage emulator).

mod support;

use std::time::Duration;

use cdlake_schemas::store::{Commit, Store};
use support::*;

fn sql(store: &str, env: &[(String, String)], query: &str) -> Vec<serde_json::Value> {
    let out = ok(&cdlake_env(
        &["sql", "--store", store, "--format", "json", query],
        env,
    ));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn dora(store: &str, env: &[(String, String)]) -> serde_json::Value {
    // A fixed window, so two runs a few seconds apart ask the same question.
    let to = chrono::Utc::now().date_naive() + chrono::Duration::days(2);
    let from = to - chrono::Duration::days(60);
    let (from, to) = (from.to_string(), to.to_string());
    let out = ok(&cdlake_env(
        &[
            "dora", "--store", store, "--from", &from, "--to", &to, "--by", "service", "--format",
            "json",
        ],
        env,
    ));
    serde_json::from_str(&out).unwrap()
}

#[tokio::test]
async fn conditional_puts_never_overwrite() {
    let s3 = S3::start("puts").await;
    let options = s3.options();
    let options: Vec<(&str, &str)> = options
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let store = Store::open_with_options(&s3.url("lake"), &options).unwrap();
    let path = "events/date=2026-11-28/x.parquet";
    assert_eq!(
        store.put_if_absent(path, b"first".to_vec()).await.unwrap(),
        Commit::Created
    );
    assert_eq!(
        store.put_if_absent(path, b"second".to_vec()).await.unwrap(),
        Commit::AlreadyExists
    );
    assert_eq!(store.get(path).await.unwrap().unwrap(), b"first");
    assert_eq!(store.list("events/").await.unwrap(), vec![path.to_string()]);
    // The prefix is honoured: nothing outside it.
    let root = Store::open_with_options(&s3.url(""), &options).unwrap();
    assert_eq!(root.list("").await.unwrap(), vec![format!("lake/{path}")]);
}

#[tokio::test]
async fn the_same_history_gives_the_same_answers_on_s3_and_on_disk_and_after_compaction() {
    let s3 = S3::start("history").await;
    same_history_as_on_disk(&s3.url("lake"), &s3.env(), &s3.options()).await;
}

/// `az://` against Azurite, Microsoft's Azure Storage emulator: the same commands and answers.
#[tokio::test]
async fn the_same_history_gives_the_same_answers_on_azure_blob_storage() {
    let azurite = Azurite::start("history").await;
    same_history_as_on_disk(&azurite.url("lake"), &azurite.env(), &azurite.options()).await;
}

/// A demo history on disk, imported into the object store `store`: the same counts, DORA report
/// and read models there, before and after compaction and a rebuild.
async fn same_history_as_on_disk(
    store: &str,
    env: &[(String, String)],
    options: &[(String, String)],
) {
    let env = env.to_vec();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    let local = local.to_str().unwrap();
    // A demo history on disk, exported as JSON Lines.
    ok(&cdlake_env(
        &[
            "demo",
            "--store",
            local,
            "--no-serve",
            "--events",
            "4000",
            "--days",
            "20",
            "--services",
            "4",
        ],
        &[],
    ));
    let payloads = sql(local, &[], "SELECT payload FROM events ORDER BY time");
    let lines: Vec<String> = payloads
        .iter()
        .map(|r| r["payload"].as_str().unwrap().replace('\n', " "))
        .collect();
    let n = lines.len();
    // In four files, so the import commits several files per partition.
    let mut files = Vec::new();
    for (i, chunk) in lines.chunks(n.div_ceil(4)).enumerate() {
        let f = dir.path().join(format!("part{i}.jsonl"));
        std::fs::write(&f, chunk.join("\n")).unwrap();
        files.push(f.to_str().unwrap().to_string());
    }
    let store = store.to_string();
    for f in &files {
        ok(&cdlake_env(&["import", "--store", &store, f], &env));
    }
    // Imported again: all duplicates, found by reading the identities back from S3.
    let again = ok(&cdlake_env(&["import", "--store", &store, &files[0]], &env));
    assert!(again.contains("imported 0,"), "{again}");

    let count = |store: &str, env: &[(String, String)]| {
        sql(
            store,
            env,
            "SELECT count(*) AS n, count(DISTINCT event_source || event_id) AS d FROM events",
        )[0]
        .clone()
    };
    let local_env: Vec<(String, String)> = Vec::new();
    assert_eq!(count(&store, &env), count(local, &local_env));
    assert_eq!(count(&store, &env)["n"], n);
    let local_report = dora(local, &local_env);
    let s3_report = dora(&store, &env);
    assert_eq!(s3_report, local_report);
    assert!(
        s3_report["deployment_frequency"]["deployments"]
            .as_u64()
            .unwrap()
            > 0
    );

    // Compaction in the object store: fewer files, the same answers.
    let options: Vec<(&str, &str)> = options
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let opened = Store::open_with_options(&store, &options).unwrap();
    let days = sql(
        &store,
        &env,
        "SELECT count(DISTINCT date) AS days FROM events",
    )[0]["days"]
        .as_u64()
        .unwrap() as usize;
    // Data files (the Delta log's own files aside).
    let data_files = || async {
        opened
            .list("events/")
            .await
            .unwrap()
            .iter()
            .filter(|p| cdlake_schemas::paths::DataFilePath::parse(p).is_some())
            .count()
    };
    let before = data_files().await;
    assert!(
        before > days,
        "several files in some partitions: {before} files, {days} days"
    );
    let report = ok(&cdlake_env(
        &[
            "compact",
            "--store",
            &store,
            "--json",
            "--compact-min-files",
            "2",
            "--compact-grace-secs",
            "0",
            "--retention-hours",
            "0",
        ],
        &env,
    ));
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    // Partitions that already had a single file are left alone; nothing was a duplicate.
    assert_eq!(report["rows_out"], report["rows_in"], "{report}");
    let after = data_files().await;
    assert_eq!(after, days, "one file per partition: {report}");
    assert_eq!(
        before - after,
        (report["files_in"].as_u64().unwrap() - report["files_out"].as_u64().unwrap()) as usize
    );
    assert_eq!(count(&store, &env)["n"], n);
    assert_eq!(dora(&store, &env), local_report);

    // The read models in the object store: built from it, then answering from it, the same.
    let runs = |store: &str, env: &[(String, String)]| {
        sql(
            store,
            env,
            // Rounded: a float sum depends on the order rows arrive in.
            "SELECT count(*) AS n, round(sum(duration_seconds), 3) AS d, count(outcome) AS o
             FROM pipeline_runs",
        )[0]
        .clone()
    };
    let local_runs = runs(local, &local_env);
    assert!(local_runs["n"].as_u64().unwrap() > 0, "{local_runs}");
    assert_eq!(runs(&store, &env), local_runs);
    let rebuilt = ok(&cdlake_env(&["rebuild", "--store", &store, "--json"], &env));
    let rebuilt: serde_json::Value = serde_json::from_str(&rebuilt).unwrap();
    assert!(rebuilt["built"].as_u64().unwrap() >= 1, "{rebuilt}");
    assert!(
        !opened
            .list(cdlake_query::read_model::PREFIX)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(dora(&store, &env), local_report);
    assert!(
        !opened
            .list(&cdlake_query::read_model::Model::RunEvents.prefix())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(runs(&store, &env), local_runs);
}

#[tokio::test]
async fn streaming_ingest_commits_to_s3_exactly_once_across_a_crash() {
    let s3 = S3::start("stream").await;
    let env = s3.env();
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let url = nats.url();
    let store = s3.url("lake");
    let receiver = Service::spawn(&["receive", "--nats", &url, "--listen", "127.0.0.1:0"]);
    let ingest_args = |max_rows: &'static str, max_age_ms: &'static str| {
        [
            "ingest",
            "--store",
            store.as_str(),
            "--nats",
            url.as_str(),
            "--metrics-listen",
            "127.0.0.1:0",
            "--max-rows",
            max_rows,
            "--max-age-ms",
            max_age_ms,
        ]
        .map(str::to_string)
    };
    let spawn = |args: [String; 11]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Service::spawn_env(&args, &env_ref)
    };
    // The first ingester commits every 100 rows and never by age: of the first 260 events it
    // commits 200 and holds 60, received and unacknowledged, when it is killed.
    let mut ingester = spawn(ingest_args("100", "3600000"));
    let client = reqwest::Client::new();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let total = 600u64;
    let mut held = 0;
    let mut redelivered_expected = 0;
    for batch in 0..(total / 20) {
        let body: Vec<serde_json::Value> = (batch * 20..batch * 20 + 20)
            .map(|i| serde_json::from_str(&pipeline_event(i, 1 + (i % 3) as u32, "")).unwrap())
            .collect();
        let resp = client
            .post(receiver.url("/api/v1/events"))
            .header("content-type", "application/cloudevents-batch+json")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
        if batch == 12 {
            let sent = (batch + 1) * 20;
            // The broker's view: everything delivered, some of it not acknowledged; and the
            // ingester's own: it received all and acknowledged only what it committed.
            let holding = eventually(Duration::from_secs(60), || async {
                let received = ingester.metric("cdlake_received_total").await;
                let acked = ingester.metric("cdlake_acked_total").await;
                match consumer_backlog(&js).await {
                    Some((0, unacked)) => {
                        received == sent as f64
                            && acked >= 100.0
                            && unacked > 0
                            && unacked as f64 == received - acked
                    }
                    _ => false,
                }
            })
            .await;
            let backlog = consumer_backlog(&js).await;
            assert!(
                holding,
                "the ingester did not hold unacknowledged work: backlog {backlog:?}\n{}",
                ingester.log()
            );
            held = backlog.map_or(0, |(_, unacked)| unacked);
            redelivered_expected = held as u64;
            ingester.kill9();
            ingester = spawn(ingest_args("50000", "300"));
        }
    }
    let options = s3.options();
    let options: Vec<(&str, &str)> = options
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let _ = Store::open_with_options(&store, &options).unwrap();
    // The held messages come back after JetStream's ack wait (30 s).
    let counted = eventually(Duration::from_secs(120), || {
        let env = env.clone();
        let store = store.clone();
        async move {
            let rows = sql(&store, &env, "SELECT count(*) AS n FROM events");
            rows[0]["n"].as_u64() == Some(total)
        }
    })
    .await;
    let rows = sql(
        &store,
        &env,
        "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events",
    );
    let redelivered = ingester.metric("cdlake_redelivered_total").await;
    println!(
        "stored {rows:?} of {total} after a kill -9 of the ingester holding {held} unacknowledged messages; {redelivered} redelivered"
    );
    assert!(counted, "{rows:?}\n{}", ingester.log());
    assert_eq!(rows[0]["d"].as_u64(), Some(total));
    assert!(
        redelivered >= redelivered_expected as f64,
        "the {held} messages the killed ingester held were redelivered: {redelivered}"
    );
    ingester.terminate();
}
