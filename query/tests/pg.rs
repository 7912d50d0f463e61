//! The Postgres wire endpoint against real clients: tokio-postgres (simple and extended
//! protocol) and psql. Each test starts `cdlake_query::pg::serve` on a store in a temp dir.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cdlake_ingest::{Ingester, IngesterConfig};
use cdlake_query::pg::{PgOptions, serve};
use cdlake_query::{Config, Engine};
use cdlake_schemas::Origin;
use cdlake_schemas::store::Store;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const TOKEN: &str = "s3cret-token";

struct Server {
    port: u16,
    engine: Engine,
    store_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(config: Config, token: Option<&str>) -> Self {
        let store_dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(store_dir.path().to_str().expect("utf-8 path")).expect("store");
        let mut ingester = Ingester::new(store.clone(), IngesterConfig::default());
        for event in events() {
            ingester
                .ingest(event.as_bytes(), Origin::CdEvents, "pg-test")
                .await
                .expect("ingest");
        }
        ingester.flush().await.expect("flush");
        let engine = Engine::open(&store, config).await.expect("engine");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (stop, stopped) = oneshot::channel::<()>();
        let options = PgOptions {
            token: token.map(str::to_string),
        };
        let task = tokio::spawn(serve(engine.clone(), listener, options, async {
            let _ = stopped.await;
        }));
        Self {
            port,
            engine,
            store_dir,
            stop: Some(stop),
            task,
        }
    }

    async fn connect_as(
        &self,
        user: &str,
        password: Option<&str>,
    ) -> Result<Client, tokio_postgres::Error> {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .dbname("cdlake")
            .connect_timeout(Duration::from_secs(10));
        if let Some(password) = password {
            config.password(password);
        }
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    async fn connect(&self) -> Client {
        self.connect_as("cdlake", Some(TOKEN))
            .await
            .expect("log in as cdlake")
    }

    /// Every file under the store, to prove nothing was written there.
    fn store_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("read store dir").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        walk(self.store_dir.path(), &mut files);
        files.sort();
        files
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task");
        result.expect("serve ends cleanly");
    }
}

/// Poll `done` until it holds or `timeout` passes.
async fn wait_until(timeout: Duration, done: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

/// Six deployments of two services (five in production), two merged changes, one incident.
fn events() -> Vec<String> {
    let event = |id: usize, ty: &str, subject_id: &str, time: &str, content: serde_json::Value| {
        json!({
            "context": {
                "specversion": "0.5.1",
                "id": format!("pg-{id}"),
                "source": "/pg-test",
                "type": format!("dev.cdevents.{ty}.0.3.0"),
                "timestamp": time,
            },
            "subject": {"id": subject_id, "content": content},
        })
        .to_string()
    };
    let env = |e: &str| json!({"environment": {"id": e, "source": "/pg-test"}});
    vec![
        event(
            1,
            "service.deployed",
            "checkout",
            "2025-03-01T10:00:00Z",
            env("prod"),
        ),
        event(
            2,
            "service.deployed",
            "checkout",
            "2025-03-02T10:00:00Z",
            env("prod"),
        ),
        event(
            3,
            "service.deployed",
            "checkout",
            "2025-03-03T10:00:00Z",
            env("staging"),
        ),
        event(
            4,
            "service.deployed",
            "search",
            "2025-03-01T11:00:00Z",
            env("production"),
        ),
        event(
            5,
            "service.upgraded",
            "search",
            "2025-03-04T11:00:00Z",
            env("prod-eu"),
        ),
        event(
            6,
            "service.deployed",
            "search",
            "2025-03-05T11:00:00Z",
            env("prod"),
        ),
        event(
            7,
            "change.merged",
            "42",
            "2025-02-28T09:00:00Z",
            json!({"repository": {"id": "acme/shop", "source": "/pg-test"}}),
        ),
        event(
            8,
            "change.merged",
            "43",
            "2025-02-28T12:00:00Z",
            json!({"repository": {"id": "acme/shop", "source": "/pg-test"}}),
        ),
        event(
            9,
            "incident.detected",
            "inc-1",
            "2025-03-02T12:00:00Z",
            json!({"environment": {"id": "prod", "source": "/pg-test"},
                   "service": {"id": "checkout", "source": "/pg-test"}}),
        ),
    ]
}

fn small_limits() -> Config {
    let mut config = Config::default();
    config.limits.memory_mb = 64;
    config.limits.query_timeout_secs = 3;
    config
}

/// The first cell of the first row of a simple query's answer.
async fn simple_value(client: &Client, sql: &str) -> Option<String> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{}: {e:?}", abbreviated(sql)));
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_string)),
        _ => None,
    })?
}

