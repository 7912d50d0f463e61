use super::*;

const INGESTED: i64 = 1_767_225_600_000_000;

fn fixture(path: &str) -> Vec<u8> {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/pagerduty/"
    );
    std::fs::read(format!("{dir}{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn row(body: &[u8], rules: &Rules) -> cdlake_schemas::Event {
    match normalise(body, rules, INGESTED) {
        Ok(Normalised::Event(e)) => *e,
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_sdk_signature_vector_verifies_and_a_tampered_body_does_not() {
    let secret = "lDQHScfUeXUKaQRNF+8XIiDKZ7XX3itBAYzwU0TARw8lJqRnkKl2iB1anSb0Z+IK".to_string();
    let secrets = [secret.clone()];
    let body = fixture("signature_vector.incident.priority_updated.json");
    let headers: serde_json::Value = serde_json::from_slice(&fixture(
        "signature_vector.incident.priority_updated.headers.json",
    ))
    .unwrap();
    let header = headers["X-PagerDuty-Signature"].as_str().unwrap();
    assert!(signature_ok(&secrets, header, &body));
    // Rotation: the old secret's signature and the new one's, comma-separated.
    let rotated = format!("v1=00ff, {header}");
    assert!(signature_ok(
        &["other".into(), secret.clone()],
        &rotated,
        &body
    ));
    // The Go SDK's mismatch case, a changed body, a wrong secret, another version.
    assert!(!signature_ok(
        &secrets,
        "v1=7020c8a7a4a0dc5da7b1bd2bfc4b2bd4fdf0e23ebcd4a9e4e26d6e1c2d0dcaf5",
        &body
    ));
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    assert!(!signature_ok(&secrets, header, &tampered));
    assert!(!signature_ok(&["wrong".into()], header, &body));
    assert!(!signature_ok(
        &[secret],
        &header.replace("v1=", "v2="),
        &body
    ));
}

#[test]
fn an_incident_triggered_is_detected_for_its_service() {
    let e = row(&fixture("incident.triggered.json"), &Rules::default());
    assert_eq!(e.subject, "incident");
    assert_eq!(e.predicate, "detected");
    assert_eq!(e.origin, "pagerduty");
    assert_eq!(e.event_id, "01BZYIL05THJDFF2Y08X9SVMTU");
    assert_eq!(e.subject_id, "PFQZPSY");
    assert_eq!(
        e.time,
        chrono::DateTime::parse_from_rfc3339("2021-06-04T13:35:29.781Z")
            .unwrap()
            .timestamp_micros()
    );
    assert_eq!(e.service.as_deref(), Some("pig208"));
    assert_eq!(e.environment.as_deref(), Some("production"));
    assert_eq!(
        e.url.as_deref(),
        Some("https://pig208.pagerduty.com/incidents/PFQZPSY")
    );
    let mut rules = Rules::default();
    rules
        .incidents
        .services
        .insert("PA2P440".into(), "checkout".into());
    assert_eq!(
        row(&fixture("incident.triggered.json"), &rules)
            .service
            .as_deref(),
        Some("checkout")
    );
}

#[test]
fn acknowledged_resolved_and_other_incident_events_keep_their_meaning() {
    let body = String::from_utf8(fixture("incident.triggered.json")).unwrap();
    let as_type = |t: &str| {
        row(
            body.replace("\"incident.triggered\"", &format!("\"{t}\""))
                .as_bytes(),
            &Rules::default(),
        )
    };
    let ack = as_type("incident.acknowledged");
    assert_eq!(
        (ack.subject.as_str(), ack.predicate.as_str()),
        ("incident", "acknowledged")
    );
    assert_eq!(ack.event_type, "pagerduty.incident.acknowledged");
    let resolved = as_type("incident.resolved");
    assert_eq!(resolved.event_type, "dev.cdevents.incident.resolved.0.2.0");
    assert_eq!(resolved.subject_id, "PFQZPSY");
    let priority = row(
        &fixture("signature_vector.incident.priority_updated.json"),
        &Rules::default(),
    );
    assert_eq!(priority.event_type, "pagerduty.incident.priority_updated");
    assert_eq!(priority.service.as_deref(), Some("API Service"));
    let service = row(
        body.replace("\"incident.triggered\"", "\"service.updated\"")
            .replace(
                "\"resource_type\": \"incident\"",
                "\"resource_type\": \"service\"",
            )
            .as_bytes(),
        &Rules::default(),
    );
    assert_eq!(service.subject, "service");
    assert_eq!(service.event_type, "pagerduty.service.updated");
    // A ping is answered, not stored.
    let ping = normalise(
        br#"{"event": {"id": "1", "event_type": "pagey.ping"}}"#,
        &Rules::default(),
        INGESTED,
    );
    assert_eq!(ping, Ok(Normalised::Ping));
}

#[test]
fn what_is_not_a_v3_event_is_rejected_with_the_reason() {
    let reject = |body: &str| {
        normalise(body.as_bytes(), &Rules::default(), INGESTED)
            .unwrap_err()
            .message
    };
    assert!(reject(r#"{"messages": []}"#).contains("Webhooks v3"));
    assert!(reject(r#"{"event": {"id": "1"}}"#).contains("no `event_type`"));
    assert!(reject(r#"{"event": {"event_type": "incident.triggered"}}"#).contains("no `id`"));
    assert!(
        reject(r#"{"event": {"id": "1", "event_type": "incident.triggered", "data": {}}}"#)
            .contains("no `data.id`")
    );
}
