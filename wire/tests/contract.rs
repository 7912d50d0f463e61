//! The wire types against the shared contract `dora-report.schema.json` and the field names
//! clients read.

use std::path::Path;

use cdlake_wire::dora::{
    ChangeFailureRate, DeploymentFrequency, DoraReport, Figures, Group, LeadTime, Level,
    RecoveryTime, ReworkRate, Unlinked, Window,
};
use cdlake_wire::{ErrorBody, TailEvent};
use serde_json::{Value, json};

fn figures(deployments: u64, level: Option<Level>) -> Figures {
    let rate = (deployments > 0).then_some(0.25);
    Figures {
        deployment_frequency: DeploymentFrequency {
            deployments,
            deploy_days: deployments.min(3),
            per_day: deployments as f64 / 30.0,
            level,
        },
        lead_time: LeadTime {
            changes: 2,
            median_seconds: Some(3600.0),
            p90_seconds: Some(7200.0),
            level: Some(Level::Elite),
            fell_back: 1,
        },
        change_failure_rate: ChangeFailureRate {
            deployments,
            failed: deployments / 4,
            rate,
            level: rate.map(|_| Level::Low),
            rollbacks: 1,
            failed_deployments: 2,
            reverted: 1,
            by_source: [("pagerduty".to_string(), 1), ("rollback".to_string(), 1)].into(),
        },
        recovery_time: RecoveryTime {
            incidents: 0,
            median_seconds: None,
            p90_seconds: None,
            open: 1,
            level: None,
        },
        rework_rate: ReworkRate {
            deployments,
            rework: 0,
            rate: rate.map(|_| 0.0),
            by_rule: Default::default(),
        },
    }
}

fn report(groups: Option<Vec<Group>>) -> DoraReport {
    DoraReport {
        window: Window {
            from: "2026-01-01T00:00:00Z".into(),
            to: "2026-01-31T00:00:00Z".into(),
            days: 30.0,
        },
        figures: figures(8, Some(Level::Medium)),
        groups,
        environments: None,
        repositories: None,
        unlinked: Unlinked {
            changes_not_delivered: 3,
            ..Unlinked::default()
        },
        production: "^prod".into(),
        failure_window: "next_deployment".into(),
        rework_rules: vec!["incident_open".into()],
        failure_rules: vec!["incident".into(), "rollback".into(), "revert".into()],
        lead_time_start: "created".into(),
        bands: "design".into(),
        by: None,
    }
}

