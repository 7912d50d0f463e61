use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use proptest::prelude::*;

use super::any_value::Value as V;
use super::*;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";
const INGESTED: i64 = 1_714_565_200_000_000;
/// 2024-05-01T12:00:00Z in nanoseconds.
const T0: u64 = 1_714_564_800_000_000_000;
const SEC: u64 = 1_000_000_000;
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const ROOT: &str = "00f067aa0ba902b7";
const BUILD: &str = "b7ad6b7169203331";
const TEST: &str = "53995c3f42cd8ad8";

fn kv(key: &str, value: V) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

fn s(key: &str, value: &str) -> KeyValue {
    kv(key, V::StringValue(value.into()))
}

fn bytes(hex_id: &str) -> Vec<u8> {
    hex::decode(hex_id).unwrap()
}

/// A GitHub Actions workflow run as an OTLP exporter of CI/CD traces sends it: the run as
/// the root span, its jobs as children, `cicd.*` and `vcs.*` semantic conventions.
fn github_actions_request() -> ExportTraceServiceRequest {
    let root = Span {
        trace_id: bytes(TRACE),
        span_id: bytes(ROOT),
        flags: 257,
        name: "ci".into(),
        kind: span::SpanKind::Server.into(),
        start_time_unix_nano: T0,
        end_time_unix_nano: T0 + 312 * SEC + 500_000_123,
        attributes: vec![
            s("cicd.pipeline.name", "ci"),
            s("cicd.pipeline.run.id", "9123456789"),
            s("cicd.pipeline.result", "failure"),
            s(
                "cicd.pipeline.run.url.full",
                "https://github.com/acme/shop/actions/runs/9123456789",
            ),
            s("vcs.repository.name", "acme/shop"),
            s("vcs.change.id", "42"),
            kv("github.run_attempt", V::IntValue(1)),
        ],
        status: Some(Status {
            message: String::new(),
            code: status::StatusCode::Error.into(),
        }),
        ..Default::default()
    };
    let build = Span {
        trace_id: bytes(TRACE),
        span_id: bytes(BUILD),
        parent_span_id: bytes(ROOT),
        name: "build".into(),
        kind: span::SpanKind::Internal.into(),
        start_time_unix_nano: T0 + 5 * SEC,
        end_time_unix_nano: T0 + 125 * SEC,
        attributes: vec![
            s("cicd.pipeline.task.name", "build"),
            s("cicd.pipeline.task.run.id", "26123456781"),
            s("cicd.pipeline.task.type", "build"),
            s("cicd.pipeline.task.run.result", "success"),
            kv(
                "github.runner.labels",
                V::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(V::StringValue("ubuntu-latest".into())),
                        },
                        AnyValue {
                            value: Some(V::StringValue("x64".into())),
                        },
                    ],
                }),
            ),
            kv("github.queue_seconds", V::DoubleValue(1.5)),
        ],
        status: Some(Status {
            message: String::new(),
            code: status::StatusCode::Ok.into(),
        }),
        ..Default::default()
    };
    let test = Span {
        trace_id: bytes(TRACE),
        span_id: bytes(TEST),
        parent_span_id: bytes(ROOT),
        name: "test".into(),
        kind: span::SpanKind::Internal.into(),
        start_time_unix_nano: T0 + 126 * SEC,
        end_time_unix_nano: T0 + 312 * SEC,
        attributes: vec![
            s("cicd.pipeline.task.name", "test"),
            s("cicd.pipeline.task.run.id", "26123456782"),
            s("cicd.pipeline.task.type", "test"),
            s("cicd.pipeline.task.run.result", "failure"),
            kv("github.rerun", V::BoolValue(false)),
        ],
        events: vec![span::Event {
            time_unix_nano: T0 + 310 * SEC + 250_000_000,
            name: "log".into(),
            attributes: vec![s("log.severity", "error"), kv("exit_code", V::IntValue(1))],
            dropped_attributes_count: 0,
        }],
        status: Some(Status {
            message: "Process completed with exit code 1".into(),
            code: status::StatusCode::Error.into(),
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    s("service.name", "github-actions"),
                    s("vcs.repository.url.full", "https://github.com/acme/shop"),
                    s("vcs.ref.head.name", "main"),
                    s(
                        "vcs.ref.head.revision",
                        "8f3c2a1d4b5e6f708192a3b4c5d6e7f809a1b2c3",
                    ),
                    s("cicd.pipeline.name", "ci"),
                    s("cicd.pipeline.run.id", "9123456789"),
                ],
                dropped_attributes_count: 0,
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "otel-cicd-action".into(),
                    version: "2.1.0".into(),
                    ..Default::default()
                }),
                spans: vec![root, build, test],
                schema_url: "https://opentelemetry.io/schemas/1.27.0".into(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// The same request in OTLP/JSON, as an exporter writes it: hex ids, 64-bit integers as
/// strings, enums as integers or names, fields this decoder does not store.
const GITHUB_ACTIONS_JSON: &str = r#"{
      "resourceSpans": [{
        "resource": {
          "attributes": [
            {"key": "service.name", "value": {"stringValue": "github-actions"}},
            {"key": "vcs.repository.url.full", "value": {"stringValue": "https://github.com/acme/shop"}},
            {"key": "vcs.ref.head.name", "value": {"stringValue": "main"}},
            {"key": "vcs.ref.head.revision", "value": {"stringValue": "8f3c2a1d4b5e6f708192a3b4c5d6e7f809a1b2c3"}},
            {"key": "cicd.pipeline.name", "value": {"stringValue": "ci"}},
            {"key": "cicd.pipeline.run.id", "value": {"stringValue": "9123456789"}}
          ],
          "droppedAttributesCount": 0
        },
        "scopeSpans": [{
          "scope": {"name": "otel-cicd-action", "version": "2.1.0"},
          "spans": [
            {
              "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
              "spanId": "00f067aa0ba902b7",
              "parentSpanId": "",
              "traceState": "",
              "flags": 257,
              "name": "ci",
              "kind": 2,
              "startTimeUnixNano": "1714564800000000000",
              "endTimeUnixNano": "1714565112500000123",
              "attributes": [
                {"key": "cicd.pipeline.name", "value": {"stringValue": "ci"}},
                {"key": "cicd.pipeline.run.id", "value": {"stringValue": "9123456789"}},
                {"key": "cicd.pipeline.result", "value": {"stringValue": "failure"}},
                {"key": "cicd.pipeline.run.url.full", "value": {"stringValue": "https://github.com/acme/shop/actions/runs/9123456789"}},
                {"key": "vcs.repository.name", "value": {"stringValue": "acme/shop"}},
                {"key": "vcs.change.id", "value": {"stringValue": "42"}},
                {"key": "github.run_attempt", "value": {"intValue": "1"}}
              ],
              "droppedAttributesCount": 0,
              "events": [],
              "droppedEventsCount": 0,
              "links": [],
              "droppedLinksCount": 0,
              "status": {"code": 2}
            },
            {
              "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
              "spanId": "b7ad6b7169203331",
              "parentSpanId": "00f067aa0ba902b7",
              "name": "build",
              "kind": "SPAN_KIND_INTERNAL",
              "startTimeUnixNano": "1714564805000000000",
              "endTimeUnixNano": "1714564925000000000",
              "attributes": [
                {"key": "cicd.pipeline.task.name", "value": {"stringValue": "build"}},
                {"key": "cicd.pipeline.task.run.id", "value": {"stringValue": "26123456781"}},
                {"key": "cicd.pipeline.task.type", "value": {"stringValue": "build"}},
                {"key": "cicd.pipeline.task.run.result", "value": {"stringValue": "success"}},
                {"key": "github.runner.labels", "value": {"arrayValue": {"values": [
                  {"stringValue": "ubuntu-latest"}, {"stringValue": "x64"}
                ]}}},
                {"key": "github.queue_seconds", "value": {"doubleValue": 1.5}}
              ],
              "status": {"code": "STATUS_CODE_OK"}
            },
            {
              "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
              "spanId": "53995c3f42cd8ad8",
              "parentSpanId": "00f067aa0ba902b7",
              "name": "test",
              "kind": 1,
              "startTimeUnixNano": "1714564926000000000",
              "endTimeUnixNano": "1714565112000000000",
              "attributes": [
                {"key": "cicd.pipeline.task.name", "value": {"stringValue": "test"}},
                {"key": "cicd.pipeline.task.run.id", "value": {"stringValue": "26123456782"}},
                {"key": "cicd.pipeline.task.type", "value": {"stringValue": "test"}},
                {"key": "cicd.pipeline.task.run.result", "value": {"stringValue": "failure"}},
                {"key": "github.rerun", "value": {"boolValue": false}}
              ],
              "events": [{
                "timeUnixNano": "1714565110250000000",
                "name": "log",
                "attributes": [
                  {"key": "log.severity", "value": {"stringValue": "error"}},
                  {"key": "exit_code", "value": {"intValue": "1"}}
                ]
              }],
              "status": {"message": "Process completed with exit code 1", "code": "STATUS_CODE_ERROR"}
            }
          ],
          "schemaUrl": "https://opentelemetry.io/schemas/1.27.0"
        }]
      }]
    }"#;

