use super::*;
use cdlake_schemas::Event;

const INGESTED: i64 = 1_767_225_600_000_000;

fn fixture(path: &str) -> Vec<u8> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/");
    std::fs::read(format!("{dir}{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Split a notification as the receiver does and normalise each alert.
fn rows(origin: Origin, body: &[u8], rules: &Rules) -> Vec<Event> {
    let (_, alerts) = split(body).expect("splits");
    alerts
        .iter()
        .map(|a| match normalise(origin, a, rules, INGESTED) {
            Ok(Normalised::Event(e)) => *e,
            other => panic!("{other:?}"),
        })
        .collect()
}

fn micros(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_micros()
}

#[test]
fn each_alert_of_a_group_is_an_incident_detected_at_its_start() {
    let body = fixture("alertmanager/firing.two_alerts.json");
    let got = rows(Origin::Alertmanager, &body, &Rules::default());
    assert_eq!(got.len(), 2);
    let start = micros("2020-02-06T00:17:58.432911Z");
    for (e, fp) in got.iter().zip(["a1bc48475b20e73d", "c2ea85182f28cbd9"]) {
        assert_eq!(e.subject, "incident");
        assert_eq!(e.predicate, "detected");
        assert_eq!(e.event_type, "dev.cdevents.incident.detected.0.2.0");
        assert_eq!(e.origin, "alertmanager");
        assert_eq!(e.subject_id, format!("{fp}@2020-02-06T00:17:58.432911Z"));
        assert_eq!(e.event_id, format!("{}/firing", e.subject_id));
        assert_eq!(e.time, start);
        assert_eq!(e.environment.as_deref(), Some("production"));
        assert_eq!(e.service, None, "no service, app or job label");
        assert!(
            e.url
                .as_deref()
                .unwrap()
                .starts_with("http://cobalt:9090/graph")
        );
        // The kept payload is the group with this one alert, the alert's bytes as sent.
        let kept: Value = serde_json::from_str(&e.payload).unwrap();
        assert_eq!(kept["alerts"].as_array().unwrap().len(), 1);
        assert_eq!(kept["alerts"][0]["fingerprint"], fp);
        assert_eq!(kept["receiver"], "ops-zulip");
    }
}

#[test]
fn a_resolved_alert_resolves_the_same_incident_and_a_repeat_is_the_same_row() {
    let firing = rows(
        Origin::Alertmanager,
        &fixture("alertmanager/firing.two_alerts.json"),
        &Rules::default(),
    );
    let resolved = rows(
        Origin::Alertmanager,
        &fixture("alertmanager/stub.resolved.zero_endsAt.json"),
        &Rules::default(),
    );
    assert_eq!(resolved.len(), 1);
    let r = &resolved[0];
    assert_eq!(r.predicate, "resolved");
    assert_eq!(r.subject_id, firing[0].subject_id);
    assert_ne!(r.event_id, firing[0].event_id);
    // endsAt is Go's zero time: not set, so the receiver's clock.
    assert_eq!(r.time, INGESTED);
    // A resolved alert with its real endsAt resolves then.
    let body = String::from_utf8(fixture("alertmanager/stub.resolved.zero_endsAt.json"))
        .unwrap()
        .replace("\"0001-01-01T00:00:00Z\"", "\"2020-02-06T01:02:03Z\"");
    let r = &rows(Origin::Alertmanager, body.as_bytes(), &Rules::default())[0];
    assert_eq!(r.time, micros("2020-02-06T01:02:03Z"));
    // Alertmanager repeats a firing notification: the same identity.
    let again = rows(
        Origin::Alertmanager,
        &fixture("alertmanager/firing.two_alerts.json"),
        &Rules::default(),
    );
    assert_eq!(again[0].identity_key(), firing[0].identity_key());
}

#[test]
fn old_and_stub_senders_without_fingerprint_or_status_are_read() {
    // Alertmanager 0.15: compact, an offset time, a firing alert with an endsAt, no fingerprint.
    let old = &rows(
        Origin::Alertmanager,
        &fixture("alertmanager/firing.am0_15.compact.json"),
        &Rules::default(),
    )[0];
    assert_eq!(old.predicate, "detected");
    assert_eq!(old.time, micros("2018-11-04T21:43:58.283995Z"));
    let labels = serde_json::json!({"alertname": "Fire", "severity": "critical"});
    let fp = fingerprint(labels.as_object());
    assert_eq!(old.subject_id, format!("{fp}@2018-11-04T21:43:58.283995Z"));
    // No status on the alert: the group's; the service from the `job` label.
    let stub = &rows(
        Origin::Alertmanager,
        &fixture("alertmanager/stub.firing.prometheus-msteams.json"),
        &Rules::default(),
    )[0];
    assert_eq!(stub.predicate, "detected");
    assert_eq!(stub.service.as_deref(), Some("docker_nodes"));
}

#[test]
fn labels_and_the_service_map_name_service_and_environment() {
    let body = String::from_utf8(fixture("alertmanager/firing.two_alerts.json"))
        .unwrap()
        .replace(
            "\"host\": \"andromeda\",",
            "\"host\": \"andromeda\", \"app\": \"thermo\", \"namespace\": \"staging\",",
        );
    let mut rules = Rules::default();
    let e = &rows(Origin::Alertmanager, body.as_bytes(), &rules)[0];
    assert_eq!(e.service.as_deref(), Some("thermo"));
    assert_eq!(e.environment.as_deref(), Some("staging"));
    rules
        .incidents
        .services
        .insert("thermo".into(), "sensors".into());
    rules.incidents.service_labels = vec!["host".into()];
    rules.incidents.environment_labels = vec!["env".into()];
    let e = &rows(Origin::Alertmanager, body.as_bytes(), &rules)[0];
    assert_eq!(e.service.as_deref(), Some("andromeda"));
    assert_eq!(e.environment.as_deref(), Some("production"));
    rules.incidents.service_labels = vec!["app".into()];
    let e = &rows(Origin::Alertmanager, body.as_bytes(), &rules)[0];
    assert_eq!(e.service.as_deref(), Some("sensors"));
}

#[test]
fn grafana_groups_are_told_apart() {
    let body = fixture("grafana/firing.grafana9.json");
    let (grafana, alerts) = split(&body).unwrap();
    assert!(grafana);
    let e = &rows(Origin::Grafana, &body, &Rules::default())[0];
    assert_eq!(e.origin, "grafana");
    assert_eq!(e.event_source, "grafana");
    assert_eq!(e.subject_id, "d8a21484c9c25a60@2022-06-17T00:41:00.782137Z");
    assert_eq!(alerts.len(), 1);
    let (am, _) = split(&fixture("alertmanager/firing.two_alerts.json")).unwrap();
    assert!(!am);
}

#[test]
fn fingerprints_are_alertmanagers() {
    // FNV-1a's offset basis: the fingerprint of no labels.
    assert_eq!(fingerprint(None), "cbf29ce484222325");
    let a = serde_json::json!({"b": "2", "a": "1"});
    let b = serde_json::json!({"a": "1", "b": "2"});
    assert_eq!(fingerprint(a.as_object()), fingerprint(b.as_object()));
    let c = serde_json::json!({"a": "12"});
    let d = serde_json::json!({"a1": "2"});
    assert_ne!(fingerprint(c.as_object()), fingerprint(d.as_object()));
}

#[test]
fn what_is_not_a_notification_is_rejected_with_the_reason() {
    let reject = |body: &str| {
        normalise(
            Origin::Alertmanager,
            body.as_bytes(),
            &Rules::default(),
            INGESTED,
        )
        .unwrap_err()
        .message
    };
    assert!(reject("{").starts_with("malformed JSON"));
    assert!(reject("[]").contains("not a JSON object"));
    assert!(reject("{}").contains("no `alerts` array"));
    assert!(reject(r#"{"alerts": []}"#).contains("no alerts"));
    assert!(reject(r#"{"alerts": [{}, {}]}"#).contains("holds 2 alerts"));
    assert!(
        reject(r#"{"alerts": [{"startsAt": "2020-02-06T00:17:58Z"}]}"#).contains("no `status`")
    );
    assert!(
        reject(r#"{"alerts": [{"status": "pending", "startsAt": "2020-02-06T00:17:58Z"}]}"#)
            .contains("\"pending\"")
    );
    assert!(
        reject(r#"{"alerts": [{"status": "firing", "startsAt": "0001-01-01T00:00:00Z"}]}"#)
            .contains("no valid `startsAt`")
    );
    assert!(split(b"{\"alerts\": []}").is_err());
    assert!(split(b"{").is_err());
}

#[test]
fn a_large_group_is_split_without_copying_its_large_fields_into_every_alert() {
    // 2,000 alerts and a 100 KB message (as Grafana renders every alert into it): copying the
    // message into each would take 200 MB.
    let alert =
        r#"{"status":"firing","labels":{"alertname":"x"},"startsAt":"2026-01-01T00:00:00Z"}"#;
    let alerts = vec![alert; 2_000].join(",");
    let body = format!(
        r#"{{"version":"1","orgId":1,"receiver":"r","message":"{}","alerts":[{alerts}]}}"#,
        "m".repeat(100_000)
    );
    let (grafana, bodies) = split(body.as_bytes()).unwrap();
    assert!(grafana);
    assert_eq!(bodies.len(), 2_000);
    let total: usize = bodies.iter().map(|b| b.len()).sum();
    assert!(total < 1 << 20, "{total} bytes");
    let kept: Value = serde_json::from_slice(&bodies[0]).unwrap();
    assert_eq!(kept["receiver"], "r");
    assert!(kept.get("message").is_none());
    // A small group keeps every field.
    let (_, small) = split(br#"{"message":"m","alerts":[{"a":1}]}"#).unwrap();
    let kept: Value = serde_json::from_slice(&small[0]).unwrap();
    assert_eq!(kept["message"], "m");
}
