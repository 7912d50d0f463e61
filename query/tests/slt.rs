//! Runs `tests/slt/*.slt`: the views and the DORA report against hand-computed answers.
//!
//! Each file starts from an empty store. Besides SQL, the harness understands two
//! pseudo-statements, so a case's input and its expected answer sit side by side:
//!
//! ```text
//! statement ok
//! EVENTS
//! <subject>.<predicate> <subject id> <RFC 3339 time> [key=value …]
//! ```
//! builds each line into a real CDEvent (spec 0.5.1 by default; keys: id, source, spec, env,
//! artifact, service, repo, change, team, pipeline, run, task, outcome; `origin` sets the
//! row's origin, as if that tool had sent it) and ingests it through the real ingest path. `EVENTS unchecked` writes the lines as a Parquet file and commits it
//! directly, past cdlake's de-duplication (as a writer that checks no identities could), and
//! `COMPACT` compacts `events` as `cdlake compact` does: together they show what such a writer
//! does to the answers, and that compaction restores the identity invariant.
//!
//! ```text
//! statement ok
//! WEBHOOK github|gitlab
//! <event name> <JSON body on one line>
//! ```
//! normalises each line as a delivery of that provider (the event name is its `X-GitHub-Event`
//! or `X-Gitlab-Event` header) and ingests its row, as the receivers do.
//!
//! `TEAMS key=team …` adds to the `[teams]` table of the configuration; `CONFIG` followed by
//! lines of `cdlake.toml` sets its `[dora]` table and its `[[services]]` rules (which the
//! writes after it apply, as the writers do).
//!
//! ```text
//! query TT
//! DORA <from> <to> [by=service|team|week|repository|environment[,<second key>]] [only=<path prefix>[,<path prefix>…]]
//! ```
//! answers the report's JSON flattened into `(path, value)` rows.

use std::path::{Path, PathBuf};

use cdlake_ingest::compact::{CompactOptions, compact_table};
use cdlake_ingest::envelope::Envelope;
use cdlake_ingest::parquet::{EncodeOptions, encode, writer_properties};
use cdlake_ingest::sources;
use cdlake_ingest::{Ingester, IngesterConfig};
use cdlake_query::{Config, DoraRequest, Engine, projection, read_model};
use cdlake_schemas::event::events_to_batch;
use cdlake_schemas::lake::{Change, CommitKind, NewFile, TableLog};
use cdlake_schemas::paths::{DataFilePath, Table};
use cdlake_schemas::store::Store;
use cdlake_schemas::{Origin, cdevents, events_schema};
use serde_json::{Value, json};
use sqllogictest::{DBOutput, DefaultColumnType};

#[derive(Debug)]
struct HarnessError(String);

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

fn err(e: impl std::fmt::Display) -> HarnessError {
    HarnessError(e.to_string())
}

struct Db {
    store: Store,
    config: Config,
    engine: Option<Engine>,
    seq: usize,
    /// Bring the read models up to date after every write, so the answers come from them.
    read_model: bool,
    _dir: tempfile::TempDir,
}