/// The rows both encodings of the GitHub Actions trace must decode to, column by column.
fn expected_rows() -> Vec<cdlake_schemas::Span> {
    let resource = cdlake_schemas::Span {
        trace_id: TRACE.into(),
        service_name: Some("github-actions".into()),
        scope_name: Some("otel-cicd-action".into()),
        cicd_pipeline_name: Some("ci".into()),
        cicd_pipeline_run_id: Some("9123456789".into()),
        vcs_repository_url: Some("https://github.com/acme/shop".into()),
        vcs_ref_head_name: Some("main".into()),
        vcs_ref_head_revision: Some("8f3c2a1d4b5e6f708192a3b4c5d6e7f809a1b2c3".into()),
        resource_attributes: concat!(
            r#"{"cicd.pipeline.name":"ci","cicd.pipeline.run.id":"9123456789","#,
            r#""service.name":"github-actions","vcs.ref.head.name":"main","#,
            r#""vcs.ref.head.revision":"8f3c2a1d4b5e6f708192a3b4c5d6e7f809a1b2c3","#,
            r#""vcs.repository.url.full":"https://github.com/acme/shop"}"#
        )
        .into(),
        ingested_at: INGESTED,
        ..Default::default()
    };
    vec![
        cdlake_schemas::Span {
            span_id: ROOT.into(),
            parent_span_id: None,
            name: "ci".into(),
            kind: "server".into(),
            start: 1_714_564_800_000_000,
            end: 1_714_565_112_500_000,
            duration_ms: 312_500.000_123,
            status: "error".into(),
            status_message: None,
            cicd_pipeline_result: Some("failure".into()),
            cicd_pipeline_run_url: Some(
                "https://github.com/acme/shop/actions/runs/9123456789".into(),
            ),
            vcs_repository_name: Some("acme/shop".into()),
            vcs_change_id: Some("42".into()),
            attributes: concat!(
                r#"{"cicd.pipeline.name":"ci","cicd.pipeline.result":"failure","#,
                r#""cicd.pipeline.run.id":"9123456789","#,
                r#""cicd.pipeline.run.url.full":"https://github.com/acme/shop/actions/runs/9123456789","#,
                r#""github.run_attempt":1,"vcs.change.id":"42","vcs.repository.name":"acme/shop"}"#
            )
            .into(),
            events: None,
            ..resource.clone()
        },
        cdlake_schemas::Span {
            span_id: BUILD.into(),
            parent_span_id: Some(ROOT.into()),
            name: "build".into(),
            kind: "internal".into(),
            start: 1_714_564_805_000_000,
            end: 1_714_564_925_000_000,
            duration_ms: 120_000.0,
            status: "ok".into(),
            status_message: None,
            cicd_pipeline_task_name: Some("build".into()),
            cicd_pipeline_task_run_id: Some("26123456781".into()),
            cicd_pipeline_task_type: Some("build".into()),
            cicd_pipeline_task_run_result: Some("success".into()),
            attributes: concat!(
                r#"{"cicd.pipeline.task.name":"build","cicd.pipeline.task.run.id":"26123456781","#,
                r#""cicd.pipeline.task.run.result":"success","cicd.pipeline.task.type":"build","#,
                r#""github.queue_seconds":1.5,"github.runner.labels":["ubuntu-latest","x64"]}"#
            )
            .into(),
            events: None,
            ..resource.clone()
        },
        cdlake_schemas::Span {
            span_id: TEST.into(),
            parent_span_id: Some(ROOT.into()),
            name: "test".into(),
            kind: "internal".into(),
            start: 1_714_564_926_000_000,
            end: 1_714_565_112_000_000,
            duration_ms: 186_000.0,
            status: "error".into(),
            status_message: Some("Process completed with exit code 1".into()),
            cicd_pipeline_task_name: Some("test".into()),
            cicd_pipeline_task_run_id: Some("26123456782".into()),
            cicd_pipeline_task_type: Some("test".into()),
            cicd_pipeline_task_run_result: Some("failure".into()),
            attributes: concat!(
                r#"{"cicd.pipeline.task.name":"test","cicd.pipeline.task.run.id":"26123456782","#,
                r#""cicd.pipeline.task.run.result":"failure","cicd.pipeline.task.type":"test","#,
                r#""github.rerun":false}"#
            )
            .into(),
            events: Some(
                concat!(
                    r#"[{"name":"log","time":"2024-05-01T12:05:10.250Z","#,
                    r#""attributes":{"exit_code":1,"log.severity":"error"}}]"#
                )
                .into(),
            ),
            ..resource
        },
    ]
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn malformed(result: Result<Vec<cdlake_schemas::Span>, OtlpError>) -> String {
    match result {
        Err(OtlpError::Malformed(reason)) => reason,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn otlp_protobuf_golden() {
    let body = github_actions_request().encode_to_vec();
    let rows = decode(Some(PROTOBUF), None, &body, INGESTED).unwrap();
    assert_eq!(rows, expected_rows());
    assert_eq!(rows[0].date().to_string(), "2024-05-01");
}

#[test]
fn otlp_json_golden_matches_protobuf() {
    let from_json = decode(
        Some("application/json; charset=utf-8"),
        None,
        GITHUB_ACTIONS_JSON.as_bytes(),
        INGESTED,
    )
    .unwrap();
    assert_eq!(from_json, expected_rows());
    let body = github_actions_request().encode_to_vec();
    let from_protobuf = decode(Some("application/protobuf"), None, &body, INGESTED).unwrap();
    assert_eq!(from_json, from_protobuf);
}

#[test]
fn otlp_json_numbers_for_64_bit_integers_and_snake_case_names() {
    let body = r#"{"resource_spans": [{"scope_spans": [{"spans": [{
            "trace_id": "4BF92F3577B34DA6A3CE929D0E0E4736",
            "span_id": "00f067aa0ba902b7",
            "name": "deploy",
            "kind": "SPAN_KIND_CLIENT",
            "start_time_unix_nano": 1714564800000000000,
            "endTimeUnixNano": 1714564801500000000,
            "attributes": [
                {"key": "attempt", "value": {"int_value": 3}},
                {"key": "big", "value": {"intValue": -9007199254740993}},
                {"key": "ratio", "value": {"doubleValue": "NaN"}},
                {"key": "empty", "value": {}}
            ],
            "status": null,
            "foo": {"unknown": ["fields", "are", "ignored"]}
        }]}]}]}"#;
    let rows = decode(Some(JSON), None, body.as_bytes(), INGESTED).unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.trace_id, TRACE);
    assert_eq!(row.kind, "client");
    assert_eq!(row.start, 1_714_564_800_000_000);
    assert_eq!(row.end, 1_714_564_801_500_000);
    assert_eq!(row.duration_ms, 1_500.0);
    assert_eq!(row.status, "unset");
    assert_eq!(row.service_name, None);
    assert_eq!(row.scope_name, None);
    assert_eq!(row.resource_attributes, "{}");
    assert_eq!(
        row.attributes,
        r#"{"attempt":3,"big":-9007199254740993,"empty":null,"ratio":"NaN"}"#
    );
}

