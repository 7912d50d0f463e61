//! The DORA report pairs only what its window's figures depend on
//! (`dora::Pairing::Window`): over random histories and random windows, it is the report that
//! pairs the whole history, as the views users query do (`dora::Pairing::WholeHistory`).
//!
//! The histories are small and dense on purpose: a few services and changes deployed and
//! rolled back over six weeks, incidents that name an artifact deployed long before (or never),
//! incidents open across the window's start, changes delivered to one service before the
//! window and to another in it; the windows start and end anywhere, also outside the history.

mod support;
use support::ingest;

use cdlake_query::dora::Pairing;
use cdlake_query::{Config, DoraRequest, Engine, GroupBy};
use cdlake_schemas::store::Store;
use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};

const SERVICES: [&str; 2] = ["web", "api"];

/// The first day of the histories.
fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// The time `hours` after [`start`], as CDEvents writes it.
fn at(hours: u32) -> String {
    (start() + Duration::hours(i64::from(hours))).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn event(id: &str, ty: &str, subject: &str, hours: u32, content: Value) -> String {
    support::cdevent("/window-test", id, ty, subject, &at(hours), content)
}

/// One change: merged into `shop` and packaged as its artifact an hour later.
#[derive(Debug, Clone)]
struct Change {
    merged: u32,
}

/// A deployment of change `change`'s artifact to a service; `rollback` deploys it as a
/// rollback, `staging` outside production.
#[derive(Debug, Clone)]
struct Deployment {
    service: usize,
    hours: u32,
    change: usize,
    rollback: bool,
    staging: bool,
}

/// An incident of a service, naming the artifact of a change or none, resolved or not.
#[derive(Debug, Clone)]
struct Incident {
    service: usize,
    detected: u32,
    artifact: Option<usize>,
    resolved_after: Option<u32>,
}

#[derive(Debug, Clone)]
struct History {
    changes: Vec<Change>,
    deployments: Vec<Deployment>,
    incidents: Vec<Incident>,
}

/// Six weeks, in hours.
const SPAN: u32 = 42 * 24;

fn history() -> impl Strategy<Value = History> {
    let changes = prop::collection::vec((0..SPAN).prop_map(|merged| Change { merged }), 1..12);
    changes.prop_flat_map(|changes| {
        let n = changes.len();
        let deployments = prop::collection::vec(
            (
                0..SERVICES.len(),
                0..SPAN,
                0..n,
                prop::bool::weighted(0.15),
                prop::bool::weighted(0.1),
            )
                .prop_map(|(service, hours, change, rollback, staging)| Deployment {
                    service,
                    hours,
                    change,
                    rollback,
                    staging,
                }),
            1..30,
        );
        let incidents = prop::collection::vec(
            (
                0..SERVICES.len(),
                0..SPAN,
                prop::option::weighted(0.7, 0..n + 1),
                prop::option::weighted(0.7, 1..(14 * 24u32)),
            )
                .prop_map(|(service, detected, artifact, resolved_after)| Incident {
                    service,
                    detected,
                    artifact,
                    resolved_after,
                }),
            0..10,
        );
        (Just(changes), deployments, incidents).prop_map(|(changes, deployments, incidents)| {
            History {
                changes,
                deployments,
                incidents,
            }
        })
    })
}

/// The artifact of change `i` (`i` past the changes: an artifact no change built).
fn artifact(i: usize) -> String {
    format!("pkg:oci/shop@{i}")
}

fn events(h: &History) -> Vec<String> {
    let mut out = Vec::new();
    for (i, c) in h.changes.iter().enumerate() {
        let change = format!("shop/{i}");
        out.push(event(
            &format!("m{i}"),
            "change.merged",
            &change,
            c.merged,
            json!({"repository": {"id": "shop"}}),
        ));
        out.push(event(
            &format!("p{i}"),
            "artifact.packaged",
            &artifact(i),
            c.merged + 1,
            json!({"change": {"id": change, "source": "/window-test"}}),
        ));
    }
    for (i, d) in h.deployments.iter().enumerate() {
        let ty = if d.rollback {
            "service.rolledback"
        } else {
            "service.deployed"
        };
        // A deployment of a change's artifact comes after its packaging.
        let hours = d.hours.max(h.changes[d.change].merged + 2);
        let environment = if d.staging { "staging" } else { "production" };
        out.push(event(
            &format!("d{i}"),
            ty,
            SERVICES[d.service],
            hours,
            json!({"environment": {"id": environment}, "artifactId": artifact(d.change)}),
        ));
    }
    for (i, inc) in h.incidents.iter().enumerate() {
        let id = format!("inc-{i}");
        let mut content =
            json!({"environment": {"id": "production"}, "service": {"id": SERVICES[inc.service]}});
        if let Some(a) = inc.artifact {
            content["artifactId"] = json!(artifact(a));
        }
        out.push(event(
            &format!("i{i}"),
            "incident.detected",
            &id,
            inc.detected,
            content.clone(),
        ));
        if let Some(after) = inc.resolved_after {
            out.push(event(
                &format!("r{i}"),
                "incident.resolved",
                &id,
                inc.detected + after,
                content,
            ));
        }
    }
    out
}

/// Both pairings' reports for `from..to` (hours after [`start`], either may lie outside the
/// history), plain and by service, as JSON.
async fn both(engine: &Engine, from: i64, to: i64) -> Vec<(Value, Value, String)> {
    let mut out = Vec::new();
    for by in [None, Some(GroupBy::Service)] {
        let req = DoraRequest {
            from: start() + Duration::hours(from),
            to: start() + Duration::hours(to),
            by,
            then_by: None,
        };
        let mut paired = Vec::new();
        for pairing in [Pairing::Window, Pairing::WholeHistory] {
            let r = engine
                .dora_paired(&req, pairing)
                .await
                .unwrap_or_else(|e| panic!("the report ({pairing:?}): {e}"));
            paired.push(serde_json::to_value(r).unwrap());
        }
        let whole = paired.pop().unwrap();
        out.push((paired.pop().unwrap(), whole, format!("{req:?}")));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn the_report_over_its_window_is_the_report_over_the_whole_history(
        h in history(),
        from in -72i64..(SPAN as i64),
        days in 1i64..30,
        failure_window in prop::bool::ANY,
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let events = events(&h);
        let reports = runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path().to_str().unwrap()).unwrap();
            ingest(&store, &events).await;
            let mut config = Config::default();
            if failure_window {
                config.dora.failure_window = "24h".into();
            }
            let engine = Engine::open(&store, config).await.unwrap();
            both(&engine, from, from + days * 24).await
        });
        for (windowed, whole, req) in reports {
            prop_assert_eq!(windowed, whole, "{}", req);
        }
    }
}

