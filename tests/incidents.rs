//! The alerting and incident tool receivers of a real `cdlake standalone`, with the documented
//! payloads of `../shared/fixtures`: each tool's authentication (good, tampered, missing,
//! replayed), redeliveries, the `[incidents]` configuration, dead letters, and the incidents
//! reaching the DORA report.

mod support;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use support::*;

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(shared().join("fixtures").join(path)).unwrap()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(A[(n >> (18 - 6 * i)) as usize & 63])
            } else {
                '='
            });
        }
    }
    out
}

fn now_secs() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string()
}

const INCIDENTIO_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PAGERDUTY_SECRET: &str = "lDQHScfUeXUKaQRNF+8XIiDKZ7XX3itBAYzwU0TARw8lJqRnkKl2iB1anSb0Z+IK";

/// Standard Webhooks headers for `body`, signed now under the incident.io test secret.
fn incidentio_headers(id: &str, timestamp: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let key = &INCIDENTIO_SECRET.as_bytes()["whsec_".len()..];
    let key = decode64(std::str::from_utf8(key).unwrap());
    let sig = hmac(
        &key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", format!("v1,{}", base64(&sig))),
    ]
}

fn decode64(s: &str) -> Vec<u8> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|&c| c != b'=') {
        bits = (bits << 6) | A.iter().position(|&a| a == c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// POST `body` to `route` with `headers`: the status and the JSON answer.
    async fn post(
        &self,
        route: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .http
            .post(format!("{}{route}", self.base))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or_default())
    }
}

