//! Promises of the README that no other test covers, each with real processes: a 2xx from
//! `cdlake standalone` means committed, also across a kill -9; `--production` and the `[teams]`
//! of `cdlake.toml` shape the report through the CLI, the flag winning over the file; lead time
//! from real GitHub webhooks to the report and `lead_time_breakdown`; `[[services]]` rules
//! splitting a monorepo, from real GitHub webhooks to the report; a stop with a tail open.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;

/// A GitHub fixture's body.
fn github_fixture(path: &str) -> serde_json::Value {
    let path = shared().join("fixtures/github").join(path);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The merge commit of the pull request of [`merged_pull_request`].
const MERGE: &str = "1111111111111111111111111111111111111111";

/// Hello-World#2 (the fixture) opened at 15:20:33, merged at 16:00:00 as [`MERGE`], and a
/// successful deployment_status of [`MERGE`] to production at 18:00:00.
fn merged_pull_request() -> [serde_json::Value; 3] {
    let opened = github_fixture("pull_request/opened.payload.json");
    let mut closed = github_fixture("pull_request/closed.payload.json");
    closed["pull_request"]["merged"] = true.into();
    closed["pull_request"]["merged_at"] = "2019-05-15T16:00:00Z".into();
    closed["pull_request"]["closed_at"] = "2019-05-15T16:00:00Z".into();
    closed["pull_request"]["merge_commit_sha"] = MERGE.into();
    let mut deployment = github_fixture("deployment_status/payload.json");
    deployment["deployment"]["sha"] = MERGE.into();
    deployment["deployment_status"]["created_at"] = "2019-05-15T18:00:00Z".into();
    deployment["deployment_status"]["updated_at"] = "2019-05-15T18:00:00Z".into();
    [opened, closed, deployment]
}

/// Deliver each `(event, body)` to the service's GitHub receiver, in order; each must be
/// accepted.
async fn post_github(svc: &Service, deliveries: Vec<(&str, serde_json::Value)>) {
    let client = reqwest::Client::new();
    for (n, (kind, body)) in deliveries.into_iter().enumerate() {
        let resp = client
            .post(svc.url("/webhooks/github"))
            .header("x-github-event", kind)
            .header("x-github-delivery", format!("delivery-{n}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }
}

/// The report of `GET /api/v1/dora` with `query`.
async fn dora_api(svc: &Service, query: &str) -> serde_json::Value {
    let resp = reqwest::get(svc.url(&format!("/api/v1/dora?{query}")))
        .await
        .unwrap();
    assert!(resp.status().is_success());
    resp.json().await.unwrap()
}

/// Requests in flight when `cdlake standalone` is killed -9, five times over: every event
/// whose request was answered 2xx is in the store afterwards, once; nothing answered otherwise
/// is required.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_from_standalone_means_committed_even_across_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    // Filler, so that commits take long enough for a kill to land during one.
    let pad = "x".repeat(2_000);
    for round in 0..5u64 {
        let mut svc = standalone(&store, &[]);
        let url = svc.url("/api/v1/events");
        let before = acked.lock().unwrap().len();
        // Four clients posting batches of 20 events as fast as they are answered.
        let senders: Vec<_> = (0..4u64)
            .map(|c| {
                let (client, url, acked, pad) =
                    (client.clone(), url.clone(), acked.clone(), pad.clone());
                tokio::spawn(async move {
                    for b in 0u64.. {
                        let first = round * 100_000_000 + c * 1_000_000 + b * 20;
                        let batch: Vec<String> = (first..first + 20)
                            .map(|i| pipeline_event(i, 3, &pad))
                            .collect();
                        let resp = client
                            .post(&url)
                            .header("content-type", "application/cloudevents-batch+json")
                            .body(format!("[{}]", batch.join(",")))
                            .send()
                            .await;
                        match resp {
                            Ok(r) if r.status().is_success() => {
                                let mut acked = acked.lock().unwrap();
                                acked.extend((first..first + 20).map(|i| format!("e2e-{i}")));
                            }
                            // The service is gone: stop.
                            _ => return,
                        }
                    }
                })
            })
            .collect();
        // Kill it mid-stream, once a few hundred more events are acknowledged.
        assert!(
            eventually(Duration::from_secs(60), || {
                let n = acked.lock().unwrap().len();
                async move { n >= before + 400 + 37 * round as usize }
            })
            .await,
            "too few acknowledgements: {}\n{}",
            acked.lock().unwrap().len(),
            svc.log()
        );
        svc.kill9();
        for s in senders {
            s.await.unwrap();
        }
    }
    let acked = acked.lock().unwrap().clone();

    let rows = sql_json(&store, "SELECT event_id FROM events");
    let stored: Vec<String> = rows
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_string())
        .collect();
    let unique: BTreeSet<String> = stored.iter().cloned().collect();
    let missing: Vec<&String> = acked.difference(&unique).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events are not stored: {:?}",
        missing.len(),
        acked.len(),
        missing.iter().take(10).collect::<Vec<_>>()
    );
    assert_eq!(unique.len(), stored.len(), "nothing stored twice");

    // A restarted service answers from the same store, and a redelivery of an acknowledged
    // batch is answered as duplicates, not stored again.
    let svc = standalone(&store, &[]);
    let again: Vec<String> = (0..5).map(|i| pipeline_event(i, 3, "")).collect();
    let resp = client
        .post(svc.url("/api/v1/events"))
        .header("content-type", "application/cloudevents-batch+json")
        .body(format!("[{}]", again.join(",")))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    let after = sql_u64(&store, "SELECT count(*) FROM events");
    assert_eq!(after, stored.len() as u64 + 5 - acked_in(&unique, 0..5));
}

/// How many of the events `e2e-<i>` for `range` are in `ids`.
fn acked_in(acked: &BTreeSet<String>, range: std::ops::Range<u64>) -> u64 {
    range
        .filter(|i| acked.contains(&format!("e2e-{i}")))
        .count() as u64
}

fn deployed(id: &str, service: &str, env: &str, time: &str) -> String {
    serde_json::json!({
        "context": {"specversion": "0.5.1", "id": id, "source": "/promises",
                    "type": "dev.cdevents.service.deployed.0.3.0", "timestamp": time},
        "subject": {"id": service, "source": "/promises",
                    "content": {"environment": {"id": env},
                                "artifactId": format!("pkg:oci/{service}@sha256:{id}")}}
    })
    .to_string()
}

fn report(store: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "dora",
        "--from",
        "2026-03-01",
        "--to",
        "2026-03-08",
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = ok(&cdlake(store, &args));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// `--production` and `cdlake.toml`'s `production` and `[teams]` decide what the report counts
/// and how it groups, through the CLI; the flag wins over the file.
#[test]
fn production_and_teams_shape_the_report_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // checkout: twice to live-eu, once to production; payments: once to live-eu; search:
    // once to staging.
    let lines = [
        deployed("d1", "checkout", "live-eu", "2026-03-02T10:00:00Z"),
        deployed("d2", "checkout", "live-eu", "2026-03-03T10:00:00Z"),
        deployed("d3", "checkout", "production", "2026-03-04T10:00:00Z"),
        deployed("d4", "payments", "live-eu", "2026-03-04T11:00:00Z"),
        deployed("d5", "search", "staging", "2026-03-05T11:00:00Z"),
    ];
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    ok(&cdlake(&store, &["import", file.to_str().unwrap()]));
    let deployments = |r: &serde_json::Value| r["deployment_frequency"]["deployments"].clone();

    // The default pattern: `production` only.
    assert_eq!(deployments(&report(&store, &[])), 1);
    // The flag.
    assert_eq!(deployments(&report(&store, &["--production", "^live-"])), 3);
    // The file, with teams; then the flag over the file.
    let config = dir.path().join("cdlake.toml");
    std::fs::write(
        &config,
        "production = '^(live-.*|production)$'\n[teams]\ncheckout = \"storefront\"\npayments = \"money\"\nsearch = \"discovery\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let by_team = report(&store, &["--config", config, "--by", "team"]);
    assert_eq!(deployments(&by_team), 4);
    let teams: Vec<(String, serde_json::Value)> = by_team["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["team"].as_str().unwrap().to_string(), deployments(g)))
        .collect();
    assert_eq!(
        teams,
        [
            ("money".to_string(), 1.into()),
            ("storefront".to_string(), 3.into())
        ],
        "{by_team:#}"
    );
    let flag_wins = report(
        &store,
        &["--config", config, "--production", "^production$"],
    );
    assert_eq!(deployments(&flag_wins), 1);
    // A pattern that is not a regular expression is refused, naming it.
    let bad = cdlake(&store, &["dora", "--production", "(unclosed"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("production"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// Lead time from real GitHub deliveries: the pull request opened (15:20:33) and merged
/// (16:00:00) as merge commit M, and a successful deployment_status of M to production at
/// 18:00:00. DESIGN: lead time = delivery − start (the change's creation) = 9,567 s; the
/// breakdown: review = merge − start = 2,367 s, no artifact or run (build NULL), wait =
/// delivery − merge = 7,200 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_time_from_real_github_webhooks_to_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let svc = standalone(&store, &[]);
    let [opened, closed, deployment] = merged_pull_request();
    post_github(
        &svc,
        vec![
            ("pull_request", opened),
            ("pull_request", closed),
            ("deployment_status", deployment),
        ],
    )
    .await;
    let report = dora_api(&svc, "from=2019-05-01&to=2019-06-01").await;
    assert_eq!(report["lead_time"]["changes"], 1, "{report:#}");
    assert_eq!(report["lead_time"]["median_seconds"], 9567.0, "{report:#}");
    assert_eq!(report["deployment_frequency"]["deployments"], 1);

    let rows = sql_json(
        &store,
        "SELECT change_id, service, review_seconds, build_seconds, wait_seconds,
                lead_time_seconds, pipeline_runs FROM lead_time_breakdown",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row["change_id"], "Codertocat/Hello-World#2", "{row}");
    assert_eq!(row["service"], "Codertocat/Hello-World", "{row}");
    assert_eq!(row["review_seconds"], 2367.0, "{row}");
    assert!(row["build_seconds"].is_null(), "{row}");
    assert_eq!(row["wait_seconds"], 7200.0, "{row}");
    assert_eq!(row["lead_time_seconds"], 9567.0, "{row}");
    assert_eq!(row["pipeline_runs"], 0, "{row}");
}

/// `[[services]]` rules from `cdlake.toml`, through real GitHub webhooks to `cdlake
/// standalone`: in Codertocat/Hello-World, a monorepo of billing and cart, #2 (the fixture,
/// branch `changes`) was pushed with a file under services/billing, and #3 (branch
/// `cart-fix`, merged at 15:45, before #2's merge) with one under services/cart. GitHub
/// Actions' "Deploy billing" workflow deploys #2's merge commit at 18:00, "Deploy cart" the
/// same commit at 19:00. The rules make each deployment its workflow's service and each change
/// its branch's service (by the files pushed), so billing's deployment delivers #2 only (lead
/// time 9,567 s, as above) and cart's #3 only (19:00 − 15:30 = 12,600 s). Without the rules
/// both deployments would be the repository's one service, delivering both changes at 18:00.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_rules_split_a_monorepo_from_real_github_webhooks_to_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let config = dir.path().join("cdlake.toml");
    std::fs::write(
        &config,
        r#"
[[services]]
service = "billing"
workflows = ["Deploy billing"]

[[services]]
service = "cart"
workflows = ["Deploy cart"]

[[services]]
service = "billing"
repository = "codertocat/hello-world"
paths = ["services/billing/**"]

[[services]]
service = "cart"
repository = "Codertocat/Hello-World"
paths = ["services/cart/**"]
"#,
    )
    .unwrap();
    let svc = standalone(&store, &["--config", config.to_str().unwrap()]);
    let repository = github_fixture("push/payload.json")["repository"].clone();
    let push = |branch: &str, sha: &str, at: &str, file: &str| {
        serde_json::json!({
            "ref": format!("refs/heads/{branch}"), "created": true, "after": sha,
            "repository": repository.clone(),
            "commits": [{"id": sha, "timestamp": at, "distinct": true,
                         "added": [file], "modified": [], "removed": []}],
            "head_commit": {"timestamp": at},
        })
    };
    let [opened, closed, mut deployment] = merged_pull_request();
    let mut cart_deployment = deployment.clone();
    deployment["workflow_run"] = serde_json::json!({"name": "Deploy billing"});
    // Cart's workflow deploys the same commit at 19:00.
    cart_deployment["workflow_run"] = serde_json::json!({"name": "Deploy cart"});
    cart_deployment["deployment"]["id"] = 999_001.into();
    cart_deployment["deployment_status"]["id"] = 999_002.into();
    cart_deployment["deployment_status"]["created_at"] = "2019-05-15T19:00:00Z".into();
    cart_deployment["deployment_status"]["updated_at"] = "2019-05-15T19:00:00Z".into();
    // #3, cart's: the same pull request on branch cart-fix, opened 15:30, merged 15:45.
    let cart = |mut body: serde_json::Value, at: &str| {
        body["number"] = 3.into();
        body["pull_request"]["number"] = 3.into();
        body["pull_request"]["head"]["ref"] = "cart-fix".into();
        let fields: &[&str] = if body["action"] == "opened" {
            &["created_at"]
        } else {
            &["merged_at", "closed_at"]
        };
        for f in fields {
            body["pull_request"][f] = at.into();
        }
        body["pull_request"]["merge_commit_sha"] =
            "2222222222222222222222222222222222222222".into();
        body
    };
    let (cart_opened, cart_closed) = (
        cart(opened.clone(), "2019-05-15T15:30:00Z"),
        cart(closed.clone(), "2019-05-15T15:45:00Z"),
    );
    post_github(
        &svc,
        vec![
            (
                "push",
                push(
                    "changes",
                    "a000000000000000000000000000000000000001",
                    "2019-05-15T15:00:00Z",
                    "services/billing/invoice.rs",
                ),
            ),
            ("pull_request", opened),
            (
                "push",
                push(
                    "cart-fix",
                    "b000000000000000000000000000000000000001",
                    "2019-05-15T15:10:00Z",
                    "services/cart/basket.rs",
                ),
            ),
            ("pull_request", cart_opened),
            ("pull_request", cart_closed),
            ("pull_request", closed),
            ("deployment_status", deployment),
            ("deployment_status", cart_deployment),
        ],
    )
    .await;
    let report = dora_api(&svc, "from=2019-05-01&to=2019-06-01&by=service").await;
    let lead = |i: usize| {
        let g = &report["groups"][i];
        (
            g["service"].clone(),
            g["lead_time"]["changes"].clone(),
            g["lead_time"]["median_seconds"].clone(),
        )
    };
    assert_eq!(
        lead(0),
        ("billing".into(), 1.into(), 9567.0.into()),
        "{report:#}"
    );
    assert_eq!(
        lead(1),
        ("cart".into(), 1.into(), 12600.0.into()),
        "{report:#}"
    );
    assert_eq!(report["lead_time"]["changes"], 2, "{report:#}");
    assert_eq!(report["unlinked"]["changes_not_delivered"], 0, "{report:#}");
    let rows = sql_json(
        &store,
        "SELECT change_id, service FROM change_services ORDER BY change_id",
    );
    let pairs: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r["change_id"].to_string(), r["service"].to_string()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("\"Codertocat/Hello-World#2\"".into(), "\"billing\"".into()),
            ("\"Codertocat/Hello-World#3\"".into(), "\"cart\"".into()),
        ],
        "{rows:?}"
    );
}

/// A live tail holds its connection open for as long as the client reads (`cdlake tui` all
/// day): asked to stop (SIGTERM), `cdlake standalone` still ends, cleanly, closing the tail
/// after its grace period instead of waiting on it forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_stops_on_sigterm_while_a_tail_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = standalone(&dir.path().join("store"), &[]);
    let tail = reqwest::get(svc.url("/api/v1/tail")).await.unwrap();
    assert!(tail.status().is_success());
    let pid = svc.pid();
    let stopped = tokio::task::spawn_blocking(move || {
        svc.terminate();
        svc
    });
    match tokio::time::timeout(Duration::from_secs(60), stopped).await {
        Ok(joined) => drop(joined.expect("terminate: a clean exit")),
        Err(_) => {
            signal(pid, "KILL");
            panic!("cdlake standalone did not stop within 60 s of SIGTERM with a tail open");
        }
    }
    drop(tail);
}

/// The store stops accepting writes (its directory replaced by a file, as an unmounted volume
/// would): input is answered 503 with `Retry-After` and a reason, and nothing is lost: the
/// buffered rows are committed once the store is back, and a retry is a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_is_answered_503_with_retry_after_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let away = dir.path().join("away");
    let mut svc = standalone(&store, &[]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let url = svc.url("/api/v1/events");
    let post = |i: u64| {
        client
            .post(&url)
            .header("content-type", "application/cloudevents+json")
            .body(pipeline_event(i, 3, ""))
            .send()
    };
    let a = post(1).await.unwrap();
    assert!(a.status().is_success(), "{}", a.text().await.unwrap());

    std::fs::rename(&store, &away).unwrap();
    std::fs::write(&store, "not a directory").unwrap();
    let b = post(2).await.unwrap();
    assert_eq!(b.status(), 503);
    assert_eq!(
        b.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let reason = b.text().await.unwrap();
    assert!(reason.contains("store"), "{reason}");

    std::fs::remove_file(&store).unwrap();
    std::fs::rename(&away, &store).unwrap();
    let mut i = 3;
    assert!(
        eventually(Duration::from_secs(60), || {
            i += 1;
            let resp = post(i);
            async move { resp.await.is_ok_and(|r| r.status().is_success()) }
        })
        .await,
        "the store came back but input is still refused:\n{}",
        svc.log()
    );
    let retry = post(2).await.unwrap();
    assert!(retry.status().is_success());
    svc.terminate();

    let ids: Vec<String> = sql_json(&store, "SELECT event_id FROM events ORDER BY event_id")
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.contains(&"e2e-1".to_string()), "{ids:?}");
    assert!(
        ids.contains(&"e2e-2".to_string()),
        "the refused event, buffered: {ids:?}"
    );
    assert!(ids.contains(&format!("e2e-{i}")), "{ids:?}");
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "nothing stored twice: {ids:?}");
}
