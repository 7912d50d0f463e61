use super::*;

const INGESTED: i64 = 1_767_225_600_000_000;

fn fixture(path: &str) -> Vec<u8> {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/incidentio/"
    );
    std::fs::read(format!("{dir}{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn row(body: &[u8], rules: &Rules) -> cdlake_schemas::Event {
    match normalise("msg_1", body, rules, INGESTED) {
        Ok(Normalised::Event(e)) => *e,
        other => panic!("{other:?}"),
    }
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[test]
fn the_standard_webhooks_vector_verifies_and_tampering_does_not() {
    let body = fixture("signature_vector.standard_webhooks.json");
    let headers: serde_json::Value =
        serde_json::from_slice(&fixture("signature_vector.standard_webhooks.headers.json"))
            .unwrap();
    let h = |k: &str| headers[k].as_str().unwrap();
    let (id, ts, sig) = (
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
    );
    let secrets = [SECRET.to_string()];
    assert!(signature_ok(&secrets, id, ts, &body, sig));
    // Several signatures during a rotation, any may match.
    let rotated = format!("v1,AAAA {sig}");
    assert!(signature_ok(
        &["whsec_AAAA".into(), SECRET.into()],
        id,
        ts,
        &body,
        &rotated
    ));
    let mut tampered = body.clone();
    tampered[3] ^= 1;
    assert!(!signature_ok(&secrets, id, ts, &tampered, sig));
    assert!(!signature_ok(&secrets, "msg_other", ts, &body, sig));
    assert!(!signature_ok(&secrets, id, "1614265331", &body, sig));
    assert!(!signature_ok(&["whsec_AAAA".into()], id, ts, &body, sig));
    assert!(!signature_ok(
        &secrets,
        id,
        ts,
        &body,
        &sig.replace("v1,", "v2,")
    ));
    assert!(secret_key(SECRET).is_ok());
    assert!(secret_key("whsec_!!").is_err());
}

#[test]
fn a_created_incident_is_detected_at_its_creation() {
    let e = row(
        &fixture("public_incident.incident_created_v2.json"),
        &Rules::default(),
    );
    assert_eq!(
        (e.subject.as_str(), e.predicate.as_str()),
        ("incident", "detected")
    );
    assert_eq!(e.origin, "incidentio");
    assert_eq!(e.event_id, "msg_1");
    assert_eq!(e.subject_id, "01FDAG4SAP5TYPT98WGR2N7W91");
    assert_eq!(
        e.time,
        chrono::DateTime::parse_from_rfc3339("2021-08-17T13:28:57.801578Z")
            .unwrap()
            .timestamp_micros()
    );
    assert_eq!(
        e.url.as_deref(),
        Some("https://app.incident.io/incidents/123")
    );
    // No custom field named like "service": no service; "Affected Team" names one if asked.
    assert_eq!(e.service, None);
    let mut rules = Rules::default();
    rules.incidents.incidentio_service_field = "affected team".into();
    rules
        .incidents
        .services
        .insert("Primary On-call".into(), "oncall".into());
    let e = row(&fixture("public_incident.incident_created_v2.json"), &rules);
    assert_eq!(e.service.as_deref(), Some("oncall"));
}

#[test]
fn status_categories_resolve_or_cancel() {
    let body = String::from_utf8(fixture("public_incident.incident_created_v2.json"))
        .unwrap()
        .replace("incident_created_v2", "incident_status_updated_v2");
    let in_category = |c: &str| {
        row(
            body.replace(
                "\"category\": \"triage\"",
                &format!("\"category\": \"{c}\""),
            )
            .as_bytes(),
            &Rules::default(),
        )
    };
    assert_eq!(in_category("live").predicate, "detected");
    assert_eq!(in_category("closed").predicate, "resolved");
    assert_eq!(in_category("learning").predicate, "resolved");
    assert_eq!(
        in_category("declined").event_type,
        "incidentio.incident.declined"
    );
    let other = row(
        br#"{"event_type": "private_incident.incident_created_v2", "private_incident.incident_created_v2": {"id": "01X"}}"#,
        &Rules::default(),
    );
    assert_eq!(
        other.event_type,
        "incidentio.private_incident.incident_created_v2"
    );
    assert_eq!(other.subject_id, "01X");
}

#[test]
fn what_is_not_a_delivery_is_rejected_with_the_reason() {
    let body = fixture("public_incident.incident_created_v2.json");
    let missing_id = normalise("", &body, &Rules::default(), INGESTED).unwrap_err();
    assert!(missing_id.message.contains("webhook-id"), "{missing_id}");
    let reject = |body: &str| {
        normalise("msg_1", body.as_bytes(), &Rules::default(), INGESTED)
            .unwrap_err()
            .message
    };
    assert!(reject("{}").contains("no `event_type`"));
    assert!(
        reject(r#"{"event_type": "public_incident.incident_created_v2", "public_incident.incident_created_v2": {}}"#)
            .contains("no incident `id`")
    );
}
