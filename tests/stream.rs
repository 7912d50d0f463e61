//! The streaming path with a real `nats-server`: `cdlake receive` publishes to JetStream,
//! `cdlake ingest` commits Parquet and acknowledges only after the commit. Each test prints
//! the figures it rests on.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use support::*;

async fn js(nats: &Nats) -> jetstream::Context {
    let client = async_nats::connect(nats.url())
        .await
        .expect("connect to nats");
    let js = jetstream::new(client);
    cdlake_ingest::stream::ensure_stream(&js)
        .await
        .expect("create the stream");
    js
}

/// A temporary directory holding a store's path and a running `nats-server` with the stream;
/// the directory lives as long as the first value.
async fn broker() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Nats,
    jetstream::Context,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let nats = Nats::start(&dir.path().join("nats"));
    let js = js(&nats).await;
    (dir, store, nats, js)
}

/// Publish CDEvents the way `cdlake receive` does, awaiting every ack.
async fn publish(js: &jetstream::Context, bodies: Vec<(String, String)>) {
    for chunk in bodies.chunks(2_000) {
        let mut acks = Vec::new();
        for (subject, body) in chunk {
            let mut h = HeaderMap::new();
            h.insert("Cdlake-Origin", "cdevents");
            if let Ok(e) = cdlake_schemas::cdevents::parse(
                body.as_bytes(),
                cdlake_schemas::Origin::CdEvents,
                0,
            ) {
                h.insert("Nats-Msg-Id", cdlake_ingest::stream::message_id(&e));
            }
            acks.push(
                js.publish_with_headers(subject.clone(), h, Bytes::from(body.clone()))
                    .await
                    .expect("publish"),
            );
        }
        for ack in acks {
            ack.await.expect("publish ack");
        }
    }
}

