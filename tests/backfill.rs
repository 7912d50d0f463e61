//! `cdlake backfill github` and `cdlake backfill gitlab` against a local HTTP server that
//! answers as GitHub's and GitLab's REST APIs do: objects taken from real webhook deliveries
//! (`fixtures/github`, Codertocat/Hello-World; `fixtures/gitlab`, gitlabhq/gitlab-test) in the
//! APIs' list shapes, `Link` pagination, ETags, rate limits (GitHub's 403 with `Retry-After` or
//! `X-RateLimit-Remaining: 0`, GitLab's 429 and `RateLimit-*`), a 502 and a dropped connection.
//! The same history by webhooks and then backfilled is the same rows and the same DORA report;
//! an interrupted backfill resumed gives the rows of an uninterrupted one.

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
    /// The hour's requests are spent: 403 with `X-RateLimit-Remaining: 0` until the reset
    /// (GitLab: 429 with `RateLimit-Remaining: 0`).
    PrimaryRateLimit,
    /// GitLab's throttle: 429 with `Retry-After`.
    TooManyRequests,
}

/// Which API the fake answers as.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Flavour {
    Github,
    Gitlab,
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
    flavour: Flavour,
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
    // The time filters (`since` on GitHub's issues, `created` on its runs, GitLab's
    // `updated_after`): these histories have nothing before them, so any earlier value answers
    // the same page.
    let target = match target.split_once("&since=") {
        Some((head, _)) if target.contains("/issues?") => {
            format!("{head}&since=2019-05-01T00:00:00Z")
        }
        _ => target,
    };
    let target = replace_value(&target, "created=%3E%3D", "2019-05-01");
    let target = replace_value(&target, "updated_after=", SINCE);
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
    let (auth, rate, limited) = match api.flavour {
        Flavour::Github => ("authorization", "x-ratelimit", 403),
        Flavour::Gitlab => ("private-token", "ratelimit", 429),
    };
    let token = match api.flavour {
        Flavour::Github => format!("Bearer {TOKEN}"),
        Flavour::Gitlab => TOKEN.to_string(),
    };
    let (status, extra, body): (u16, Vec<String>, String) = if headers.get(auth) != Some(&token) {
        (401, vec![], r#"{"message":"401 Unauthorized"}"#.into())
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
            limited,
            vec![],
            r#"{"message":"API rate limit exceeded for user ID 1."}"#.into(),
        )
    } else if let Some(Fault::TooManyRequests) = fault {
        (
            429,
            vec!["retry-after: 1".into()],
            r#"{"message":"Retry later"}"#.into(),
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
        "HTTP/1.1 {status} X\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n{rate}-limit: 5000\r\n{rate}-remaining: {remaining}\r\n{rate}-reset: {reset}\r\n",
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

/// `target` with the value of its query parameter `key` (up to the next `&`) replaced.
fn replace_value(target: &str, key: &str, value: &str) -> String {
    match target.split_once(key) {
        Some((head, rest)) => {
            let tail = rest.find('&').map_or("", |i| &rest[i..]);
            format!("{head}{key}{value}{tail}")
        }
        None => target.to_string(),
    }
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
        flavour: Flavour::Github,
    }
}

async fn start_api() -> Arc<Api> {
    serve(history).await
}

/// Serve the history `of(port)` on a local port.
async fn serve(of: fn(u16) -> Api) -> Arc<Api> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = Arc::new(of(listener.local_addr().unwrap().port()));
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
    let args = [
        "github",
        "--repo",
        REPO,
        "--since",
        "2019-05-01",
        "--api-url",
        &url,
    ];
    run_backfill(store, &args, ("GITHUB_TOKEN", TOKEN), extra).await
}

