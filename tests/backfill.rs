//! `cdlake backfill github` against a local HTTP server that answers as GitHub's REST API does:
//! objects taken from real webhook deliveries (`fixtures/github`, Codertocat/Hello-World) in the
//! API's list shapes, `Link` pagination, ETags, a secondary rate limit with `Retry-After`, a 502
//! and a dropped connection. The same history by webhooks and then backfilled is the same rows
//! and the same DORA report; an interrupted backfill resumed gives the rows of an
//! uninterrupted one.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REPO: &str = "Codertocat/Hello-World";
const TOKEN: &str = "test-token";

#[derive(Debug, Clone, Copy)]
enum Fault {
    BadGateway,
    Drop,
    SecondaryRateLimit,
    /// The hour's requests are spent: 403 with `X-RateLimit-Remaining: 0` until the reset.
    PrimaryRateLimit,
}

/// The fake API: request target → (JSON body, next page's target).
struct Api {
    routes: HashMap<String, (String, Option<String>)>,
    faults: Mutex<HashMap<String, Vec<Fault>>>,
    /// Every request: (target, answer status; 0 for a dropped connection).
    log: Mutex<Vec<(String, u16)>>,
    /// Drop every connection (the network is down).
    down: AtomicBool,
    /// The network goes down when this target is requested.
    down_on: Mutex<Option<String>>,
    port: u16,
}

impl Api {
    fn requests(&self, prefix: &str) -> Vec<(String, u16)> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(t, _)| t.starts_with(prefix))
            .cloned()
            .collect()
    }
}