fn ingest(store: &std::path::Path, nats: &Nats, extra: &[&str]) -> Service {
    let store = store.to_str().unwrap().to_string();
    let url = nats.url();
    let mut args = vec![
        "ingest",
        "--store",
        &store,
        "--nats",
        &url,
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Service::spawn(&args)
}

async fn drained(js: &jetstream::Context, timeout: Duration) -> bool {
    eventually(timeout, || async {
        matches!(consumer_backlog(js).await, Some((0, 0)))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_ingesters_lose_nothing_and_store_nothing_twice() {
    const EVENTS: u64 = 200_000;
    let (_dir, store, nats, js) = broker().await;
    let bodies: Vec<(String, String)> = (0..EVENTS)
        .map(|i| {
            (
                "cdlake.events.cdevents.pipelinerun.finished".to_string(),
                pipeline_event(i, 1 + (i % 5) as u32, ""),
            )
        })
        .collect();
    publish(&js, bodies).await;

    // Kill -9 three times: after a commit, after another, and right after start-up, each
    // time while the ingester holds messages it received and has not acknowledged.
    let mut kills = 0;
    let mut held_at_kills = Vec::new();
    for threshold in [20_000.0, 20_000.0, 0.0] {
        let mut ingester = ingest(&store, &nats, &["--max-rows", "15000"]);
        if threshold > 0.0 {
            assert!(
                eventually(Duration::from_secs(120), || async {
                    ingester.metric("cdlake_committed_events_total").await >= threshold
                })
                .await,
                "no commit:\n{}",
                ingester.log()
            );
        }
        assert!(
            eventually(Duration::from_secs(60), || async {
                unacked(&ingester).await > 0.0
            })
            .await,
            "the ingester never held unacknowledged messages:\n{}",
            ingester.log()
        );
        held_at_kills.push(unacked(&ingester).await);
        ingester.kill9();
        kills += 1;
    }
    let mut ingester = ingest(&store, &nats, &[]);
    assert!(
        drained(&js, Duration::from_secs(300)).await,
        "backlog not drained:\n{}",
        ingester.log()
    );
    let redelivered = ingester.metric("cdlake_redelivered_total").await;
    ingester.terminate();

    let stored = sql_u64(&store, "SELECT count(*) AS n FROM events");
    let distinct = sql_u64(
        &store,
        "SELECT count(DISTINCT concat(event_source, '/', event_id)) AS n FROM events",
    );
    eprintln!(
        "published {EVENTS}, kill -9 x{kills} holding {held_at_kills:?} unacked, redelivered after restarts {redelivered}, stored {stored}, distinct {distinct}"
    );
    // What the last killed ingester held comes back to the survivor (after the ack wait).
    assert!(
        redelivered > 0.0,
        "nothing was redelivered: the kills lost no unacknowledged work to test"
    );
    assert_eq!(stored, EVENTS, "stored = published");
    assert_eq!(distinct, stored, "no duplicates");
}

/// Messages an ingester received and has not acknowledged (its own counters).
async fn unacked(ingester: &Service) -> f64 {
    ingester.metric("cdlake_received_total").await - ingester.metric("cdlake_acked_total").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut nats = Nats::start(&dir.path().join("nats"));
    let url = nats.url();
    let receiver = Service::spawn(&["receive", "--nats", &url, "--listen", "127.0.0.1:0"]);
    let ingester = ingest(&store, &nats, &["--max-age-ms", "500"]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    // One request of 10 events: whether `cdlake receive` acknowledged it (2xx); anything
    // else than a 503 is a test failure.
    let post = |b: u64| {
        let client = client.clone();
        let url = receiver.url("/api/v1/events");
        async move {
            let batch: Vec<String> = (0..10).map(|k| pipeline_event(b * 10 + k, 3, "")).collect();
            let resp = client
                .post(url)
                .header("content-type", "application/cloudevents-batch+json")
                .body(format!("[{}]", batch.join(",")))
                .send()
                .await;
            match resp {
                Ok(r) if r.status().is_success() => true,
                Ok(r) => {
                    let status = r.status().as_u16();
                    assert_eq!(status, 503, "{}", r.text().await.unwrap_or_default());
                    false
                }
                Err(_) => false,
            }
        }
    };
    let ids = |b: u64| (0..10).map(move |k| format!("e2e-{}", b * 10 + k));

    let mut acked = BTreeSet::new();
    let mut acked_after_restart = BTreeSet::new();
    let mut refused = 0u32;
    let mut b = 0u64;
    // Before the outage every request is acknowledged.
    for _ in 0..100 {
        assert!(post(b).await, "refused with the broker up (batch {b})");
        acked.extend(ids(b));
        b += 1;
    }
    // The broker is down: requests are refused (503 or no answer), never acknowledged.
    nats.stop();
    for _ in 0..5 {
        if post(b).await {
            acked.extend(ids(b));
        } else {
            refused += 1;
        }
        b += 1;
    }
    nats.restart();
    // `cdlake receive` recovers by itself: within a minute a request is acknowledged again...
    let restarted = b;
    let recovered = eventually(Duration::from_secs(60), || {
        let this = b;
        b += 1;
        post(this)
    })
    .await;
    assert!(
        recovered,
        "cdlake receive never acknowledged a request after the broker came back:\n{}",
        receiver.log()
    );
    // ...and from then on every one.
    let recovered_at = b - 1;
    for batch in restarted..b {
        // Only the last probe is known to be acknowledged; earlier ones were refused.
        if batch == recovered_at {
            acked_after_restart.extend(ids(batch));
        } else {
            refused += 1;
        }
    }
    for _ in 0..100 {
        assert!(
            post(b).await,
            "refused after recovering (batch {b}):\n{}",
            receiver.log()
        );
        acked_after_restart.extend(ids(b));
        b += 1;
    }
    acked.extend(acked_after_restart.iter().cloned());
    assert!(refused > 0, "the outage was not noticed");
    let js = js(&nats).await;
    assert!(
        drained(&js, Duration::from_secs(120)).await,
        "backlog not drained:\n{}",
        ingester.log()
    );
    let rows = sql_json(&store, "SELECT event_id FROM events");
    let stored: Vec<String> = rows
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_string())
        .collect();
    let unique: BTreeSet<String> = stored.iter().cloned().collect();
    let missing: Vec<&String> = acked.difference(&unique).collect();
    let stored_after_restart = acked_after_restart.intersection(&unique).count();
    eprintln!(
        "requests {b}, acked events {} ({} after the restart), refused requests {refused}, stored {} ({stored_after_restart} of those acked after the restart), missing {}",
        acked.len(),
        acked_after_restart.len(),
        stored.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
    assert_eq!(
        stored_after_restart,
        acked_after_restart.len(),
        "events published after the restart are stored"
    );
    assert_eq!(unique.len(), stored.len(), "nothing stored twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_and_do_not_stall_the_stream() {
    let (_dir, store, nats, js) = broker().await;
    let mut bodies = vec![
        ("cdlake.events.cdevents.x.y".to_string(), "{\"context\": {not json".to_string()),
        (
            "cdlake.events.cdevents.x.y".to_string(),
            r#"{"context":{"version":"0.4.1","id":"p1","source":"/x","type":"com.example.build.done","timestamp":"2026-03-01T00:00:00Z"},"subject":{"id":"x"}}"#.to_string(),
        ),
    ];
    bodies.extend((0..100).map(|i| {
        (
            "cdlake.events.cdevents.pipelinerun.finished".to_string(),
            pipeline_event(i, 2, ""),
        )
    }));
    publish(&js, bodies).await;
    let mut ingester = ingest(&store, &nats, &["--max-age-ms", "300"]);
    assert!(
        drained(&js, Duration::from_secs(60)).await,
        "stalled:\n{}",
        ingester.log()
    );
    ingester.terminate();
    assert_eq!(sql_u64(&store, "SELECT count(*) AS n FROM events"), 100);
    let dead = sql_json(
        &store,
        "SELECT reason, origin, source FROM dead_letters ORDER BY reason",
    );
    eprintln!("dead letters: {dead:?}");
    assert_eq!(dead.len(), 2);
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap()
            .contains("is not a CDEvents type"),
        "{dead:?}"
    );
    assert!(
        dead[1]["reason"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON"),
        "{dead:?}"
    );
    assert_eq!(dead[0]["source"], "nats:cdlake.events.cdevents.x.y");
}

/// Unmounts the tmpfs when the test ends, whatever happens.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_acknowledges_nothing_and_resumes_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&store)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        mounted,
        "mounting a small tmpfs needs root (scripts/test runs as root in CI)"
    );
    let _mount = Mount(store.clone());
    let nats = Nats::start(&dir.path().join("nats"));
    let js = js(&nats).await;
    // ~2 MB of incompressible payload: far more than 256 kB.
    let pad = |i: u64| {
        use sha2::Digest;
        (0..32)
            .map(|k| hex::encode(sha2::Sha256::digest(format!("{i}/{k}"))))
            .collect::<String>()
    };
    let bodies: Vec<(String, String)> = (0..1000)
        .map(|i| {
            (
                "cdlake.events.cdevents.pipelinerun.finished".to_string(),
                pipeline_event(i, 4, &pad(i)),
            )
        })
        .collect();
    publish(&js, bodies).await;
    let ingester = ingest(&store, &nats, &["--max-age-ms", "300"]);
    assert!(
        eventually(Duration::from_secs(60), || async {
            ingester.metric("cdlake_store_errors_total").await >= 1.0
        })
        .await,
        "no store error reported:\n{}",
        ingester.log()
    );
    let acked_while_full = ingester.metric("cdlake_acked_total").await;
    let (pending, ack_pending) = consumer_backlog(&js).await.unwrap();
    let parquet: Vec<_> = walk(&store)
        .into_iter()
        .filter(|p| p.ends_with(".parquet"))
        .collect();
    eprintln!(
        "while full: acked {acked_while_full}, consumer pending {pending} + unacked {ack_pending}, .parquet files {}",
        parquet.len()
    );
    assert_eq!(acked_while_full, 0.0, "nothing acked while the store fails");
    assert_eq!(pending as usize + ack_pending, 1000);
    assert!(parquet.is_empty(), "no partial file visible: {parquet:?}");
    assert!(
        ingester.log().contains("No space left on device")
            || ingester.log().contains("os error 28"),
        "the error names the cause:\n{}",
        ingester.log()
    );

    let grown = std::process::Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&store)
        .status()
        .unwrap();
    assert!(grown.success());
    assert!(
        drained(&js, Duration::from_secs(120)).await,
        "did not resume:\n{}",
        ingester.log()
    );
    drop(ingester);
    let stored = sql_u64(&store, "SELECT count(*) AS n FROM events");
    eprintln!("after space returned: stored {stored} of 1000");
    assert_eq!(stored, 1000);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

/// `--max-buffer-mb` bounds what an ingester holds: with the age and row limits out of reach,
/// each time the buffered payloads reach the bound they are committed and only then
/// acknowledged; what stays under the bound waits for the next commit (here the graceful stop,
/// which commits it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buffer_bound_commits_what_it_holds_and_the_rest_waits_for_the_next_commit() {
    const EVENTS: u64 = 700;
    let (_dir, store, nats, js) = broker().await;
    // About 5.3 KB each: a 1 MiB bound holds about 200.
    let pad = "x".repeat(5_000);
    let bodies = (0..EVENTS)
        .map(|i| {
            (
                "cdlake.events.cdevents.pipelinerun.finished".to_string(),
                pipeline_event(i, 3, &pad),
            )
        })
        .collect();
    publish(&js, bodies).await;
    let mut ingester = ingest(
        &store,
        &nats,
        &[
            "--max-age-ms",
            "3600000",
            "--max-rows",
            "1000000",
            "--max-buffer-mb",
            "1",
        ],
    );
    // Wait until the acknowledgements stop growing: every bound-triggered commit is done.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut last = -1.0;
    let acked = loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = ingester.metric("cdlake_acked_total").await;
        if now > 0.0 && now == last {
            break now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the acknowledgements never settled (last {now}):\n{}",
            ingester.log()
        );
        last = now;
    };
    let buffered = ingester.metric("cdlake_buffer_rows").await;
    eprintln!("acked {acked}, buffered {buffered} of {EVENTS}");
    assert!(
        acked >= 400.0,
        "the 1 MiB bound committed only {acked} of {EVENTS} ~5 KB events (two bounds hold ~400)"
    );
    assert!(
        acked <= (EVENTS - 50) as f64 && buffered >= 50.0,
        "the tail under the bound was committed without a reason: acked {acked}, buffered {buffered}"
    );
    assert_eq!(
        acked + buffered,
        EVENTS as f64,
        "every event acked or buffered"
    );
    ingester.terminate();
    assert_eq!(
        sql_u64(&store, "SELECT count(*) AS n FROM events"),
        EVENTS,
        "the graceful stop commits the tail"
    );
}

/// Progress acks: events that wait in the buffer longer than the consumer's ack wait (30 s)
/// are kept alive, not redelivered, and acknowledged once committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_buffered_past_the_ack_wait_are_kept_alive_by_progress_acks() {
    const EVENTS: u64 = 100;
    let (_dir, store, nats, js) = broker().await;
    let bodies = (0..EVENTS)
        .map(|i| {
            (
                "cdlake.events.cdevents.pipelinerun.finished".to_string(),
                pipeline_event(i, 4, ""),
            )
        })
        .collect();
    publish(&js, bodies).await;
    // Commit only after 45 s: 15 s past the 30 s ack wait.
    let started = std::time::Instant::now();
    let mut ingester = ingest(&store, &nats, &["--max-age-ms", "45000"]);
    assert!(
        drained(&js, Duration::from_secs(120)).await,
        "never committed:\n{}",
        ingester.log()
    );
    let waited = started.elapsed();
    let redelivered = ingester.metric("cdlake_redelivered_total").await;
    let acked = ingester.metric("cdlake_acked_total").await;
    eprintln!("drained after {waited:?}: acked {acked}, redelivered {redelivered}");
    assert!(
        waited > Duration::from_secs(30),
        "committed before the ack wait passed ({waited:?}): nothing to keep alive"
    );
    assert_eq!(redelivered, 0.0, "the ack wait lapsed:\n{}", ingester.log());
    assert_eq!(acked, EVENTS as f64);
    ingester.terminate();
    assert_eq!(sql_u64(&store, "SELECT count(*) AS n FROM events"), EVENTS);
}
