//! The HTTP receivers of `cdlake standalone` with real GitHub and GitLab webhook bodies:
//! signatures, tokens, limits, CloudEvents modes, redeliveries and dead letters.

mod support;

use std::path::{Path, PathBuf};

use support::*;

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    out.sort();
    out
}

/// A webhook delivery: route, headers, body.
type Delivery = (&'static str, Vec<(&'static str, String)>, Vec<u8>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_github_and_gitlab_fixture_is_accepted_and_normalised() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut svc = standalone(
        &store,
        &[
            "--github-secret",
            "old-secret",
            "--github-secret",
            "new-secret",
            "--gitlab-token",
            "gl-token",
        ],
    );
    let client = reqwest::Client::new();
    let github = shared().join("fixtures/github");
    // Every delivery: (route, headers, body). GitHub's event name is the folder name.
    let mut deliveries: Vec<Delivery> = Vec::new();
    let mut kinds: Vec<_> = std::fs::read_dir(&github)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    kinds.sort();
    for event_dir in kinds {
        let kind = event_dir.file_name().unwrap().to_str().unwrap().to_string();
        for (n, file) in files(&event_dir).into_iter().enumerate() {
            let body = std::fs::read(&file).unwrap();
            // Rotation: alternate between the old and the new secret.
            let secret = if n % 2 == 0 {
                "old-secret"
            } else {
                "new-secret"
            };
            let headers = vec![
                ("X-GitHub-Event", kind.clone()),
                ("X-GitHub-Delivery", format!("{kind}-{n}")),
                ("X-Hub-Signature-256", sign(secret, &body)),
            ];
            deliveries.push(("/webhooks/github", headers, body));
        }
    }
    for (n, file) in files(&shared().join("fixtures/gitlab"))
        .into_iter()
        .enumerate()
    {
        let headers = vec![
            ("X-Gitlab-Token", "gl-token".to_string()),
            ("X-Gitlab-Event-UUID", format!("gitlab-{n}")),
        ];
        deliveries.push(("/webhooks/gitlab", headers, std::fs::read(&file).unwrap()));
    }
    // Sent concurrently, as GitHub does; each answer waits for its commit.
    let answers = futures::future::join_all(deliveries.iter().map(|(route, headers, body)| {
        let mut req = client
            .post(svc.url(route))
            .header("content-type", "application/json")
            .body(body.clone());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        async move {
            let resp = req.send().await.unwrap();
            (
                resp.status().as_u16(),
                resp.json::<serde_json::Value>().await.unwrap(),
            )
        }
    }))
    .await;
    let (mut posted, mut pings, mut gitlab_posted) = (0u64, 0u64, 0u64);
    let mut github_duplicates = 0u64;
    let mut payloads = std::collections::BTreeSet::new();
    for ((route, headers, body), (status, answer)) in deliveries.iter().zip(&answers) {
        assert_eq!(*status, 200, "{route} {headers:?}: {answer}");
        if answer["pong"] == true {
            pings += 1;
            continue;
        }
        if answer["accepted"] == 1 {
            payloads.insert(String::from_utf8(body.clone()).unwrap());
        }
        if *route == "/webhooks/github" {
            // One fact, one row: fixtures that are the same fact (a variant with an
            // organisation or an installation) are duplicates of it.
            let (accepted, duplicate) = (
                answer["accepted"].as_u64().unwrap_or(0),
                answer["duplicate"].as_u64().unwrap_or(0),
            );
            assert_eq!(accepted + duplicate, 1, "{route} {headers:?}: {answer}");
            posted += accepted;
            github_duplicates += duplicate;
        } else {
            assert_eq!(answer["accepted"], 1, "{route} {headers:?}: {answer}");
            gitlab_posted += 1;
        }
    }
    assert_eq!(pings, 3);
    // The fixtures hold the same facts more than once, and mostly distinct ones.
    assert!(
        github_duplicates > 0 && github_duplicates < posted,
        "{github_duplicates} of {posted}"
    );
    svc.terminate();
    eprintln!("github deliveries {posted} (+{pings} pings), gitlab deliveries {gitlab_posted}");
    assert_eq!(
        sql_u64(
            &store,
            "SELECT count(*) AS n FROM events WHERE origin = 'github'"
        ),
        posted
    );
    assert_eq!(
        sql_u64(
            &store,
            "SELECT count(*) AS n FROM events WHERE origin = 'gitlab'"
        ),
        gitlab_posted
    );
    // deployment_status success: one service.deployed with its environment and commit.
    let body: serde_json::Value = serde_json::from_slice(
        &std::fs::read(github.join("deployment_status/success.payload.json"))
            .or_else(|_| {
                let f = files(&github.join("deployment_status"))
                    .into_iter()
                    .find(|f| {
                        std::fs::read_to_string(f)
                            .unwrap()
                            .contains("\"state\": \"success\"")
                    })
                    .expect("a successful deployment_status fixture");
                std::fs::read(f)
            })
            .unwrap(),
    )
    .unwrap();
    let deployed = sql_json(
        &store,
        "SELECT subject_id, service, environment, artifact_id, payload FROM events \
         WHERE origin = 'github' AND subject = 'service' AND predicate = 'deployed'",
    );
    assert!(!deployed.is_empty());
    let sha = body["deployment"]["sha"].as_str().unwrap();
    let env = body["deployment_status"]["environment"]
        .as_str()
        .or(body["deployment"]["environment"].as_str())
        .unwrap();
    assert!(
        deployed.iter().any(|r| r["environment"] == env
            && r["artifact_id"]
                .as_str()
                .unwrap()
                .ends_with(&format!("@{sha}"))),
        "{deployed:?}"
    );
    // Payloads are kept byte for byte (the one of each fact's delivery that was accepted).
    let stored: std::collections::BTreeSet<String> = sql_json(&store, "SELECT payload FROM events")
        .into_iter()
        .map(|r| r["payload"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(stored, payloads);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_tokens_and_limits_are_enforced_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let svc = standalone(
        &store,
        &[
            "--github-secret",
            "s3cret",
            "--gitlab-token",
            "gl",
            "--token",
            "api-token",
        ],
    );
    let client = reqwest::Client::new();
    let body = std::fs::read(shared().join("fixtures/github/push/payload.json"))
        .or_else(|_| std::fs::read(files(&shared().join("fixtures/github/push"))[0].clone()))
        .unwrap();
    let post = |sig: Option<String>| {
        let mut r = client
            .post(svc.url("/webhooks/github"))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", "d-1")
            .body(body.clone());
        if let Some(s) = sig {
            r = r.header("X-Hub-Signature-256", s);
        }
        r.send()
    };
    let missing = post(None).await.unwrap();
    assert_eq!(missing.status(), 401);
    assert!(
        missing
            .text()
            .await
            .unwrap()
            .contains("missing X-Hub-Signature-256")
    );
    let wrong = post(Some(sign("other", &body))).await.unwrap();
    assert_eq!(wrong.status(), 401);
    let right = post(Some(sign("s3cret", &body))).await.unwrap();
    assert_eq!(right.status(), 200);

    let no_event = client
        .post(svc.url("/webhooks/github"))
        .header("X-GitHub-Delivery", "d-2")
        .header("X-Hub-Signature-256", sign("s3cret", b"{}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(no_event.status(), 400);
    assert!(no_event.text().await.unwrap().contains("X-GitHub-Event"));

    let gl = client
        .post(svc.url("/webhooks/gitlab"))
        .header("X-Gitlab-Token", "nope")
        .header("X-Gitlab-Event-UUID", "u")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(gl.status(), 401);

    // 26 MB: over GitHub's 25 MB limit. On a client of its own: the server answers before
    // reading the body and closes that connection, which a shared pool could reuse.
    let huge = vec![b' '; 26 << 20];
    let too_big = reqwest::Client::new()
        .post(svc.url("/webhooks/github"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "d-3")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413);
    assert!(
        too_big
            .text()
            .await
            .unwrap()
            .contains("25 MB limit of /webhooks/github")
    );

    // The API token guards the CloudEvents endpoint and the metrics, not the health check.
    let ce = client
        .post(svc.url("/api/v1/events"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(ce.status(), 401);
    assert_eq!(
        client
            .get(svc.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client
            .get(svc.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = client
        .get(svc.url("/metrics"))
        .bearer_auth("api-token")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("cdlake_rejected_total{origin=\"github\",reason=\"unauthorized\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_in_every_mode_redeliveries_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut svc = standalone(&store, &[]);
    let client = reqwest::Client::new();
    let conformance = shared().join("fixtures/cdevents/v0.5.1/conformance");
    let deployed = std::fs::read_to_string(conformance.join("service_deployed.json")).unwrap();

    // Structured: a bare CDEvent.
    let r = client
        .post(svc.url("/api/v1/events"))
        .header("content-type", "application/json")
        .body(deployed.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["accepted"], 1);

    // Binary: attributes in headers, the CDEvent as the body.
    let v: serde_json::Value = serde_json::from_str(&deployed).unwrap();
    let binary_body = deployed.replace(v["context"]["id"].as_str().unwrap(), "binary-1");
    let r = client
        .post(svc.url("/api/v1/events"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "binary-1")
        .header("ce-source", v["context"]["source"].as_str().unwrap())
        .header("ce-type", v["context"]["type"].as_str().unwrap())
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("content-type", "application/json")
        .body(binary_body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Batch: three events, one of them a duplicate of the first request.
    // The conformance examples share one identity: give the change its own.
    let changed = std::fs::read_to_string(conformance.join("change_merged.json"))
        .unwrap()
        .replace(v["context"]["id"].as_str().unwrap(), "batch-change");
    let incident = std::fs::read_to_string(conformance.join("incident_detected.json")).unwrap();
    let r = client
        .post(svc.url("/api/v1/events"))
        .header("content-type", "application/cloudevents-batch+json")
        .body(format!("[{changed},{incident},{deployed}]"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (answer["accepted"].as_u64(), answer["duplicate"].as_u64()),
        (Some(2), Some(1))
    );

    // The same GitHub delivery 100 times: stored once (its id is the fact, a release created).
    let body = std::fs::read(files(&shared().join("fixtures/github/release"))[0].clone()).unwrap();
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..100 {
        let r = client
            .post(svc.url("/webhooks/github"))
            .header("X-GitHub-Event", "release")
            .header("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let a: serde_json::Value = r.json().await.unwrap();
        *statuses
            .entry(format!(
                "accepted={} duplicate={}",
                a["accepted"], a["duplicate"]
            ))
            .or_insert(0) += 1;
    }
    eprintln!("100 redeliveries: {statuses:?}");

    // Malformed input: a 400 naming the problem, and a dead letter.
    let r = client
        .post(svc.url("/api/v1/events"))
        .header("content-type", "application/json")
        .body("{\"context\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("malformed JSON"));
    let r = client
        .post(svc.url("/api/v1/events"))
        .body(
            r#"{"specversion":"1.0","id":"x","source":"/s","type":"com.example.other","data":{}}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    svc.terminate();

    assert_eq!(
        sql_u64(
            &store,
            "SELECT count(*) AS n FROM events WHERE origin = 'github' AND event_id LIKE 'release/%/created'"
        ),
        1
    );
    assert_eq!(statuses.get("accepted=1 duplicate=0"), Some(&1));
    assert_eq!(statuses.get("accepted=0 duplicate=1"), Some(&99));
    let traced = sql_json(
        &store,
        "SELECT trace_id FROM events WHERE event_id = 'binary-1'",
    );
    assert_eq!(traced[0]["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(
        sql_u64(
            &store,
            "SELECT count(*) AS n FROM events WHERE origin = 'cdevents'"
        ),
        4
    );
    let dead = sql_json(
        &store,
        "SELECT reason, source FROM dead_letters ORDER BY reason",
    );
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0]["source"], "http:/api/v1/events");
}