/// One line of an EVENTS block to a CDEvent.
fn build_event(line: &str, seq: usize) -> Result<String, HarnessError> {
    let mut parts = line.split_whitespace();
    let (ty, subject_id, time) = match (parts.next(), parts.next(), parts.next()) {
        (Some(t), Some(s), Some(ts)) => (t, s, ts),
        _ => {
            return Err(err(format!(
                "EVENTS line needs <type> <subject id> <time>: {line:?}"
            )));
        }
    };
    let (subject, predicate) = ty
        .split_once('.')
        .ok_or_else(|| err(format!("bad type {ty}")))?;
    let mut kv = std::collections::BTreeMap::new();
    for p in parts {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| err(format!("expected key=value, got {p:?}")))?;
        kv.insert(k, v);
    }
    let spec = kv.get("spec").copied().unwrap_or("0.5.1");
    let mut content = serde_json::Map::new();
    let id_obj = |v: &str| json!({"id": v, "source": "/test"});
    for (key, field) in [
        ("env", "environment"),
        ("service", "service"),
        ("repo", "repository"),
        ("change", "change"),
        ("run", "pipelineRun"),
    ] {
        if let Some(v) = kv.get(key) {
            content.insert(field.into(), id_obj(v));
        }
    }
    for (key, field) in [
        ("artifact", "artifactId"),
        ("pipeline", "pipelineName"),
        ("task", "taskName"),
        ("outcome", "outcome"),
    ] {
        if let Some(v) = kv.get(key) {
            content.insert(field.into(), json!(v));
        }
    }
    let version_key = if spec.starts_with("0.4") {
        "version"
    } else {
        "specversion"
    };
    let mut event = json!({
        "context": {
            version_key: spec,
            "id": kv.get("id").map_or_else(|| format!("e{seq}"), |s| s.to_string()),
            "source": kv.get("source").copied().unwrap_or("/test"),
            "type": format!("dev.cdevents.{subject}.{predicate}.0.3.0"),
            "timestamp": time,
        },
        "subject": {"id": subject_id, "content": Value::Object(content)},
    });
    // customData: `team=web`, `labels=hotfix,ui`, `reverts=<change id or commit purl>`,
    // `revert=true`.
    let mut custom = serde_json::Map::new();
    if let Some(team) = kv.get("team") {
        custom.insert("team".into(), json!(team));
    }
    if let Some(labels) = kv.get("labels") {
        custom.insert(
            "labels".into(),
            json!(labels.split(',').collect::<Vec<_>>()),
        );
    }
    if let Some(reverts) = kv.get("reverts") {
        custom.insert("reverts".into(), json!(reverts));
    }
    if kv.get("revert") == Some(&"true") {
        custom.insert("revert".into(), json!(true));
    }
    if !custom.is_empty() {
        event["customData"] = Value::Object(custom);
    }
    Ok(event.to_string())
}

