//! End-to-end tests of the `cdlake` binary: import, SQL, DORA and the demo, on real files in a
//! temporary store, with the real fixtures of `../shared/fixtures`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn shared() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../shared")
}

fn cdlake(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cdlake"))
        .args(args)
        .env("CDLAKE_STORE", store)
        .env_remove("CDLAKE_CONFIG")
        .current_dir(store.parent().unwrap_or(store))
        .output()
        .expect("run cdlake")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "cdlake failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sql_json(store: &Path, query: &str) -> Vec<serde_json::Value> {
    let out = ok(&cdlake(store, &["sql", "--format", "json", query]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn counts(stdout: &str) -> (u64, u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("imported "))
        .unwrap_or_else(|| panic!("no counts in {stdout}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (n[0], n[1], n[2])
}

fn validate_report(report: &serde_json::Value) {
    let schema: serde_json::Value = serde_json::from_slice(
        &std::fs::read(shared().join("contracts/dora-report.schema.json"))
            .expect("contract schema"),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("valid schema");
    let errors: Vec<String> = validator
        .iter_errors(report)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "report does not match the contract: {errors:#?}\n{report:#}"
    );
}

#[test]
fn conformance_fixtures_import_with_duplicates_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut files = Vec::new();
    let mut identities = BTreeSet::new();
    for v in ["v0.4.1", "v0.5.1"] {
        for entry in std::fs::read_dir(
            shared()
                .join("fixtures/cdevents")
                .join(v)
                .join("conformance"),
        )
        .unwrap()
        {
            let path = entry.unwrap().path();
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            identities.insert((
                json["context"]["source"].to_string(),
                json["context"]["id"].to_string(),
            ));
            files.push(path.to_string_lossy().into_owned());
        }
    }
    assert_eq!(files.len(), 90);
    let mut args = vec!["import"];
    args.extend(files.iter().map(String::as_str));
    let (imported, duplicate, rejected) = counts(&ok(&cdlake(&store, &args)));
    assert_eq!(
        (imported as usize, duplicate, rejected),
        (identities.len(), 90 - identities.len() as u64, 0)
    );
    let rows = sql_json(&store, "SELECT count(*) AS n FROM events");
    assert_eq!(rows[0]["n"], identities.len());

    // Imported again: everything is a duplicate, nothing is stored twice.
    let (imported, duplicate, _) = counts(&ok(&cdlake(&store, &args)));
    assert_eq!((imported, duplicate), (0, 90));
    assert_eq!(
        sql_json(&store, "SELECT count(*) AS n FROM events")[0]["n"],
        identities.len()
    );
}

#[test]
fn bad_records_are_dead_lettered_and_the_rest_imported() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let good = |id: &str| {
        format!(
            r#"{{"context":{{"specversion":"0.5.1","id":"{id}","source":"/ci","type":"dev.cdevents.service.deployed.0.3.0","timestamp":"2026-03-01T10:00:00+05:30"}},"subject":{{"id":"checkout","content":{{"environment":{{"id":"prod-eu"}},"artifactId":"pkg:oci/checkout@1"}}}}}}"#
        )
    };
    let cloudevent = r#"{"specversion":"1.0","id":"ce-1","source":"/tekton","type":"dev.cdevents.pipelinerun.finished.0.2.0","time":"2026-03-01T11:00:00Z","data":{"context":{"version":"0.4.1","id":"ce-1","source":"/tekton","type":"dev.cdevents.pipelinerun.finished.0.2.0","timestamp":"2026-03-01T11:00:00Z"},"subject":{"id":"run-1","content":{"pipelineName":"build","outcome":"success"}}}}"#;
    let input = [
        good("a"),
        "{this is not json".to_string(),
        r#"{"context":{"id":"x","source":"/s","timestamp":"2026-03-01T00:00:00Z"},"subject":{"id":"s"}}"#.to_string(),
        r#"{"context":{"id":"y","source":"/s","type":"com.example.build","timestamp":"2026-03-01T00:00:00Z"},"subject":{"id":"s"}}"#.to_string(),
        r#"{"context":{"id":"z","source":"/s","type":"dev.cdevents.change.merged.0.3.0","timestamp":"soon"},"subject":{"id":"s"}}"#.to_string(),
        cloudevent.to_string(),
        good("a"),
    ]
    .join("\n");
    let file = dir.path().join("mixed.jsonl");
    std::fs::write(&file, &input).unwrap();
    let (imported, duplicate, rejected) =
        counts(&ok(&cdlake(&store, &["import", file.to_str().unwrap()])));
    assert_eq!((imported, duplicate, rejected), (2, 1, 4));

    let dead = sql_json(
        &store,
        "SELECT source, reason, CAST(payload AS VARCHAR) AS raw FROM dead_letters ORDER BY source",
    );
    let reasons: Vec<&str> = dead.iter().map(|r| r["reason"].as_str().unwrap()).collect();
    assert_eq!(dead.len(), 4, "{dead:#?}");
    assert!(reasons[0].contains("malformed JSON"), "{reasons:?}");
    assert!(reasons[1].contains("missing `context.type`"), "{reasons:?}");
    assert!(reasons[2].contains("not a CDEvents type"), "{reasons:?}");
    assert!(
        reasons[3].contains("`context.timestamp` \"soon\""),
        "{reasons:?}"
    );
    assert!(
        dead[0]["source"]
            .as_str()
            .unwrap()
            .ends_with("mixed.jsonl:2")
    );
    assert_eq!(dead[0]["raw"], "{this is not json");

    let rows = sql_json(
        &store,
        "SELECT event_id, CAST(time AS VARCHAR) AS t, environment, origin FROM events ORDER BY event_id",
    );
    assert_eq!(
        rows[0]["t"], "2026-03-01T04:30:00Z",
        "offsets are normalised to UTC"
    );
    assert_eq!(rows[0]["environment"], "prod-eu");
    assert_eq!(rows[1]["event_id"], "ce-1");

    // --strict turns rejections into a failing exit status; stdin is `-`.
    let mut child = Command::new(env!("CARGO_BIN_EXE_cdlake"))
        .args(["import", "--strict", "-"])
        .env("CDLAKE_STORE", &store)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{broken\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(counts(&String::from_utf8_lossy(&out.stdout)), (0, 0, 1));
}

#[test]
fn sql_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let target = dir.path().join("written");
    let refused = [
        "CREATE VIEW v AS SELECT 1".to_string(),
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/'".to_string(),
        format!("COPY (SELECT 1) TO '{}'", target.display()),
        "INSERT INTO events SELECT * FROM events".to_string(),
        "SET datafusion.execution.batch_size = 1".to_string(),
        "SELECT * FROM '/etc/passwd'".to_string(),
        "DROP VIEW deployments".to_string(),
    ];
    for q in &refused {
        let out = cdlake(&store, &["sql", q]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{q} was accepted: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(stderr.starts_with("error:"), "{q}: {stderr}");
    }
    assert!(!target.exists(), "COPY wrote a file");
    let out = cdlake(&store, &["sql", "CREATE VIEW v AS SELECT 1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("read-only"));
    // The views still work afterwards, on an empty store.
    assert_eq!(
        sql_json(&store, "SELECT count(*) AS n FROM deployments")[0]["n"],
        0
    );
    let csv = ok(&cdlake(
        &store,
        &["sql", "--format", "csv", "SELECT 1 AS a, 'x' AS b"],
    ));
    assert_eq!(csv.trim(), "a,b\n1,x");
}

#[test]
fn demo_is_idempotent_and_its_report_matches_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let args = [
        "demo",
        "--no-serve",
        "--events",
        "6000",
        "--days",
        "20",
        "--services",
        "4",
    ];
    let first = cdlake(&store, &args);
    let stdout = ok(&first);
    assert!(
        stdout.contains("Deployment frequency") && stdout.contains("service"),
        "{stdout}"
    );
    let events = sql_json(
        &store,
        "SELECT count(*) AS n, count(DISTINCT spec_version) AS specs FROM events",
    );
    let n = events[0]["n"].as_u64().unwrap();
    assert!(n > 3000, "{events:?}");
    assert_eq!(
        events[0]["specs"], 2,
        "both CDEvents versions are generated"
    );

    // The demo derived the read model; a rebuild finds every month current.
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(stderr.contains("read model report_events: "), "{stderr}");
    let rebuilt: serde_json::Value =
        serde_json::from_str(&ok(&cdlake(&store, &["rebuild", "--json"]))).unwrap();
    assert_eq!(rebuilt["built"], 0, "{rebuilt}");
    assert!(rebuilt["current"].as_u64().unwrap() >= 1, "{rebuilt}");
    // `--from` derives the months from that date on again; a name that is no read model, or
    // a date that is none, is refused saying what to give.
    let month = (chrono::Utc::now() - chrono::Duration::days(1))
        .format("%Y-%m")
        .to_string();
    let again: serde_json::Value = serde_json::from_str(&ok(&cdlake(
        &store,
        &[
            "rebuild",
            "--table",
            "report_events",
            "--from",
            &month,
            "--json",
        ],
    )))
    .unwrap();
    let built = again["built"].as_u64().unwrap();
    assert!(
        (1..=2).contains(&built),
        "the month of yesterday and the current one: {again}"
    );
    assert_eq!(
        again["current"].as_u64().unwrap() + built,
        rebuilt["tables"]["report_events"]["current"]
            .as_u64()
            .unwrap(),
        "only report_events: {again}"
    );
    assert_eq!(again["tables"].as_object().map(|t| t.len()), Some(1));
    assert!(
        rebuilt["tables"]["run_events"]["current"].as_u64().unwrap() >= 1,
        "{rebuilt}"
    );
    // Every demo row is what its payload normalises to today: renormalising reads them all and
    // rewrites nothing, and the read models stay current.
    let renormalised: serde_json::Value = serde_json::from_str(&ok(&cdlake(
        &store,
        &["rebuild", "--renormalise", "--json"],
    )))
    .unwrap();
    let r = &renormalised["renormalised"];
    assert_eq!(r["rows"], n, "{renormalised}");
    assert_eq!(
        (&r["changed"], &r["rewritten"], &r["duplicates"], &r["busy"]),
        (&0.into(), &0.into(), &0.into(), &0.into()),
        "{renormalised}"
    );
    assert!(r["partitions"].as_u64().unwrap() >= 20, "{renormalised}");
    assert_eq!(renormalised["built"], 0, "{renormalised}");
    for (bad, says) in [
        (
            ["--table", "deployments"],
            "the read models and projections are: report_events",
        ),
        (["--from", "last week"], "give YYYY-MM-DD or YYYY-MM"),
    ] {
        let out = cdlake(&store, &["rebuild", bad[0], bad[1]]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{stderr}");
    }

    let second = cdlake(&store, &args);
    ok(&second);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("Stored 0 new events"), "{stderr}");
    assert_eq!(
        sql_json(&store, "SELECT count(*) AS n FROM events")[0]["n"],
        n
    );

    for by in [None, Some("service"), Some("team"), Some("week")] {
        let mut a = vec!["dora", "--from", "now-60d", "--format", "json"];
        if let Some(by) = by {
            a.extend(["--by", by]);
        }
        let report: serde_json::Value = serde_json::from_str(&ok(&cdlake(&store, &a))).unwrap();
        validate_report(&report);
        assert!(
            report["deployment_frequency"]["deployments"]
                .as_u64()
                .unwrap()
                > 0,
            "{report:#}"
        );
        assert!(
            report["lead_time"]["changes"].as_u64().unwrap() > 0,
            "{report:#}"
        );
        if by.is_some() {
            assert!(!report["groups"].as_array().unwrap().is_empty());
        }
    }
    let md = ok(&cdlake(
        &store,
        &[
            "dora", "--from", "now-60d", "--format", "markdown", "--by", "service",
        ],
    ));
    assert!(md.contains("| metric | value | level | based on |"), "{md}");

    // By environment: one row per environment deployed to, production's the top figures'.
    let by_env = ok(&cdlake(
        &store,
        &["dora", "--from", "now-60d", "--by", "environment"],
    ));
    let rows: Vec<&str> = by_env
        .lines()
        .skip_while(|l| !l.starts_with("environment"))
        .skip(2)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert!(
        rows.iter().any(|l| l.starts_with("production "))
            && rows.iter().any(|l| l.starts_with("staging ")),
        "{by_env}"
    );

    // Levels by report year: `[dora] bands` in the config, `--bands` over it. The table names
    // the year; 2025 has no tiers, so no level.
    let config = dir.path().join("bands.toml");
    std::fs::write(&config, "[dora]\nbands = \"2025\"\n").unwrap();
    let json = |extra: &[&str]| -> serde_json::Value {
        let mut a = vec![
            "dora", "--from", "now-60d", "--to", "now", "--format", "json",
        ];
        a.extend(extra);
        let report = serde_json::from_str(&ok(&cdlake(&store, &a))).unwrap();
        validate_report(&report);
        report
    };
    let from_config = json(&["--config", config.to_str().unwrap()]);
    assert_eq!(from_config["bands"], "2025");
    assert_eq!(
        from_config["deployment_frequency"]["level"],
        serde_json::Value::Null
    );
    let flag_wins = json(&["--config", config.to_str().unwrap(), "--bands", "2022"]);
    assert_eq!(flag_wins["bands"], "2022");
    assert!(flag_wins["deployment_frequency"]["level"].is_string());
    let table = ok(&cdlake(
        &store,
        &["dora", "--from", "now-60d", "--bands", "2024"],
    ));
    assert!(table.contains("levels of DORA 2024"), "{table}");
    let bad = cdlake(&store, &["dora", "--bands", "2020"]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("2021, 2022, 2023, 2024 or 2025"),
        "{stderr}"
    );

    let page = dir.path().join("report.html");
    ok(&cdlake(
        &store,
        &[
            "dora",
            "--from",
            "now-60d",
            "--format",
            "html",
            "--bands",
            "2022",
            "--out",
            page.to_str().unwrap(),
        ],
    ));
    let html = std::fs::read_to_string(&page).unwrap();
    // The page names whose levels it shows; 2022 had no elite tier.
    assert!(
        html.contains("as DORA's 2022 report tabulated them"),
        "{html}"
    );
    assert!(!html.contains(">elite<"), "{html}");
    assert!(
        html.starts_with("<!DOCTYPE html>") && html.contains("<svg") && html.contains("By service"),
        "{html}"
    );
    assert!(
        html.contains("previous period"),
        "the page compares with the previous period"
    );
    for external in ["<script", "src=\"http", "href=\"http", "@import", "url("] {
        assert!(
            !html.contains(external),
            "the page must be self-contained, found {external}"
        );
    }
}

#[test]
fn an_empty_window_reports_nulls_within_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = ok(&cdlake(
        &store,
        &[
            "dora",
            "--from",
            "2020-01-01",
            "--to",
            "2020-02-01",
            "--format",
            "json",
            "--by",
            "service",
        ],
    ));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    validate_report(&report);
    assert_eq!(
        report["lead_time"]["median_seconds"],
        serde_json::Value::Null
    );
    assert_eq!(
        report["change_failure_rate"]["rate"],
        serde_json::Value::Null
    );
    assert_eq!(report["deployment_frequency"]["deployments"], 0);
    assert_eq!(report["window"]["days"], 31.0);
    let bad = cdlake(
        &store,
        &["dora", "--from", "2020-02-01", "--to", "2020-01-01"],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("window is empty"));
}

/// The Parquet files under `dir`, at any depth, with their modification times.
fn parquet_files(dir: &Path) -> std::collections::BTreeMap<PathBuf, std::time::SystemTime> {
    let mut files = std::collections::BTreeMap::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "parquet")
                && let Ok(modified) = entry.metadata().and_then(|m| m.modified())
            {
                files.insert(path, modified);
            }
        }
    }
    files
}