/// Assert an answer is `status` and its error says `says`.
fn refused((status, answer): &(u16, serde_json::Value), want: u16, says: &str) {
    assert_eq!(*status, want, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains(says), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_tools_are_authenticated_normalised_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");

    // Without secrets every incident route is off, and says which flag turns it on.
    let off = standalone(&store, &[]);
    let client = Client {
        http: reqwest::Client::new(),
        base: off.url(""),
    };
    for (route, flag) in [
        ("/webhooks/alertmanager", "--alertmanager-token"),
        ("/webhooks/pagerduty", "--pagerduty-secret"),
        ("/webhooks/opsgenie", "--opsgenie-token"),
        ("/webhooks/incidentio", "--incidentio-secret"),
    ] {
        refused(&client.post(route, &[], b"{}").await, 404, flag);
    }
    drop(off);

    let config = dir.path().join("cdlake.toml");
    std::fs::write(
        &config,
        "[incidents]\nservice_labels = [\"host\"]\n[incidents.services]\nPA2P440 = \"checkout\"\nandromeda = \"thermo\"\n",
    )
    .unwrap();
    let svc = standalone(
        &store,
        &[
            "--config",
            config.to_str().unwrap(),
            "--alertmanager-token",
            "old-am",
            "--alertmanager-token",
            "am-token",
            "--grafana-secret",
            "gf-secret",
            "--pagerduty-secret",
            PAGERDUTY_SECRET,
            "--opsgenie-token",
            "og-token",
            "--incidentio-secret",
            INCIDENTIO_SECRET,
        ],
    );
    let client = Client {
        http: reqwest::Client::new(),
        base: svc.url(""),
    };
    let bearer = |t: &str| vec![("authorization", format!("Bearer {t}"))];

    // Alertmanager: a group of two alerts is two incidents; Alertmanager's repeat is a
    // duplicate; basic auth carries the token as its password.
    let am = fixture("alertmanager/firing.two_alerts.json");
    let (status, answer) = client
        .post("/webhooks/alertmanager", &bearer("am-token"), &am)
        .await;
    assert_eq!((status, &answer["accepted"]), (200, &2.into()), "{answer}");
    let basic = vec![(
        "authorization",
        format!("Basic {}", base64(b"alertmanager:old-am")),
    )];
    let (status, answer) = client.post("/webhooks/alertmanager", &basic, &am).await;
    assert_eq!((status, &answer["duplicate"]), (200, &2.into()), "{answer}");
    let resolved = fixture("alertmanager/stub.resolved.zero_endsAt.json");
    let (status, answer) = client
        .post("/webhooks/alertmanager", &bearer("am-token"), &resolved)
        .await;
    assert_eq!((status, &answer["accepted"]), (200, &1.into()), "{answer}");
    for (headers, expect) in [
        (vec![], "missing Authorization"),
        (bearer("am-tok"), "does not carry any configured"),
        (
            vec![("authorization", format!("Basic {}", base64(b"am-token:x")))],
            "does not carry",
        ),
    ] {
        refused(
            &client.post("/webhooks/alertmanager", &headers, &am).await,
            401,
            expect,
        );
    }

    // Grafana: its HMAC over "<timestamp>:<body>", fresh; tampered and stale ones refused.
    let gf = fixture("grafana/firing.grafana9.json");
    let ts = now_secs();
    let sig = hex::encode(hmac(b"gf-secret", &[ts.as_bytes(), b":", &gf]));
    let signed = |sig: &str, ts: &str| {
        vec![
            ("x-grafana-alerting-signature", sig.to_string()),
            ("x-grafana-alerting-timestamp", ts.to_string()),
        ]
    };
    let (status, answer) = client
        .post("/webhooks/alertmanager", &signed(&sig, &ts), &gf)
        .await;
    assert_eq!((status, &answer["accepted"]), (200, &1.into()), "{answer}");
    // A tampered body, and a body signed ten minutes ago: both refused, each saying why.
    let mut tampered = gf.clone();
    tampered[20] ^= 1;
    let old = (now_secs().parse::<i64>().unwrap() - 600).to_string();
    let stale = hex::encode(hmac(b"gf-secret", &[old.as_bytes(), b":", &gf]));
    for (body, sig, ts, reason) in [
        (&tampered, &sig, &ts, "--grafana-secret"),
        (&gf, &stale, &old, "clock"),
    ] {
        refused(
            &client
                .post("/webhooks/alertmanager", &signed(sig, ts), body)
                .await,
            401,
            reason,
        );
    }

    // PagerDuty: the SDK's signature vector as sent; a capture signed with the same secret;
    // the retry a duplicate; tampered and unsigned refused.
    let vector = fixture("pagerduty/signature_vector.incident.priority_updated.json");
    let vector_headers: serde_json::Value = serde_json::from_slice(&fixture(
        "pagerduty/signature_vector.incident.priority_updated.headers.json",
    ))
    .unwrap();
    let pd_sig = |s: &str| vec![("x-pagerduty-signature", s.to_string())];
    let header = vector_headers["X-PagerDuty-Signature"].as_str().unwrap();
    let (status, answer) = client
        .post("/webhooks/pagerduty", &pd_sig(header), &vector)
        .await;
    assert_eq!((status, &answer["accepted"]), (200, &1.into()), "{answer}");
    let triggered = fixture("pagerduty/incident.triggered.json");
    let sign_pd = |body: &[u8]| {
        format!(
            "v1=deadbeef,v1={}",
            hex::encode(hmac(PAGERDUTY_SECRET.as_bytes(), &[body]))
        )
    };
    for expect in ["accepted", "duplicate"] {
        let (status, answer) = client
            .post(
                "/webhooks/pagerduty",
                &pd_sig(&sign_pd(&triggered)),
                &triggered,
            )
            .await;
        assert_eq!((status, &answer[expect]), (200, &1.into()), "{answer}");
    }
    let resolved_pd = String::from_utf8(triggered.clone())
        .unwrap()
        .replace("\"incident.triggered\"", "\"incident.resolved\"")
        .replace("01BZYIL05THJDFF2Y08X9SVMTU", "01BZYIL05THJDFF2Y08X9SVMTV")
        .replace("2021-06-04T13:35:29.781Z", "2021-06-04T14:05:29.781Z");
    let (status, answer) = client
        .post(
            "/webhooks/pagerduty",
            &pd_sig(&sign_pd(resolved_pd.as_bytes())),
            resolved_pd.as_bytes(),
        )
        .await;
    assert_eq!((status, &answer["accepted"]), (200, &1.into()), "{answer}");
    let mut tampered = triggered.clone();
    tampered[40] ^= 1;
    for headers in [pd_sig(&sign_pd(&triggered)), vec![]] {
        refused(
            &client
                .post("/webhooks/pagerduty", &headers, &tampered)
                .await,
            401,
            "X-PagerDuty-Signature",
        );
    }

    // Opsgenie: a bearer token from the integration's custom header.
    let og = fixture("opsgenie/create.json");
    let (status, answer) = client
        .post("/webhooks/opsgenie", &bearer("og-token"), &og)
        .await;
    assert_eq!((status, &answer["accepted"]), (200, &1.into()), "{answer}");
    let (status, _) = client
        .post("/webhooks/opsgenie", &bearer("am-token"), &og)
        .await;
    assert_eq!(status, 401, "another route's token is not this route's");

    // incident.io: signed now; its replay (same webhook-id) a duplicate; the published vector,
    // signed in 2021, is a stale replay; a tampered body refused.
    let io = fixture("incidentio/public_incident.incident_created_v2.json");
    let headers = incidentio_headers("msg_e2e_1", &now_secs(), &io);
    for expect in ["accepted", "duplicate"] {
        let (status, answer) = client.post("/webhooks/incidentio", &headers, &io).await;
        assert_eq!((status, &answer[expect]), (200, &1.into()), "{answer}");
    }
    let vector = fixture("incidentio/signature_vector.standard_webhooks.json");
    let vh: serde_json::Value = serde_json::from_slice(&fixture(
        "incidentio/signature_vector.standard_webhooks.headers.json",
    ))
    .unwrap();
    let vh: Vec<(&str, String)> = ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .into_iter()
        .map(|k| (k, vh[k].as_str().unwrap().to_string()))
        .collect();
    refused(
        &client.post("/webhooks/incidentio", &vh, &vector).await,
        401,
        "webhook-timestamp",
    );
    let mut tampered = io.clone();
    tampered[30] ^= 1;
    let (status, answer) = client
        .post("/webhooks/incidentio", &headers, &tampered)
        .await;
    assert_eq!(status, 401, "{answer}");

    // Bad input, authenticated: a 400 naming the problem, and a dead letter with the reason.
    let pending = br#"{"version":"4","status":"firing","alerts":[{"status":"pending","labels":{"alertname":"x"},"startsAt":"2021-06-04T13:00:00Z"}]}"#;
    refused(
        &client
            .post("/webhooks/alertmanager", &bearer("am-token"), pending)
            .await,
        400,
        "\"pending\"",
    );

    // A production deployment of `checkout` (PagerDuty's PA2P440, mapped by the config) just
    // before the PagerDuty incident: the incident fails it and recovers in 30 minutes.
    let deployed = r#"{"context":{"specversion":"0.5.1","id":"dep-1","source":"/ci","type":"dev.cdevents.service.deployed.0.3.0","timestamp":"2021-06-04T13:00:00Z"},"subject":{"id":"checkout","content":{"environment":{"id":"production"},"artifactId":"pkg:oci/checkout@1"}}}"#;
    let (status, answer) = client
        .post("/api/v1/events", &[], deployed.as_bytes())
        .await;
    assert_eq!(status, 200, "{answer}");
    drop(svc);

    let rows = sql_json(
        &store,
        "SELECT origin, predicate, count(*) AS n FROM events WHERE subject = 'incident' GROUP BY origin, predicate ORDER BY origin, predicate",
    );
    let got: Vec<(String, String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["origin"].as_str().unwrap().to_string(),
                r["predicate"].as_str().unwrap().to_string(),
                r["n"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("alertmanager", "detected", 2),
        ("alertmanager", "resolved", 1),
        ("grafana", "detected", 1),
        ("incidentio", "detected", 1),
        ("opsgenie", "detected", 1),
        ("pagerduty", "detected", 1),
        ("pagerduty", "priority_updated", 1),
        ("pagerduty", "resolved", 1),
    ];
    let want: Vec<(String, String, u64)> = want
        .iter()
        .map(|(o, p, n)| (o.to_string(), p.to_string(), *n))
        .collect();
    assert_eq!(got, want);
    let incidents = sql_json(
        &store,
        "SELECT incident_id, service, production, recovery_seconds FROM incidents WHERE incident_id IN ('PFQZPSY', 'a1bc48475b20e73d@2020-02-06T00:17:58.432911Z') ORDER BY incident_id",
    );
    assert_eq!(incidents.len(), 2, "{incidents:?}");
    assert_eq!(incidents[0]["incident_id"], "PFQZPSY");
    assert_eq!(incidents[0]["service"], "checkout");
    assert_eq!(incidents[0]["production"], true);
    assert_eq!(incidents[0]["recovery_seconds"].as_f64(), Some(1800.0));
    // The alert's host label is its service here, mapped; resolved without endsAt: at receipt.
    assert_eq!(incidents[1]["service"], "thermo");
    assert!(incidents[1]["recovery_seconds"].as_f64().unwrap() > 0.0);
    let dead = sql_json(&store, "SELECT origin, reason FROM dead_letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["origin"], "alertmanager");
    assert!(dead[0]["reason"].as_str().unwrap().contains("pending"));

    let report = ok(&cdlake(
        &store,
        &[
            "dora",
            "--from",
            "2021-06-01",
            "--to",
            "2021-06-10",
            "--format",
            "json",
        ],
    ));
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["change_failure_rate"]["deployments"], 1, "{report}");
    assert_eq!(report["change_failure_rate"]["failed"], 1, "{report}");
    assert_eq!(report["recovery_time"]["incidents"], 1, "{report}");
    assert_eq!(
        report["recovery_time"]["median_seconds"].as_f64(),
        Some(1800.0),
        "{report}"
    );
}

/// `cdlake receive` (the receivers publishing to JetStream) with its `[incidents]` rules, and
/// `cdlake ingest` committing what they published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_travel_through_jetstream_with_the_receivers_rules() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let nats = Nats::start(&dir.path().join("nats"));
    let url = nats.url();
    let config = dir.path().join("cdlake.toml");
    std::fs::write(
        &config,
        "[incidents]\ndefault_environment = 'prod-eu'\n[incidents.services]\npig208 = 'storefront'\n",
    )
    .unwrap();
    let receiver = Service::spawn(&[
        "receive",
        "--nats",
        &url,
        "--listen",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
        "--pagerduty-secret",
        PAGERDUTY_SECRET,
    ]);
    let store_arg = store.to_str().unwrap().to_string();
    let _ingester = Service::spawn(&[
        "ingest",
        "--store",
        &store_arg,
        "--nats",
        &url,
        "--metrics-listen",
        "127.0.0.1:0",
        "--max-age-ms",
        "200",
    ]);
    let client = Client {
        http: reqwest::Client::new(),
        base: receiver.url(""),
    };
    let body = fixture("pagerduty/incident.triggered.json");
    let signature = format!(
        "v1={}",
        hex::encode(hmac(PAGERDUTY_SECRET.as_bytes(), &[&body]))
    );
    let (status, answer) = client
        .post(
            "/webhooks/pagerduty",
            &[("x-pagerduty-signature", signature)],
            &body,
        )
        .await;
    assert_eq!((status, &answer["accepted"]), (200, &1.into()), "{answer}");
    let (status, _) = client.post("/webhooks/opsgenie", &[], b"{}").await;
    assert_eq!(status, 404, "no --opsgenie-token: off");
    let stored = eventually(std::time::Duration::from_secs(30), || async {
        let out = cdlake(
            &store,
            &[
                "sql",
                "--format",
                "json",
                "SELECT count(*) AS n FROM events",
            ],
        );
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"n\":1")
    })
    .await;
    assert!(
        stored,
        "the incident was not committed:\n{}",
        receiver.log()
    );
    let rows = sql_json(
        &store,
        "SELECT origin, subject_id, service, environment, predicate FROM events",
    );
    assert_eq!(rows[0]["origin"], "pagerduty");
    assert_eq!(rows[0]["subject_id"], "PFQZPSY");
    assert_eq!(rows[0]["service"], "storefront");
    assert_eq!(rows[0]["environment"], "prod-eu");
    assert_eq!(rows[0]["predicate"], "detected");
}
