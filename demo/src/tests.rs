//! The demo history: well formed, deterministic, in time order, and with the mix of events
//! the dashboards and the report need.

use crate::catalogue::*;
use crate::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde_json::Value;

fn end() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-09-01T13:47:12.345678Z")
        .expect("valid time")
        .with_timezone(&Utc)
}

fn history() -> &'static Vec<String> {
    static H: OnceLock<Vec<String>> = OnceLock::new();
    H.get_or_init(|| generate(&DemoSpec::default(), end()).collect())
}

fn parsed() -> &'static Vec<Value> {
    static P: OnceLock<Vec<Value>> = OnceLock::new();
    P.get_or_init(|| {
        history()
            .iter()
            .map(|l| serde_json::from_str(l).expect("valid JSON"))
            .collect()
    })
}

fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    v.pointer(path).and_then(Value::as_str)
}

fn ty(v: &Value) -> &str {
    str_at(v, "/context/type").unwrap_or("")
}

fn is(v: &Value, what: &str) -> bool {
    ty(v).starts_with(&format!("dev.cdevents.{what}."))
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(str_at(v, "/context/timestamp").expect("timestamp"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

fn is_prod(env: &str) -> bool {
    env == "production" || env.starts_with("prod-")
}

#[test]
fn deterministic() {
    let again: Vec<String> = generate(&DemoSpec::default(), end()).collect();
    assert!(again == *history(), "two runs differ");
    let other = DemoSpec {
        seed: 7,
        ..DemoSpec::default()
    };
    let first: Vec<String> = generate(&other, end()).take(1000).collect();
    assert!(first != history()[..1000], "the seed changes the history");
}

#[test]
fn default_size() {
    let n = history().len() as u64;
    assert!((100_000..=200_000).contains(&n), "{n} events");
    let est = estimated_events(&DemoSpec::default());
    assert!(n.abs_diff(est) * 10 < est, "estimate {est} vs {n}");
}

#[test]
fn well_formed_unique_in_window_and_ordered() {
    let end = end();
    let start = end - chrono::Duration::days(90);
    let mut ids = BTreeSet::new();
    let mut last = start;
    let mut offsets = 0;
    for v in parsed() {
        for f in ["id", "type", "source", "timestamp"] {
            assert!(str_at(v, &format!("/context/{f}")).is_some(), "{f}: {v}");
        }
        assert!(
            str_at(v, "/subject/id").is_some_and(|s| !s.is_empty()),
            "{v}"
        );
        assert!(v.pointer("/subject/content").is_some_and(Value::is_object));
        let id = str_at(v, "/context/id").unwrap_or("");
        assert!(ids.insert(id.to_string()), "duplicate id {id}");
        let t = time(v);
        assert!(t >= start && t < end, "{t} outside the window");
        assert!(t >= last, "out of order at {v}");
        last = t;
        let ts = str_at(v, "/context/timestamp").unwrap_or("");
        assert_eq!(ts.len(), if ts.ends_with('Z') { 24 } else { 29 }, "{ts}");
        if ts.ends_with("+05:30") {
            offsets += 1;
        }
    }
    let share = f64::from(offsets) / parsed().len() as f64;
    assert!((0.03..0.07).contains(&share), "offset share {share}");
}

#[test]
fn spec_versions_mixed_and_shaped() {
    let mut v041 = 0usize;
    for v in parsed() {
        match (
            str_at(v, "/context/version"),
            str_at(v, "/context/specversion"),
        ) {
            (Some("0.4.1"), None) => {
                v041 += 1;
                assert!(str_at(v, "/subject/type").is_some(), "{v}");
                assert!(v.pointer("/subject/content/uri").is_none(), "{v}");
            }
            (None, Some("0.5.1")) => {
                assert!(v.pointer("/subject/type").is_none(), "{v}");
                assert!(v.pointer("/subject/content/url").is_none(), "{v}");
            }
            _ => panic!("bad version fields: {v}"),
        }
    }
    let share = v041 as f64 / parsed().len() as f64;
    assert!((0.35..0.65).contains(&share), "v0.4.1 share {share}");
}

/// The type versions match the spec's conformance examples.
#[test]
fn type_versions_match_fixtures() {
    let dir = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../shared/fixtures/cdevents");
    assert!(dir.is_dir(), "the fixtures are read from {}", dir.display());
    use Kind::*;
    let kinds = [
        ChangeCreated,
        ChangeReviewed,
        ChangeMerged,
        ChangeAbandoned,
        PipelineQueued,
        PipelineStarted,
        PipelineFinished,
        TaskStarted,
        TaskFinished,
        SuiteStarted,
        SuiteFinished,
        ArtifactPackaged,
        ArtifactPublished,
        ServiceDeployed,
        ServiceUpgraded,
        ServiceRolledback,
        IncidentDetected,
        IncidentReported,
        IncidentResolved,
    ];
    for (spec, folder) in [(Spec::V041, "v0.4.1"), (Spec::V051, "v0.5.1")] {
        for kind in kinds {
            let ty = kind.event_type(spec);
            let parts: Vec<&str> = ty.split('.').collect();
            let file = dir
                .join(folder)
                .join("conformance")
                .join(format!("{}_{}.json", parts[2], parts[3]));
            let text = std::fs::read_to_string(&file).expect("fixture");
            let v: Value = serde_json::from_str(&text).expect("fixture JSON");
            assert_eq!(str_at(&v, "/context/type"), Some(ty), "{}", file.display());
        }
    }
}

#[test]
fn the_mix_is_there() {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    let mut prod_envs = BTreeSet::new();
    let mut created = BTreeSet::new();
    let mut merged = BTreeSet::new();
    let mut abandoned = BTreeSet::new();
    let (mut prod_deploys, mut prod_incidents, mut staging_incidents) = (0, 0, 0);
    let mut opened = BTreeSet::new();
    let mut resolved = BTreeSet::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for v in parsed() {
        let t = ty(v);
        let short = t
            .trim_start_matches("dev.cdevents.")
            .rsplitn(4, '.')
            .last()
            .unwrap_or("")
            .to_string();
        *count.entry(short).or_default() += 1;
        let subject = str_at(v, "/subject/id").unwrap_or("").to_string();
        let env = str_at(v, "/subject/content/environment/id").unwrap_or("");
        if is(v, "change.created") {
            created.insert(subject.clone());
        }
        if is(v, "change.merged") {
            assert!(!abandoned.contains(&subject));
            merged.insert(subject.clone());
        }
        if is(v, "change.abandoned") {
            assert!(!merged.contains(&subject));
            abandoned.insert(subject.clone());
        }
        if is(v, "pipelinerun.finished") {
            let o = str_at(v, "/subject/content/outcome").unwrap_or("");
            *outcomes.entry(o.to_string()).or_default() += 1;
        }
        let deploy =
            is(v, "service.deployed") || is(v, "service.upgraded") || is(v, "service.rolledback");
        if deploy && is_prod(env) {
            prod_envs.insert(env.to_string());
            prod_deploys += 1;
            assert!(str_at(v, "/customData/team").is_some(), "{v}");
        }
        if is(v, "incident.detected") || is(v, "incident.reported") {
            assert!(str_at(v, "/customData/team").is_some(), "{v}");
            assert!(str_at(v, "/subject/content/service/id").is_some(), "{v}");
            opened.insert(subject.clone());
            if is_prod(env) {
                prod_incidents += 1;
            } else {
                assert_eq!(env, "staging");
                staging_incidents += 1;
            }
        }
        if is(v, "incident.resolved") {
            assert!(opened.contains(&subject), "resolved before opened: {v}");
            resolved.insert(subject);
        }
    }
    for k in [
        "change.created",
        "change.reviewed",
        "change.merged",
        "change.abandoned",
        "pipelinerun.queued",
        "pipelinerun.started",
        "pipelinerun.finished",
        "taskrun.started",
        "taskrun.finished",
        "testsuiterun.started",
        "testsuiterun.finished",
        "artifact.packaged",
        "artifact.published",
        "service.deployed",
        "service.upgraded",
        "service.rolledback",
        "incident.detected",
        "incident.reported",
        "incident.resolved",
    ] {
        assert!(count.get(k).copied().unwrap_or(0) > 0, "no {k}: {count:?}");
    }
    let merged_only = merged.difference(&created).count();
    assert!(
        merged_only > 0 && merged_only * 20 < merged.len(),
        "{merged_only}"
    );
    let expected = BTreeSet::from(["prod-eu", "prod-us", "production"].map(String::from));
    assert_eq!(prod_envs, expected);
    let runs: usize = outcomes.values().sum();
    let failed = runs - outcomes.get("success").copied().unwrap_or(0);
    let rate = failed as f64 / runs as f64;
    assert!((0.04..0.10).contains(&rate), "CI failure rate {rate}");
    let cfr = f64::from(prod_incidents) / f64::from(prod_deploys);
    assert!(
        (0.06..0.15).contains(&cfr),
        "{prod_incidents}/{prod_deploys}"
    );
    assert!(staging_incidents > 0);
    let open = opened.difference(&resolved).count();
    assert!(
        open > 0 && open * 10 < opened.len(),
        "{open} open of {}",
        opened.len()
    );
}

#[test]
fn monorepo_change_builds_both_services() {
    // change id -> services whose artifacts it built
    let mut built: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for v in parsed() {
        if !is(v, "artifact.packaged") {
            continue;
        }
        let change = str_at(v, "/subject/content/change/id").expect("change id");
        let purl = str_at(v, "/subject/id").expect("purl");
        let svc = purl
            .strip_prefix("pkg:oci/")
            .and_then(|p| p.split('@').next())
            .expect("oci purl");
        assert_eq!(
            str_at(v, "/subject/content/change/source"),
            Some(
                format!(
                    "https://github.com/{}",
                    change.split('#').next().unwrap_or("")
                )
                .as_str()
            )
        );
        built.entry(change).or_default().insert(svc);
    }
    let both: BTreeSet<&str> = ["cart", "checkout"].into();
    let shop: Vec<_> = built
        .iter()
        .filter(|(c, _)| c.starts_with("acme/shop#"))
        .collect();
    assert!(!shop.is_empty());
    assert!(
        shop.iter().any(|(_, s)| **s == both),
        "no change built both"
    );
    assert!(
        built
            .iter()
            .filter(|(c, _)| !c.starts_with("acme/shop#"))
            .all(|(_, s)| s.len() == 1)
    );
}

#[test]
fn deployments_use_published_artifacts() {
    let mut published = BTreeSet::new();
    for v in parsed() {
        if is(v, "artifact.published") {
            published.insert(str_at(v, "/subject/id").unwrap_or(""));
        }
        if is(v, "service.deployed") || is(v, "service.upgraded") {
            let a = str_at(v, "/subject/content/artifactId").expect("artifactId");
            assert!(published.contains(a), "deployed before published: {v}");
            let svc = str_at(v, "/subject/id").unwrap_or("");
            assert!(a.starts_with(&format!("pkg:oci/{svc}@sha256%3A")), "{v}");
        }
    }
}

#[test]
fn small_and_empty_specs() {
    let empty = DemoSpec {
        days: 0,
        ..DemoSpec::default()
    };
    assert_eq!(generate(&empty, end()).count(), 0);
    assert_eq!(estimated_events(&empty), 0);
    let none = DemoSpec {
        services: 0,
        ..DemoSpec::default()
    };
    assert_eq!(generate(&none, end()).count(), 0);
    let one = DemoSpec {
        services: 1,
        days: 5,
        target_events: 2_000,
        ..DemoSpec::default()
    };
    assert!(generate(&one, end()).count() > 100);
}
