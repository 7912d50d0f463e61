//! End to end: the real `cdlake tui` in a detached tmux session against a real
//! `cdlake standalone`; events posted over HTTP must appear on its screen.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Service, shared};

/// A tmux server of our own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux is not installed: run scripts/test, which installs Debian's tmux package")
    }

    fn capture(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "tui"]).stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "tui"];
        args.extend_from_slice(keys);
        assert!(self.cmd(&args).status.success(), "tmux send-keys {keys:?}");
    }

    /// Polls the screen until `pred` holds; the last screen on failure.
    fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.capture();
            if pred(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn deployed(service: &str, id: &str) -> String {
    std::fs::read_to_string(
        shared().join("fixtures/cdevents/v0.5.1/conformance/service_deployed.json"),
    )
    .expect("the service_deployed fixture")
    .replace("271069a8-fc18-44f1-b38f-9d70a1695819", id)
    .replace("mySubject123", service)
    .replace("test123", "prod")
    .replace(
        "2023-03-20T14:27:05.315384Z",
        &chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    )
}

fn exit_status(file: &Path) -> Option<String> {
    std::fs::read_to_string(file)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[tokio::test(flavor = "multi_thread")]
async fn tui_shows_live_events_switches_tabs_and_quits() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let svc = Service::spawn(&[
        "standalone",
        "--store",
        store.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--pg-listen",
        "off",
    ]);
    let tag = std::process::id();
    let tmux = Tmux {
        socket: format!("cdlake-tui-test-{tag}"),
    };
    let exit_file: PathBuf = dir.path().join("tui-exit");
    let command = format!(
        "env -u CDLAKE_TOKEN -u CDLAKE_LOG {bin} tui --url {url}; echo $? > {exit}",
        bin = sh_quote(env!("CARGO_BIN_EXE_cdlake")),
        url = sh_quote(&format!("http://{}", svc.addr)),
        exit = sh_quote(exit_file.to_str().unwrap()),
    );
    let out = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "tui",
        "-x",
        "120",
        "-y",
        "40",
        &command,
    ]);
    assert!(
        out.status.success(),
        "tmux new-session: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let screen = tmux.wait_for("the live tab, connected", Duration::from_secs(20), |s| {
        s.contains("connected") && s.contains("Waiting for events")
    });
    assert!(screen.contains("1 Live"), "{screen}");

    // Events posted now appear, newest first, with their service and environment.
    let client = reqwest::Client::new();
    let services: Vec<String> = (0..3).map(|i| format!("e2e{tag}-{i}")).collect();
    for (i, service) in services.iter().enumerate() {
        let r = client
            .post(svc.url("/api/v1/events"))
            .body(deployed(service, &format!("tui-e2e-{tag}-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let screen = tmux.wait_for("the posted events", Duration::from_secs(30), |s| {
        services.iter().all(|name| s.contains(name.as_str()))
    });
    assert!(screen.contains("service.deployed"), "{screen}");
    assert!(screen.contains("prod"), "{screen}");
    assert!(screen.contains("cdevents"), "{screen}");

    // Enter opens the selected event's payload, fetched over /api/v1/sql.
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the payload", Duration::from_secs(20), |s| {
        s.contains("\"context\": {") && s.contains("\"id\": \"tui-e2e-")
    });
    assert!(screen.contains("\"chainId\""), "{screen}");
    // An Escape and the next key read together are Alt+key to a terminal application (one
    // read of `\x1b/`): wait until the Escape took effect before typing on.
    tmux.keys(&["Escape"]);
    tmux.wait_for("the payload to close", Duration::from_secs(10), |s| {
        !s.contains("\"context\": {")
    });

    // The filter hides what does not match.
    tmux.keys(&["/"]);
    tmux.keys(&["-l", &format!("service={}", services[0])]);
    tmux.keys(&["Enter"]);
    tmux.wait_for("the filter", Duration::from_secs(10), |s| {
        s.contains("filter:") && s.contains(&services[0]) && !s.contains(&services[1])
    });
    tmux.keys(&["Escape"]);
    // As above: the Escape must be read before the next key.
    std::thread::sleep(Duration::from_millis(500));

    // The DORA tab: one production deployment per service.
    tmux.keys(&["2"]);
    let screen = tmux.wait_for("the DORA board", Duration::from_secs(60), |s| {
        s.contains("Deploy freq") && s.contains(&services[2])
    });
    assert!(screen.contains("Window"), "{screen}");

    // The pipelines tab: no runs yet, said plainly.
    tmux.keys(&["3"]);
    tmux.wait_for("the pipelines tab", Duration::from_secs(30), |s| {
        s.contains("No pipeline runs stored yet")
    });

    // Resized to 80x24, the screen is redrawn to fit: tabs, the rows and the key footer.
    tmux.cmd(&["resize-window", "-t", "tui", "-x", "80", "-y", "24"]);
    tmux.keys(&["1"]);
    let screen = tmux.wait_for("the 80x24 redraw", Duration::from_secs(10), |s| {
        s.lines().count() <= 24
            && s.lines().all(|l| l.chars().count() <= 80)
            && s.contains("1 Live")
            && s.contains(&services[2])
    });
    assert!(screen.contains("q"), "the footer names the keys: {screen}");

    // The service goes away: a banner says so; it comes back on the same address and the UI
    // reconnects by itself and shows what is posted next.
    let addr = svc.addr.clone();
    let mut svc = svc;
    svc.kill9();
    tmux.wait_for("the connection-lost banner", Duration::from_secs(20), |s| {
        s.contains("Connection lost")
    });
    let svc = Service::spawn(&[
        "standalone",
        "--store",
        store.to_str().unwrap(),
        "--listen",
        &addr,
        "--pg-listen",
        "off",
    ]);
    tmux.wait_for("the reconnection", Duration::from_secs(30), |s| {
        !s.contains("Connection lost") && s.contains("connected")
    });
    let again = format!("e2e{tag}-back");
    let r = client
        .post(svc.url("/api/v1/events"))
        .body(deployed(&again, &format!("tui-e2e-{tag}-back")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tmux.wait_for(
        "an event after the reconnection",
        Duration::from_secs(30),
        |s| s.contains(&again),
    );

    // q quits and the process exits cleanly.
    tmux.keys(&["q"]);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = exit_status(&exit_file) {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "cdlake tui did not exit after q; the screen:\n{}",
            tmux.capture()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status, "0", "cdlake tui exit status");
}
