//! OTLP traces end to end: `POST /v1/traces` (protobuf and JSON) into the `spans` table, joined
//! with pipeline runs from GitHub webhooks (by the OpenTelemetry Collector's deterministic trace
//! id) and from CDEvents (by `cicd.pipeline.run.id`); bad input refused and counted.

mod support;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use cdlake_ingest::sources::otlp::proto::{
    AnyValue, ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans, Span,
    Status, any_value,
};
use prost::Message;
use sha2::{Digest, Sha256};
use support::*;

fn standalone(store: &Path) -> Service {
    Service::spawn(&[
        "standalone",
        "--store",
        store.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--pg-listen",
        "off",
    ])
}

async fn sql(svc: &Service, query: &str) -> Vec<serde_json::Value> {
    let resp = reqwest::Client::new()
        .post(svc.url("/api/v1/sql"))
        .json(&serde_json::json!({ "sql": query }))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{query}: {text}");
    serde_json::from_str(&text).unwrap()
}

fn digest(input: &str) -> [u8; 32] {
    Sha256::digest(input.as_bytes()).into()
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
    }
}

/// Nanoseconds of an RFC 3339 time.
fn nanos(t: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(t)
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap() as u64
}

fn span(trace: &[u8], id: &[u8], parent: &[u8], name: &str, start: &str, end: &str) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: id.to_vec(),
        parent_span_id: parent.to_vec(),
        name: name.into(),
        kind: 2,
        start_time_unix_nano: nanos(start),
        end_time_unix_nano: nanos(end),
        status: Some(Status {
            message: String::new(),
            code: 1,
        }),
        ..Default::default()
    }
}

/// The spans the Collector's GitHub receiver makes for run 289782451, attempt 1 (the
/// workflow_run fixture): a root span, two jobs, a queue span and a step.
fn collector_trace() -> ExportTraceServiceRequest {
    collector_trace_of(1)
}

