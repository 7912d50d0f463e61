//! Hostile requests against real `cdlake standalone` and `cdlake serve` processes (the cases of
//! the hardening review): each must be refused with a 4xx (or a Postgres error) naming the
//! limit, while the process stays up, `/healthz` (and, on standalone, a webhook) answers within
//! a second, peak RSS stays under `memory_mb` + 512 MiB, and a normal query and event succeed
//! right after. Each attack prints its figures (peak RSS, slowest `/healthz`).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Service, free_port};

const TOKEN: &str = "hostile-token";
const MEMORY_MB: u64 = 1024;
const TIMEOUT_SECS: u64 = 5;

struct Target {
    name: &'static str,
    service: Service,
    pg_port: u16,
    receivers: bool,
    _store: tempfile::TempDir,
    store_path: String,
    http: reqwest::Client,
    events: AtomicU64,
}

fn write_config(dir: &Path) -> String {
    let path = dir.join("cdlake.toml");
    std::fs::write(
        &path,
        format!("[limits]\nmemory_mb = {MEMORY_MB}\nquery_timeout_secs = {TIMEOUT_SECS}\n"),
    )
    .expect("config");
    path.display().to_string()
}

fn cdevent(id: &str, time: &str) -> Value {
    json!({
        "context": {"version": "0.4.1", "id": id, "source": "/hostile", "type": "dev.cdevents.service.deployed.0.1.1", "timestamp": time},
        "subject": {"id": "checkout", "source": "/hostile", "type": "service",
                    "content": {"environment": {"id": "prod"}, "artifactId": "pkg:oci/checkout@sha256:1"}}
    })
}

impl Target {
    async fn start(name: &'static str, command: &str) -> Target {
        let store = tempfile::tempdir().expect("store");
        let store_path = store.path().join("data").display().to_string();
        let config = write_config(store.path());
        let pg_port = free_port();
        let pg = format!("127.0.0.1:{pg_port}");
        let mut args = vec![
            command,
            "--store",
            &store_path,
            "--config",
            &config,
            "--listen",
            "127.0.0.1:0",
            "--pg-listen",
            &pg,
            "--token",
            TOKEN,
        ];
        if command == "standalone" {
            args.extend(["--compact-every-secs", "0"]);
        }
        let service = Service::spawn(&args);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let target = Target {
            name,
            service,
            pg_port,
            receivers: command == "standalone",
            _store: store,
            store_path,
            http,
            events: AtomicU64::new(0),
        };
        if target.receivers {
            assert_eq!(target.post_event().await, 200, "seed event");
        }
        target
    }

    async fn sql(&self, sql: &str) -> (u16, Value) {
        self.sql_accept(sql, "application/json").await
    }

    async fn sql_accept(&self, sql: &str, accept: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(self.service.url("/api/v1/sql"))
            .bearer_auth(TOKEN)
            .header("accept", accept)
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .expect("the service answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// `GET /api/v1/dora` for the last 30 days by service: status, body and how long it took.
    async fn dora_30d(&self) -> (u16, Value, Duration) {
        let started = Instant::now();
        let resp = self
            .http
            .get(self.service.url("/api/v1/dora?from=now-30d&by=service"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("the service answers");
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body, started.elapsed())
    }

    /// `GET /metrics` as text.
    async fn metrics(&self) -> String {
        self.http
            .get(self.service.url("/metrics"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("the service answers")
            .text()
            .await
            .unwrap_or_default()
    }

    /// A normal event, accepted (standalone only).
    async fn post_event(&self) -> u16 {
        let n = self.events.fetch_add(1, Ordering::SeqCst);
        let time = chrono::Utc::now().to_rfc3339();
        self.http
            .post(self.service.url("/api/v1/events"))
            .bearer_auth(TOKEN)
            .json(&cdevent(&format!("normal-{}-{n}", self.name), &time))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    async fn pg(&self) -> tokio_postgres::Client {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.pg_port)
            .user("cdlake")
            .password(TOKEN)
            .dbname("cdlake")
            .connect_timeout(Duration::from_secs(10));
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .expect("log in over Postgres");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    fn pid(&self) -> u32 {
        self.service.pid()
    }

    fn alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid())).exists()
            && !std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
                .unwrap_or_default()
                .contains(") Z ")
    }

    /// Peak resident memory of the process so far, in MiB.
    fn peak_rss_mib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    }

    /// CPU time the process has used, in seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the ")".
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
            .sum();
        ticks as f64 / 100.0
    }
}

/// Probes `/healthz` (and a webhook on standalone) while an attack runs; the slowest answers.
struct Prober {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Duration, Duration, usize)>,
}