async fn handle(mut socket: tokio::net::TcpStream, api: Arc<Api>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let target = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or_default()
        .to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    // `since` on the issues list filters by time: this history has nothing before it, so any
    // value answers the same page.
    let target = match target.split_once("&since=") {
        Some((head, _)) if target.contains("/issues?") => {
            format!("{head}&since=2019-05-01T00:00:00Z")
        }
        _ => target,
    };
    let fault = api
        .faults
        .lock()
        .unwrap()
        .get_mut(&target)
        .and_then(|f| f.pop());
    if api.down_on.lock().unwrap().as_deref() == Some(target.as_str()) {
        api.down.store(true, Ordering::SeqCst);
    }
    if api.down.load(Ordering::SeqCst) || matches!(fault, Some(Fault::Drop)) {
        api.log.lock().unwrap().push((target, 0));
        return; // closed without an answer
    }
    let (remaining, reset) = match fault {
        Some(Fault::PrimaryRateLimit) => (0, chrono::Utc::now().timestamp() + 1),
        _ => (4990, chrono::Utc::now().timestamp() + 3600),
    };
    let (status, extra, body): (u16, Vec<String>, String) = if headers
        .get("authorization")
        .map(String::as_str)
        != Some(&format!("Bearer {TOKEN}"))
    {
        (401, vec![], r#"{"message":"Bad credentials"}"#.into())
    } else if let Some(Fault::BadGateway) = fault {
        (502, vec![], r#"{"message":"Server Error"}"#.into())
    } else if let Some(Fault::SecondaryRateLimit) = fault {
        (
            403,
            vec!["retry-after: 1".into()],
            r#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}"#.into(),
        )
    } else if let Some(Fault::PrimaryRateLimit) = fault {
        (
            403,
            vec![],
            r#"{"message":"API rate limit exceeded for user ID 1."}"#.into(),
        )
    } else if let Some((body, next)) = api.routes.get(&target) {
        let etag = format!("\"{:016x}\"", fxhash(body));
        let mut extra = vec![format!("etag: {etag}")];
        if let Some(next) = next {
            extra.push(format!(
                "link: <http://127.0.0.1:{}{next}>; rel=\"next\", <http://127.0.0.1:{}{next}>; rel=\"last\"",
                api.port, api.port
            ));
        }
        if headers.get("if-none-match") == Some(&etag) {
            (304, extra, String::new())
        } else {
            (200, extra, body.clone())
        }
    } else {
        (404, vec![], r#"{"message":"Not Found"}"#.into())
    };
    api.log.lock().unwrap().push((target, status));
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\nx-ratelimit-limit: 5000\r\nx-ratelimit-remaining: {remaining}\r\nx-ratelimit-reset: {reset}\r\n",
        body.len()
    );
    for h in extra {
        head.push_str(&h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let _ = socket.write_all(head.as_bytes()).await;
    let _ = socket.write_all(body.as_bytes()).await;
    let _ = socket.shutdown().await;
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn fixture(path: &str) -> Value {
    serde_json::from_slice(&std::fs::read(shared().join("fixtures/github").join(path)).unwrap())
        .unwrap()
}

fn set(mut v: Value, fields: Value) -> Value {
    v.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    v
}

/// The repository's history as the API shows it, built from the real deliveries' objects.
fn history(port: u16) -> Api {
    let repository = fixture("pull_request/closed.payload.json")["repository"].clone();
    let pr2 = fixture("pull_request/closed.payload.json")["pull_request"].clone();
    let deployment = fixture("deployment_status/payload.json");
    let deployed_sha = deployment["deployment"]["sha"]
        .as_str()
        .unwrap()
        .to_string();
    // A second pull request, merged as the deployed commit.
    let mut pr3 = set(
        pr2.clone(),
        json!({"id": 279147500u64, "number": 3, "title": "Ship it",
               "created_at": "2019-05-15T15:19:50Z", "updated_at": "2019-05-15T15:20:41Z",
               "closed_at": "2019-05-15T15:20:40Z", "merged_at": "2019-05-15T15:20:40Z",
               "merge_commit_sha": deployed_sha, "merged": true}),
    );
    pr3["head"]["ref"] = "ship-it".into();
    pr3["head"]["sha"] = "1111111111111111111111111111111111111111".into();
    let commit = |sha: &str, date: &str| {
        json!({"sha": sha, "html_url": format!("https://github.com/{REPO}/commit/{sha}"),
               "commit": {"message": "work", "author": {"name": "Codertocat", "email": "c@example.com", "date": date},
                          "committer": {"name": "Codertocat", "email": "c@example.com", "date": date}}})
    };
    let run1 = set(
        fixture("workflow_run/completed.payload.json")["workflow_run"].clone(),
        json!({"conclusion": "failure"}),
    );
    let run_id = run1["id"].as_u64().unwrap();
    let run2 = set(
        run1.clone(),
        json!({"run_attempt": 2, "conclusion": "success",
               "run_started_at": "2020-10-05T16:40:00Z", "updated_at": "2020-10-05T16:41:00Z"}),
    );
    let job1 = set(
        fixture("workflow_job/completed.success.with-organization.payload.json")["workflow_job"]
            .clone(),
        json!({"run_id": run_id, "run_attempt": 1, "conclusion": "failure"}),
    );
    let job2 = set(
        job1.clone(),
        json!({"id": job1["id"].as_u64().unwrap() + 1, "run_attempt": 2, "conclusion": "success",
               "started_at": "2020-10-05T16:40:05Z", "completed_at": "2020-10-05T16:40:55Z"}),
    );
    let mut incident = set(
        fixture("issues/opened.payload.json")["issue"].clone(),
        json!({"id": 444500099u64, "number": 5, "title": "Checkout is down", "state": "closed",
               "created_at": "2019-05-15T15:22:00Z", "updated_at": "2019-05-15T15:30:00Z",
               "closed_at": "2019-05-15T15:30:00Z"}),
    );
    incident["labels"] =
        json!([{"id": 1, "name": "incident", "color": "d73a4a", "default": false}]);
    let r = format!("/repos/{REPO}");
    let pulls = format!("{r}/pulls?state=all&sort=updated&direction=desc&per_page=100");
    let mut routes: HashMap<String, (String, Option<String>)> = HashMap::new();
    let mut add = |target: String, body: Value, next: Option<String>| {
        routes.insert(target, (body.to_string(), next));
    };
    add(r.clone(), repository, None);
    add(pulls.clone(), json!([pr2]), Some(format!("{pulls}&page=2")));
    add(format!("{pulls}&page=2"), json!([pr3]), None);
    add(
        format!("{r}/pulls/2/commits?per_page=100"),
        json!([commit(
            pr2["head"]["sha"].as_str().unwrap(),
            "2019-05-15T15:18:00Z"
        )]),
        None,
    );
    add(
        format!("{r}/pulls/3/commits?per_page=100"),
        json!([
            commit(
                "0000000000000000000000000000000000000003",
                "2019-05-15T15:05:00Z"
            ),
            commit(
                "1111111111111111111111111111111111111111",
                "2019-05-15T15:15:00Z"
            )
        ]),
        None,
    );
    add(
        format!("{r}/actions/runs?per_page=100&created=%3E%3D2019-05-01"),
        json!({"total_count": 1, "workflow_runs": [run2]}),
        None,
    );
    add(format!("{r}/actions/runs/{run_id}/attempts/1"), run1, None);
    add(
        format!("{r}/actions/runs/{run_id}/attempts/1/jobs?per_page=100"),
        json!({"total_count": 1, "jobs": [job1]}),
        None,
    );
    add(
        format!("{r}/actions/runs/{run_id}/attempts/2/jobs?per_page=100"),
        json!({"total_count": 1, "jobs": [job2]}),
        None,
    );
    let deployment_id = deployment["deployment"]["id"].as_u64().unwrap();
    add(
        format!("{r}/deployments?per_page=100"),
        json!([deployment["deployment"]]),
        None,
    );
    add(
        format!("{r}/deployments/{deployment_id}/statuses?per_page=100"),
        json!([deployment["deployment_status"]]),
        None,
    );
    add(
        format!("{r}/releases?per_page=100"),
        json!([fixture("release/published.payload.json")["release"]]),
        None,
    );
    add(
        format!("{r}/issues?labels=incident&state=all&per_page=100&since=2019-05-01T00:00:00Z"),
        json!([incident]),
        None,
    );
    Api {
        routes,
        faults: Mutex::default(),
        log: Mutex::default(),
        down: AtomicBool::new(false),
        down_on: Mutex::default(),
        port,
    }
}

async fn start_api() -> Arc<Api> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = Arc::new(history(listener.local_addr().unwrap().port()));
    let served = api.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(handle(socket, served.clone()));
        }
    });
    api
}

/// `cdlake backfill github` of the history, on its own thread (the fake API runs on this
/// runtime).
async fn backfill(store: &Path, api: &Api, extra: &[&str]) -> std::process::Output {
    let url = format!("http://127.0.0.1:{}", api.port);
    let mut args: Vec<String> = [
        "backfill",
        "github",
        "--repo",
        REPO,
        "--since",
        "2019-05-01",
        "--api-url",
        &url,
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let store = store.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_cdlake"))
            .args(&args)
            .env("CDLAKE_STORE", &store)
            .env("GITHUB_TOKEN", TOKEN)
            .env_remove("CDLAKE_CONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn counts(out: &std::process::Output) -> Value {
    let text = ok(out);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    v[REPO].clone()
}

fn total(counts: &Value, field: &str) -> u64 {
    counts
        .as_object()
        .unwrap()
        .values()
        .map(|c| c[field].as_u64().unwrap())
        .sum()
}

/// Post a fixture of `fixtures/github` to the service's GitHub route, signed with "s".
async fn deliver(svc: &Service, kind: &str, delivery: &str, path: &str) -> Value {
    let body = std::fs::read(shared().join("fixtures/github").join(path)).unwrap();
    reqwest::Client::new()
        .post(svc.url("/webhooks/github"))
        .header("X-GitHub-Event", kind)
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", sign("s", &body))
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The rows, without when they were ingested.
fn rows(store: &Path) -> Vec<Value> {
    sql_json(
        store,
        "SELECT event_id, event_type, time, subject_id, change_id, artifact_id, service, environment,
                outcome, run_id, attempt, first_commit_at, payload
         FROM events ORDER BY event_id, event_type",
    )
}

fn dora(store: &Path) -> Value {
    let out = cdlake(
        store,
        &[
            "dora",
            "--from",
            "2019-05-01",
            "--to",
            "2019-06-01",
            "--format",
            "json",
        ],
    );
    let mut v: Value = serde_json::from_str(&ok(&out)).unwrap();
    v.as_object_mut()
        .unwrap()
        .retain(|k, _| !k.contains("generated"));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_writes_the_webhooks_rows_once_resumes_and_respects_the_api() {
    let api = start_api().await;
    let dir = tempfile::tempdir().unwrap();
    let r = format!("/repos/{REPO}");
    {
        let mut faults = api.faults.lock().unwrap();
        let pulls2 = format!("{r}/pulls?state=all&sort=updated&direction=desc&per_page=100&page=2");
        faults.insert(pulls2, vec![Fault::BadGateway]);
        faults.insert(
            format!("{r}/deployments/145988746/statuses?per_page=100"),
            vec![Fault::Drop],
        );
        faults.insert(
            format!("{r}/actions/runs?per_page=100&created=%3E%3D2019-05-01"),
            vec![Fault::SecondaryRateLimit],
        );
        faults.insert(
            format!("{r}/releases?per_page=100"),
            vec![Fault::PrimaryRateLimit],
        );
    }

    // Backfilled alone: every fact once, through a 502, a dropped connection and a rate limit.
    let alone = dir.path().join("alone");
    let first = counts(&backfill(&alone, &api, &[]).await);
    let new = total(&first, "new");
    assert_eq!(total(&first, "rejected"), 0, "{first}");
    // Pull requests: 2 opened, 2 closed, 2 pushes; runs: 2 attempts x (requested, in_progress,
    // completed) + 2 jobs x (in_progress, completed); a deployment and its status; a release; an
    // incident opened and closed.
    assert_eq!(first["pulls"]["new"], 6, "{first}");
    assert_eq!(first["runs"]["new"], 10, "{first}");
    assert_eq!(first["deployments"]["new"], 2, "{first}");
    assert_eq!(first["releases"]["new"], 1, "{first}");
    assert_eq!(first["incidents"]["new"], 2, "{first}");
    assert_eq!(first["pulls"]["pages"], 2, "{first}");
    assert_eq!(
        sql_u64(&alone, "SELECT count(*) AS n FROM events"),
        new,
        "rows written are the facts counted"
    );
    // The faults were met and outlasted, and the rate limit was waited out.
    let statuses = |prefix: &str| -> Vec<u16> {
        api.requests(&format!("{r}{prefix}"))
            .into_iter()
            .map(|(_, s)| s)
            .collect()
    };
    assert_eq!(
        statuses("/pulls?state=all&sort=updated&direction=desc&per_page=100&page=2"),
        [502, 200]
    );
    assert_eq!(statuses("/deployments/145988746/statuses"), [0, 200]);
    assert_eq!(statuses("/actions/runs?"), [403, 200]);
    assert_eq!(statuses("/releases?"), [403, 200]);
    assert!(api.requests("").iter().all(|(_, s)| *s != 404 && *s != 401));

    // Each re-run attempt is its own run; the lead time starts at the first commit.
    let attempts = sql_json(
        &alone,
        "SELECT attempt, outcome FROM events WHERE event_type LIKE '%pipelinerun.finished%' ORDER BY attempt",
    );
    assert_eq!(
        attempts,
        vec![
            json!({"attempt": 1, "outcome": "failure"}),
            json!({"attempt": 2, "outcome": "success"})
        ]
    );
    let report = dora(&alone);
    // From the objects, by DESIGN's definitions: one deployment to production (15:20:55) of the
    // commit pull request #3 merged, opened at 15:19:50: lead time 65 s; the incident opened
    // after it (15:22:00) fails it and is resolved at 15:30:00: 480 s.
    assert_eq!(report["deployment_frequency"]["deployments"], 1, "{report}");
    assert_eq!(report["lead_time"]["changes"], 1, "{report}");
    assert_eq!(report["lead_time"]["median_seconds"], 65.0, "{report}");
    assert_eq!(report["change_failure_rate"]["failed"], 1, "{report}");
    assert_eq!(report["recovery_time"]["median_seconds"], 480.0, "{report}");
    // The branch's first commit (15:05:00), from the pull request's commits.
    let first_commit = sql_json(
        &alone,
        "SELECT CAST(first_commit_at AS VARCHAR) AS t FROM changes WHERE change_id = 'Codertocat/Hello-World#3'",
    );
    assert_eq!(first_commit.len(), 1);
    assert!(
        first_commit[0]["t"]
            .as_str()
            .unwrap()
            .starts_with("2019-05-15T15:05:00"),
        "{first_commit:?}"
    );

    // Again: every list page is unchanged (ETag 304), nothing is written twice.
    let again = counts(&backfill(&alone, &api, &[]).await);
    assert_eq!(total(&again, "new"), 0, "{again}");
    assert!(total(&again, "unchanged_pages") >= 5, "{again}");
    assert_eq!(sql_u64(&alone, "SELECT count(*) AS n FROM events"), new);

    // Webhooks first (the real deliveries these objects come from), then the backfill: the
    // webhooks' rows stay as they were, the facts they brought are not written again, and the
    // DORA report is the one of the backfill alone.
    let hooked = dir.path().join("hooked");
    let mut svc = standalone(&hooked, &["--github-secret", "s"]);
    let deliveries = [
        ("pull_request", "pull_request/opened.payload.json"),
        ("pull_request", "pull_request/closed.payload.json"),
        ("deployment", "deployment/payload.json"),
        ("deployment_status", "deployment_status/payload.json"),
        ("release", "release/published.payload.json"),
    ];
    for (n, (kind, path)) in deliveries.iter().enumerate() {
        let answer = deliver(&svc, kind, &format!("delivery-{n}"), path).await;
        assert_eq!(answer["accepted"], 1, "{path}: {answer}");
    }
    svc.terminate();
    let before = rows(&hooked);
    assert_eq!(before.len(), deliveries.len());
    let after_hooks = counts(&backfill(&hooked, &api, &[]).await);
    // The deployment request of the fixture is another fact than the API's (other time), so
    // only the four others are known.
    let known = total(&after_hooks, "stored");
    assert!(known >= 4, "{after_hooks}");
    assert_eq!(total(&after_hooks, "new") + known, new, "{after_hooks}");
    let after = rows(&hooked);
    for row in &before {
        assert!(after.contains(row), "a webhook row changed: {row}");
    }
    assert_eq!(after.len() as u64, new, "one row per fact");
    assert_eq!(dora(&hooked), report);

    // Interrupted: the network goes down mid-way; the backfill stops with an error that says
    // how to continue, and the same command finishes with the rows of an uninterrupted run.
    let resumed = dir.path().join("resumed");
    *api.down_on.lock().unwrap() = Some(format!("{r}/actions/runs/{}/attempts/1", run_id(&api)));
    let cut = backfill(&resumed, &api, &["--retries", "1"]).await;
    *api.down_on.lock().unwrap() = None;
    api.down.store(false, Ordering::SeqCst);
    assert!(
        !cut.status.success(),
        "{}",
        String::from_utf8_lossy(&cut.stdout)
    );
    let stderr = String::from_utf8_lossy(&cut.stderr);
    assert!(stderr.contains("continue"), "{stderr}");
    let partial = sql_u64(&resumed, "SELECT count(*) AS n FROM events");
    assert!(
        partial > 0 && partial < new,
        "{partial} of {new} before the cut"
    );
    let cursor = std::fs::read_to_string(
        resumed
            .join("_cdlake/backfill/github")
            .join(format!("{REPO}.json")),
    )
    .unwrap();
    // The cursor holds what was committed: the pull requests, not the runs.
    let cursor: Value = serde_json::from_str(&cursor).unwrap();
    assert_eq!(cursor["kinds"]["pulls"]["done"], true, "{cursor}");
    assert_ne!(cursor["kinds"]["runs"]["done"], true, "{cursor}");
    let rest = counts(&backfill(&resumed, &api, &[]).await);
    assert_eq!(total(&rest, "rejected"), 0);
    assert_eq!(total(&rest, "new"), new - partial, "{rest}");
    assert_eq!(rows(&resumed), rows(&alone));
}

/// The workflow run's id in the history.
fn run_id(api: &Api) -> u64 {
    let (body, _) =
        &api.routes[&format!("/repos/{REPO}/actions/runs?per_page=100&created=%3E%3D2019-05-01")];
    let v: Value = serde_json::from_str(body).unwrap();
    v["workflow_runs"][0]["id"].as_u64().unwrap()
}

/// `standalone --reconcile-every`: the service re-pulls the last days now and then and adds only
/// what the webhooks missed, counted in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_reconciles_what_the_webhooks_missed() {
    let api = start_api().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let url = format!("http://127.0.0.1:{}", api.port);
    // Back to the history's first day, 2019-05-01.
    let days = (chrono::Utc::now().date_naive()
        - chrono::NaiveDate::from_ymd_opt(2019, 5, 1).unwrap())
    .num_days()
    .to_string();
    let svc = standalone_env(
        &store,
        &[
            "--github-secret",
            "s",
            "--reconcile-every",
            "2s",
            "--reconcile-repo",
            REPO,
            "--reconcile-days",
            &days,
            "--github-api-url",
            &url,
        ],
        &[("GITHUB_TOKEN", TOKEN)],
    );
    // One fact comes by webhook: before or after the first reconcile, it is stored once.
    let answer = deliver(
        &svc,
        "pull_request",
        "d-1",
        "pull_request/closed.payload.json",
    )
    .await;
    let by_webhook = answer["accepted"].as_u64().unwrap();
    assert_eq!(
        by_webhook + answer["duplicate"].as_u64().unwrap(),
        1,
        "{answer}"
    );
    let ok_runs = "cdlake_reconcile_runs_total{result=\"ok\"}";
    assert!(
        eventually(std::time::Duration::from_secs(60), || async {
            svc.metric(ok_runs).await >= 2.0
        })
        .await,
        "no two reconcile passes: {}",
        svc.log()
    );
    assert_eq!(
        svc.metric("cdlake_reconcile_runs_total").await,
        svc.metric(ok_runs).await
    );
    // The history holds 21 facts (see the test above); what the webhook brought was not missed.
    let missed = svc.metric("cdlake_reconcile_missed_total").await as u64;
    assert_eq!(missed + by_webhook, 21);
    let mut svc = svc;
    svc.terminate();
    assert_eq!(sql_u64(&store, "SELECT count(*) AS n FROM events"), 21);
    // Its own cursor, apart from `cdlake backfill`'s.
    assert!(
        store
            .join(format!("_cdlake/reconcile/github/{REPO}.json"))
            .exists()
    );
}