/// The Collector's spans for one attempt of run 289782451: its ids are derived from the run id
/// and the attempt, so each attempt is a trace of its own.
fn collector_trace_of(attempt: u32) -> ExportTraceServiceRequest {
    let id = |suffix: &str| digest(&format!("289782451{attempt}{suffix}"));
    let trace = &id("t")[..16];
    let root = &id("s")[8..16];
    let build = &id("build")[8..16];
    let test = &id("test")[8..16];
    let queue = &id("testqueue-test1")[8..16];
    let step = &id("testrun tests2")[8..16];
    let spans = vec![
        span(
            trace,
            root,
            &[],
            "test",
            "2020-10-05T16:33:24Z",
            "2020-10-05T16:36:00Z",
        ),
        span(
            trace,
            build,
            root,
            "build",
            "2020-10-05T16:33:25Z",
            "2020-10-05T16:34:30Z",
        ),
        span(
            trace,
            test,
            root,
            "test",
            "2020-10-05T16:33:25Z",
            "2020-10-05T16:35:59Z",
        ),
        span(
            trace,
            queue,
            test,
            "queue-test",
            "2020-10-05T16:33:25Z",
            "2020-10-05T16:33:55Z",
        ),
        span(
            trace,
            step,
            test,
            "run tests",
            "2020-10-05T16:33:56Z",
            "2020-10-05T16:35:58Z",
        ),
    ];
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "github-actions"),
                    kv("vcs.repository.name", "octo-org/octo-repo"),
                    kv("cicd.pipeline.name", "test"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn post_traces(
    svc: &Service,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(svc.url("/v1/traces"))
        .header("content-type", content_type)
        .body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    req.send().await.unwrap()
}

/// The status the service answers a POST of `len` zero bytes to `path` with, read over a plain
/// connection while another task writes the body (and stops where the server closes).
async fn status_of_refused_body(svc: &Service, path: &str, content_type: &str, len: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = reqwest::Url::parse(&svc.url(path)).unwrap();
    let stream = tokio::net::TcpStream::connect((url.host_str().unwrap(), url.port().unwrap()))
        .await
        .unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: cdlake\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_ok() {
            let chunk = vec![0u8; 1 << 20];
            for _ in 0..len.div_ceil(chunk.len()) {
                if wr.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.windows(2).any(|w| w == b"\r\n") {
        match tokio::time::timeout(Duration::from_secs(30), rd.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            other => panic!(
                "no status line ({other:?}): {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    writer.abort();
    let line = String::from_utf8_lossy(&got).into_owned();
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {line:?}"))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_traces_and_run_ids_join_pipeline_runs() {
    let dir = tempfile::tempdir().unwrap();
    let svc = standalone(&dir.path().join("store"));
    let client = reqwest::Client::new();

    // The GitHub workflow_run webhook (no secret configured: unchecked).
    let fixture =
        std::fs::read(shared().join("fixtures/github/workflow_run/completed.payload.json"))
            .unwrap();
    let resp = client
        .post(svc.url("/webhooks/github"))
        .header("x-github-event", "workflow_run")
        .header("x-github-delivery", "d-1")
        .header("content-type", "application/json")
        .body(fixture)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());

    // The Collector's spans for that run, as gzip'd protobuf.
    let resp = post_traces(
        &svc,
        "application/x-protobuf",
        Some("gzip"),
        gzip(&collector_trace().encode_to_vec()),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/x-protobuf",
        "OTLP/HTTP answers in the request's encoding"
    );
    // Posted again (a retrying exporter): nothing stored twice.
    let resp = post_traces(
        &svc,
        "application/x-protobuf",
        None,
        collector_trace().encode_to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 200);

    // A CDEvents pipeline run and a trace that names it only by cicd.pipeline.run.id (JSON).
    let run = serde_json::json!({
        "context": {"version": "0.4.1", "id": "run-77-finished", "source": "/jenkins",
                    "type": "dev.cdevents.pipelinerun.finished.0.1.1",
                    "timestamp": "2026-11-20T10:05:00Z"},
        "subject": {"id": "run-77", "source": "/jenkins", "type": "pipelineRun",
                    "content": {"pipelineName": "deploy", "outcome": "success",
                                "artifactId": "pkg:oci/app@7"}}
    });
    let resp = client
        .post(svc.url("/api/v1/events"))
        .json(&run)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    let json_trace = r#"{"resourceSpans": [{"resource": {"attributes": [
          {"key": "service.name", "value": {"stringValue": "jenkins"}}]},
        "scopeSpans": [{"spans": [
          {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
           "name": "deploy", "kind": 2,
           "startTimeUnixNano": "1795082400000000000", "endTimeUnixNano": "1795082700000000000",
           "attributes": [{"key": "cicd.pipeline.run.id", "value": {"stringValue": "run-77"}},
                          {"key": "cicd.pipeline.name", "value": {"stringValue": "deploy"}}],
           "status": {"code": 1}}]}]}]}"#;
    let resp = post_traces(&svc, "application/json", None, json_trace.into()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "{}");

    assert!(
        eventually(Duration::from_secs(10), || async {
            sql(&svc, "SELECT count(*) AS n FROM spans").await[0]["n"] == 6
        })
        .await,
        "{:?}",
        sql(&svc, "SELECT count(*) AS n FROM spans").await
    );
    let joined = sql(
        &svc,
        "SELECT run_id, joined_by, trace_id, spans, trace_seconds, task_queue_seconds
         FROM pipeline_traces ORDER BY run_id",
    )
    .await;
    assert_eq!(joined.len(), 2, "{joined:?}");
    assert_eq!(joined[0]["run_id"], "289782451");
    assert_eq!(joined[0]["joined_by"], "trace_id");
    assert_eq!(joined[0]["trace_id"], "c28519925e1146098df64713b1779b41");
    assert_eq!(joined[0]["spans"], 5);
    assert_eq!(joined[0]["trace_seconds"], 156.0);
    assert_eq!(joined[0]["task_queue_seconds"], 30.0);
    assert_eq!(joined[1]["run_id"], "run-77");
    assert_eq!(joined[1]["joined_by"], "cicd.pipeline.run.id");
    assert_eq!(joined[1]["spans"], 1);

    // The critical path: root → the job that ends last (test) → its last step.
    let path = sql(
        &svc,
        "SELECT depth, name, queued FROM pipeline_critical_path
         WHERE run_id = '289782451' ORDER BY depth",
    )
    .await;
    let names: Vec<&str> = path.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["test", "test", "run tests"], "{path:?}");

    // Semantic-convention attributes are columns.
    let cols = sql(
        &svc,
        "SELECT service_name, vcs_repository_name, cicd_pipeline_name FROM spans
         WHERE name = 'build'",
    )
    .await;
    assert_eq!(cols[0]["service_name"], "github-actions");
    assert_eq!(cols[0]["vcs_repository_name"], "octo-org/octo-repo");
    assert_eq!(cols[0]["cicd_pipeline_name"], "test");
    // Where a change's lead time went. acme/app#7: created 08:00, merged 09:00, built by run-77
    // (traced: 300 s, the run itself has no start), packaged 10:06, deployed to production
    // 12:00. Review 09:00 − 08:00 = 3600 s, build 10:06 − 09:00 = 3960 s, wait 12:00 − 10:06
    // = 6840 s; lead time 12:00 − 08:00 = 14400 s, their sum.
    let cdevent = |id: &str, ty: &str, subject: &str, time: &str, content: serde_json::Value| {
        serde_json::json!({
            "context": {"specversion": "0.5.1", "id": id, "source": "/traces-test",
                        "type": format!("dev.cdevents.{ty}.0.3.0"), "timestamp": time},
            "subject": {"id": subject, "source": "/traces-test", "content": content}
        })
    };
    let repo = serde_json::json!({"repository": {"id": "acme/app", "source": "/traces-test"}});
    for event in [
        cdevent(
            "c7-created",
            "change.created",
            "acme/app#7",
            "2026-11-20T08:00:00Z",
            repo.clone(),
        ),
        cdevent(
            "c7-merged",
            "change.merged",
            "acme/app#7",
            "2026-11-20T09:00:00Z",
            repo.clone(),
        ),
        cdevent(
            "app7-packaged",
            "artifact.packaged",
            "pkg:oci/app@7",
            "2026-11-20T10:06:00Z",
            serde_json::json!({"change": {"id": "acme/app#7", "source": "/traces-test"}}),
        ),
        cdevent(
            "app7-deployed",
            "service.deployed",
            "app",
            "2026-11-20T12:00:00Z",
            serde_json::json!({"environment": {"id": "production"},
                               "artifactId": "pkg:oci/app@7"}),
        ),
    ] {
        let resp = client
            .post(svc.url("/api/v1/events"))
            .json(&event)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }
    let breakdown_sql = "SELECT change_id, service, review_seconds, build_seconds, wait_seconds,
                lead_time_seconds, pipeline_seconds, pipeline_runs FROM lead_time_breakdown";
    assert!(
        eventually(Duration::from_secs(10), || async {
            sql(&svc, breakdown_sql).await.len() == 1
        })
        .await,
        "{:?}",
        sql(&svc, breakdown_sql).await
    );
    let row = &sql(&svc, breakdown_sql).await[0];
    assert_eq!(row["change_id"], "acme/app#7", "{row}");
    assert_eq!(row["service"], "app", "{row}");
    assert_eq!(row["review_seconds"], 3600.0, "{row}");
    assert_eq!(row["build_seconds"], 3960.0, "{row}");
    assert_eq!(row["wait_seconds"], 6840.0, "{row}");
    assert_eq!(row["lead_time_seconds"], 14400.0, "{row}");
    assert_eq!(row["pipeline_seconds"], 300.0, "traced time: {row}");
    assert_eq!(row["pipeline_runs"], 1, "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_otlp_input_is_refused_counted_and_dead_lettered_and_nothing_else_is_affected() {
    let dir = tempfile::tempdir().unwrap();
    let svc = standalone(&dir.path().join("store"));
    let valid = collector_trace().encode_to_vec();

    let wrong_type = post_traces(&svc, "text/plain", None, valid.clone()).await;
    assert_eq!(wrong_type.status(), 415);
    assert!(
        wrong_type
            .text()
            .await
            .unwrap()
            .contains("application/x-protobuf")
    );

    let truncated = post_traces(
        &svc,
        "application/x-protobuf",
        None,
        valid[..valid.len() - 7].to_vec(),
    )
    .await;
    assert_eq!(truncated.status(), 400);

    let bad_json = post_traces(
        &svc,
        "application/json",
        None,
        b"{\"resourceSpans\": [".to_vec(),
    )
    .await;
    assert_eq!(bad_json.status(), 400);

    // 100 MB: refused by the body limit before it is read into memory.
    // The answer can come before the client has written the body, and the connection then
    // closes under it: the status is read over a plain connection, whatever the write does.
    let huge =
        status_of_refused_body(&svc, "/v1/traces", "application/x-protobuf", 100 << 20).await;
    assert_eq!(huge, 413);

    // A gzip bomb: 200 MB of zeros in well under the body limit.
    let bomb = {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![0u8; 200 << 20]).unwrap();
        enc.finish().unwrap()
    };
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let resp = post_traces(&svc, "application/x-protobuf", Some("gzip"), bomb).await;
    assert_eq!(resp.status(), 413);

    // The service is unaffected: a valid request is stored.
    let ok = post_traces(&svc, "application/x-protobuf", None, valid).await;
    assert_eq!(ok.status(), 200);
    assert!(
        eventually(Duration::from_secs(10), || async {
            sql(&svc, "SELECT count(*) AS n FROM spans").await[0]["n"] == 5
        })
        .await
    );
    // Each rejected request read into memory is a dead letter with its reason.
    let dead = sql(
        &svc,
        "SELECT reason FROM dead_letters WHERE origin = 'otlp' ORDER BY reason",
    )
    .await;
    assert_eq!(dead.len(), 4, "{dead:?}");
    assert!(svc.metric("cdlake_rejected_total").await >= 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_stream_through_jetstream_to_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let url = nats.url();
    let store = dir.path().join("store");
    let store = store.to_str().unwrap();
    let receiver = Service::spawn(&["receive", "--nats", &url, "--listen", "127.0.0.1:0"]);
    let mut ingester = Service::spawn(&[
        "ingest",
        "--store",
        store,
        "--nats",
        &url,
        "--metrics-listen",
        "127.0.0.1:0",
        "--max-age-ms",
        "300",
    ]);
    let body = collector_trace().encode_to_vec();
    for _ in 0..3 {
        let resp = post_traces(&receiver, "application/x-protobuf", None, body.clone()).await;
        assert_eq!(resp.status(), 200);
    }
    let stored = eventually(Duration::from_secs(30), || async {
        sql_u64(Path::new(store), "SELECT count(*) FROM spans") == 5
    })
    .await;
    assert!(stored, "{}", ingester.log());
    assert_eq!(
        sql_u64(
            Path::new(store),
            "SELECT count(DISTINCT span_id) FROM spans"
        ),
        5
    );
    ingester.terminate();
}