impl Prober {
    fn start(target: &Arc<Target>) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let target = target.clone();
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(0)
                .build()
                .expect("client");
            let (mut health, mut webhook, mut failures) = (Duration::ZERO, Duration::ZERO, 0);
            while !flag.load(Ordering::SeqCst) {
                let started = Instant::now();
                let ok = client
                    .get(target.service.url("/healthz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                health = health.max(started.elapsed());
                failures += usize::from(!ok);
                if target.receivers {
                    let started = Instant::now();
                    let status = target.post_event().await;
                    webhook = webhook.max(started.elapsed());
                    failures += usize::from(status != 200);
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            (health, webhook, failures)
        });
        Prober { stop, task }
    }

    async fn finish(self) -> (Duration, Duration, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("prober")
    }
}

/// Run one attack: while it runs the service must stay responsive; afterwards it must be up
/// and serve a normal query (and event) again. Returns what the attack returned.
async fn attack<T, F>(target: &Arc<Target>, name: &str, work: F) -> T
where
    F: std::future::Future<Output = T>,
{
    // A normal event waits for the commit interval (0.5 s) and one commit: at most 0.68 s in
    // debug with the suite running alone (`.config/nextest.toml`), 1.1 s when both suites
    // shared the 2 cores. The issue asks for one second.
    attack_within(target, name, Duration::from_secs(1), work).await
}

/// [`attack`], with the longest a normal event may take while it runs.
async fn attack_within<T, F>(target: &Arc<Target>, name: &str, max_event: Duration, work: F) -> T
where
    F: std::future::Future<Output = T>,
{
    let prober = Prober::start(target);
    let started = Instant::now();
    let result = work.await;
    let took = started.elapsed();
    let (health, webhook, failures) = prober.finish().await;
    assert!(target.alive(), "{}: {name}: the process died", target.name);
    let peak = target.peak_rss_mib();
    eprintln!(
        "hostile {:<10} {name:<44} took {:>6.2} s, peak RSS {peak:>5} MiB, slowest /healthz {:>4} ms, slowest event {:>4} ms",
        target.name,
        took.as_secs_f64(),
        health.as_millis(),
        webhook.as_millis(),
    );
    assert_eq!(failures, 0, "{}: {name}: a probe failed", target.name);
    assert!(
        health < Duration::from_secs(1),
        "{}: {name}: /healthz took {health:?}",
        target.name
    );
    assert!(
        webhook < max_event,
        "{}: {name}: an event took {webhook:?}",
        target.name
    );
    assert!(
        peak <= MEMORY_MB + 512,
        "{}: {name}: peak RSS {peak} MiB",
        target.name
    );
    let (status, body) = target.sql("SELECT count(*) AS n FROM events").await;
    assert_eq!(
        status, 200,
        "{}: {name}: a normal query after: {body}",
        target.name
    );
    if target.receivers {
        assert_eq!(
            target.post_event().await,
            200,
            "{name}: a normal event after"
        );
    }
    result
}

/// The value of the Prometheus series `name` (with its labels, as written), or -1 when absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(-1.0)
}

fn refused(status: u16, body: &Value, limit: &str) {
    assert!(
        (400..500).contains(&status),
        "expected a 4xx naming {limit}, got {status}: {body}"
    );
    let text = body.to_string();
    assert!(text.contains(limit), "the answer names {limit}: {text}");
}

fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    e.as_db_error()
        .map(|d| (d.code().code().to_string(), d.message().to_string()))
        .unwrap_or_else(|| ("?".into(), format!("{e:?}")))
}

fn chain(first: &str, op: &str, n: usize) -> String {
    format!("SELECT {first}{}", op.repeat(n))
}