impl Db {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path().to_str().expect("utf-8 path")).expect("store");
        Self {
            store,
            config: Config::default(),
            engine: None,
            seq: 0,
            read_model: false,
            _dir: dir,
        }
    }

    /// After a write, when the file runs over the read models: derive them, and check that
    /// every month of `events` is now answered from them.
    async fn after_write(&mut self) -> Result<(), HarnessError> {
        if !self.read_model {
            return Ok(());
        }
        read_model::refresh_models(
            &self.store,
            &self.config,
            &read_model::Model::ALL,
            read_model::Scope::ALL,
            |_, _, _| {},
        )
        .await
        .map_err(err)?;
        projection::refresh_store(&self.store, &self.config, &read_model::Model::ALL, false)
            .await
            .map_err(err)?;
        for entity in projection::Entity::ALL {
            let dirty = projection::dirty_months_of(&self.store, entity, &self.config)
                .await
                .map_err(err)?;
            if dirty != Some(0) {
                return Err(err(format!(
                    "after a rebuild the projection {} should be current: {dirty:?} months changed",
                    entity.name()
                )));
            }
        }
        for model in read_model::Model::ALL {
            let coverage = read_model::coverage_of(&self.store, model)
                .await
                .map_err(err)?;
            if coverage.months_read > 0 || coverage.months_held == 0 {
                return Err(err(format!(
                    "after a rebuild the read model {} should hold every month: {coverage:?}",
                    model.name()
                )));
            }
        }
        Ok(())
    }

    async fn engine(&mut self) -> Result<&Engine, HarnessError> {
        if self.engine.is_none() {
            self.engine = Some(
                Engine::open(&self.store, self.config.clone())
                    .await
                    .map_err(err)?,
            );
        }
        self.engine.as_ref().ok_or_else(|| err("no engine"))
    }

    /// Compact `events` as `cdlake compact` does, merging any partition of two files or more.
    async fn compact(&mut self) -> Result<(), HarnessError> {
        let log = TableLog::open(&self.store, Table::Events)
            .await
            .map_err(err)?;
        let options = CompactOptions {
            min_files: 2,
            ..CompactOptions::default()
        };
        compact_table(&self.store, &log, &options, |_, _| {})
            .await
            .map_err(err)?;
        self.engine = None;
        Ok(())
    }

    async fn events(&mut self, header: &str, body: &str) -> Result<(), HarnessError> {
        let mut lines = Vec::new();
        // `origin=pagerduty`: the row's origin, as if that tool had reported it.
        let mut origins = Vec::new();
        for line in body
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            self.seq += 1;
            lines.push(build_event(line, self.seq)?);
            origins.push(
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix("origin="))
                    .map(str::to_string),
            );
        }
        if header.trim() == "EVENTS unchecked" {
            let events = lines
                .iter()
                .map(|l| cdevents::parse(l.as_bytes(), Origin::CdEvents, 0))
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            let date = events
                .first()
                .map(|e| e.date())
                .ok_or_else(|| err("empty EVENTS"))?;
            let schema = events_schema();
            let batch = events_to_batch(&events).map_err(err)?;
            let bytes = encode(
                &schema,
                &[batch],
                writer_properties(&schema, "time", &EncodeOptions::default()),
            )
            .map_err(err)?;
            let path = DataFilePath::new(Table::Events, date, format!("unchecked{}", self.seq));
            let size = bytes.len() as u64;
            self.store
                .put_if_absent(&path.to_string(), bytes)
                .await
                .map_err(err)?;
            // Committed as a writer that checks no identities would (Spark appending to the
            // table), past cdlake's de-duplication.
            let log = TableLog::open(&self.store, Table::Events)
                .await
                .map_err(err)?;
            let index = log.refresh().await.map_err(err)?;
            log.commit(Change {
                read_version: index.version,
                kind: CommitKind::Append,
                add: vec![NewFile {
                    path,
                    size,
                    rows: events.len() as u64,
                    time_range: None,
                }],
                remove: Vec::new(),
            })
            .await
            .map_err(err)?;
            return Ok(());
        }
        let mut ing = Ingester::new(self.store.clone(), self.writer_config());
        for (l, origin) in lines.iter().zip(origins) {
            match origin {
                None => {
                    ing.ingest(l.as_bytes(), Origin::CdEvents, "slt")
                        .await
                        .map_err(err)?;
                }
                Some(origin) => {
                    let mut event = cdevents::parse(l.as_bytes(), Origin::CdEvents, 0)
                        .map_err(|r| err(r.message))?;
                    event.origin = origin;
                    ing.push(event).await.map_err(err)?;
                }
            }
        }
        ing.flush().await.map_err(err)?;
        Ok(())
    }

    /// A writer's settings, with the `[[services]]` rules `CONFIG` set.
    fn writer_config(&self) -> IngesterConfig {
        IngesterConfig {
            services: self.config.services.clone(),
            ..IngesterConfig::default()
        }
    }

    async fn webhooks(&mut self, provider: &str, body: &str) -> Result<(), HarnessError> {
        let origin = match provider {
            "github" => Origin::Github,
            "gitlab" => Origin::Gitlab,
            other => return Err(err(format!("WEBHOOK github|gitlab, got {other:?}"))),
        };
        let mut ing = Ingester::new(self.store.clone(), self.writer_config());
        for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
            self.seq += 1;
            let (kind, json) = line
                .split_once(' ')
                .ok_or_else(|| err(format!("WEBHOOK line needs <event> <body>: {line:?}")))?;
            let envelope = Envelope::webhook(
                origin,
                kind,
                &format!("slt-{}", self.seq),
                &format!("/webhooks/{provider}"),
                bytes::Bytes::from(json.to_string()),
            );
            match sources::normalise(&envelope, envelope.received_at).map_err(|r| err(r.message))? {
                sources::Normalised::Event(event) => {
                    ing.push(*event).await.map_err(err)?;
                }
                _ => return Err(err(format!("{kind} delivery is no event: {line:?}"))),
            }
        }
        ing.flush().await.map_err(err)?;
        Ok(())
    }

    async fn dora(&mut self, args: &str) -> Result<Vec<Vec<String>>, HarnessError> {
        let mut words = args.split_whitespace();
        let time = |s: Option<&str>| -> Result<chrono::DateTime<chrono::Utc>, HarnessError> {
            let s = s.ok_or_else(|| err("DORA <from> <to>"))?;
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
                return Ok(t.with_timezone(&chrono::Utc));
            }
            let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(err)?;
            Ok(d.and_hms_opt(0, 0, 0).ok_or_else(|| err("date"))?.and_utc())
        };
        let (from, to) = (time(words.next())?, time(words.next())?);
        let ((mut by, mut then_by), mut only) = ((None, None), None);
        for w in words {
            match w.split_once('=') {
                Some(("by", v)) => (by, then_by) = cdlake_query::dora::parse_by(v).map_err(err)?,
                Some(("only", v)) => only = Some(v.to_string()),
                _ => return Err(err(format!("unknown DORA option {w}"))),
            }
        }
        let report = self
            .engine()
            .await?
            .dora(&DoraRequest {
                from,
                to,
                by,
                then_by,
            })
            .await
            .map_err(err)?;
        let json = serde_json::to_value(&report).map_err(err)?;
        let mut rows = Vec::new();
        flatten("", &json, &mut rows);
        Ok(rows
            .into_iter()
            .filter(|(p, _)| {
                only.as_ref().is_none_or(|o| {
                    o.split(',')
                        .any(|o| p.starts_with(o) || p.contains(&format!("].{o}")))
                })
            })
            .map(|(p, v)| vec![p, v])
            .collect())
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                // A group is keyed by its name (`checkout/2026-W05` with two keys); anything
                // else by its position.
                const KEYS: [&str; 5] = ["service", "team", "repository", "week", "environment"];
                let names: Vec<&str> = KEYS
                    .iter()
                    .filter_map(|k| item.get(*k).and_then(Value::as_str))
                    .collect();
                let key = if names.is_empty() {
                    i.to_string()
                } else {
                    names.join("/")
                };
                let mut item = item.clone();
                if let Value::Object(m) = &mut item {
                    for k in KEYS {
                        m.remove(k);
                    }
                }
                flatten(&format!("{prefix}[{key}]"), &item, out);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = HarnessError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, HarnessError> {
        let trimmed = sql.trim_start();
        if trimmed.starts_with("EVENTS") {
            let (header, body) = trimmed.split_once('\n').unwrap_or((trimmed, ""));
            self.events(header, body).await?;
            self.after_write().await?;
            return Ok(DBOutput::StatementComplete(0));
        }
        if let Some(rest) = trimmed.strip_prefix("WEBHOOK") {
            let (provider, body) = rest.split_once('\n').unwrap_or((rest, ""));
            self.webhooks(provider.trim(), body).await?;
            self.after_write().await?;
            return Ok(DBOutput::StatementComplete(0));
        }
        if trimmed.trim_end() == "COMPACT" {
            self.compact().await?;
            self.after_write().await?;
            return Ok(DBOutput::StatementComplete(0));
        }
        if let Some(toml) = trimmed.strip_prefix("CONFIG") {
            let parsed = Config::parse(toml).map_err(err)?;
            self.config.dora = parsed.dora;
            self.config.services = parsed.services;
            self.engine = None;
            return Ok(DBOutput::StatementComplete(0));
        }
        if let Some(pairs) = trimmed.strip_prefix("TEAMS") {
            for pair in pairs.split_whitespace() {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| err(format!("TEAMS key=team, got {pair:?}")))?;
                self.config.teams.insert(k.to_string(), v.to_string());
            }
            self.engine = None;
            return Ok(DBOutput::StatementComplete(0));
        }
        if let Some(args) = trimmed.strip_prefix("DORA") {
            let rows = self.dora(args).await?;
            return Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Text; 2],
                rows,
            });
        }
        let result = self.engine().await?.sql(sql).await.map_err(err)?;
        let options = arrow::util::display::FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in &result.batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            for i in 0..batch.num_rows() {
                rows.push(formatters.iter().map(|f| f.value(i).to_string()).collect());
            }
        }
        let types = vec![DefaultColumnType::Any; result.schema.fields().len()];
        if types.is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}
}

fn slt_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/slt")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() {
    let files = slt_files();
    assert!(
        files.len() >= 3,
        "expected the DORA .slt files, found {files:?}"
    );
    let mut failures = Vec::new();
    // Every file twice: answered from `events`, and from the read models brought up to date
    // after every write. Both must give the hand-computed answers.
    for read_model in [false, true] {
        for file in &files {
            let mut runner = sqllogictest::Runner::new(|| async move {
                let mut db = Db::new();
                db.read_model = read_model;
                Ok::<_, HarnessError>(db)
            });
            if let Err(e) = runner.run_file_async(file).await {
                let over = if read_model {
                    "the read models"
                } else {
                    "events"
                };
                failures.push(format!(
                    "{} (over {over}):\n{}",
                    file.display(),
                    e.display(true)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