#[test]
fn otlp_gzip_round_trip() {
    let body = gzip(&github_actions_request().encode_to_vec());
    let rows = decode(Some(PROTOBUF), Some("gzip"), &body, INGESTED).unwrap();
    assert_eq!(rows, expected_rows());
    let body = gzip(GITHUB_ACTIONS_JSON.as_bytes());
    let rows = decode(Some(JSON), Some("GZIP"), &body, INGESTED).unwrap();
    assert_eq!(rows, expected_rows());
}

#[test]
fn otlp_gzip_bomb_is_too_large() {
    // 200 MB of zeros compress to about 200 kB; only the first 64 MiB are ever inflated.
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..200 {
        encoder.write_all(&zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let err = decode(Some(PROTOBUF), Some("gzip"), &bomb, INGESTED).unwrap_err();
    assert_eq!(err, OtlpError::TooLarge);
    assert_eq!(err.status(), 413);
}

#[test]
fn otlp_gzip_of_exactly_the_limit_is_decoded() {
    // 64 MiB of zeros is within the limit; it is then no protobuf (field number 0).
    let body = gzip(&vec![0u8; MAX_DECOMPRESSED]);
    let reason = malformed(decode(Some(PROTOBUF), Some("gzip"), &body, INGESTED));
    assert!(reason.contains("invalid OTLP/protobuf body"), "{reason}");
}

#[test]
fn otlp_invalid_gzip_is_malformed() {
    let reason = malformed(decode(Some(PROTOBUF), Some("gzip"), b"not gzip", INGESTED));
    assert!(reason.starts_with("invalid gzip body"), "{reason}");
}

#[test]
fn otlp_uncompressed_body_over_the_limit_is_too_large() {
    let body = vec![0u8; MAX_DECOMPRESSED + 1];
    assert_eq!(
        decode(Some(PROTOBUF), None, &body, INGESTED),
        Err(OtlpError::TooLarge)
    );
}

#[test]
fn otlp_truncated_protobuf_is_malformed() {
    let body = github_actions_request().encode_to_vec();
    let reason = malformed(decode(
        Some(PROTOBUF),
        None,
        &body[..body.len() - 5],
        INGESTED,
    ));
    assert!(reason.starts_with("invalid OTLP/protobuf body"), "{reason}");
    let err = decode(Some(PROTOBUF), None, &body[..body.len() - 5], INGESTED).unwrap_err();
    assert_eq!(err.status(), 400);
}

#[test]
fn otlp_invalid_json_is_malformed() {
    let reason = malformed(decode(Some(JSON), None, b"{\"resourceSpans\": [", INGESTED));
    assert!(reason.starts_with("invalid OTLP/JSON body"), "{reason}");
    let reason = malformed(decode(
        Some(JSON),
        None,
        br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": 1.5}]}]}]}"#,
        INGESTED,
    ));
    assert!(
        reason.contains("expected an unsigned 64-bit integer"),
        "{reason}"
    );
}

#[test]
fn otlp_wrong_content_type_is_unsupported_media_type() {
    let body = github_actions_request().encode_to_vec();
    for content_type in [Some("text/plain"), Some("application/grpc"), None] {
        let err = decode(content_type, None, &body, INGESTED).unwrap_err();
        assert_eq!(
            err,
            OtlpError::UnsupportedMediaType(content_type.map(str::to_string))
        );
        assert_eq!(err.status(), 415);
        assert!(
            err.to_string()
                .contains("send OTLP/HTTP as application/x-protobuf or application/json"),
            "{err}"
        );
    }
    let err = decode(Some(PROTOBUF), Some("br"), &body, INGESTED).unwrap_err();
    assert_eq!(err, OtlpError::UnsupportedEncoding("br".into()));
    assert_eq!(err.status(), 415);
    assert!(is_json(Some("Application/JSON ; charset=utf-8")));
    assert!(!is_json(Some(PROTOBUF)));
    assert!(!is_json(None));
}

#[test]
fn otlp_invalid_ids_reject_the_request_naming_the_span() {
    let mut request = github_actions_request();
    request.resource_spans[0].scope_spans[0].spans[1].trace_id = vec![0; 16];
    let reason = malformed(decode(
        Some(PROTOBUF),
        None,
        &request.encode_to_vec(),
        INGESTED,
    ));
    assert_eq!(
        reason,
        "resource_spans[0].scope_spans[0].spans[1]: trace_id is all zeros, which is not a valid trace id"
    );

    let mut request = github_actions_request();
    request.resource_spans[0].scope_spans[0].spans[2].span_id = vec![1; 4];
    let reason = malformed(decode(
        Some(PROTOBUF),
        None,
        &request.encode_to_vec(),
        INGESTED,
    ));
    assert_eq!(
        reason,
        "resource_spans[0].scope_spans[0].spans[2]: span_id must be 8 bytes, got 4"
    );

    let mut request = github_actions_request();
    request.resource_spans[0].scope_spans[0].spans[0].span_id = vec![0; 8];
    let reason = malformed(decode(
        Some(PROTOBUF),
        None,
        &request.encode_to_vec(),
        INGESTED,
    ));
    assert!(reason.contains("span_id is all zeros"), "{reason}");

    let json = GITHUB_ACTIONS_JSON.replacen(TRACE, "00000000000000000000000000000000", 1);
    let reason = malformed(decode(Some(JSON), None, json.as_bytes(), INGESTED));
    assert!(
        reason.starts_with("resource_spans[0].scope_spans[0].spans[0]: trace_id is all zeros"),
        "{reason}"
    );
    let json = GITHUB_ACTIONS_JSON.replacen(TRACE, "S/kvNXezTaajzpKdDg5HNg==", 1);
    let reason = malformed(decode(Some(JSON), None, json.as_bytes(), INGESTED));
    assert!(
        reason.starts_with("resource_spans[0].scope_spans[0].spans[0]: traceId")
            && reason.contains("not base64"),
        "{reason}"
    );
}

#[test]
fn otlp_end_before_start_keeps_both_times_and_clamps_duration() {
    let mut request = github_actions_request();
    let span = &mut request.resource_spans[0].scope_spans[0].spans[1];
    span.end_time_unix_nano = span.start_time_unix_nano - SEC;
    let rows = decode(Some(PROTOBUF), None, &request.encode_to_vec(), INGESTED).unwrap();
    assert_eq!(rows[1].start, 1_714_564_805_000_000);
    assert_eq!(rows[1].end, 1_714_564_804_000_000);
    assert_eq!(rows[1].duration_ms, 0.0);
}

#[test]
fn otlp_span_attributes_win_over_resource_attributes() {
    let mut request = github_actions_request();
    request.resource_spans[0].scope_spans[0].spans[1]
        .attributes
        .push(s("vcs.ref.head.name", "feature/x"));
    request.resource_spans[0].scope_spans[0].spans[2]
        .attributes
        .push(kv("cicd.pipeline.run.id", V::IntValue(7)));
    let rows = decode(Some(PROTOBUF), None, &request.encode_to_vec(), INGESTED).unwrap();
    assert_eq!(rows[0].vcs_ref_head_name.as_deref(), Some("main"));
    assert_eq!(rows[1].vcs_ref_head_name.as_deref(), Some("feature/x"));
    assert_eq!(rows[2].cicd_pipeline_run_id.as_deref(), Some("7"));
}

#[test]
fn otlp_attribute_values_to_json() {
    let value = |v: V| any_value_json(Some(AnyValue { value: Some(v) }));
    assert_eq!(value(V::StringValue("x".into())), serde_json::json!("x"));
    assert_eq!(value(V::BoolValue(true)), serde_json::json!(true));
    assert_eq!(value(V::IntValue(i64::MIN)), serde_json::json!(i64::MIN));
    assert_eq!(value(V::DoubleValue(0.25)), serde_json::json!(0.25));
    assert_eq!(value(V::DoubleValue(f64::NAN)), serde_json::json!("NaN"));
    assert_eq!(
        value(V::DoubleValue(f64::INFINITY)),
        serde_json::json!("Infinity")
    );
    assert_eq!(
        value(V::DoubleValue(f64::NEG_INFINITY)),
        serde_json::json!("-Infinity")
    );
    assert_eq!(
        value(V::BytesValue(b"foob".to_vec())),
        serde_json::json!("Zm9vYg==")
    );
    assert_eq!(any_value_json(None), Value::Null);
    let nested = V::KvlistValue(KeyValueList {
        values: vec![
            s("a", "b"),
            kv(
                "list",
                V::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(V::IntValue(1)),
                        },
                        AnyValue { value: None },
                    ],
                }),
            ),
        ],
    });
    assert_eq!(
        value(nested),
        serde_json::json!({"a": "b", "list": [1, null]})
    );
}

