//! The HTTP query API (`cdlake standalone`, which includes `serve`'s routes): SQL in three
//! formats, DORA, the live tail, DORA gauges, auth and the read-only lockdown.

mod support;

use std::time::Duration;

use support::*;

const TOKEN: &str = "t0ken";

/// `cdlake standalone` with the token set (its Postgres port open too, unused here).
fn start(store: &std::path::Path, extra: &[&str]) -> Service {
    standalone(store, &[&["--token", TOKEN][..], extra].concat())
}

async fn post_sql(svc: &Service, sql: &str, accept: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(svc.url("/api/v1/sql"))
        .bearer_auth(TOKEN)
        .header("accept", accept)
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await
        .unwrap()
}

async fn load_conformance(svc: &Service) {
    let dir = shared().join("fixtures/cdevents/v0.5.1/conformance");
    let mut bodies = Vec::new();
    for (i, e) in std::fs::read_dir(&dir).unwrap().flatten().enumerate() {
        let text = std::fs::read_to_string(e.path()).unwrap();
        // The conformance examples share one id: make each distinct.
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let id = v["context"]["id"].as_str().unwrap().to_string();
        bodies.push(text.replace(&id, &format!("conf-{i}")));
    }
    let r = reqwest::Client::new()
        .post(svc.url("/api/v1/events"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/cloudevents-batch+json")
        .body(format!("[{}]", bodies.join(",")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_answers_json_csv_and_arrow() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(&dir.path().join("store"), &[]);
    load_conformance(&svc).await;
    let sql = "SELECT subject, count(*) AS n FROM events GROUP BY subject ORDER BY subject";

    let json: serde_json::Value = post_sql(&svc, sql, "application/json")
        .await
        .json()
        .await
        .unwrap();
    let rows = json.as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["subject"] == "service" && r["n"] == 5),
        "{json}"
    );

    let csv = post_sql(&svc, sql, "text/csv").await.text().await.unwrap();
    assert!(csv.starts_with("subject,n\n"), "{csv}");
    assert!(csv.contains("\nservice,5\n"), "{csv}");

    let r = post_sql(&svc, sql, "application/vnd.apache.arrow.stream").await;
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let bytes = r.bytes().await.unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None)
            .unwrap();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    assert_eq!(batches[0].schema().field(0).name(), "subject");
    assert_eq!(
        batches.iter().map(|b| b.num_rows()).sum::<usize>(),
        rows.len()
    );

    let bad = post_sql(&svc, "SELECT nope FROM events", "application/json").await;
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("nope"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_files_and_settings_are_refused_and_limits_hold() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(
        dir.path().join("cdlake.toml"),
        "[limits]\nmemory_mb = 64\nquery_timeout_secs = 20\nmax_result_rows = 100000\n",
    )
    .unwrap();
    let config = dir.path().join("cdlake.toml");
    let svc = start(&store, &["--config", config.to_str().unwrap()]);
    let outside = dir.path().join("x");
    let refused = [
        "CREATE EXTERNAL TABLE etc STORED AS CSV LOCATION '/etc/'".to_string(),
        format!("COPY (SELECT 1) TO '{}.csv'", outside.display()),
        format!("COPY (SELECT 1) TO '{}' STORED AS CSV", outside.display()),
        "INSERT INTO teams VALUES ('a', 'b')".to_string(),
        "CREATE VIEW v AS SELECT 1".to_string(),
        "SET datafusion.execution.batch_size = 1".to_string(),
        "SELECT * FROM '/etc/passwd'".to_string(),
    ];
    for sql in &refused {
        let r = post_sql(&svc, sql, "application/json").await;
        let status = r.status();
        let body = r.text().await.unwrap();
        eprintln!("{sql}\n  -> {status} {body}");
        // The README's promise: each is refused as not read-only, a file or URL as a table
        // too (not looked up and "not found"): 403, as Postgres answers 42501.
        assert_eq!(status, 403, "{sql}: {body}");
        assert!(body.contains("cdlake SQL is read-only"), "{sql}: {body}");
        assert!(!body.contains("not found"), "{sql}: {body}");
    }
    assert!(!outside.exists(), "nothing written outside the store");
    assert!(
        !dir.path().join("x.csv").exists(),
        "nothing written outside the store"
    );

    // 10^8 rows: refused by the result limit, not a crash.
    let cross = "SELECT a.value AS a, b.value AS b FROM generate_series(1, 10000) a CROSS JOIN generate_series(1, 10000) b";
    let r = post_sql(&svc, cross, "application/json").await;
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    eprintln!("cross join -> {body}");
    assert!(
        body.contains("max_result_rows") || body.contains("Resources exhausted"),
        "{body}"
    );
    // Sorting 10^8 rows needs more than the 64 MB memory pool (and cannot spill).
    let r = post_sql(
        &svc,
        &format!("{cross} ORDER BY a DESC, b"),
        "application/json",
    )
    .await;
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    eprintln!("sorted cross join -> {body}");
    assert!(body.contains("Resources exhausted"), "{body}");
    // A 10,000-term OR chain.
    let chain = (0..10_000)
        .map(|i| format!("x = {i}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let r = post_sql(
        &svc,
        &format!("SELECT count(*) FROM (SELECT 1 AS x) t WHERE {chain}"),
        "application/json",
    )
    .await;
    let status = r.status();
    let body = r.text().await.unwrap();
    eprintln!("OR chain -> {status} {}", &body[..body.len().min(200)]);
    assert_eq!(status, 400);
    // Still serving.
    let ok: serde_json::Value = post_sql(&svc, "SELECT 1 AS one", "application/json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ok[0]["one"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dora_tail_gauges_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = cdlake(
        &store,
        &[
            "demo",
            "--no-serve",
            "--events",
            "4000",
            "--days",
            "20",
            "--services",
            "3",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svc = start(&store, &[]);
    let client = reqwest::Client::new();

    // No token, a wrong token: 401 on every query endpoint.
    for path in ["/api/v1/dora", "/api/v1/tail", "/metrics"] {
        assert_eq!(
            client.get(svc.url(path)).send().await.unwrap().status(),
            401,
            "{path}"
        );
        assert_eq!(
            client
                .get(svc.url(path))
                .bearer_auth("wrong")
                .send()
                .await
                .unwrap()
                .status(),
            401,
            "{path}"
        );
    }
    let r = client
        .post(svc.url("/api/v1/sql"))
        .json(&serde_json::json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let report: serde_json::Value = client
        .get(svc.url("/api/v1/dora?from=now-30d&to=now&by=service"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schema: serde_json::Value = serde_json::from_slice(
        &std::fs::read(shared().join("contracts/dora-report.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&report)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        report["deployment_frequency"]["deployments"]
            .as_u64()
            .unwrap()
            > 0
    );
    let bad = client
        .get(svc.url("/api/v1/dora?by=month"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // `bands=`: the same figures in another report year's levels. 2022 had no elite and put
    // deploying daily or more in high, at least monthly in medium; 2025 has no tiers.
    let window = format!(
        "from={}&to={}&by=service",
        report["window"]["from"].as_str().unwrap(),
        report["window"]["to"].as_str().unwrap()
    );
    let get = async |query: String| {
        let r = client
            .get(svc.url(&format!("/api/v1/dora?{query}")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<serde_json::Value>().await.unwrap())
    };
    let (_, design) = get(window.clone()).await;
    let (status, y2022) = get(format!("{window}&bands=2022")).await;
    assert_eq!(status, 200);
    assert_eq!(y2022["bands"], "2022");
    assert!(!y2022.to_string().contains("\"elite\""), "{y2022:#}");
    for r in std::iter::once(&y2022).chain(y2022["groups"].as_array().unwrap()) {
        let per_day = r["deployment_frequency"]["per_day"].as_f64().unwrap();
        let want = if per_day >= 1.0 {
            "high"
        } else if per_day >= 1.0 / 30.0 {
            "medium"
        } else {
            "low"
        };
        assert_eq!(r["deployment_frequency"]["level"], want, "{r:#}");
    }
    let (_, y2025) = get(format!("{window}&bands=2025")).await;
    let (mut figures_design, mut figures_2025) = (design.clone(), y2025.clone());
    strip_levels(&mut figures_design);
    strip_levels(&mut figures_2025);
    assert_eq!(
        figures_2025, figures_design,
        "only the levels and `bands` change"
    );
    assert!(!y2025.to_string().contains("\"level\":\""), "{y2025:#}");
    let errors: Vec<String> = validator
        .iter_errors(&y2025)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    // `by=environment`: the slices in `environments` (the contract's `groups` are keyed by
    // service, team or week), one per environment deployed to, within the contract.
    let (status, by_env) = get(window.replace("by=service", "by=environment")).await;
    assert_eq!(status, 200);
    assert!(by_env.get("groups").is_none(), "{by_env:#}");
    let names: Vec<&str> = by_env["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["environment"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"production") && names.contains(&"staging"),
        "{names:?}"
    );
    assert!(
        validator.iter_errors(&by_env).next().is_none(),
        "{by_env:#}"
    );
    // Two keys: one group per service and week, each carrying both, within the contract.
    let (status, by_two) = get(window.replace("by=service", "by=service,week")).await;
    assert_eq!(status, 200, "{by_two}");
    let groups = by_two["groups"].as_array().unwrap();
    assert!(groups.len() > 1, "{by_two:#}");
    assert!(
        groups
            .iter()
            .all(|g| g["service"].is_string() && g["week"].is_string()),
        "{by_two:#}"
    );
    assert!(
        validator.iter_errors(&by_two).next().is_none(),
        "{by_two:#}"
    );
    for bad in ["service,service", "environment,week", "service,week,team"] {
        let (status, body) = get(window.replace("by=service", &format!("by={bad}"))).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, body) = get(format!("{window}&bands=2020")).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("2024"),
        "the answer names the choices: {body}"
    );

    let metrics = client
        .get(svc.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("cdlake_dora_deployments{service=\"*\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cdlake_dora_lead_time_seconds{service=\""),
        "{metrics}"
    );
    // The reports above read one snapshot: those after the first with the same definitions
    // took the views they hold from the one before instead of computing them again (a report
    // by environment computes its own for each environment's production).
    let held = |outcome: &str| -> u64 {
        let prefix = format!("cdlake_held_views_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {prefix}in {metrics}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert!(held("computed") > 0, "{metrics}");
    assert!(held("reused") > 0, "{metrics}");

    // The tail: subscribe with a filter, then post one matching and one other event.
    let mut tail = client
        .get(svc.url("/api/v1/tail?subject=service&predicate=deployed"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    // The headers come once the subscription exists: every commit from now on is followed.
    assert_eq!(tail.headers()["content-type"], "text/event-stream");
    let conformance = shared().join("fixtures/cdevents/v0.5.1/conformance");
    let deployed = std::fs::read_to_string(conformance.join("service_deployed.json"))
        .unwrap()
        .replace(
            "2023-03-20T14:27:05.315384Z",
            &chrono::Utc::now().to_rfc3339(),
        );
    let merged = std::fs::read_to_string(conformance.join("change_merged.json"))
        .unwrap()
        .replace("271069a8-fc18-44f1-b38f-9d70a1695819", "tail-merged")
        .replace(
            "2023-03-20T14:27:05.315384Z",
            &chrono::Utc::now().to_rfc3339(),
        );
    // A late delivery of last week's deployment: committed now into an old date partition,
    // shown by the tail all the same (it follows commits, not partitions).
    let late = std::fs::read_to_string(conformance.join("service_deployed.json"))
        .unwrap()
        .replace("271069a8-fc18-44f1-b38f-9d70a1695819", "tail-late")
        .replace(
            "2023-03-20T14:27:05.315384Z",
            &(chrono::Utc::now() - chrono::Duration::days(5)).to_rfc3339(),
        );
    for body in [merged, deployed, late] {
        let r = client
            .post(svc.url("/api/v1/events"))
            .bearer_auth(TOKEN)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut received = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while received.matches("event: event").count() < 2 && tokio::time::Instant::now() < deadline {
        if let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(Duration::from_secs(5), tail.chunk()).await
        {
            received.push_str(&String::from_utf8_lossy(&chunk));
        }
        // Keep-alive comments are not events.
        received = received
            .lines()
            .filter(|l| !l.starts_with(':'))
            .map(|l| format!("{l}\n"))
            .collect();
    }
    eprintln!("tail: {received}");
    assert!(received.contains("event: event"), "{received}");
    let data = received
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let event: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(event["subject"], "service");
    assert_eq!(event["predicate"], "deployed");
    let ids: Vec<String> = received
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .map(|e| e["event_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        ids.iter().any(|id| id == "tail-late"),
        "the late event: {ids:?}"
    );
    assert!(
        !ids.iter().any(|id| id == "tail-merged"),
        "filtered out: {ids:?}"
    );
}

#[test]
fn a_service_without_a_token_refuses_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = cdlake(
        &dir.path().join("store"),
        &["serve", "--listen", "0.0.0.0:0", "--pg-listen", "off"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without --token"), "{err}");
}

/// The report without its levels and `bands`: what a report year does not change.
fn strip_levels(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("level");
            m.remove("bands");
            m.values_mut().for_each(strip_levels);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_levels),
        _ => {}
    }
}