/// `cdlake backfill <args> --json <extra>` with the token variable `token`.
async fn run_backfill(
    store: &Path,
    args: &[&str],
    token: (&'static str, &'static str),
    extra: &[&str],
) -> std::process::Output {
    let args: Vec<String> = ["backfill"]
        .iter()
        .chain(args)
        .chain(&["--json"])
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    let store = store.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_cdlake"))
            .args(&args)
            .env("CDLAKE_STORE", &store)
            .env(token.0, token.1)
            .env_remove("CDLAKE_CONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// The counts `--json` printed for `name`.
fn counts_of(out: &std::process::Output, name: &str) -> Value {
    let text = ok(out);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    v[name].clone()
}

fn counts(out: &std::process::Output) -> Value {
    counts_of(out, REPO)
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
    dora_between(store, "2019-05-01", "2019-06-01")
}

/// The DORA report of `[from, to)` as JSON, without when it was generated.
fn dora_between(store: &Path, from: &str, to: &str) -> Value {
    let out = cdlake(
        store,
        &["dora", "--from", from, "--to", to, "--format", "json"],
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
    assert_hooks_kept(&before, &rows(&hooked), new);
    assert_eq!(dora(&hooked), report);

    // Interrupted: the network goes down mid-way; the backfill stops with an error that says
    // how to continue, and the same command finishes with the rows of an uninterrupted run.
    let resumed = dir.path().join("resumed");
    let cut_at = format!("{r}/actions/runs/{}/attempts/1", run_id(&api));
    let cut = backfill(&resumed, &api, &["--retries", "1"]);
    let partial = interrupted(&api, cut_at, &resumed, new, cut).await;
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

/// The webhooks' rows `before` are all in `after`, unchanged, and `after` holds one row per
/// fact (`facts`).
fn assert_hooks_kept(before: &[Value], after: &[Value], facts: u64) {
    for row in before {
        assert!(after.contains(row), "a webhook's row changed: {row}");
    }
    assert_eq!(after.len() as u64, facts, "one row per fact");
}

/// Run `backfill` with the network going down when `target` is requested: it must stop with
/// an error that says how to continue, having committed some of the `facts` to `store`.
/// Returns how many.
async fn interrupted(
    api: &Api,
    target: String,
    store: &Path,
    facts: u64,
    backfill: impl std::future::Future<Output = std::process::Output>,
) -> u64 {
    *api.down_on.lock().unwrap() = Some(target);
    let cut = backfill.await;
    *api.down_on.lock().unwrap() = None;
    api.down.store(false, Ordering::SeqCst);
    assert!(
        !cut.status.success(),
        "{}",
        String::from_utf8_lossy(&cut.stdout)
    );
    let stderr = String::from_utf8_lossy(&cut.stderr);
    assert!(stderr.contains("continue"), "{stderr}");
    let partial = sql_u64(store, "SELECT count(*) AS n FROM events");
    assert!(
        partial > 0 && partial < facts,
        "{partial} of {facts} before the cut"
    );
    partial
}

/// The workflow run's id in the history.
fn run_id(api: &Api) -> u64 {
    let (body, _) =
        &api.routes[&format!("/repos/{REPO}/actions/runs?per_page=100&created=%3E%3D2019-05-01")];
    let v: Value = serde_json::from_str(body).unwrap();
    v["workflow_runs"][0]["id"].as_u64().unwrap()
}

/// `standalone --reconcile-every`: the service re-pulls the last days of a GitHub repository and
/// a GitLab project now and then and adds only what the webhooks missed, counted in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_reconciles_what_the_webhooks_missed() {
    let (api, gitlab) = (start_api().await, serve(gitlab_history).await);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let url = format!("http://127.0.0.1:{}", api.port);
    let gitlab_url = format!("http://127.0.0.1:{}", gitlab.port);
    // Back to the histories' first day, 2013-12-01.
    let days = (chrono::Utc::now().date_naive()
        - chrono::NaiveDate::from_ymd_opt(2013, 12, 1).unwrap())
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
            "--reconcile-project",
            PROJECT,
            "--reconcile-days",
            &days,
            "--github-api-url",
            &url,
            "--gitlab-url",
            &gitlab_url,
        ],
        &[("GITHUB_TOKEN", TOKEN), ("GITLAB_TOKEN", TOKEN)],
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
    // Two passes over both.
    let ok_runs = "cdlake_reconcile_runs_total{result=\"ok\"}";
    assert!(
        eventually(std::time::Duration::from_secs(60), || async {
            svc.metric(ok_runs).await >= 4.0
        })
        .await,
        "no two reconcile passes: {}",
        svc.log()
    );
    assert_eq!(
        svc.metric("cdlake_reconcile_runs_total").await,
        svc.metric(ok_runs).await
    );
    // The histories hold 21 and 17 facts (see the tests above); what the webhook brought was
    // not missed.
    let missed = svc.metric("cdlake_reconcile_missed_total").await as u64;
    assert_eq!(missed + by_webhook, 21 + 17);
    let from_gitlab =
        format!("cdlake_reconcile_missed_total{{repo=\"{PROJECT}\",kind=\"pipelines\"}}");
    assert_eq!(svc.metric(&from_gitlab).await, 7.0, "{}", svc.log());
    let mut svc = svc;
    svc.terminate();
    assert_eq!(sql_u64(&store, "SELECT count(*) AS n FROM events"), 21 + 17);
    // Their own cursors, apart from `cdlake backfill`'s.
    assert!(
        store
            .join(format!("_cdlake/reconcile/github/{REPO}.json"))
            .exists()
    );
    assert!(
        store
            .join(format!("_cdlake/reconcile/gitlab/{PROJECT}.json"))
            .exists()
    );
}

const PROJECT: &str = "gitlabhq/gitlab-test";
/// The project's path as the API takes it.
const PROJECT_ID: &str = "gitlabhq%2Fgitlab-test";
const SINCE: &str = "2013-12-01T00:00:00Z";
/// The commit merge request !1 landed and the pipeline deployed.
const DEPLOYED: &str = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7";

fn gitlab_fixture(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(shared().join("fixtures/gitlab").join(name)).unwrap())
        .unwrap()
}

/// A project's history as GitLab's REST API (v4) shows it, in the shapes of GitLab's API
/// documentation; the objects are those of the hooks `gitlab_deliveries` sends.
fn gitlab_history(port: u16) -> Api {
    let web = "http://example.com/gitlabhq/gitlab-test";
    let project = json!({
        "id": 1, "name": "Gitlab Test", "description": "Aut reprehenderit ut est.",
        "name_with_namespace": "GitlabHQ / Gitlab Test", "path": "gitlab-test",
        "path_with_namespace": PROJECT, "default_branch": "master", "web_url": web,
        "ssh_url_to_repo": "git@example.com:gitlabhq/gitlab-test.git",
        "http_url_to_repo": "http://example.com/gitlabhq/gitlab-test.git",
        "namespace": {"id": 41, "name": "GitlabHQ", "path": "gitlabhq", "kind": "group", "full_path": "gitlabhq"},
        "created_at": "2013-09-30T13:46:02Z"
    });
    // !1 (the hook fixture's merge request): opened, merged as the deployed commit.
    let mr1 = json!({
        "id": 99, "iid": 1, "project_id": 1, "title": "MS-Viewport", "description": "",
        "state": "merged", "created_at": "2013-12-03T17:23:34.000Z",
        "updated_at": "2013-12-03T17:40:01.000Z", "merged_at": "2013-12-03T17:40:00.250Z",
        "closed_at": null, "target_branch": "master", "source_branch": "ms-viewport",
        "source_project_id": 1, "target_project_id": 1, "labels": ["API"], "draft": false,
        "sha": "1111111111111111111111111111111111111111", "merge_commit_sha": DEPLOYED,
        "squash_commit_sha": null, "web_url": format!("{web}/-/merge_requests/1"),
        "references": {"short": "!1", "full": "gitlabhq/gitlab-test!1"}
    });
    // !2, from a fork, closed without merging.
    let mr2 = json!({
        "id": 100, "iid": 2, "project_id": 1, "title": "Docs", "description": "",
        "state": "closed", "created_at": "2013-12-03T18:00:00.000Z",
        "updated_at": "2013-12-03T18:30:00.000Z", "merged_at": null,
        "closed_at": "2013-12-03T18:30:00.000Z", "target_branch": "master",
        "source_branch": "docs", "source_project_id": 2, "target_project_id": 1, "labels": [],
        "sha": "2222222222222222222222222222222222222222", "merge_commit_sha": null,
        "web_url": format!("{web}/-/merge_requests/2")
    });
    let commit = |sha: &str, at: &str| {
        json!({"id": sha, "short_id": &sha[..8], "created_at": at, "parent_ids": ["0000000000000000000000000000000000000007"],
               "title": "work", "message": "work\n", "author_name": "Dmitriy", "author_email": "d@example.com",
               "authored_date": at, "committer_name": "Dmitriy", "committer_email": "d@example.com",
               "committed_date": at, "web_url": format!("{web}/-/commit/{sha}")})
    };
    let pipeline = json!({
        "id": 31, "iid": 123, "project_id": 1, "status": "success", "source": "push",
        "ref": "master", "sha": DEPLOYED, "web_url": format!("{web}/-/pipelines/31"),
        "created_at": "2013-12-03T17:41:00.000Z", "updated_at": "2013-12-03T17:45:00.123Z"
    });
    let pipeline_detail = set(
        pipeline.clone(),
        json!({"name": null, "before_sha": "0000000000000000000000000000000000000000", "tag": false,
               "started_at": "2013-12-03T17:41:05.000Z", "finished_at": "2013-12-03T17:45:00.123Z",
               "committed_at": null, "duration": 235, "queued_duration": 5, "coverage": null}),
    );
    let job = |id: u64, status: &str, started: &str, finished: &str| {
        json!({"id": id, "status": status, "stage": "deploy", "name": "deploy", "ref": "master",
               "tag": false, "allow_failure": false, "created_at": "2013-12-03T17:41:00.000Z",
               "started_at": started, "finished_at": finished, "duration": 4.0,
               "failure_reason": if status == "failed" { json!("script_failure") } else { Value::Null },
               "commit": {"id": DEPLOYED, "short_id": "da156088", "title": "Merge branch 'ms-viewport'"},
               "pipeline": {"id": 31, "project_id": 1, "ref": "master", "sha": DEPLOYED, "status": "success"},
               "web_url": format!("{web}/-/jobs/{id}")})
    };
    // A job id above 2^32, and its retried first run.
    let jobs = json!([
        job(
            3580121225,
            "success",
            "2013-12-03T17:41:05.000Z",
            "2013-12-03T17:44:59.000Z"
        ),
        job(
            3580121224,
            "failed",
            "2013-12-03T17:41:01.000Z",
            "2013-12-03T17:41:03.000Z"
        ),
    ]);
    let deployment = json!({
        "id": 15, "iid": 1, "ref": "master", "sha": DEPLOYED, "status": "success",
        "created_at": "2013-12-03T17:41:05.000Z", "updated_at": "2013-12-03T17:45:00.000Z",
        "finished_at": "2013-12-03T17:45:00.000Z",
        "environment": {"id": 1, "name": "production", "slug": "production", "external_url": "https://example.com"},
        "deployable": {"id": 3580121225u64, "status": "success", "stage": "deploy", "name": "deploy",
                        "started_at": "2013-12-03T17:41:05.000Z", "finished_at": "2013-12-03T17:44:59.000Z",
                        "web_url": format!("{web}/-/jobs/3580121225"),
                        "commit": {"id": DEPLOYED, "title": "Merge branch 'ms-viewport'"}}
    });
    let release = |tag: &str, at: &str| {
        json!({"tag_name": tag, "name": tag, "description": "Release!", "created_at": at,
               "released_at": at, "upcoming_release": false,
               "commit": {"id": DEPLOYED, "short_id": "da156088"},
               "_links": {"self": format!("{web}/-/releases/{tag}")}})
    };
    let incident = json!({
        "id": 301, "iid": 23, "project_id": 1, "title": "Checkout is down", "description": "",
        "state": "closed", "created_at": "2013-12-03T17:50:00.000Z",
        "updated_at": "2013-12-03T18:10:00.000Z", "closed_at": "2013-12-03T18:10:00.000Z",
        "labels": ["incident"], "issue_type": "incident", "type": "INCIDENT",
        "web_url": format!("{web}/-/issues/23")
    });
    let p = format!("/api/v4/projects/{PROJECT_ID}");
    let mrs = format!(
        "{p}/merge_requests?state=all&order_by=updated_at&sort=asc&updated_after={SINCE}&per_page=100"
    );
    let mut routes: HashMap<String, (String, Option<String>)> = HashMap::new();
    let mut add = |target: String, body: Value, next: Option<String>| {
        routes.insert(target, (body.to_string(), next));
    };
    add(p.clone(), project, None);
    add(mrs.clone(), json!([mr2]), Some(format!("{mrs}&page=2")));
    add(format!("{mrs}&page=2"), json!([mr1]), None);
    add(
        format!("{p}/merge_requests/1/commits?per_page=100"),
        json!([
            commit(
                "1111111111111111111111111111111111111111",
                "2013-12-03T17:20:00.000+00:00"
            ),
            commit(
                "0000000000000000000000000000000000000008",
                "2013-12-03T17:00:00.000+00:00"
            )
        ]),
        None,
    );
    add(
        format!("{p}/pipelines?order_by=updated_at&sort=asc&updated_after={SINCE}&per_page=100"),
        json!([pipeline]),
        None,
    );
    add(format!("{p}/pipelines/31"), pipeline_detail, None);
    add(
        format!("{p}/pipelines/31/jobs?include_retried=true&per_page=100"),
        jobs,
        None,
    );
    add(
        format!("{p}/deployments?order_by=updated_at&sort=asc&updated_after={SINCE}&per_page=100"),
        json!([deployment]),
        None,
    );
    // Newest first; the older release is before --since and ends the list.
    add(
        format!("{p}/releases?order_by=released_at&sort=desc&per_page=100"),
        json!([
            release("v1.0.0", "2013-12-03T17:50:00.000Z"),
            release("v0.9.0", "2013-11-01T10:00:00.000Z")
        ]),
        None,
    );
    for filter in ["issue_type=incident", "labels=incident"] {
        add(
            format!(
                "{p}/issues?{filter}&state=all&order_by=updated_at&sort=asc&updated_after={SINCE}&per_page=100"
            ),
            json!([incident]),
            None,
        );
    }
    Api {
        routes,
        faults: Mutex::default(),
        log: Mutex::default(),
        down: AtomicBool::new(false),
        down_on: Mutex::default(),
        port,
        flavour: Flavour::Gitlab,
    }
}

/// `cdlake backfill gitlab` of the project's history.
async fn backfill_gitlab(store: &Path, api: &Api, extra: &[&str]) -> std::process::Output {
    let url = format!("http://127.0.0.1:{}", api.port);
    let args = [
        "gitlab",
        "--project",
        PROJECT,
        "--since",
        "2013-12-01",
        "--url",
        &url,
    ];
    run_backfill(store, &args, ("GITLAB_TOKEN", TOKEN), extra).await
}

fn gitlab_counts(out: &std::process::Output) -> Value {
    counts_of(out, PROJECT)
}

/// The hooks GitLab sent for the same history: the fixtures, moved to the project and the
/// times of the history above (hook times have no milliseconds).
fn gitlab_deliveries() -> Vec<(&'static str, Value)> {
    let project = gitlab_fixture("merge_request.json")["project"].clone();
    let mut issue = gitlab_fixture("issue.json");
    issue["labels"] = json!([{"id": 7, "title": "incident", "type": "ProjectLabel"}]);
    issue["object_attributes"]["created_at"] = "2013-12-03 17:50:00 UTC".into();
    issue["object_attributes"]["updated_at"] = "2013-12-03 17:50:00 UTC".into();
    let mut pipeline = gitlab_fixture("pipeline.json");
    pipeline["project"] = project.clone();
    let a = &mut pipeline["object_attributes"];
    a["id"] = 31.into();
    a["sha"] = DEPLOYED.into();
    a["created_at"] = "2013-12-03 17:41:00 UTC".into();
    a["finished_at"] = "2013-12-03 17:45:00 UTC".into();
    let mut job = gitlab_fixture("job.json");
    job["build_finished_at"] = "2013-12-03 17:44:59 UTC".into();
    job["pipeline_id"] = 31.into();
    job["repository"]["homepage"] = project["web_url"].clone();
    let mut deployment = gitlab_fixture("deployment.json");
    deployment["project"] = project.clone();
    deployment["deployment_id"] = 15.into();
    deployment["environment"] = "production".into();
    deployment["status_changed_at"] = "2013-12-03 18:45:00 +0100".into();
    deployment["commit_url"] = format!(
        "{}/-/commit/{DEPLOYED}",
        project["web_url"].as_str().unwrap()
    )
    .into();
    let mut release = gitlab_fixture("release.json");
    release["project"] = project.clone();
    release["tag"] = "v1.0.0".into();
    release["created_at"] = "2013-12-03 17:50:00 UTC".into();
    release["released_at"] = "2013-12-03 17:50:00 UTC".into();
    // The merge: its hook has no `merged_at`, and its `updated_at` is not the API's `merged_at`
    // (17:40:00.250): a merge happens once, so they are one fact.
    let mut merged = gitlab_fixture("merge_request.json");
    let a = &mut merged["object_attributes"];
    a["action"] = "merge".into();
    a["state"] = "merged".into();
    a["updated_at"] = "2013-12-03 17:40:01 UTC".into();
    a["merge_commit_sha"] = DEPLOYED.into();
    vec![
        ("Merge Request Hook", gitlab_fixture("merge_request.json")),
        ("Merge Request Hook", merged),
        ("Issue Hook", issue),
        ("Pipeline Hook", pipeline),
        ("Job Hook", job),
        ("Deployment Hook", deployment),
        ("Release Hook", release),
    ]
}

fn gitlab_dora(store: &Path) -> Value {
    dora_between(store, "2013-12-01", "2014-01-01")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_backfill_writes_the_hooks_rows_once_resumes_and_respects_the_api() {
    let api = serve(gitlab_history).await;
    let dir = tempfile::tempdir().unwrap();
    let p = format!("/api/v4/projects/{PROJECT_ID}");
    let mrs2 = format!(
        "{p}/merge_requests?state=all&order_by=updated_at&sort=asc&updated_after={SINCE}&per_page=100&page=2"
    );
    let deployments =
        format!("{p}/deployments?order_by=updated_at&sort=asc&updated_after={SINCE}&per_page=100");
    let releases = format!("{p}/releases?order_by=released_at&sort=desc&per_page=100");
    {
        let mut faults = api.faults.lock().unwrap();
        faults.insert(mrs2.clone(), vec![Fault::BadGateway]);
        faults.insert(
            format!("{p}/pipelines/31/jobs?include_retried=true&per_page=100"),
            vec![Fault::Drop],
        );
        faults.insert(deployments.clone(), vec![Fault::TooManyRequests]);
        faults.insert(releases.clone(), vec![Fault::PrimaryRateLimit]);
    }

    // Backfilled alone: every fact once, through a 502, a dropped connection and rate limits.
    let alone = dir.path().join("alone");
    let first = gitlab_counts(&backfill_gitlab(&alone, &api, &[]).await);
    assert_eq!(total(&first, "rejected"), 0, "{first}");
    // !1 opened, merged and its branch's push; !2 opened and closed. The pipeline pending,
    // running, succeeded; two jobs (one a retry) running and finished. The deployment running
    // and succeeded. One release (the older one is before --since). The incident opened and
    // closed, listed again by its label.
    assert_eq!(first["merge_requests"]["new"], 5, "{first}");
    assert_eq!(first["merge_requests"]["pages"], 2, "{first}");
    assert_eq!(first["pipelines"]["new"], 7, "{first}");
    assert_eq!(first["deployments"]["new"], 2, "{first}");
    assert_eq!(first["releases"]["new"], 1, "{first}");
    assert_eq!(first["incidents"]["new"], 2, "{first}");
    assert_eq!(first["incident_labels"]["new"], 0, "{first}");
    assert_eq!(first["incident_labels"]["stored"], 2, "{first}");
    let new = total(&first, "new");
    assert_eq!(sql_u64(&alone, "SELECT count(*) AS n FROM events"), new);
    let statuses =
        |target: &str| -> Vec<u16> { api.requests(target).into_iter().map(|(_, s)| s).collect() };
    assert_eq!(statuses(&mrs2), [502, 200]);
    assert_eq!(statuses(&format!("{p}/pipelines/31/jobs")), [0, 200]);
    assert_eq!(statuses(&deployments), [429, 200]);
    assert_eq!(statuses(&releases), [429, 200]);
    assert!(api.requests("").iter().all(|(_, s)| *s != 404 && *s != 401));

    // From the objects, by DESIGN's definitions: one deployment to production (17:45:00) of
    // the commit !1 merged, opened at 17:23:34: lead time 1,286 s; the incident detected after
    // it (17:50:00) fails it and is resolved at 18:10:00: 1,200 s.
    let report = gitlab_dora(&alone);
    assert_eq!(report["deployment_frequency"]["deployments"], 1, "{report}");
    assert_eq!(report["lead_time"]["changes"], 1, "{report}");
    assert_eq!(report["lead_time"]["median_seconds"], 1286.0, "{report}");
    assert_eq!(report["change_failure_rate"]["failed"], 1, "{report}");
    assert_eq!(
        report["recovery_time"]["median_seconds"], 1200.0,
        "{report}"
    );
    // The branch's first commit (17:00:00), from the merge request's commits; the retried job
    // and its retry are two task runs, the job id above 2^32 kept whole.
    let first_commit = sql_json(
        &alone,
        "SELECT CAST(first_commit_at AS VARCHAR) AS t FROM changes WHERE change_id = 'gitlabhq/gitlab-test!1'",
    );
    assert!(
        first_commit[0]["t"]
            .as_str()
            .unwrap()
            .starts_with("2013-12-03T17:00:00"),
        "{first_commit:?}"
    );
    let jobs = sql_json(
        &alone,
        "SELECT subject_id, outcome FROM events WHERE event_type LIKE '%taskrun.finished%' ORDER BY subject_id",
    );
    assert_eq!(
        jobs,
        vec![
            json!({"subject_id": "3580121224", "outcome": "failed"}),
            json!({"subject_id": "3580121225", "outcome": "success"})
        ]
    );

    // Again: every list page is unchanged (ETag 304), nothing is written twice.
    let again = gitlab_counts(&backfill_gitlab(&alone, &api, &[]).await);
    assert_eq!(total(&again, "new"), 0, "{again}");
    assert!(total(&again, "unchanged_pages") >= 6, "{again}");
    assert_eq!(sql_u64(&alone, "SELECT count(*) AS n FROM events"), new);

    // Hooks first, then the backfill: the hooks' rows stay, their facts are not written again
    // (the API's times have milliseconds, the hooks' not: the same second is the same fact),
    // and the DORA report is the one of the backfill alone.
    let hooked = dir.path().join("hooked");
    let mut svc = standalone(&hooked, &["--gitlab-token", "t"]);
    let hooks = gitlab_deliveries();
    for (n, (event, body)) in hooks.iter().enumerate() {
        let answer: Value = reqwest::Client::new()
            .post(svc.url("/webhooks/gitlab"))
            .header("X-Gitlab-Token", "t")
            .header("X-Gitlab-Event", *event)
            .header("X-Gitlab-Event-UUID", format!("hook-{n}"))
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["accepted"], 1, "{event}: {answer}");
    }
    svc.terminate();
    let before = rows(&hooked);
    assert_eq!(before.len(), hooks.len());
    let after_hooks = gitlab_counts(&backfill_gitlab(&hooked, &api, &[]).await);
    assert_eq!(
        total(&after_hooks, "new"),
        new - hooks.len() as u64,
        "{after_hooks}"
    );
    assert_hooks_kept(&before, &rows(&hooked), new);
    assert_eq!(gitlab_dora(&hooked), report);

    // Interrupted: the network goes down at the pipeline; the same command then finishes with
    // the rows of an uninterrupted run.
    let resumed = dir.path().join("resumed");
    let cut = backfill_gitlab(&resumed, &api, &["--retries", "1"]);
    let partial = interrupted(&api, format!("{p}/pipelines/31"), &resumed, new, cut).await;
    let cursor: Value = serde_json::from_str(
        &std::fs::read_to_string(
            resumed
                .join("_cdlake/backfill/gitlab")
                .join(format!("{PROJECT}.json")),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(cursor["kinds"]["merge_requests"]["done"], true, "{cursor}");
    assert_ne!(cursor["kinds"]["pipelines"]["done"], true, "{cursor}");
    let rest = gitlab_counts(&backfill_gitlab(&resumed, &api, &[]).await);
    assert_eq!(total(&rest, "new"), new - partial, "{rest}");
    assert_eq!(rows(&resumed), rows(&alone));
}