#[test]
fn otlp_json_bytes_value_is_base64() {
    let body = r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7",
            "startTimeUnixNano": "1714565100000000000", "endTimeUnixNano": "1714565100500000000",
            "attributes": [
                {"key": "padded", "value": {"bytesValue": "Zm9vYg=="}},
                {"key": "unpadded", "value": {"bytesValue": "Zm9vYg"}},
                {"key": "nested", "value": {"kvlistValue": {"values": [
                    {"key": "k", "value": {"bytesValue": "AQID"}}
                ]}}}
            ]
        }]}]}]}"#;
    let rows = decode(Some(JSON), None, body.as_bytes(), INGESTED).unwrap();
    let attributes: Value = serde_json::from_str(&rows[0].attributes).unwrap();
    assert_eq!(
        attributes,
        serde_json::json!({"padded": "Zm9vYg==", "unpadded": "Zm9vYg==", "nested": {"k": "AQID"}})
    );
    let bad = body.replace("AQID", "A!ID");
    let reason = malformed(decode(Some(JSON), None, bad.as_bytes(), INGESTED));
    assert!(reason.contains("bytesValue is not base64"), "{reason}");
    let two = body.replace(
        r#""bytesValue": "AQID""#,
        r#""bytesValue": "AQID", "intValue": 1"#,
    );
    let reason = malformed(decode(Some(JSON), None, two.as_bytes(), INGESTED));
    assert!(reason.contains("more than one of"), "{reason}");
}

