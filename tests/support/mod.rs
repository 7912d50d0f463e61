//! Shared by the end-to-end tests: real `nats-server` and `cdlake` processes on free ports.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn shared() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../shared")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Send a signal with the `kill` command.
/// GitHub's `X-Hub-Signature-256` of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status();
}

/// A real `nats-server` with JetStream and file storage in a directory of its own.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
}

impl Nats {
    pub fn start(dir: &Path) -> Nats {
        let mut n = Nats {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is not installed: run scripts/test, which installs Debian's nats-server package");
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, Duration::from_secs(20)),
            "nats-server did not listen on {}",
            self.port
        );
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stop gracefully (SIGTERM) and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "TERM");
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A running `cdlake` service; its address is read from its "Listening on" line.
pub struct Service {
    child: Option<Child>,
    pub addr: String,
    pub log: Arc<Mutex<String>>,
}

impl Service {
    pub fn spawn(args: &[&str]) -> Service {
        Self::spawn_env(args, &[])
    }

    pub fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Service {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cdlake"))
            .args(args)
            .envs(env.iter().copied())
            .env_remove("CDLAKE_CONFIG")
            .env("CDLAKE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run cdlake");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("Listening on http://").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("cdlake {args:?} did not start:\n{}", log.lock().unwrap()));
        Service {
            child: Some(child),
            addr,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "TERM");
            let status = c.wait().expect("wait");
            assert!(
                status.success(),
                "cdlake exited with {status}:\n{}",
                self.log()
            );
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The sum of every series of a metric.
    pub async fn metric(&self, name: &str) -> f64 {
        let Ok(resp) = reqwest::get(self.url("/metrics")).await else {
            return 0.0;
        };
        let text = resp.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `cdlake standalone` on `store`, HTTP and Postgres on free loopback ports, with `extra` flags.
pub fn standalone(store: &Path, extra: &[&str]) -> Service {
    standalone_env(store, extra, &[])
}

/// [`standalone`] with environment variables.
pub fn standalone_env(store: &Path, extra: &[&str], env: &[(&str, &str)]) -> Service {
    let store = store.to_str().unwrap().to_string();
    let mut args = vec![
        "standalone",
        "--store",
        &store,
        "--listen",
        "127.0.0.1:0",
        "--pg-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Service::spawn_env(&args, env)
}

pub fn cdlake(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cdlake"))
        .args(args)
        .env("CDLAKE_STORE", store)
        .env_remove("CDLAKE_CONFIG")
        .output()
        .expect("run cdlake")
}

/// The standard output of a `cdlake` run that must succeed; else its status and both outputs.
pub fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "cdlake failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sql_json(store: &Path, query: &str) -> Vec<serde_json::Value> {
    let out = cdlake(store, &["sql", "--format", "json", query]);
    assert!(
        out.status.success(),
        "cdlake sql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// One number from a single-row query.
pub fn sql_u64(store: &Path, query: &str) -> u64 {
    let rows = sql_json(store, query);
    let v = rows[0]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Poll `f` until it is true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// A compact CDEvent (v0.4.1 `pipelinerun.finished`) with a unique id, `pad` bytes of filler
/// in `customData`.
pub fn pipeline_event(i: u64, day: u32, pad: &str) -> String {
    format!(
        r#"{{"context":{{"version":"0.4.1","id":"e2e-{i}","source":"/e2e/ci","type":"dev.cdevents.pipelinerun.finished.0.1.1","timestamp":"2026-03-{day:02}T10:{m:02}:{s:02}Z"}},"subject":{{"id":"run-{i}","source":"/e2e/ci","type":"pipelineRun","content":{{"pipelineName":"build","outcome":"success","url":"https://ci.example/run/{i}"}}}},"customData":{{"pad":"{pad}"}}}}"#,
        m = (i / 60) % 60,
        s = i % 60
    )
}

/// The JetStream consumer's outstanding work: (pending, ack pending).
pub async fn consumer_backlog(js: &async_nats::jetstream::Context) -> Option<(u64, usize)> {
    let mut stream = js.get_stream("CDLAKE").await.ok()?;
    let _ = stream.info().await.ok()?;
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer("cdlake-ingest").await.ok()?;
    let info = consumer.info().await.ok()?;
    Some((info.num_pending, info.num_ack_pending))
}

/// A real S3-compatible server (moto) on a free port, with one bucket.
pub struct S3 {
    child: Option<Child>,
    pub port: u16,
    pub bucket: String,
}

impl S3 {
    /// Start `moto_server` (installed by scripts/test) and create `bucket`.
    pub async fn start(bucket: &str) -> S3 {
        let port = free_port();
        let mut cmd = if Command::new("moto_server").arg("--help").output().is_ok() {
            Command::new("moto_server")
        } else {
            let mut c = Command::new("python3");
            c.args(["-m", "moto.server"]);
            c
        };
        let child = cmd
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (scripts/test installs moto[server] from PyPI)");
        let s3 = S3 {
            child: Some(child),
            port,
            bucket: bucket.to_string(),
        };
        assert!(
            wait_for_port(port, Duration::from_secs(30)),
            "moto_server did not start"
        );
        let created = reqwest::Client::new()
            .put(format!("{}/{bucket}", s3.endpoint()))
            .send()
            .await
            .expect("create bucket");
        assert!(created.status().is_success(), "{created:?}");
        s3
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The environment a cdlake process needs to reach it.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), "cdlake".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "cdlake-secret".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ENDPOINT".into(), self.endpoint()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
        ]
    }

    /// The same as object-store options, for an in-process store.
    pub fn options(&self) -> Vec<(String, String)> {
        self.env()
            .into_iter()
            .map(|(k, v)| (k.to_lowercase(), v))
            .collect()
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Azurite, Microsoft's Azure Storage emulator (its blob service), on a free port, with one
/// container.
pub struct Azurite {
    child: Option<Child>,
    pub port: u16,
    pub container: String,
    _data: tempfile::TempDir,
}

/// The emulator's well-known account and key (public, in Azurite's documentation).
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl Azurite {
    /// Start `azurite-blob` (scripts/test installs it from npm) and create `container`.
    pub async fn start(container: &str) -> Azurite {
        let port = free_port();
        let data = tempfile::tempdir().unwrap();
        let child = Command::new("azurite-blob")
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args(["--disableTelemetry", "--silent", "--location"])
            .arg(data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("azurite-blob (scripts/test installs azurite from npm)");
        let azurite = Azurite {
            child: Some(child),
            port,
            container: container.to_string(),
            _data: data,
        };
        assert!(
            wait_for_port(port, Duration::from_secs(60)),
            "azurite-blob did not start"
        );
        azurite.create_container().await;
        azurite
    }

    /// `PUT ?restype=container`, signed with the account key as Azure's Shared Key scheme
    /// asks (the string to sign: the verb, twelve empty standard headers, the `x-ms-` headers,
    /// the resource).
    async fn create_container(&self) {
        use base64::Engine;
        use hmac::Mac;
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let version = "2021-08-06";
        let to_sign = format!(
            "PUT\n{}x-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{}\nrestype:container",
            "\n".repeat(11),
            self.container
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(AZURITE_KEY)
            .unwrap();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(to_sign.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let created = reqwest::Client::new()
            .put(format!(
                "{}/{}?restype=container",
                self.endpoint(),
                self.container
            ))
            .header("x-ms-date", date)
            .header("x-ms-version", version)
            .header(
                "Authorization",
                format!("SharedKey {AZURITE_ACCOUNT}:{signature}"),
            )
            .send()
            .await
            .expect("create container");
        assert!(created.status().is_success(), "{:?}", created.text().await);
    }

    /// The blob service's address, the account in its path.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port)
    }

    /// `az://container/prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("az://{}/{prefix}", self.container)
    }

    /// The environment a cdlake process needs to reach it: object_store's emulator mode (the
    /// well-known account, and listing from an offset filtered on the client: Azurite lacks
    /// the `startFrom` parameter that Azure's listings take, which the Delta log's reads use).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR".into(), "true".into()),
            (
                "AZURITE_BLOB_STORAGE_URL".into(),
                format!("http://127.0.0.1:{}", self.port),
            ),
        ]
    }

    /// Object-store options for an in-process store, which lists without an offset only: the
    /// account, its key and the endpoint, as for any Azure-compatible service (the emulator
    /// mode takes its address from the environment alone).
    pub fn options(&self) -> Vec<(String, String)> {
        vec![
            ("azure_storage_account_name".into(), AZURITE_ACCOUNT.into()),
            ("azure_storage_account_key".into(), AZURITE_KEY.into()),
            ("azure_storage_endpoint".into(), self.endpoint()),
            ("azure_allow_http".into(), "true".into()),
        ]
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Run cdlake with extra environment variables (the store named by `--store` in `args`).
pub fn cdlake_env(args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cdlake"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("CDLAKE_CONFIG")
        .env_remove("CDLAKE_STORE")
        .output()
        .expect("run cdlake")
}