fn validate(report: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/contracts/dora-report.schema.json");
    let Ok(text) = std::fs::read(&path) else {
        // The contract lives beside the repository in the shared workspace; a checkout on its
        // own still checks the field names below.
        eprintln!("no contract at {}: schema not checked", path.display());
        return;
    };
    let schema: Value = serde_json::from_slice(&text).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(report)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{report:#}");
}

#[test]
fn a_report_with_and_without_groups_matches_the_contract_and_round_trips() {
    let groups = vec![
        Group {
            service: Some("checkout".into()),
            environment: None,
            ..Group::of(figures(8, Some(Level::Medium)))
        },
        Group {
            service: Some("cart".into()),
            environment: None,
            ..Group::of(figures(0, None))
        },
    ];
    for r in [report(None), report(Some(groups))] {
        let json = serde_json::to_value(&r).unwrap();
        validate(&json);
        assert_eq!(
            serde_json::from_value::<DoraReport>(json.clone()).unwrap(),
            r
        );
        // The figures sit at the top level (flattened), the groups only when grouped.
        for key in [
            "window",
            "deployment_frequency",
            "lead_time",
            "change_failure_rate",
            "recovery_time",
            "rework_rate",
            "unlinked",
            "production",
        ] {
            assert!(json.get(key).is_some(), "{key} missing in {json:#}");
        }
        assert_eq!(json.get("groups").is_some(), r.groups.is_some());
        assert_eq!(json["deployment_frequency"]["level"], json!("medium"));
        assert_eq!(json["recovery_time"]["level"], Value::Null);
        if let Some(groups) = json.get("groups") {
            assert_eq!(groups[0]["service"], json!("checkout"));
            assert!(groups[0].get("team").is_none());
            assert_eq!(groups[1]["change_failure_rate"]["rate"], Value::Null);
        }
    }
}

/// A report by environment keeps the contract: its slices are in `environments`, each named
/// by its environment, and `groups` is absent.
#[test]
fn a_report_by_environment_matches_the_contract_and_round_trips() {
    let mut r = report(None);
    r.environments = Some(
        ["production", "staging"]
            .map(|e| Group {
                service: None,
                environment: Some(e.into()),
                ..Group::of(figures(4, Some(Level::High)))
            })
            .to_vec(),
    );
    let json = serde_json::to_value(&r).unwrap();
    validate(&json);
    assert!(json.get("groups").is_none());
    assert_eq!(json["environments"][1]["environment"], "staging");
    assert!(json["environments"][1].get("service").is_none());
    assert_eq!(
        json["environments"][1]["deployment_frequency"]["level"],
        "high"
    );
    assert_eq!(serde_json::from_value::<DoraReport>(json).unwrap(), r);
    assert_eq!(r.environments.as_ref().unwrap()[0].key(), "production");
}

/// A report by repository keeps the contract: its groups are in `repositories`, each named by
/// its repository (and its second key, when it has one), and `groups` is absent.
#[test]
fn a_report_by_repository_matches_the_contract_and_round_trips() {
    let mut r = report(None);
    r.by = Some("repository,week".into());
    r.repositories = Some(vec![Group {
        repository: Some("acme/shop".into()),
        week: Some("2026-W05".into()),
        ..Group::of(figures(3, Some(Level::High)))
    }]);
    let json = serde_json::to_value(&r).unwrap();
    validate(&json);
    assert!(json.get("groups").is_none());
    assert_eq!(json["repositories"][0]["repository"], "acme/shop");
    assert_eq!(json["repositories"][0]["week"], "2026-W05");
    assert_eq!(serde_json::from_value::<DoraReport>(json).unwrap(), r);
    let (key, groups) = r.breakdown().unwrap();
    assert_eq!(key, "repository · week");
    assert_eq!(groups[0].label(), "acme/shop · 2026-W05");
}

/// A report placed in another year's levels keeps the contract: 2022 has no elite, 2025 no
/// level at all; the figures themselves do not change.
#[test]
fn a_report_in_each_years_levels_matches_the_contract() {
    use cdlake_wire::dora::levels::{Benchmark, Metric};
    let grouped = || {
        Some(vec![Group {
            service: Some("checkout".into()),
            environment: None,
            ..Group::of(figures(8, Some(Level::Medium)))
        }])
    };
    for b in Benchmark::ALL {
        // The report as cdlake computes it in `b`'s levels.
        let mut r = report(grouped());
        r.bands = b.as_str().into();
        let groups = r.groups.iter_mut().flatten().map(|g| &mut g.figures);
        for f in std::iter::once(&mut r.figures).chain(groups) {
            let per_day = f.deployment_frequency.per_day;
            f.deployment_frequency.level = b.level_of(Metric::DeploymentFrequency, per_day);
            f.lead_time.level = b.level_of(Metric::LeadTime, 3600.0);
            f.change_failure_rate.level = f
                .change_failure_rate
                .rate
                .and_then(|x| b.level_of(Metric::ChangeFailureRate, x));
        }
        let json = serde_json::to_value(&r).unwrap();
        validate(&json);
        assert_eq!(json["bands"], json!(b.as_str()));
        assert_eq!(
            serde_json::from_value::<DoraReport>(json.clone()).unwrap(),
            r
        );
        for figures in [&json, &json["groups"][0]] {
            // The lead time's median is an hour.
            let want = match b {
                Benchmark::Dora2021 | Benchmark::Dora2022 => json!("high"),
                Benchmark::Dora2025 => Value::Null,
                _ => json!("elite"),
            };
            assert_eq!(figures["lead_time"]["level"], want, "{b:?}");
            assert_eq!(figures["lead_time"]["median_seconds"], json!(3600.0));
            // No incident resolved: no level in any year.
            assert_eq!(figures["recovery_time"]["level"], Value::Null);
        }
    }
    // An older report without `bands` reads as DESIGN's levels.
    let mut old = serde_json::to_value(report(None)).unwrap();
    old.as_object_mut().unwrap().remove("bands");
    assert_eq!(
        serde_json::from_value::<DoraReport>(old).unwrap().bands,
        "design"
    );
}

#[test]
fn levels_and_groupings_are_spelled_as_the_contract_says() {
    for l in Level::ALL {
        assert_eq!(serde_json::to_value(l).unwrap(), json!(l.as_str()));
    }
    assert_eq!(
        Level::ALL.map(Level::as_str),
        ["elite", "high", "medium", "low"]
    );
    for by in ["service", "team", "week", "repository", "environment"] {
        let parsed: cdlake_wire::GroupBy = by.parse().unwrap();
        assert_eq!(parsed.as_str(), by);
        assert_eq!(serde_json::to_value(parsed).unwrap(), json!(by));
    }
    let err = "day".parse::<cdlake_wire::GroupBy>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown grouping \"day\": use service, team, week, repository or environment"
    );
}