/// The month files of the read models under `read` (`…/month=YYYY-MM/…`), not the
/// projections' files.
fn month_files(read: &Path) -> std::collections::BTreeMap<PathBuf, std::time::SystemTime> {
    let mut files = parquet_files(read);
    files.retain(|p, _| {
        p.components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with("month="))
    });
    files
}

/// Every Parquet file of the read models and projections under `store`, each read whole: a
/// file is whole or absent, whatever moment a rebuild was killed at. Returns how many month
/// files there are.
fn read_model_files_are_whole(store: &Path) -> usize {
    let read = store.join("_cdlake/read");
    let files = parquet_files(&read);
    for path in files.keys() {
        let file = std::fs::File::open(path).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for batch in reader {
            batch.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
    month_files(&read).len()
}

/// `cdlake rebuild` killed with SIGKILL at many moments (while it reads `events`, while it
/// replaces a month's file, between months) never changes an answer, never leaves a torn file,
/// and the next rebuild converges.
#[test]
fn a_rebuild_killed_anywhere_leaves_answers_exact_and_the_next_converges() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ok(&cdlake(
        &store,
        &[
            "demo",
            "--no-serve",
            "--events",
            "20000",
            "--days",
            "400",
            "--seed",
            "7",
        ],
    ));
    let from = (chrono::Utc::now() - chrono::Duration::days(420)).to_rfc3339();
    let to = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let answers = || {
        let report: serde_json::Value = serde_json::from_str(&ok(&cdlake(
            &store,
            &[
                "dora", "--from", &from, "--to", &to, "--by", "service", "--format", "json",
            ],
        )))
        .unwrap();
        let runs = sql_json(
            &store,
            // Rounded: a float sum depends on the order rows arrive in.
            "SELECT count(*) AS n, round(sum(duration_seconds), 3) AS d, count(outcome) AS o
             FROM pipeline_runs",
        );
        (report, runs)
    };
    let reference = answers();
    assert!(
        reference.0["deployment_frequency"]["deployments"]
            .as_u64()
            .unwrap()
            > 0
    );
    let months = read_model_files_are_whole(&store);
    assert!(months >= 2 * 13, "two read models over 14 months: {months}");

    // `--from 2000-01`: every month is derived again, its file replaced.
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_cdlake"))
            .args(["rebuild", "--from", "2000-01"])
            .env("CDLAKE_STORE", &store)
            .env_remove("CDLAKE_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let check = |when: &str| {
        let files = read_model_files_are_whole(&store);
        eprintln!("rebuild killed {when}: {files} of {months} read-model files present");
        assert_eq!(answers(), reference, "after a rebuild killed {when}");
        files
    };
    // Killed at set moments: while it reads `events`, while it writes.
    let mut killed_running = 0;
    for delay_ms in [30, 400, 900, 1300] {
        let mut child = spawn();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            killed_running += 1;
        }
        child.kill().ok();
        child.wait().unwrap();
        check(&format!("at {delay_ms} ms"));
    }
    assert!(
        killed_running >= 2,
        "most kills should land while the rebuild runs: {killed_running}"
    );
    // Killed the moment the first month's file has been replaced: some months rewritten,
    // others not yet, and never a month without its file (a file is replaced in one step).
    let read = store.join("_cdlake/read");
    let mut partial = 0;
    for _ in 0..3 {
        // From a whole read model: every month current again first.
        ok(&cdlake(&store, &["rebuild"]));
        let before = month_files(&read);
        assert_eq!(before.len(), months);
        let mut child = spawn();
        loop {
            let now = month_files(&read);
            assert_eq!(
                now.len(),
                months,
                "a month's file is replaced, never missing"
            );
            if now != before {
                child.kill().ok();
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        child.wait().unwrap();
        let after = month_files(&read);
        let replaced = after
            .iter()
            .filter(|(p, t)| before.get(*p) != Some(t))
            .count();
        check(&format!("after {replaced} of {months} files were replaced"));
        if replaced > 0 && replaced < months {
            partial += 1;
        }
    }
    assert!(
        partial >= 1,
        "at least one kill should land after some months were rewritten and before all were"
    );
    // The next rebuild converges: every month current again, and then nothing to do.
    let first: serde_json::Value =
        serde_json::from_str(&ok(&cdlake(&store, &["rebuild", "--json"]))).unwrap();
    assert_eq!(
        first["built"].as_u64().unwrap() + first["current"].as_u64().unwrap(),
        months as u64,
        "{first}"
    );
    let second: serde_json::Value =
        serde_json::from_str(&ok(&cdlake(&store, &["rebuild", "--json"]))).unwrap();
    assert_eq!(second["built"], 0, "{second}");
    assert_eq!(answers(), reference);
}
