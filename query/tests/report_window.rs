//! The DORA report pairs only what its window's figures depend on
//! (`dora::Pairing::Window`): over random histories and random windows, over the demo history,
//! and in the cases a random history may miss, it is the report that pairs the whole history,
//! as the views users query do (`dora::Pairing::WholeHistory`).
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

/// One change: merged into `shop` and packaged as its artifact an hour later; it may revert
/// another change and be labelled a hotfix.
#[derive(Debug, Clone, Default)]
struct Change {
    merged: u32,
    reverts: Option<usize>,
    hotfix: bool,
}

/// A deployment of change `change`'s artifact to a service (`change` past the changes: an
/// artifact no change built); `rollback` deploys it as a rollback, `staging` outside
/// production.
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
    let changes = prop::collection::vec(
        (
            0..SPAN,
            prop::option::weighted(0.2, 0..12usize),
            prop::bool::weighted(0.2),
        )
            .prop_map(|(merged, reverts, hotfix)| Change {
                merged,
                reverts,
                hotfix,
            }),
        1..12,
    );
    changes.prop_flat_map(|changes| {
        let n = changes.len();
        let deployments = prop::collection::vec(
            (
                0..SERVICES.len(),
                0..SPAN,
                0..n + 1,
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

/// A change merged `hours` after [`start`], neither a revert nor a hotfix.
fn merged_at(hours: u32) -> Change {
    Change {
        merged: hours,
        ..Change::default()
    }
}

/// A production deployment of change `change`'s artifact to service `service`.
fn deploy(service: usize, hours: u32, change: usize) -> Deployment {
    Deployment {
        service,
        hours,
        change,
        rollback: false,
        staging: false,
    }
}

/// The artifact of change `i` (`i` past the changes: an artifact no change built).
fn artifact(i: usize) -> String {
    format!("pkg:oci/shop@{i}")
}

fn events(h: &History) -> Vec<String> {
    let mut out = Vec::new();
    for (i, c) in h.changes.iter().enumerate() {
        let change = format!("shop/{i}");
        let mut merged: Value = serde_json::from_str(&event(
            &format!("m{i}"),
            "change.merged",
            &change,
            c.merged,
            json!({"repository": {"id": "shop"}}),
        ))
        .unwrap();
        let mut custom = json!({});
        if let Some(r) = c.reverts.filter(|r| *r != i) {
            custom["reverts"] = json!(format!("shop/{r}"));
        }
        if c.hotfix {
            custom["labels"] = json!(["Hotfix"]);
        }
        merged["customData"] = custom;
        out.push(merged.to_string());
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
        let hours = match h.changes.get(d.change) {
            Some(c) => d.hours.max(c.merged + 2),
            None => d.hours,
        };
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

/// The report for `req` pairing its window, and pairing the whole history, as JSON.
async fn paired(engine: &Engine, req: &DoraRequest) -> (Value, Value) {
    let mut out = Vec::new();
    for pairing in [Pairing::Window, Pairing::WholeHistory] {
        let r = engine
            .dora_paired(req, pairing)
            .await
            .unwrap_or_else(|e| panic!("the report ({pairing:?}) for {req:?}: {e}"));
        out.push(serde_json::to_value(r).unwrap());
    }
    let whole = out.pop().unwrap();
    (out.pop().unwrap(), whole)
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
        let (windowed, whole) = paired(engine, &req).await;
        out.push((windowed, whole, format!("{req:?}")));
    }
    out
}

/// The `[dora]` rules of a report: DESIGN's (0), a 24h failure window (1), or failures by
/// revert with rework by revert and hotfix (2).
fn config(rules: usize) -> Config {
    let mut config = Config::default();
    match rules {
        1 => config.dora.failure_window = "24h".into(),
        2 => {
            config.dora.failures = vec!["incident".into(), "rollback".into(), "revert".into()];
            config.dora.rework = vec!["incident_open".into(), "revert".into(), "hotfix".into()];
        }
        _ => {}
    }
    config
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn the_report_over_its_window_is_the_report_over_the_whole_history(
        h in history(),
        from in -72i64..(SPAN as i64),
        days in 1i64..30,
        rules in 0..3usize,
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
            let engine = Engine::open(&store, config(rules)).await.unwrap();
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
    let cases = [
        (
            "an incident naming an artifact deployed before the window is not the window's failure",
            History {
                changes: vec![merged_at(0), merged_at(10 * day)],
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
                changes: vec![merged_at(0), merged_at(2 * day)],
                deployments: vec![
                    deploy(0, day, 0),
                    deploy(1, 20 * day, 0),
                    deploy(1, 21 * day, 1),
                ],
                incidents: vec![],
            },
        ),
        (
            "a change delivered in the window and reverted after fails its deployment; the revert's is rework",
            reverted(day),
        ),
        (
            "an incident open across the window's start makes its deployments rework",
            History {
                changes: vec![merged_at(0)],
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
        // Each with DESIGN's rules and with the revert and hotfix rules.
        for rules in [0, 2] {
            let engine = Engine::open(&store, config(rules)).await.unwrap();
            for (windowed, whole, req) in
                both(&engine, 15 * i64::from(day), 30 * i64::from(day)).await
            {
                assert_eq!(windowed, whole, "{what} (rules {rules}): {req}");
            }
        }
    }
    // The revert case exercises the rules: its first deployment failed by the revert, the
    // second rework for delivering a revert and a hotfix.
    let (_dir, store) = support::temp_store();
    ingest(&store, &events(&reverted(day))).await;
    let engine = Engine::open(&store, config(2)).await.unwrap();
    let (windowed, _, _) = both(&engine, 15 * i64::from(day), 30 * i64::from(day))
        .await
        .remove(0);
    assert_eq!(
        windowed["change_failure_rate"]["reverted"],
        json!(1),
        "{windowed}"
    );
    assert_eq!(windowed["rework_rate"]["rework"], json!(1), "{windowed}");
}

/// The window's report reads only the changes merged after the least frontier its repository's
/// services deployed before the window (`delivery_reach`'s bound): those merged before count
/// as delivered, those of a repository no service deploys from (or of none) as not delivered,
/// and a service first deploying in the window makes its repository's whole history count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_merged_before_every_services_last_frontier_count_as_delivered_before_the_window() {
    let day = 24;
    // `web` deploys change 1 (merged on day 1) on day 2; `api` change 3 (day 14) on day 14,
    // or, in the second case, nothing before the window; in the window (days 15 to 30) `web`
    // deploys change 4 (day 18). Change 5 (day 25) is never deployed.
    let changes = [0, 1, 12, 14, 18, 25].map(|d| merged_at(d * day));
    let cases = [
        (
            "every service deployed before the window",
            Some(14 * day + 2),
        ),
        ("a service first deploys in the window", Some(16 * day)),
        ("a service deploys only after the window", Some(31 * day)),
        ("one service", None),
    ];
    for (what, api) in cases {
        let mut deployments = vec![deploy(0, 2 * day, 1), deploy(0, 20 * day, 4)];
        deployments.extend(api.map(|hours| deploy(1, hours, 3)));
        let h = History {
            changes: changes.to_vec(),
            deployments,
            incidents: vec![],
        };
        let mut events = events(&h);
        // A change of a repository no service deploys from, and one of no repository.
        events.push(event(
            "ledger-merged",
            "change.merged",
            "ledger/1",
            3 * day,
            json!({"repository": {"id": "ledger"}}),
        ));
        events.push(event(
            "nowhere-merged",
            "change.merged",
            "nowhere/1",
            4 * day,
            json!({}),
        ));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        ingest(&store, &events).await;
        let engine = Engine::open(&store, config(0)).await.unwrap();
        for (windowed, whole, req) in both(&engine, 15 * i64::from(day), 30 * i64::from(day)).await
        {
            assert_eq!(windowed, whole, "{what}: {req}");
            // Change 5, the ledger's and the one of no repository; and, with `api` deploying
            // change 3 after the window or not at all, change 2 and 3 wait for `web`'s day 20
            // deployment in the window (`web`'s frontier is change 4's).
            assert_eq!(
                windowed["unlinked"]["changes_not_delivered"],
                json!(3),
                "{what}: {req}: {windowed}"
            );
        }
        let (windowed, _, _) = both(&engine, 15 * i64::from(day), 30 * i64::from(day))
            .await
            .remove(0);
        // Delivered in the window: change 4 by `web`, and changes 2 and 3 by `web` unless `api`
        // delivered them before it.
        let delivered = if api == Some(14 * day + 2) { 1 } else { 3 };
        assert_eq!(
            windowed["lead_time"]["changes"],
            json!(delivered),
            "{what}: {windowed}"
        );
    }
}

/// Over the demo history (60 days of 6 services) and windows across it (one starting before
/// it, one ending after it, one cutting days in their middle), by every grouping and with every
/// `[dora]` rule that allows a window, the two pairings give the same report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_demo_history_every_rule_and_grouping_reports_as_the_whole_history() {
    let end = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let spec = cdlake_demo::DemoSpec {
        seed: 42,
        days: 60,
        services: 6,
        target_events: 20_000,
    };
    let (_dir, store) = support::temp_store();
    let events: Vec<String> = cdlake_demo::generate(&spec, end).collect();
    ingest(&store, &events).await;
    let rules = |f: &dyn Fn(&mut cdlake_query::config::DoraRules)| {
        let mut config = Config::default();
        f(&mut config.dora);
        config
    };
    let configs = [
        ("DESIGN's rules", Config::default()),
        (
            "a 24h failure window, lead time from the merge",
            rules(&|d| {
                d.failure_window = "24h".into();
                d.lead_time_start = "merged".into();
            }),
        ),
        (
            "failures by revert, rework by revert and hotfix, lead time from the first commit",
            rules(&|d| {
                d.failures = vec!["incident".into(), "rollback".into(), "revert".into()];
                d.rework = vec!["incident_open".into(), "revert".into(), "hotfix".into()];
                d.lead_time_start = "first_commit".into();
            }),
        ),
    ];
    let day = Duration::days(1);
    let windows = [
        (end - day * 30, end - Duration::milliseconds(1)),
        (end - day * 90, end - day * 44),
        (end - day * 20, end + day * 10),
        (
            end - day * 37 + Duration::minutes(797),
            end - day * 30 + Duration::minutes(125),
        ),
    ];
    let groupings = [
        (None, None),
        (Some(GroupBy::Service), None),
        (Some(GroupBy::Repository), None),
        (Some(GroupBy::Team), Some(GroupBy::Week)),
    ];
    let mut deployments = 0;
    for (rules, config) in configs {
        let engine = Engine::open(&store, config).await.unwrap();
        for (from, to) in windows {
            for (by, then_by) in groupings {
                let req = DoraRequest {
                    from,
                    to,
                    by,
                    then_by,
                };
                let (windowed, whole) = paired(&engine, &req).await;
                assert_eq!(
                    windowed, whole,
                    "with {rules}, from {from} to {to} by {by:?},{then_by:?}: the window's pairing differs from the whole history's"
                );
                deployments += windowed["deployment_frequency"]["deployments"]
                    .as_u64()
                    .expect("a deployment count");
            }
        }
    }
    assert!(deployments > 0, "the windows hold deployments");
}

/// A change deployed at 20 days, reverted by a hotfix merged at 22 and deployed at 25.
fn reverted(day: u32) -> History {
    History {
        changes: vec![
            merged_at(0),
            Change {
                merged: 22 * day,
                reverts: Some(0),
                hotfix: true,
            },
        ],
        deployments: vec![deploy(0, 20 * day, 0), deploy(0, 25 * day, 1)],
        incidents: vec![],
    }
}