#[test]
fn the_error_body_names_the_limit_only_when_one_was_reached() {
    assert_eq!(
        serde_json::to_value(ErrorBody::new("bad")).unwrap(),
        json!({"error": "bad"})
    );
    let limited = ErrorBody {
        error: "too big".into(),
        limit: Some("limits.max_result_mb".into()),
    };
    let text = serde_json::to_string(&limited).unwrap();
    assert_eq!(
        text,
        r#"{"error":"too big","limit":"limits.max_result_mb"}"#
    );
    assert_eq!(serde_json::from_str::<ErrorBody>(&text).unwrap(), limited);
}

#[test]
fn a_tail_event_reads_what_it_knows_and_ignores_the_rest() {
    let e: TailEvent = serde_json::from_value(json!({
        "event_id": "e1", "subject": "service", "predicate": "deployed",
        "time": "2026-01-01T00:00:00.000000Z", "service": "cart", "environment": null,
        "something_new": 1
    }))
    .unwrap();
    assert_eq!(e.kind(), "service.deployed");
    assert_eq!(e.service.as_deref(), Some("cart"));
    assert_eq!(e.environment, None);
    assert_eq!(e.origin, "");
    let back = serde_json::to_value(&e).unwrap();
    assert_eq!(back["event_id"], json!("e1"));
    assert_eq!(back["subject_id"], Value::Null);
}

#[test]
fn the_change_failure_basis_names_rollbacks_and_failed_attempts_only_when_there_are_some() {
    let mut cfr = ChangeFailureRate {
        deployments: 7,
        failed: 2,
        rate: Some(2.0 / 7.0),
        level: Some(Level::Low),
        rollbacks: 0,
        failed_deployments: 0,
        reverted: 0,
        by_source: Default::default(),
    };
    assert_eq!(cfr.basis(), "2 of 7 deployments failed");
    cfr.rollbacks = 1;
    cfr.failed_deployments = 3;
    assert_eq!(
        cfr.basis(),
        "2 of 7 deployments failed; 1 rollback; 3 failed deployment attempts apart"
    );
    cfr.reverted = 1;
    assert_eq!(
        cfr.basis(),
        "2 of 7 deployments failed; 1 rollback; 1 reverted; 3 failed deployment attempts apart"
    );
    assert_eq!(cfr.sources(), None);
    cfr.by_source = [("rollback".to_string(), 1), ("alertmanager".to_string(), 2)].into();
    assert_eq!(cfr.sources().as_deref(), Some("alertmanager 2, rollback 1"));
    assert_eq!(
        cfr.basis(),
        "2 of 7 deployments failed; 1 rollback; 1 reverted; failed by alertmanager 2, rollback 1; 3 failed deployment attempts apart"
    );
}

#[test]
fn the_rework_basis_names_the_rules_only_when_another_than_the_default_marked_some() {
    let mut rw = ReworkRate {
        deployments: 5,
        rework: 1,
        rate: Some(0.2),
        by_rule: [("incident_open".to_string(), 1)].into(),
    };
    assert_eq!(rw.basis(), "1 of 5 deployments during an open incident");
    rw.rework = 3;
    rw.by_rule.insert("after_failure".into(), 2);
    assert_eq!(
        rw.basis(),
        "3 of 5 deployments: after_failure 2, incident_open 1"
    );
}

#[test]
fn the_chosen_definitions_are_those_that_are_not_designs() {
    let mut r = report(None);
    r.failure_rules = vec!["incident".into(), "rollback".into()];
    assert!(r.chosen_definitions().is_empty(), "DESIGN's definitions");
    r.failure_window = "24h".into();
    r.failure_rules.push("revert".into());
    r.rework_rules = vec!["revert".into(), "hotfix".into()];
    r.lead_time_start = "first_commit".into();
    assert_eq!(
        r.chosen_definitions(),
        [
            ("failure window", "24h".to_string()),
            ("failures", "incident+rollback+revert".to_string()),
            ("rework", "revert+hotfix".to_string()),
            ("lead time from", "first_commit".to_string()),
        ]
    );
}