#[test]
fn otlp_json_unknown_enum_name_is_malformed() {
    let json = GITHUB_ACTIONS_JSON.replace("SPAN_KIND_INTERNAL", "SPAN_KIND_FANCY");
    let reason = malformed(decode(Some(JSON), None, json.as_bytes(), INGESTED));
    assert!(
        reason.starts_with("resource_spans[0].scope_spans[0].spans[1]: kind \"SPAN_KIND_FANCY\""),
        "{reason}"
    );
}

#[test]
fn otlp_base64_round_trip() {
    for (plain, encoded) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64::encode(plain.as_bytes()), encoded);
        assert_eq!(base64::decode(encoded).unwrap(), plain.as_bytes());
    }
    assert_eq!(base64::decode("-_8").unwrap(), [0xfb, 0xff]);
    assert_eq!(base64::decode("Z"), None);
    assert_eq!(base64::decode("Zm9=v"), None);
}

#[test]
fn otlp_response_bodies() {
    assert_eq!(response_body(true), ("application/json", b"{}".to_vec()));
    assert_eq!(response_body(false), ("application/x-protobuf", Vec::new()));
    assert!(ExportTraceServiceResponse::decode(&response_body(false).1[..]).is_ok());
}

#[test]
fn otlp_empty_request_has_no_rows() {
    assert_eq!(decode(Some(PROTOBUF), None, b"", INGESTED), Ok(Vec::new()));
    assert_eq!(decode(Some(JSON), None, b"{}", INGESTED), Ok(Vec::new()));
}

