//! One table of forbidden and over-the-limit statements, run through every protocol that takes
//! SQL: HTTP (`POST /api/v1/sql` on `cdlake serve`), Postgres (psql against the same
//! `cdlake serve`) and the CLI (`cdlake sql`), all with the same small `[limits]`. Each protocol
//! must refuse each case the same way: the HTTP status, the Postgres SQLSTATE and the CLI's
//! exit status that case calls for, and a message naming the problem.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

const TOKEN: &str = "pr0tocols";

/// Small limits, so every case is quick to reach.
const CONFIG: &str = "[limits]
query_timeout_secs = 2
max_result_rows = 100
max_result_mb = 1
max_statement_kb = 4
max_operators = 100
max_expression_depth = 20
";

/// How a refusal looks on each protocol.
#[derive(Debug, Clone, Copy)]
struct Refusal {
    http: u16,
    sqlstate: &'static str,
    /// Text every protocol's message contains.
    names: &'static str,
}

/// Not read-only: HTTP 403, as Postgres's 42501 (insufficient_privilege).
fn read_only(what: &'static str) -> Refusal {
    Refusal {
        http: 403,
        sqlstate: "42501",
        names: what,
    }
}

/// A limit of `[limits]`: HTTP 400 naming it; Postgres 54001 (statement_too_complex) for the
/// statement's size and shape, 54000 (program_limit_exceeded) for its result, 57014
/// (query_canceled) for its time.
fn limit(name: &'static str, sqlstate: &'static str) -> Refusal {
    Refusal {
        http: 400,
        sqlstate,
        names: name,
    }
}

/// The cases: a name, the statement, how it is refused.
fn cases(outside: &Path) -> Vec<(&'static str, String, Refusal)> {
    let copy_target = outside.join("copied.csv");
    vec![
        (
            "CREATE TABLE",
            "CREATE TABLE t (a INT)".to_string(),
            read_only("CREATE TABLE"),
        ),
        (
            "INSERT",
            "INSERT INTO teams VALUES ('svc', 'team')".to_string(),
            read_only("INSERT"),
        ),
        (
            "DROP",
            "DROP VIEW deployments".to_string(),
            read_only("DROP"),
        ),
        (
            "DELETE",
            "DELETE FROM events".to_string(),
            read_only("DELETE"),
        ),
        (
            "COPY to a file",
            format!("COPY (SELECT 1) TO '{}'", copy_target.display()),
            read_only("COPY"),
        ),
        (
            "a file as a table",
            "SELECT * FROM '/etc/passwd'".to_string(),
            read_only("file or URL"),
        ),
        (
            "an external table",
            "CREATE EXTERNAL TABLE etc STORED AS CSV LOCATION '/etc/'".to_string(),
            read_only("CREATE EXTERNAL TABLE"),
        ),
        (
            "an engine setting",
            "SET datafusion.execution.batch_size = 1".to_string(),
            read_only("SET datafusion.execution.batch_size"),
        ),
        (
            "over the operator limit",
            format!("SELECT {}1", "1 + ".repeat(150)),
            limit("limits.max_operators", "54001"),
        ),
        (
            "too deep",
            format!("SELECT {}1{}", "abs(".repeat(40), ")".repeat(40)),
            limit("limits.max_expression_depth", "54001"),
        ),
        (
            "over the statement size",
            format!("SELECT '{}' AS s", "x".repeat(5000)),
            limit("limits.max_statement_kb", "54001"),
        ),
        (
            "over the row limit",
            "SELECT value FROM generate_series(1, 1000)".to_string(),
            limit("limits.max_result_rows", "54000"),
        ),
        (
            "over the byte limit",
            "SELECT repeat('x', 100000) AS s FROM generate_series(1, 30)".to_string(),
            limit("limits.max_result_mb", "54000"),
        ),
        (
            "over the time limit",
            "SELECT count(*) FROM generate_series(1, 10000000000) WHERE value % 7 <> 3".to_string(),
            limit("limits.query_timeout_secs", "57014"),
        ),
    ]
}

/// psql's answer: whether it succeeded, stdout and stderr.
fn psql(port: u16, sql: &str) -> (bool, String, String) {
    let out = Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "cdlake",
            "-d",
            "cdlake",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "VERBOSITY=verbose",
            "-c",
            sql,
        ])
        .env("PGPASSWORD", TOKEN)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGSERVICE")
        .output()
        .expect("psql is missing: scripts/test installs postgresql-client");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The SQLSTATE and message of psql's `ERROR:  <code>: <message>` (verbose) line.