fn abbreviated(sql: &str) -> String {
    match sql.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &sql[..at]),
        None => sql.to_string(),
    }
}

/// The rows (text cells) of a simple query's answer.
async fn simple_rows(client: &Client, sql: &str) -> Vec<Vec<String>> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// SQLSTATE and message of a server error.
fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    match e.as_db_error() {
        Some(db) => (db.code().code().to_string(), db.message().to_string()),
        None => panic!("expected an error from the server, got {e:?}"),
    }
}

async fn assert_alive(client: &Client) {
    assert_eq!(
        simple_value(client, "SELECT 1").await.as_deref(),
        Some("1"),
        "the connection keeps serving after an error"
    );
    let row = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .expect("extended query after an error");
    assert_eq!(row.get::<_, i64>(0), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simple_and_extended_queries() {
    let server = Server::start(Config::default(), Some(TOKEN)).await;
    let client = server.connect().await;

    // Simple protocol, several statements in one string.
    let messages = client
        .simple_query("SELECT count(*) AS n FROM events; SELECT 'two' AS word")
        .await
        .expect("simple query");
    let rows: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(rows, ["9", "two"]);

    // Extended protocol with parameters, typed results.
    let row = client
        .query_one(
            "SELECT count(*) FROM events WHERE subject = $1",
            &[&"service"],
        )
        .await
        .expect("parameterised count");
    assert_eq!(row.get::<_, i64>(0), 6);
    let rows = client
        .query(
            "SELECT subject_id, time FROM events WHERE subject = $1 AND predicate = $2 \
             ORDER BY time",
            &[&"change", &"merged"],
        )
        .await
        .expect("two parameters");
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, ["42", "43"]);
    let n: i64 = client
        .query_one("SELECT $1::bigint * 2", &[&21i64])
        .await
        .expect("bigint parameter")
        .get(0);
    assert_eq!(n, 42);

    // A prepared statement runs again with other values.
    let statement = client
        .prepare("SELECT count(*) FROM deployments WHERE service = $1")
        .await
        .expect("prepare");
    for (service, expected) in [("checkout", 3i64), ("search", 3), ("nope", 0)] {
        let n: i64 = client
            .query_one(&statement, &[&service])
            .await
            .expect("execute prepared")
            .get(0);
        assert_eq!(n, expected, "deployments of {service}");
    }

    // The DORA views.
    let n: i64 = client
        .query_one("SELECT count(*) FROM dora_deployments", &[])
        .await
        .expect("dora_deployments")
        .get(0);
    assert_eq!(n, 5, "production deployments");
    let failed: i64 = client
        .query_one(
            "SELECT count(*) FROM dora_deployments WHERE failed AND service = 'checkout'",
            &[],
        )
        .await
        .expect("failed deployments")
        .get(0);
    assert_eq!(failed, 1);

    // Errors answer an error and leave the connection usable.
    let e = client
        .simple_query("SELEKT 1")
        .await
        .expect_err("syntax error");
    assert_eq!(db_error(&e).0, "42601");
    let e = client
        .query("SELECT * FROM no_such_table", &[])
        .await
        .expect_err("unknown table");
    assert!(db_error(&e).1.contains("no_such_table"), "{e:?}");
    let e = client
        .simple_query("SELECT 1; SELECT * FROM no_such_table; SELECT 3")
        .await
        .expect_err("second statement fails");
    assert!(db_error(&e).1.contains("no_such_table"), "{e:?}");
    assert_alive(&client).await;

    // Harmless session statements drivers send are accepted.
    for sql in [
        "SET extra_float_digits = 3",
        "SET application_name = 'pg-test'",
        "SET DateStyle = 'ISO'",
        "SET client_min_messages TO warning",
        "SET TIME ZONE 'UTC'",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
    ] {
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }
    assert_eq!(
        simple_value(&client, "SHOW application_name")
            .await
            .as_deref(),
        Some("pg-test")
    );
    // The same over the extended protocol.
    client
        .execute("SET extra_float_digits = 2", &[])
        .await
        .expect("extended SET");
    let shown: String = client
        .query_one("SHOW extra_float_digits", &[])
        .await
        .expect("extended SHOW")
        .get(0);
    assert_eq!(shown, "2");

    // A transaction block works, and a failed one refuses statements until ROLLBACK.
    client.batch_execute("BEGIN").await.expect("begin");
    let _ = client.simple_query("SELECT * FROM no_such_table").await;
    let e = client
        .simple_query("SELECT 1")
        .await
        .expect_err("aborted transaction");
    // PostgreSQL's SQLSTATE for this is 25P02, in_failed_sql_transaction (Appendix A, "Class
    // 25 — Invalid Transaction State"); 25P01 is no_active_sql_transaction.
    let (code, message) = db_error(&e);
    assert_eq!(code, "25P02", "{message}");
    assert!(
        message.contains("current transaction is aborted"),
        "{message}"
    );
    // BEGIN is refused the same way; only ROLLBACK (or COMMIT, which rolls back) ends it.
    let e = client
        .simple_query("BEGIN")
        .await
        .expect_err("BEGIN in an aborted transaction");
    assert_eq!(db_error(&e).0, "25P02");
    client.batch_execute("ROLLBACK").await.expect("rollback");
    assert_alive(&client).await;

    server.stop().await;
}

/// psql's catalog queries (`\dt`, `\dv`, `\d events`) and a query, as a person would type them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn psql_lists_tables_and_views() {
    let psql = Path::new("/usr/bin/psql");
    assert!(
        psql.exists(),
        "psql is missing: scripts/test installs postgresql-client"
    );
    let server = Server::start(Config::default(), Some(TOKEN)).await;
    let run = |args: &[&str], password: &str| {
        let mut command = tokio::process::Command::new(psql);
        command
            .args([
                "-X",
                "-h",
                "127.0.0.1",
                "-p",
                &server.port.to_string(),
                "-U",
                "cdlake",
                "-d",
                "cdlake",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(args)
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGSERVICE")
            .kill_on_drop(true);
        async move {
            let output = tokio::time::timeout(Duration::from_secs(60), command.output())
                .await
                .expect("psql finishes")
                .expect("run psql");
            (
                output.status.success(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
    };

    let (ok, out, err) = run(&["-c", r"\dt"], TOKEN).await;
    assert!(ok, "\\dt failed: {err}\n{out}");
    for table in ["events", "dead_letters", "teams"] {
        assert!(
            out.lines()
                .any(|l| l.split('|').nth(1).map(str::trim) == Some(table)),
            "\\dt lists {table}:\n{out}"
        );
    }

    let (ok, out, err) = run(&["-c", r"\dv"], TOKEN).await;
    assert!(ok, "\\dv failed: {err}\n{out}");
    for view in ["deployments", "changes", "incidents", "dora_deployments"] {
        assert!(
            out.lines()
                .any(|l| l.split('|').nth(1).map(str::trim) == Some(view)),
            "\\dv lists {view}:\n{out}"
        );
    }

    let (ok, out, err) = run(&["-c", r"\d events"], TOKEN).await;
    assert!(ok, "\\d events failed: {err}\n{out}");
    for column in ["event_id", "subject", "time", "payload"] {
        assert!(
            out.lines()
                .any(|l| l.split('|').next().map(str::trim) == Some(column)),
            "\\d events shows column {column}:\n{out}"
        );
    }

    let (ok, out, err) = run(
        &["-A", "-t", "-c", "SELECT count(*) FROM dora_deployments"],
        TOKEN,
    )
    .await;
    assert!(ok, "query failed: {err}");
    assert_eq!(out.trim(), "5");

    // psql shows a refused statement's error and exits non-zero.
    let (ok, _, err) = run(&["-c", "CREATE VIEW v AS SELECT 1"], TOKEN).await;
    assert!(!ok);
    assert!(err.contains("read-only"), "{err}");

    // A wrong password is refused.
    let (ok, _, err) = run(&["-c", "SELECT 1"], "wrong").await;
    assert!(!ok);
    assert!(
        err.to_lowercase()
            .contains("password authentication failed"),
        "{err}"
    );

    server.stop().await;
}

/// The queries Grafana's PostgreSQL data source sends to test the connection and to fill its
/// query editor (table and column pickers).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grafana_catalog_queries() {
    let server = Server::start(Config::default(), Some(TOKEN)).await;
    let client = server.connect().await;

    assert_eq!(
        simple_value(&client, "SELECT 1").await.as_deref(),
        Some("1")
    );
    let version: String = client
        .query_one("SELECT version()", &[])
        .await
        .expect("version()")
        .get(0);
    assert!(!version.is_empty());

    let tables_sql = r#"SELECT
        CASE WHEN
              quote_ident(table_schema) IN (
              SELECT
                CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
              FROM
                generate_series(
                  array_lower(string_to_array(current_setting('search_path'),','),1),
                  array_upper(string_to_array(current_setting('search_path'),','),1)
                ) as i,
                string_to_array(current_setting('search_path'),',') s
              )
          THEN quote_ident(table_name)
          ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
        END AS "table"
        FROM information_schema.tables
        WHERE quote_ident(table_schema) NOT IN ('information_schema',
                                 'pg_catalog',
                                 '_timescaledb_cache',
                                 '_timescaledb_catalog',
                                 '_timescaledb_internal',
                                 '_timescaledb_config',
                                 'timescaledb_information',
                                 'timescaledb_experimental')
        ORDER BY CASE WHEN
              quote_ident(table_schema) IN (
              SELECT
                CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
              FROM
                generate_series(
                  array_lower(string_to_array(current_setting('search_path'),','),1),
                  array_upper(string_to_array(current_setting('search_path'),','),1)
                ) as i,
                string_to_array(current_setting('search_path'),',') s
              ) THEN 0 ELSE 1 END, 1"#;
    let tables: Vec<String> = simple_rows(&client, tables_sql)
        .await
        .into_iter()
        .filter_map(|r| r.into_iter().next())
        .collect();
    for table in ["events", "dead_letters", "deployments", "dora_deployments"] {
        assert!(
            tables
                .iter()
                .any(|t| t == table || t.ends_with(&format!(".{table}"))),
            "Grafana's table list has {table}: {tables:?}"
        );
    }

    let columns_sql = r#"SELECT quote_ident(column_name) AS "column", data_type AS "type"
        FROM information_schema.columns
        WHERE
          CASE WHEN array_length(parse_ident('public.events'),1) = 2
            THEN quote_ident(table_schema) = (parse_ident('public.events'))[1]
              AND quote_ident(table_name) = (parse_ident('public.events'))[2]
            ELSE quote_ident(table_name) = 'public.events'
              AND
              quote_ident(table_schema) IN (
              SELECT
                CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
              FROM
                generate_series(
                  array_lower(string_to_array(current_setting('search_path'),','),1),
                  array_upper(string_to_array(current_setting('search_path'),','),1)
                ) as i,
                string_to_array(current_setting('search_path'),',') s
              )
          END"#;
    let columns = simple_rows(&client, columns_sql).await;
    let names: Vec<&str> = columns.iter().map(|r| r[0].as_str()).collect();
    for column in ["event_id", "time", "service", "environment"] {
        assert!(
            names.contains(&column),
            "Grafana's column list of events has {column}: {names:?}"
        );
    }

    // A time-series panel as Grafana sends it: $__timeFilter and $__timeGroup expanded to
    // literals, simple protocol.
    let rows = simple_rows(
        &client,
        "SELECT floor(extract(epoch from time)/86400)*86400 AS \"time\", \
         count(*) AS deployments FROM dora_deployments \
         WHERE time BETWEEN '2025-03-01T00:00:00Z' AND '2025-03-31T23:59:59Z' \
         GROUP BY 1 ORDER BY 1",
    )
    .await;
    let counts: Vec<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(counts, ["2", "1", "1", "1"], "{rows:?}");
    // The same with the window bound as timestamptz parameters (extended protocol, binary).
    let day = Duration::from_secs(86_400);
    let from = std::time::UNIX_EPOCH + Duration::from_secs(1_740_787_200); // 2025-03-01
    let rows = client
        .query(
            "SELECT date_trunc('day', time) AS time, count(*) AS deployments \
             FROM dora_deployments WHERE time >= $1 AND time < $2 GROUP BY 1 ORDER BY 1",
            &[&from, &(from + 31 * day)],
        )
        .await
        .expect("timestamptz parameters");
    let days: Vec<std::time::SystemTime> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        days,
        [from, from + day, from + 3 * day, from + 4 * day],
        "deployment days"
    );

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logins_are_checked() {
    let server = Server::start(Config::default(), Some(TOKEN)).await;

    let e = server
        .connect_as("cdlake", None)
        .await
        .expect_err("no password with a token set: denied");
    // The server asked for a password, and tokio-postgres has none to give.
    assert!(format!("{e:?}").contains("password missing"), "{e:?}");

    let e = server
        .connect_as("cdlake", Some("not-the-token"))
        .await
        .expect_err("wrong password: denied");
    let (code, message) = db_error(&e);
    assert_eq!(code, "28P01", "{message}");

    let e = server
        .connect_as("cdlake", Some(""))
        .await
        .expect_err("empty password: denied");
    assert_eq!(db_error(&e).0, "28P01");

    let e = server
        .connect_as("cdlake", Some(&TOKEN[..TOKEN.len() - 1]))
        .await
        .expect_err("a prefix of the token: denied");
    assert_eq!(db_error(&e).0, "28P01");

    let e = server
        .connect_as("postgres", Some(TOKEN))
        .await
        .expect_err("user postgres with the right password: denied");
    let (code, message) = db_error(&e);
    assert_eq!(code, "28000", "{message}");
    assert!(message.contains("postgres"), "{message}");

    let client = server.connect().await;
    assert_alive(&client).await;
    server.stop().await;

    // Without a token, user cdlake logs in without a password; other users still cannot.
    let server = Server::start(Config::default(), None).await;
    let client = server
        .connect_as("cdlake", None)
        .await
        .expect("no token: cdlake logs in");
    assert_alive(&client).await;
    let e = server
        .connect_as("postgres", None)
        .await
        .expect_err("no token: postgres denied");
    assert_eq!(db_error(&e).0, "28000");
    server.stop().await;
}

/// A client that ignores the failed login and sends a query anyway gets nothing run (pgwire
/// goes on reading after a fatal login error; the handlers check the login themselves).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_after_a_failed_login_are_not_run() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = Server::start(Config::default(), Some(TOKEN)).await;
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");

    // StartupMessage as user postgres, then (without waiting) a Query message.
    let mut startup = Vec::new();
    startup.extend_from_slice(&196608i32.to_be_bytes());
    for s in ["user", "postgres", "database", "cdlake", ""] {
        startup.extend_from_slice(s.as_bytes());
        startup.push(0);
    }
    let mut message = ((startup.len() + 4) as i32).to_be_bytes().to_vec();
    message.extend_from_slice(&startup);
    // A query that would run for minutes (the default time limit is 300 s).
    let sql = b"SELECT count(*) FROM generate_series(1, 10000000000) WHERE value % 7 <> 3\0";
    message.push(b'Q');
    message.extend_from_slice(&((sql.len() + 4) as i32).to_be_bytes());
    message.extend_from_slice(sql);
    socket.write_all(&message).await.expect("send");

    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut received)).await;
    // The answer holds the login error and no row description or data row.
    let mut kinds = Vec::new();
    let mut at = 0;
    while at + 5 <= received.len() {
        kinds.push(received[at] as char);
        let len = i32::from_be_bytes([
            received[at + 1],
            received[at + 2],
            received[at + 3],
            received[at + 4],
        ]) as usize;
        at += 1 + len;
    }
    assert_eq!(kinds.first(), Some(&'E'), "{kinds:?}");
    assert!(
        !kinds.contains(&'T') && !kinds.contains(&'D'),
        "no query result after a failed login: {kinds:?}"
    );
    // The server dropped the connection at once instead of running the query: writing to it
    // soon fails (a reset). Had it run the query, the socket would stay open for minutes.
    let mut closed = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if socket.write_all(b"S\0\0\0\x04").await.is_err() {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "the connection stayed open: the server ran the query sent after a failed login"
    );
    server.stop().await;
}

/// Every write, configuration change and file access is refused, on both protocols, and
/// nothing is written anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statements_that_write_or_read_files_are_refused() {
    let server = Server::start(Config::default(), Some(TOKEN)).await;
    let client = server.connect().await;
    let before = server.store_files();
    let outside = tempfile::tempdir().expect("temp dir");
    let copy_target = outside.path().join("x.csv");
    let tmp_x = Path::new("/tmp/x");
    let tmp_x_existed = tmp_x.exists();

    let refused = [
        "CREATE EXTERNAL TABLE etc STORED AS CSV LOCATION '/etc/'".to_string(),
        "CREATE EXTERNAL TABLE passwd (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'"
            .to_string(),
        "COPY (SELECT 1) TO '/tmp/x'".to_string(),
        format!("COPY (SELECT * FROM events) TO '{}'", copy_target.display()),
        format!(
            "COPY events TO '{}' STORED AS CSV",
            outside.path().join("events.csv").display()
        ),
        "INSERT INTO events (event_id) VALUES ('x')".to_string(),
        "INSERT INTO teams VALUES ('svc', 'team')".to_string(),
        "DELETE FROM events".to_string(),
        "UPDATE teams SET team = 'x'".to_string(),
        "CREATE VIEW v AS SELECT 1".to_string(),
        "CREATE TABLE t AS SELECT 1 AS a".to_string(),
        "DROP VIEW deployments".to_string(),
        "DROP TABLE events".to_string(),
        "SET datafusion.execution.batch_size = 1".to_string(),
        "SET datafusion.catalog.information_schema = false".to_string(),
        "SET datafusion.runtime.memory_limit = '100G'".to_string(),
        "SET role postgres".to_string(),
        "SELECT * FROM '/etc/passwd'".to_string(),
        "SELECT * FROM 'file:///etc/passwd'".to_string(),
        "SELECT count(*) FROM events e JOIN '/etc/hosts' h ON true".to_string(),
        "EXPLAIN INSERT INTO teams VALUES ('a', 'b')".to_string(),
        "EXPLAIN ANALYZE COPY (SELECT 1) TO '/tmp/x'".to_string(),
    ];
    for sql in &refused {
        // Simple protocol.
        let e = client
            .simple_query(sql)
            .await
            .err()
            .unwrap_or_else(|| panic!("simple: {sql} must be refused"));
        let (code, message) = db_error(&e);
        assert!(
            message.contains("read-only") && message.contains("refused"),
            "simple: {sql}: {code} {message}"
        );
        assert_eq!(code, "42501", "simple: {sql}: {message}");
        // Extended protocol.
        let e = client
            .query(sql.as_str(), &[])
            .await
            .err()
            .unwrap_or_else(|| panic!("extended: {sql} must be refused"));
        let (code, message) = db_error(&e);
        assert!(
            message.contains("read-only") && message.contains("refused"),
            "extended: {sql}: {code} {message}"
        );
        assert_eq!(code, "42501", "extended: {sql}: {message}");
    }
    // A refused statement in a multi-statement string stops it there.
    let e = client
        .simple_query("SELECT 1; INSERT INTO teams VALUES ('a', 'b'); SELECT 2")
        .await
        .expect_err("refused in a batch");
    assert_eq!(db_error(&e).0, "42501");

    // Nothing was created, registered, changed or written.
    for name in ["etc", "passwd", "v", "t"] {
        let e = client
            .simple_query(&format!("SELECT * FROM {name}"))
            .await
            .expect_err("no table was registered");
        assert!(db_error(&e).1.contains(name), "{e:?}");
    }
    let n: i64 = client
        .query_one("SELECT count(*) FROM teams", &[])
        .await
        .expect("teams")
        .get(0);
    assert_eq!(n, 0);
    let n: i64 = client
        .query_one("SELECT count(*) FROM deployments", &[])
        .await
        .expect("the view deployments is still there")
        .get(0);
    assert_eq!(n, 6);
    let state = server.engine.session().state();
    let options = state.config().options();
    assert_ne!(state.config().batch_size(), 1, "batch_size unchanged");
    assert!(options.catalog.information_schema, "information_schema on");
    assert!(
        !copy_target.exists(),
        "COPY wrote {}",
        copy_target.display()
    );
    assert_eq!(
        std::fs::read_dir(outside.path()).expect("dir").count(),
        0,
        "nothing written outside the store"
    );
    assert_eq!(tmp_x.exists(), tmp_x_existed, "COPY must not create /tmp/x");
    assert_eq!(server.store_files(), before, "the store is unchanged");
    assert_alive(&client).await;
    server.stop().await;
}