async fn stack_attacks(t: &Arc<Target>) {
    for (op, first) in [
        (" + 1", "1"),
        (" | 1", "1"),
        (" & 1", "1"),
        (" << 1", "1"),
        ("::BIGINT", "1"),
        (" IS NULL", "1"),
        (" LIKE 'a'", "'a'"),
    ] {
        let sql = chain(first, op, 1_900);
        let (status, body) = attack(t, &format!("HTTP: {}×1,900", op.trim()), t.sql(&sql)).await;
        assert!((400..500).contains(&status), "{op}: {status} {body}");
        assert!(body.to_string().contains("limits.max_"), "{op}: {body}");
    }
    let client = t.pg().await;
    let sql = chain("1", " + 1", 1_900);
    let e = attack(t, "Postgres: +×1,900", client.simple_query(&sql))
        .await
        .expect_err("refused");
    assert_eq!(db_error(&e).0, "54001", "{e:?}");
    // Text the old complexity check could not tokenize, with 3,000 ORs.
    let ors = (0..3_000)
        .map(|i| format!("subject_id = 's{i}'"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let sql = format!("SELECT q' ' FROM events WHERE {ors}");
    let e = attack(t, "Postgres: q' ' and 3,000 ORs", client.simple_query(&sql))
        .await
        .expect_err("refused");
    assert!(
        ["54001", "42601"].contains(&db_error(&e).0.as_str()),
        "{e:?}"
    );
}

async fn memory_attacks(t: &Arc<Target>) {
    let (status, body) = attack(
        t,
        "HTTP: length(repeat('ab', 1e9))",
        t.sql("SELECT length(repeat('ab', 1000000000))"),
    )
    .await;
    refused(status, &body, "limits.max_function_output_mb");
    let (status, body) = attack(
        t,
        "HTTP: cardinality(range(0, 3e8))",
        t.sql("SELECT cardinality(range(0, 300000000))"),
    )
    .await;
    refused(status, &body, "limits.max_function_output_mb");
    let (status, body) = attack(
        t,
        "HTTP: repeat('x',1e4) × 1e5 rows",
        t.sql("SELECT repeat('x', 10000) FROM generate_series(1, 100000)"),
    )
    .await;
    refused(status, &body, "limits.max_result_mb");
    let (status, body) = attack(
        t,
        "HTTP: s || s doubled 12 times",
        t.sql(
            "WITH a AS (SELECT repeat('x', 1048576) AS s), \
             b AS (SELECT s || s AS s FROM a), c AS (SELECT s || s AS s FROM b), \
             d AS (SELECT s || s AS s FROM c), e AS (SELECT s || s AS s FROM d), \
             f AS (SELECT s || s AS s FROM e), g AS (SELECT s || s AS s FROM f), \
             h AS (SELECT s || s AS s FROM g), i AS (SELECT s || s AS s FROM h), \
             j AS (SELECT s || s AS s FROM i), k AS (SELECT s || s AS s FROM j), \
             l AS (SELECT s || s AS s FROM k), m AS (SELECT s || s AS s FROM l) \
             SELECT length(s) FROM m",
        ),
    )
    .await;
    refused(status, &body, "limits.max_function_output_mb");
    let client = t.pg().await;
    let e = attack(
        t,
        "Postgres: length(repeat('ab', 1e9))",
        client.simple_query("SELECT length(repeat('ab', 1000000000))"),
    )
    .await
    .expect_err("refused");
    assert_eq!(db_error(&e).0, "54000", "{e:?}");
    assert!(db_error(&e).1.contains("limits.max_function_output_mb"));
}

async fn time_attacks(t: &Arc<Target>) {
    let slow = "SELECT count(*) FROM generate_series(1, 10000000000) \
                WHERE regexp_like(CAST(value AS VARCHAR) || 'abc', '^(1|2|3)+[4-9]*0abc$')";
    let started = Instant::now();
    let (status, body) = attack(t, "HTTP: per-row regex past the limit", t.sql(slow)).await;
    refused(status, &body, "limits.query_timeout_secs");
    assert!(
        started.elapsed() < Duration::from_secs(TIMEOUT_SECS + 5),
        "answered in time: {:?}",
        started.elapsed()
    );
    cpu_stops(t, "HTTP").await;

    let client = t.pg().await;
    let e = attack(
        t,
        "Postgres: per-row regex past the limit",
        client.simple_query(slow),
    )
    .await
    .expect_err("timed out");
    assert_eq!(db_error(&e).0, "57014", "{e:?}");
    cpu_stops(t, "Postgres").await;
}

/// After a query was stopped, the process stops using CPU within two seconds.
async fn cpu_stops(t: &Arc<Target>, protocol: &str) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = t.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = t.cpu_seconds() - before;
    eprintln!(
        "hostile {:<10} {protocol}: CPU used 2-4 s after the timeout: {used:.2} s",
        t.name
    );
    assert!(
        used < 0.5,
        "{protocol}: the stopped query kept using CPU: {used:.2} s in 2 s"
    );
}

async fn report_attacks(t: &Arc<Target>) {
    let get = |query: &str| {
        let url = format!("{}?{query}", t.service.url("/api/v1/dora"));
        let http = t.http.clone();
        async move {
            let resp = http
                .get(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("answer");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = attack(
        t,
        "HTTP: DORA over 40,000,000 days by week",
        get("from=now-40000000d&by=week"),
    )
    .await;
    refused(status, &body, "limits.max_report_days");
    for query in [
        "from=now-5%C3%A9",
        "from=now-%F0%9F%92%A5",
        "from=now-200000000000d",
        "to=now-99999999999999w",
    ] {
        let (status, body) = attack(t, &format!("HTTP: DORA {query}"), get(query)).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdlake"))
        .args(["dora", "--store", &t.store_path, "--from", "now-5é"])
        .env_remove("CDLAKE_CONFIG")
        .output()
        .expect("cdlake dora");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("now-<number>") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

async fn connection_attacks(t: &Arc<Target>) {
    // 256 idle connections to the Postgres port, and 80 more: a client with the password still
    // logs in at once.
    let idle: Vec<TcpStream> = (0..336)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", t.pg_port)).ok())
        .collect();
    assert!(idle.len() > 300, "opened {} connections", idle.len());
    let client = attack(t, "Postgres: 336 idle connections, then a login", async {
        tokio::time::timeout(Duration::from_secs(5), t.pg())
            .await
            .expect("logged in within 5 s")
    })
    .await;
    let row = client.query_one("SELECT 1 + 1", &[]).await.expect("query");
    assert_eq!(row.get::<_, i64>(0), 2);
    drop(idle);

    // 200 partial HTTP requests: the service answers others meanwhile, and closes them.
    let mut partial: Vec<TcpStream> = (0..200)
        .filter_map(|_| {
            let mut s = TcpStream::connect(t.service.addr.as_str()).ok()?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").ok()?;
            Some(s)
        })
        .collect();
    assert_eq!(partial.len(), 200);
    attack(
        t,
        "HTTP: 200 partial requests",
        tokio::time::sleep(Duration::from_secs(3)),
    )
    .await;
    let closed = tokio::task::spawn_blocking(move || {
        let mut closed = 0;
        for s in &mut partial {
            let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
            // Closed (end of stream) or answered: either way the server did not hold it.
            closed += usize::from(s.read(&mut [0u8; 64]).is_ok());
        }
        closed
    })
    .await
    .expect("read");
    assert_eq!(closed, 200, "the partial requests were answered or closed");
}

async fn small_attacks(t: &Arc<Target>) {
    let (status, body) = attack(
        t,
        "HTTP: CSV of a list column",
        t.sql_accept("SELECT make_array(1, 2) AS l, 3 AS n", "text/csv"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, Value::String("l,n\n\"[1, 2]\",3\n".into()));
    let (status, body) = attack(
        t,
        "HTTP: JSON of an integer-keyed map",
        t.sql("SELECT map([1, 2], ['a', 'b']) AS m"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["m"], "{1: a, 2: b}");
    let (status, body) = attack(
        t,
        "HTTP: TIMESTAMP '9999-12-31T23:59:59'",
        t.sql("SELECT TIMESTAMP '9999-12-31T23:59:59'"),
    )
    .await;
    assert!(
        status == 200 || (400..500).contains(&status),
        "{status}: {body}"
    );
    let (status, body) = attack(t, "HTTP: EXPLAIN", t.sql("EXPLAIN SELECT * FROM events")).await;
    assert_eq!(status, 200, "{body}");
    let dir = Path::new(&t.store_path)
        .canonicalize()
        .expect("store dir")
        .display()
        .to_string();
    assert!(
        !body.to_string().contains(&dir),
        "EXPLAIN shows {dir}: {body}"
    );
    let client = t.pg().await;
    let row = client
        .simple_query("SELECT current_user")
        .await
        .expect("current_user");
    let user = row.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(user.as_deref(), Some("cdlake"));
    // A column alias that is a view's name does not make 50 statements read the DORA rows.
    let fifty = attack(t, "HTTP: 50 × SELECT 1 AS dora_deployments", async {
        let all = (0..50).map(|_| t.sql("SELECT 1 AS dora_deployments"));
        futures::future::join_all(all).await
    })
    .await;
    assert!(fifty.iter().all(|(s, _)| *s == 200), "{fifty:?}");
}

async fn receiver_attacks(t: &Arc<Target>) {
    // A binary-mode CloudEvent with a ce-data header.
    let resp = attack(t, "HTTP: binary CloudEvent with ce-data", async {
        t.http
            .post(t.service.url("/api/v1/events"))
            .bearer_auth(TOKEN)
            .header("ce-specversion", "1.0")
            .header("ce-id", "hostile-1")
            .header("ce-source", "/hostile")
            .header("ce-type", "dev.cdevents.service.deployed.0.1.1")
            .header("ce-data", "{}")
            .header("content-type", "application/json")
            .body(cdevent("hostile-1", &chrono::Utc::now().to_rfc3339()).to_string())
            .send()
            .await
            .expect("answer")
    })
    .await;
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().await.unwrap_or_default().contains("ce-data"));

    // An event stamped in the year 1015.
    let resp = attack(t, "HTTP: an event of 1015", async {
        t.http
            .post(t.service.url("/api/v1/events"))
            .bearer_auth(TOKEN)
            .json(&cdevent("hostile-1015", "1015-01-11T00:00:00Z"))
            .send()
            .await
            .expect("answer")
    })
    .await;
    assert_eq!(resp.status().as_u16(), 400);
    assert!(
        resp.text()
            .await
            .unwrap_or_default()
            .contains("before 2000")
    );

    // Partition spray: 20,000 events on 20,000 distinct days in one request. The 3,000 days
    // since 2001 are stored (one file per day, one commit); the 17,000 before 2000 are refused
    // and dead-lettered. Meanwhile webhooks are answered as fast as ever. Then the service's
    // read model derives the 99 months the spray touched, at once (they are not the hot
    // months it refreshes every five minutes), and a report costs what it did before: it
    // reads a file per month of history, not a file per day.
    let (status, _, report_pre) = t.dora_30d().await;
    assert_eq!(status, 200, "the report answers before the spray");
    let built_before = metric(
        &t.metrics().await,
        "cdlake_read_model_months_built_total{table=\"report_events\"}",
    );
    assert!(built_before >= 0.0, "the read model's metrics are exported");
    let start = chrono::NaiveDate::from_ymd_opt(2001, 1, 1).unwrap();
    let spray: Vec<Value> = (0..20_000i64)
        .map(|i| {
            let day = if i < 3_000 {
                start + chrono::Duration::days(i)
            } else {
                start - chrono::Duration::days(400 + i)
            };
            cdevent(
                &format!("spray-{i}"),
                &format!("{}T12:00:00Z", day.format("%Y-%m-%d")),
            )
        })
        .collect();
    let started = Instant::now();
    // The spray's own commit encodes 3,000 files on every core for seconds (debug build): an
    // event sent meanwhile is committed beside it (never in it, never behind it), but waits
    // for CPU, so it gets the commit interval and a second more than the other attacks allow.
    let resp = attack_within(
        t,
        "HTTP: 20,000 events on 20,000 distinct days",
        Duration::from_secs(2),
        async {
            t.http
                .post(t.service.url("/api/v1/events"))
                .bearer_auth(TOKEN)
                .header("content-type", "application/cloudevents-batch+json")
                .json(&spray)
                .send()
                .await
                .expect("answer")
        },
    )
    .await;
    let stored_in = started.elapsed();
    assert_eq!(resp.status().as_u16(), 400, "some were refused");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["accepted"], 3_000, "{}", body["error"]);
    assert_eq!(body["rejected"].as_array().map(Vec::len), Some(17_000));
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("before 2000"))
    );
    // Before the read model has caught up, the report reads the sprayed days from `events`
    // (a file per day): it answers, or is refused cleanly by the suite's 5 s limit.
    let (report_before_status, body, report_before) = t.dora_30d().await;
    if report_before_status != 200 {
        refused(report_before_status, &body, "limits.query_timeout_secs");
    }
    let started = Instant::now();
    let caught_up = loop {
        let metrics = t.metrics().await;
        let built = metric(
            &metrics,
            "cdlake_read_model_months_built_total{table=\"report_events\"}",
        );
        let stale = metric(
            &metrics,
            "cdlake_read_model_months{table=\"report_events\",state=\"stale\"}",
        );
        // Every month but the hot ones (the current and the previous) is current.
        if built >= built_before + 99.0 && (0.0..=2.0).contains(&stale) {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the read model did not derive the sprayed months within a minute: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let started = Instant::now();
    let (status, count) = t
        .sql("SELECT count(*) AS n FROM events WHERE event_id LIKE 'spray-%'")
        .await;
    let counted_in = started.elapsed();
    assert_eq!(status, 200, "{count}");
    assert_eq!(count[0]["n"], 3_000);
    let started = Instant::now();
    let (status, _) = t.sql("SELECT count(*) FROM events").await;
    let count_all = started.elapsed();
    assert_eq!(status, 200);
    let (report_status, report, report_in) = t.dora_30d().await;
    assert_eq!(
        report_status, 200,
        "the report answers within the limit once the read model holds the sprayed months: {report}"
    );
    assert!(
        report["deployment_frequency"]["deployments"].as_u64() > Some(0),
        "the normal events of this test are production deployments of the last minutes: {report}"
    );
    eprintln!(
        "hostile {:<10} spray: a 30-day DORA report before it {:.3} s; stored in {:.2} s (report before the read model caught up: {report_before_status}, {:.3} s); read model current after {:.2} s; then count(*) {:.3} s, the 3,000 rows {:.3} s, a 30-day DORA report {:.3} s",
        t.name,
        report_pre.as_secs_f64(),
        stored_in.as_secs_f64(),
        report_before.as_secs_f64(),
        caught_up.as_secs_f64(),
        count_all.as_secs_f64(),
        counted_in.as_secs_f64(),
        report_in.as_secs_f64()
    );

    // 1.2 million small spans, gzip.
    let body = tokio::task::spawn_blocking(|| {
        use cdlake_ingest::sources::otlp::{
            ExportTraceServiceRequest, ResourceSpans, ScopeSpans, Span,
        };
        use prost::Message;
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64;
        let spans = (0..1_200_000u64)
            .map(|i| Span {
                trace_id: (i / 1000 + 1).to_be_bytes().repeat(2),
                span_id: (i + 1).to_be_bytes().to_vec(),
                name: "s".into(),
                start_time_unix_nano: now,
                end_time_unix_nano: now + 1,
                ..Default::default()
            })
            .collect();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&request.encode_to_vec()).expect("gzip");
        gz.finish().expect("gzip")
    })
    .await
    .expect("build spans");
    let resp = attack(t, "OTLP: 1.2 million spans in one request", async {
        t.http
            .post(t.service.url("/v1/traces"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "gzip")
            .body(body)
            .send()
            .await
            .expect("answer")
    })
    .await;
    assert_eq!(resp.status().as_u16(), 413);
    assert!(
        resp.text()
            .await
            .unwrap_or_default()
            .contains("--otlp-max-spans")
    );
}

async fn suite(t: Arc<Target>) {
    stack_attacks(&t).await;
    memory_attacks(&t).await;
    time_attacks(&t).await;
    report_attacks(&t).await;
    small_attacks(&t).await;
    if t.receivers {
        receiver_attacks(&t).await;
    }
    connection_attacks(&t).await;
    let peak = t.peak_rss_mib();
    eprintln!(
        "hostile {:<10} peak RSS over the whole suite: {peak} MiB",
        t.name
    );
    assert!(peak <= MEMORY_MB + 512);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standalone_survives_every_hostile_request() {
    suite(Arc::new(Target::start("standalone", "standalone").await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_survives_every_hostile_request() {
    suite(Arc::new(Target::start("serve", "serve").await)).await;
}
