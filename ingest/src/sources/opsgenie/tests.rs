use super::*;

const INGESTED: i64 = 1_767_225_600_000_000;

fn create() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/opsgenie/create.json"
    );
    std::fs::read_to_string(path).unwrap()
}

fn row(body: &str, rules: &Rules) -> cdlake_schemas::Event {
    match normalise(body.as_bytes(), rules, INGESTED) {
        Ok(Normalised::Event(e)) => *e,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_created_alert_is_detected_at_its_creation_in_milliseconds() {
    let e = row(&create(), &Rules::default());
    assert_eq!(
        (e.subject.as_str(), e.predicate.as_str()),
        ("incident", "detected")
    );
    assert_eq!(e.origin, "opsgenie");
    assert_eq!(e.subject_id, "ec03dad6-62c8-4c94-b38b-d88f398e900f");
    assert_eq!(e.time, 1_502_709_956_288_000);
    assert_eq!(
        e.event_id,
        "ec03dad6-62c8-4c94-b38b-d88f398e900f/Create/1502709956288000110"
    );
    assert_eq!(e.service, None);
    assert_eq!(e.environment.as_deref(), Some("production"));
}

#[test]
fn close_resolves_at_the_update_in_nanoseconds_and_ack_is_kept() {
    let close = create()
        .replace("\"Create\"", "\"Close\"")
        .replace("1502709956288000110", "1502713556288000110");
    let e = row(&close, &Rules::default());
    assert_eq!(e.predicate, "resolved");
    assert_eq!(e.time, 1_502_713_556_288_000);
    let ack = row(
        &create().replace("\"Create\"", "\"Acknowledge\""),
        &Rules::default(),
    );
    assert_eq!(ack.event_type, "opsgenie.incident.acknowledged");
    let note = row(
        &create().replace("\"Create\"", "\"AddNote\""),
        &Rules::default(),
    );
    assert_eq!(note.event_type, "opsgenie.incident.addnote");
    assert_ne!(note.event_id, ack.event_id);
}

#[test]
fn tags_and_details_name_service_and_environment() {
    let tagged = create().replace("\"vip\"", "\"vip\", \"service:checkout\", \"env:staging\"");
    let e = row(&tagged, &Rules::default());
    assert_eq!(e.service.as_deref(), Some("checkout"));
    assert_eq!(e.environment.as_deref(), Some("staging"));
    let detailed = create().replace(
        "\"priority\":3",
        "\"priority\":3, \"details\": {\"service\": \"payments\", \"environment\": \"prod-eu\"}",
    );
    let mut rules = Rules::default();
    rules
        .incidents
        .services
        .insert("payments".into(), "billing".into());
    let e = row(&detailed, &rules);
    assert_eq!(e.service.as_deref(), Some("billing"));
    assert_eq!(e.environment.as_deref(), Some("prod-eu"));
}

#[test]
fn what_is_not_an_alert_action_is_rejected_with_the_reason() {
    let reject = |body: &str| {
        normalise(body.as_bytes(), &Rules::default(), INGESTED)
            .unwrap_err()
            .message
    };
    assert!(reject(r#"{"alert": {}}"#).contains("no `action`"));
    assert!(reject(r#"{"action": "Create"}"#).contains("no `alert`"));
    assert!(reject(r#"{"action": "Create", "alert": {}}"#).contains("no `alertId`"));
}