/// The cases the random histories may miss, each a window that the whole history decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_happened_before_the_window_decides_as_over_the_whole_history() {
    let day = 24;
    let deploy = |service, hours, change| Deployment {
        service,
        hours,
        change,
        rollback: false,
        staging: false,
    };
    let cases = [
        (
            "an incident naming an artifact deployed before the window is not the window's failure",
            History {
                changes: vec![Change { merged: 0 }, Change { merged: 10 * day }],
                deployments: vec![deploy(0, day, 0), deploy(0, 20 * day, 1)],
                incidents: vec![Incident {
                    service: 0,
                    detected: 21 * day,
                    artifact: Some(0),
                    resolved_after: Some(2),
                }],
            },
        ),
        (
            "a change delivered to one service before the window and to another in it",
            History {
                changes: vec![Change { merged: 0 }, Change { merged: 2 * day }],
                deployments: vec![
                    deploy(0, day, 0),
                    deploy(1, 20 * day, 0),
                    deploy(1, 21 * day, 1),
                ],
                incidents: vec![],
            },
        ),
        (
            "an incident open across the window's start makes its deployments rework",
            History {
                changes: vec![Change { merged: 0 }],
                deployments: vec![deploy(0, day, 0), deploy(0, 16 * day, 0)],
                incidents: vec![Incident {
                    service: 0,
                    detected: 10 * day,
                    artifact: None,
                    resolved_after: Some(10 * day),
                }],
            },
        ),
    ];
    for (what, h) in cases {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        ingest(&store, &events(&h)).await;
        let engine = Engine::open(&store, Config::default()).await.unwrap();
        for (windowed, whole, req) in both(&engine, 15 * i64::from(day), 30 * i64::from(day)).await
        {
            assert_eq!(windowed, whole, "{what}: {req}");
        }
    }
}
