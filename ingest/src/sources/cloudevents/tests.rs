use axum::http::HeaderValue;

use super::*;

#[test]
fn binary_mode_becomes_structured_with_the_body_as_data() {
    let mut headers = HeaderMap::new();
    headers.insert("ce-specversion", HeaderValue::from_static("1.0"));
    headers.insert("ce-id", HeaderValue::from_static("42"));
    headers.insert("ce-source", HeaderValue::from_static("/ci"));
    headers.insert(
        "ce-type",
        HeaderValue::from_static("dev.cdevents.service.deployed.0.3.0"),
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = Bytes::from_static(br#"{"context": {"id": "42"}, "subject": {"id": "cart"}}"#);
    let env = binary_mode(&headers, body, "test", 0);
    assert_eq!(env.rejected, None);
    let v: serde_json::Value = serde_json::from_slice(&env.body).unwrap();
    assert_eq!(v["specversion"], "1.0");
    assert_eq!(v["source"], "/ci");
    assert_eq!(v["data"]["subject"]["id"], "cart");
    assert!(
        std::str::from_utf8(&env.body)
            .unwrap()
            .contains(r#""data":{"context": {"id": "42"}, "subject": {"id": "cart"}}"#)
    );

    let bad = binary_mode(&headers, Bytes::from_static(b"{nope"), "test", 0);
    let bad = bad.rejected.unwrap();
    assert_eq!(bad.reason, cdevents::Reason::MalformedJson);
    assert!(bad.message.starts_with("malformed JSON"));

    headers.insert("ce-data", HeaderValue::from_static("{}"));
    let body = Bytes::from_static(br#"{"context": {"id": "42"}}"#);
    let twice = binary_mode(&headers, body, "test", 0);
    assert!(twice.rejected.unwrap().message.contains("ce-data header"));
}