proptest! {
    #[test]
    fn otlp_decode_never_panics_on_arbitrary_bytes(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        for content_type in [PROTOBUF, JSON] {
            let _ = decode(Some(content_type), None, &body, INGESTED);
            let _ = decode(Some(content_type), Some("gzip"), &body, INGESTED);
        }
    }

    #[test]
    fn otlp_decode_never_panics_on_damaged_requests(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut protobuf = github_actions_request().encode_to_vec();
        let mut json = GITHUB_ACTIONS_JSON.as_bytes().to_vec();
        for (at, byte) in &edits {
            let i = at.index(protobuf.len());
            protobuf[i] = *byte;
            let i = at.index(json.len());
            json[i] = *byte;
        }
        let _ = decode(Some(PROTOBUF), None, &protobuf, INGESTED);
        let _ = decode(Some(PROTOBUF), None, &protobuf[..cut.index(protobuf.len())], INGESTED);
        let _ = decode(Some(JSON), None, &json, INGESTED);
        let _ = decode(Some(JSON), None, &json[..cut.index(json.len())], INGESTED);
    }
}
#[test]
fn requests_of_too_many_spans_are_refused_before_decoding_naming_the_limit() {
    let span = |i: u8| Span {
        trace_id: vec![1; 16],
        span_id: vec![i.max(1); 8],
        name: "s".into(),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_000_000_001,
        ..Default::default()
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![
                ScopeSpans {
                    spans: (0..3).map(span).collect(),
                    ..Default::default()
                },
                ScopeSpans {
                    spans: (3..5).map(span).collect(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }],
    };
    let body = request.encode_to_vec();
    let err = decode_limited(Some(PROTOBUF), None, &body, INGESTED, 4).unwrap_err();
    assert_eq!(err, OtlpError::TooManySpans { spans: 5, max: 4 });
    assert_eq!(err.status(), 413);
    assert!(err.to_string().contains("--otlp-max-spans"), "{err}");
    assert_eq!(
        decode_limited(Some(PROTOBUF), None, &body, INGESTED, 5)
            .unwrap()
            .len(),
        5
    );
    let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{},{},{}]}]},{"scope_spans":[{"spans":[{}]}]}]}"#;
    let err = decode_limited(Some(JSON), None, json.as_bytes(), INGESTED, 3).unwrap_err();
    assert_eq!(err, OtlpError::TooManySpans { spans: 4, max: 3 });
}