/// A bare HTTP endpoint that keeps every request body (an OTLP metrics receiver for the test).
fn capture_server() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    use std::io::{BufRead, BufReader, Read};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten().take(200) {
            let mut reader = BufReader::new(stream);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            if reader.read_exact(&mut body).is_ok() {
                sink.lock().unwrap().push(body);
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdlake_sends_its_own_traces_to_itself_and_its_metrics_over_otlp() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (metrics_port, metric_bodies) = capture_server();
    let addr = format!("127.0.0.1:{port}");
    let svc = Service::spawn_env(
        &[
            "standalone",
            "--store",
            dir.path().join("store").to_str().unwrap(),
            "--listen",
            &addr,
            "--pg-listen",
            "off",
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{addr}")),
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                &format!("http://127.0.0.1:{metrics_port}/v1/metrics"),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
        ],
    );
    let client = reqwest::Client::new();
    for i in 0..3 {
        let run = serde_json::json!({
            "context": {"version": "0.4.1", "id": format!("self-{i}"), "source": "/self",
                        "type": "dev.cdevents.pipelinerun.finished.0.1.1",
                        "timestamp": "2026-11-20T10:05:00Z"},
            "subject": {"id": format!("run-{i}"), "source": "/self", "type": "pipelineRun",
                        "content": {"pipelineName": "p", "outcome": "success"}}
        });
        let resp = client
            .post(svc.url("/api/v1/events"))
            .json(&run)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }
    let names = || async {
        sql(
            &svc,
            "SELECT DISTINCT name FROM spans WHERE service_name = 'cdlake-standalone' ORDER BY name",
        )
        .await
        .into_iter()
        .map(|r| r["name"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
    };
    let seen = eventually(Duration::from_secs(30), || async {
        let n = names().await;
        ["commit", "flush", "receive"]
            .iter()
            .all(|want| n.iter().any(|x| x == want))
    })
    .await;
    assert!(seen, "its own spans: {:?}\n{}", names().await, svc.log());
    // The receive span's children are the flush and the commit of the same trace.
    let linked = sql(
        &svc,
        "SELECT count(*) AS n FROM spans c JOIN spans p
           ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
         WHERE c.service_name = 'cdlake-standalone' AND c.name = 'commit' AND p.name = 'flush'",
    )
    .await;
    assert!(linked[0]["n"].as_u64().unwrap() >= 1, "{linked:?}");

    let exported = eventually(Duration::from_secs(30), || async {
        metric_bodies
            .lock()
            .unwrap()
            .iter()
            .any(|b| b.windows(21).any(|w| w == b"cdlake_received_total"))
    })
    .await;
    assert!(exported, "no OTLP metrics with cdlake_received_total");
}

/// A run is identified by origin, repository, run id and attempt: a GitHub re-run (attempt 2
/// failing after attempt 1 succeeded) is a row of its own joined to its own trace, two GitLab
/// projects' pipelines with one id are two rows, and a run's outcome is its last `finished`
/// (by time, whatever the arrival order), not the alphabetical maximum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_run_attempt_is_its_own_row_with_its_own_outcome_and_trace() {
    let dir = tempfile::tempdir().unwrap();
    let svc = standalone(&dir.path().join("store"));
    let client = reqwest::Client::new();
    let post = |route: &'static str, headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let mut req = client
            .post(svc.url(route))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let resp = req.send().await.unwrap();
            assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
        }
    };

    // GitHub: the fixture's run 289782451 (attempt 1, success), then its re-run failing.
    let fixture =
        std::fs::read(shared().join("fixtures/github/workflow_run/completed.payload.json"))
            .unwrap();
    let mut rerun: serde_json::Value = serde_json::from_slice(&fixture).unwrap();
    rerun["workflow_run"]["run_attempt"] = 2.into();
    rerun["workflow_run"]["conclusion"] = "failure".into();
    rerun["workflow_run"]["run_started_at"] = "2020-10-05T17:00:00Z".into();
    rerun["workflow_run"]["updated_at"] = "2020-10-05T17:04:00Z".into();
    for (delivery, body) in [
        ("d-1", fixture.clone()),
        ("d-2", rerun.to_string().into_bytes()),
    ] {
        let headers = vec![
            ("x-github-event", "workflow_run".to_string()),
            ("x-github-delivery", delivery.to_string()),
        ];
        post("/webhooks/github", headers, body).await;
    }
    for attempt in [1, 2] {
        let resp = post_traces(
            &svc,
            "application/x-protobuf",
            None,
            collector_trace_of(attempt).encode_to_vec(),
        )
        .await;
        assert_eq!(resp.status(), 200);
    }

    // GitLab: pipeline 31 of the fixture's project, and pipeline 31 of another project.
    let gitlab = std::fs::read(shared().join("fixtures/gitlab/pipeline.json")).unwrap();
    let mut other: serde_json::Value = serde_json::from_slice(&gitlab).unwrap();
    other["project"]["path_with_namespace"] = "gitlab-org/other".into();
    other["object_attributes"]["status"] = "failed".into(); // GitLab's word, stored as sent
    for (uuid, body) in [("gl-1", gitlab), ("gl-2", other.to_string().into_bytes())] {
        post(
            "/webhooks/gitlab",
            vec![("X-Gitlab-Event-UUID", uuid.to_string())],
            body,
        )
        .await;
    }

    // CDEvents: run-9 finished twice (succeeded, then a retry of it failed later), the later
    // one arriving first; a task of it.
    let cdevent = |id: &str, ty: &str, subject: serde_json::Value, time: &str| {
        serde_json::json!({
            "context": {"specversion": "0.5.1", "id": id, "source": "/ci",
                        "type": format!("dev.cdevents.{ty}.0.3.0"), "timestamp": time},
            "subject": subject,
        })
        .to_string()
        .into_bytes()
    };
    let finished = |id: &str, outcome: &str, time: &str| {
        cdevent(
            id,
            "pipelinerun.finished",
            serde_json::json!({"id": "run-9", "content": {"pipelineName": "build", "outcome": outcome}}),
            time,
        )
    };
    post(
        "/api/v1/events",
        vec![],
        finished("f2", "failure", "2026-11-20T10:10:00Z"),
    )
    .await;
    post(
        "/api/v1/events",
        vec![],
        finished("f1", "success", "2026-11-20T10:05:00Z"),
    )
    .await;
    let task = cdevent(
        "t1",
        "taskrun.finished",
        serde_json::json!({"id": "task-1", "content": {"taskName": "compile", "outcome": "success",
                                                        "pipelineRun": {"id": "run-9"}}}),
        "2026-11-20T10:04:00Z",
    );
    post("/api/v1/events", vec![], task).await;

    let runs_sql = "SELECT origin, repository, run_id, attempt, outcome, failed, events, run_key
                    FROM pipeline_runs ORDER BY origin, repository, run_id, attempt";
    assert!(
        eventually(Duration::from_secs(10), || async {
            sql(&svc, runs_sql).await.len() == 5
                && sql(&svc, "SELECT count(*) AS n FROM spans").await[0]["n"] == 10
        })
        .await,
        "{:?}",
        sql(&svc, runs_sql).await
    );
    let runs = sql(&svc, runs_sql).await;
    let row = |r: &serde_json::Value| {
        format!(
            "{} {} {} {} {} {} {}",
            r["origin"],
            r["repository"],
            r["run_id"],
            r["attempt"],
            r["outcome"],
            r["failed"],
            r["events"]
        )
    };
    let rows: Vec<String> = runs.iter().map(row).collect();
    assert_eq!(
        rows,
        [
            r#""cdevents" null "run-9" null "failure" true 2"#,
            r#""github" "octo-org/octo-repo" "289782451" 1 "success" false 1"#,
            r#""github" "octo-org/octo-repo" "289782451" 2 "failure" true 1"#,
            r#""gitlab" "gitlab-org/gitlab-test" "31" null "success" false 1"#,
            r#""gitlab" "gitlab-org/other" "31" null "failed" true 1"#,
        ],
        "{runs:?}"
    );

    // Each attempt joins its own trace (the Collector's id of that attempt).
    let traces = sql(
        &svc,
        "SELECT attempt, trace_id, joined_by, spans FROM pipeline_traces
         WHERE run_id = '289782451' ORDER BY attempt",
    )
    .await;
    let want_trace = |attempt: u32| hex::encode(&digest(&format!("289782451{attempt}t"))[..16]);
    assert_eq!(traces.len(), 2, "{traces:?}");
    for (row, attempt) in traces.iter().zip([1, 2]) {
        assert_eq!(row["attempt"], attempt, "{traces:?}");
        assert_eq!(row["trace_id"], want_trace(attempt), "{traces:?}");
        assert_eq!(row["joined_by"], "trace_id");
        assert_eq!(row["spans"], 5);
    }

    // A task run joins its pipeline run by `run_key`.
    let tasks = sql(
        &svc,
        "SELECT t.task, p.pipeline, p.outcome FROM task_runs t
         JOIN pipeline_runs p ON p.run_key = t.run_key",
    )
    .await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0]["task"], "compile");
    assert_eq!(tasks[0]["pipeline"], "build");
}