/// A runaway query ends with an error, not a crash, and the same connection (and the server)
/// keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runaway_queries_end_with_an_error() {
    let server = Server::start(small_limits(), Some(TOKEN)).await;
    let client = server.connect().await;

    // 10^8 rows sorted: over the 64 MB memory pool (or the 3 s time limit).
    let started = Instant::now();
    let e = client
        .simple_query(
            "SELECT * FROM generate_series(1,10000) a CROSS JOIN generate_series(1,10000) b \
             ORDER BY 1 DESC",
        )
        .await
        .expect_err("sorted cross join of 10^8 rows");
    let (code, message) = db_error(&e);
    eprintln!("sorted cross join: {code} {message}");
    assert!(
        ["53200", "57014", "54000"].contains(&code.as_str()),
        "{code} {message}"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "ended quickly");
    assert_alive(&client).await;

    // 10^8 rows streamed: refused by the result guard long before memory runs out.
    let e = client
        .query(
            "SELECT * FROM generate_series(1,10000) a CROSS JOIN generate_series(1,10000) b",
            &[],
        )
        .await
        .expect_err("cross join of 10^8 rows");
    let (code, message) = db_error(&e);
    assert_eq!(code, "54000", "{message}");
    assert!(message.contains("LIMIT"), "{message}");
    assert_alive(&client).await;

    // Ten billion rows filtered and counted: little memory, much time; the 3 s limit stops it.
    let long_query = "SELECT count(*) FROM generate_series(1, 10000000000) \
                      WHERE value % 7 <> 3";
    let started = Instant::now();
    let e = client
        .simple_query(long_query)
        .await
        .expect_err("count over 10^10 rows");
    let (code, message) = db_error(&e);
    assert_eq!(code, "57014", "{message}");
    assert!(message.contains("time limit of 3 s"), "{message}");
    // Stopped by the limit, not by something that failed early; and stopped: the engine runs
    // nothing once the answer is in (the query would otherwise count for minutes).
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "answered before the limit: {:?}",
        started.elapsed()
    );
    assert!(
        wait_until(Duration::from_secs(30), || server.engine.running_queries()
            == 0)
        .await,
        "the timed-out query still runs"
    );
    assert_alive(&client).await;

    // A client's own shorter statement_timeout applies too; a longer one does not extend ours.
    client
        .batch_execute("SET statement_timeout = 500")
        .await
        .expect("set statement_timeout");
    let e = client
        .query(long_query, &[])
        .await
        .expect_err("statement_timeout");
    assert_eq!(
        db_error(&e),
        (
            "57014".to_string(),
            "canceling statement due to statement timeout".to_string()
        ),
        "the client's shorter limit applied"
    );
    // A cancel request (psql's Ctrl-C) stops the running statement.
    // Without the client's short timeout; sent once the statement runs on the server (not
    // after a guess of how long that takes).
    client
        .batch_execute("SET statement_timeout = '1h'")
        .await
        .expect("set statement_timeout");
    assert!(
        wait_until(Duration::from_secs(30), || server.engine.running_queries()
            == 0)
        .await,
        "the statement stopped by statement_timeout still runs"
    );
    let cancel = client.cancel_token();
    let engine = server.engine.clone();
    let canceller = tokio::spawn(async move {
        assert!(
            wait_until(Duration::from_secs(30), || engine.running_queries() == 1).await,
            "the statement never started"
        );
        cancel.cancel_query(NoTls).await
    });
    let e = client
        .simple_query(long_query)
        .await
        .expect_err("canceled by the client");
    canceller
        .await
        .expect("cancel task")
        .expect("cancel request sent");
    assert_eq!(db_error(&e).0, "57014", "{e:?}");
    assert!(db_error(&e).1.contains("user request"), "{e:?}");
    assert_alive(&client).await;
    let e = client
        .simple_query(long_query)
        .await
        .expect_err("the engine's limit still holds");
    assert!(db_error(&e).1.contains("time limit of 3 s"), "{e:?}");
    assert_alive(&client).await;

    // A 10,000-term OR chain is refused before it is planned (planning it would overflow the
    // stack); a chain just under the limit is answered, on both protocols.
    let chain = |terms: usize| {
        (0..terms)
            .map(|i| format!("subject_id = 'svc-{i}'"))
            .chain(["subject_id = 'checkout'".to_string()])
            .collect::<Vec<_>>()
            .join(" OR ")
    };
    let sql = format!("SELECT count(*) FROM events WHERE {}", chain(10_000));
    let e = client
        .simple_query(&sql)
        .await
        .expect_err("simple: too large");
    let (code, message) = db_error(&e);
    assert_eq!(code, "54001", "{message}");
    assert!(message.contains("IN ("), "{message}");
    assert_alive(&client).await;
    let e = client
        .query(sql.as_str(), &[])
        .await
        .expect_err("extended: too large");
    assert_eq!(db_error(&e).0, "54001");
    assert_alive(&client).await;
    // Just under check_complexity's 2,000 operators.
    let sql = format!("SELECT count(*) FROM events WHERE {}", chain(990));
    assert_eq!(
        simple_value(&client, &sql).await.as_deref(),
        Some("3"),
        "991-term chain"
    );
    let n: i64 = client
        .query_one(sql.as_str(), &[])
        .await
        .expect("991-term chain")
        .get(0);
    assert_eq!(n, 3);
    let sql = format!(
        "SELECT count(*) FROM events WHERE subject_id IN ({})",
        (0..10_000)
            .map(|i| format!("'svc-{i}'"))
            .chain(["'checkout'".to_string()])
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert_eq!(
        simple_value(&client, &sql).await.as_deref(),
        Some("3"),
        "the IN list the error suggests works"
    );

    // The server still takes new connections.
    let other = server.connect().await;
    assert_alive(&other).await;
    server.stop().await;
}