fn psql_error(stderr: &str) -> Option<(String, String)> {
    let line = stderr.lines().find_map(|l| l.strip_prefix("ERROR:"))?;
    let (code, message) = line.trim().split_once(": ")?;
    Some((code.to_string(), message.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_refuses_the_same_statements_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let config = dir.path().join("cdlake.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let (store_arg, config_arg) = (store.to_str().unwrap(), config.to_str().unwrap());
    let pg_port = free_port();
    let pg_listen = format!("127.0.0.1:{pg_port}");
    let svc = Service::spawn(&[
        "serve",
        "--store",
        store_arg,
        "--config",
        config_arg,
        "--listen",
        "127.0.0.1:0",
        "--pg-listen",
        &pg_listen,
        "--token",
        TOKEN,
    ]);
    assert!(
        wait_for_port(pg_port, Duration::from_secs(30)),
        "cdlake serve did not listen for Postgres on {pg_port}:\n{}",
        svc.log()
    );
    let http = reqwest::Client::new();
    let post = |sql: String| {
        let request = http
            .post(svc.url("/api/v1/sql"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({ "sql": sql }));
        async move {
            let resp = request.send().await.expect("HTTP answer");
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        }
    };
    let cli = |sql: &str| {
        Command::new(env!("CARGO_BIN_EXE_cdlake"))
            .args(["sql", "--store", store_arg, "--config", config_arg, sql])
            .env_remove("CDLAKE_CONFIG")
            .env_remove("CDLAKE_STORE")
            .output()
            .expect("run cdlake sql")
    };

    // Each protocol answers a plain query: the refusals below are not a broken setup.
    assert_eq!(post("SELECT 1 AS one".into()).await.0, 200);
    let (ok, out, err) = psql(pg_port, "SELECT 41 + 1 AS answer");
    assert!(ok && out.contains("42"), "psql: {out}{err}");
    let out = cli("SELECT 41 + 1 AS answer");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut problems = Vec::new();
    for (case, sql, refusal) in cases(&outside) {
        let started = Instant::now();
        // HTTP: the status, and `{"error": …}` naming the problem (and `"limit"` for a limit).
        let (status, body) = post(sql.clone()).await;
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let message = json["error"].as_str().unwrap_or_default();
        if status != refusal.http || !message.contains(refusal.names) {
            problems.push(format!(
                "HTTP, {case}: {status} {body} (expected {} naming {:?})",
                refusal.http, refusal.names
            ));
        }
        if refusal.sqlstate == "42501" && !message.contains("cdlake SQL is read-only") {
            problems.push(format!("HTTP, {case}: not called read-only: {body}"));
        }
        if refusal.names.starts_with("limits.") && json["limit"] != refusal.names {
            problems.push(format!("HTTP, {case}: \"limit\" is {}", json["limit"]));
        }

        // Postgres: the SQLSTATE and a message naming the problem.
        let (ok, out, err) = psql(pg_port, &sql);
        match psql_error(&err) {
            Some((code, message))
                if !ok && code == refusal.sqlstate && message.contains(refusal.names) =>
            {
                if refusal.sqlstate == "42501" && !message.contains("cdlake SQL is read-only") {
                    problems.push(format!("Postgres, {case}: not called read-only: {message}"));
                }
            }
            _ => problems.push(format!(
                "Postgres, {case}: succeeded {ok}, {out}{err} (expected {} naming {:?})",
                refusal.sqlstate, refusal.names
            )),
        }

        // The CLI: exit status 1 (an error, not a crash) and `error: …` naming the problem.
        let out = cli(&sql);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(1)
            || !stderr.starts_with("error:")
            || !stderr.contains(refusal.names)
        {
            problems.push(format!(
                "CLI, {case}: exit {:?}, {stderr} (expected 1 naming {:?})",
                out.status.code(),
                refusal.names
            ));
        }
        if refusal.sqlstate == "42501" && !stderr.contains("cdlake SQL is read-only") {
            problems.push(format!("CLI, {case}: not called read-only: {stderr}"));
        }
        eprintln!("{case}: refused by all three in {:?}", started.elapsed());
    }

    // Nothing was written, created or changed, and every protocol still answers.
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "a file was written outside the store"
    );
    let (status, body) = post("SELECT count(*) AS n FROM deployments".into()).await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"[{"n":0}]"#),
        "the view is still there"
    );
    let (status, body) = post("SELECT * FROM t".into()).await;
    assert_eq!(status, 400, "no table t was created: {body}");
    let (ok, out, err) = psql(pg_port, "SELECT count(*) FROM teams");
    assert!(
        ok && out.contains(" 0"),
        "psql after the refusals: {out}{err}"
    );
    let out = cli("SELECT count(*) AS n FROM deployments");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
