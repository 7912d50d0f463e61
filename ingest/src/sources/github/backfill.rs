//! `cdlake backfill github`: the history the webhooks did not bring, pulled through GitHub's REST
//! API and written as the rows the webhooks would have written.
//!
//! Each fact the API shows is turned into the delivery GitHub would have sent when it happened
//! (the object as the API returns it, with the status and times it had then), and that delivery
//! goes through the webhook normaliser ([`super::normalise`]). The row's identity is the fact
//! ([`super::fact`]), so a fact that came by webhook, or by an earlier backfill, is a duplicate.
//!
//! | kind          | API                                                       | deliveries |
//! |---------------|-----------------------------------------------------------|------------|
//! | `pulls`       | `GET /repos/{r}/pulls?state=all&sort=updated&direction=desc`, and each pull request's `/commits` | `pull_request` opened, closed (merged or not); a `push` of the branch with its commits' times (the change's first commit) |
//! | `runs`        | `GET /repos/{r}/actions/runs?created=>=DATE`, each earlier attempt's `/attempts/{n}`, each attempt's `/jobs` | `workflow_run` requested, in_progress, completed per attempt; `workflow_job` in_progress, completed |
//! | `deployments` | `GET /repos/{r}/deployments`, each one's `/statuses`       | `deployment` created; `deployment_status` created |
//! | `releases`    | `GET /repos/{r}/releases`                                 | `release` published |
//! | `incidents`   | `GET /repos/{r}/issues?labels=incident&state=all&since=…`  | `issues` opened, closed |
//!
//! Facts before `--since` are not written, except the push that carries the commits of a pull
//! request written (its first commit may be older). What the API does not keep is not backfilled: a
//! pull request's reopenings and pushes other than its head, labels as they were at the time
//! (a backfilled row has the labels the object has now), the time an issue was labelled
//! `incident` (a backfilled incident is detected when the issue was opened).

use std::collections::BTreeMap;

use cdlake_schemas::event::check_time;
use cdlake_schemas::store::Store;
use cdlake_schemas::{DeadLetter, Origin};
use serde::Serialize;
use serde_json::{Value, json};

use crate::backfill::{ApiClient, ApiError, Cursor, Fetched, KindCursor, PageMemo};
use crate::ingester::{Ingester, Pushed, now_micros};
use crate::sources::Normalised;
use crate::sources::webhook::{id_at, str_at, time_at};

/// The kinds of object a backfill pulls, in order.
pub const KINDS: [&str; 5] = ["pulls", "runs", "deployments", "releases", "incidents"];

/// What to pull.
#[derive(Debug, Clone)]
pub struct Options {
    /// The REST root, e.g. `https://api.github.com` or `https://ghe.example.com/api/v3`.
    pub api_url: String,
    /// Facts at or after this time (µs since the epoch, UTC).
    pub since: i64,
    /// Whose cursor: `backfill` (the command) or `reconcile` (the services' periodic re-pull),
    /// so one does not reset the other's position.
    pub cursor: &'static str,
}

/// What a backfill of one kind found.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct KindCounts {
    /// Rows written: facts no webhook or earlier backfill had brought.
    pub new: u64,
    /// Facts already stored.
    pub stored: u64,
    /// Facts before `--since`, not written.
    pub before_since: u64,
    /// Deliveries the normaliser refused: dead-lettered with the reason.
    pub rejected: u64,
    pub pages: u64,
    /// Pages unchanged since the last backfill (ETag), skipped.
    pub unchanged_pages: u64,
}

/// Why a backfill stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{0}")]
    Invalid(String),
    #[error("committing to the store: {0}")]
    Store(String),
}

/// `OWNER/NAME`, checked.
pub fn check_repo(repo: &str) -> Result<(), BackfillError> {
    let ok_part = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    match repo.split_once('/') {
        Some((owner, name)) if ok_part(owner) && ok_part(name) => Ok(()),
        _ => Err(BackfillError::Invalid(format!(
            "--repo {repo:?} is not OWNER/NAME (e.g. --repo cdevents/spec)"
        ))),
    }
}

/// Where the cursor of `repo` lives in the store: `_cdlake/<whose>/github/<repo>.json`.
pub fn cursor_path(whose: &str, repo: &str) -> String {
    format!("_cdlake/{whose}/github/{repo}.json")
}

/// One repository's backfill.
pub struct Backfill<'a> {
    pub client: &'a ApiClient,
    pub ingester: &'a mut Ingester,
    pub store: &'a Store,
    pub options: &'a Options,
    pub repo: &'a str,
    /// Per kind, shared for progress.
    pub counts: std::sync::Arc<std::sync::Mutex<BTreeMap<String, KindCounts>>>,
}

impl Backfill<'_> {
    fn url(&self, path: &str) -> String {
        format!(
            "{}/repos/{}{path}",
            self.options.api_url.trim_end_matches('/'),
            self.repo
        )
    }

    fn count(&self, kind: &str, f: impl FnOnce(&mut KindCounts)) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        f(counts.entry(kind.to_string()).or_default());
    }

    /// Pull every kind, continuing from the cursor in the store.
    pub async fn run(&mut self) -> Result<(), BackfillError> {
        check_repo(self.repo)?;
        let path = cursor_path(self.options.cursor, self.repo);
        let since = rfc3339(self.options.since);
        let mut cursor = Cursor::load(self.store, &path, &since)
            .await
            .map_err(|e| BackfillError::Store(e.to_string()))?;
        let repository = match self.client.get(&self.url(""), None).await? {
            Fetched::Page { body, .. } if body.is_object() => body,
            _ => {
                return Err(BackfillError::Invalid(format!(
                    "{} did not answer with a repository",
                    self.url("")
                )));
            }
        };
        for kind in KINDS {
            let state = cursor.kinds.entry(kind.to_string()).or_default().clone();
            if state.done {
                continue;
            }
            let mut next = Some(state.next.unwrap_or_else(|| self.first_page(kind)));
            while let Some(url) = next.take() {
                let memo = cursor.pages.get(&url).cloned();
                let fetched = self
                    .client
                    .get(&url, memo.as_ref().map(|m| m.etag.as_str()))
                    .await?;
                let (following, last) = match (fetched, memo) {
                    (Fetched::NotModified, Some(memo)) => {
                        self.count(kind, |c| c.unchanged_pages += 1);
                        (memo.next, memo.last)
                    }
                    (Fetched::NotModified, None) => {
                        return Err(BackfillError::Invalid(format!(
                            "{url} answered 304 Not Modified to a request without an ETag"
                        )));
                    }
                    (Fetched::Page { body, next, etag }, _) => {
                        let items = page_items(kind, &body).ok_or_else(|| {
                            BackfillError::Invalid(format!(
                                "{url} did not answer with a list of {kind}"
                            ))
                        })?;
                        let mut deliveries = Vec::new();
                        let mut last = false;
                        for item in items {
                            if self.older_than_since(kind, item) {
                                last = true;
                                continue;
                            }
                            self.deliveries(kind, item, &repository, &mut deliveries)
                                .await?;
                        }
                        self.write(kind, &url, deliveries).await?;
                        self.count(kind, |c| c.pages += 1);
                        if let Some(etag) = etag {
                            cursor.pages.insert(
                                url.clone(),
                                PageMemo {
                                    etag,
                                    next: next.clone(),
                                    last,
                                },
                            );
                        }
                        (next, last)
                    }
                };
                next = following.filter(|_| !last);
                cursor.kinds.insert(
                    kind.to_string(),
                    KindCursor {
                        next: next.clone(),
                        done: next.is_none(),
                    },
                );
                cursor
                    .save(self.store, &path)
                    .await
                    .map_err(|e| BackfillError::Store(e.to_string()))?;
            }
        }
        Ok(())
    }

    fn first_page(&self, kind: &str) -> String {
        let since = rfc3339(self.options.since);
        match kind {
            "pulls" => self.url("/pulls?state=all&sort=updated&direction=desc&per_page=100"),
            "runs" => self.url(&format!(
                "/actions/runs?per_page=100&created=%3E%3D{}",
                &since[..10]
            )),
            "deployments" => self.url("/deployments?per_page=100"),
            "releases" => self.url("/releases?per_page=100"),
            _ => self.url(&format!(
                "/issues?labels=incident&state=all&per_page=100&since={since}"
            )),
        }
    }

    /// Whether a list sorted newest first has reached objects older than `--since`.
    fn older_than_since(&self, kind: &str, item: &Value) -> bool {
        let field = match kind {
            "pulls" => "updated_at",
            "deployments" | "releases" => "created_at",
            _ => return false,
        };
        time_at(item, &[field]).is_some_and(|t| t < self.options.since)
    }

    /// The deliveries GitHub sent for `item` as it happened: (event name, body).
    async fn deliveries(
        &self,
        kind: &str,
        item: &Value,
        repository: &Value,
        out: &mut Vec<(&'static str, Value)>,
    ) -> Result<(), BackfillError> {
        match kind {
            "pulls" => self.pull_request(item, repository, out).await,
            "runs" => self.workflow_run(item, repository, out).await,
            "deployments" => self.deployment(item, repository, out).await,
            "releases" => {
                if str_at(item, &["published_at"]).is_some() && item["draft"] != true {
                    out.push((
                        "release",
                        json!({"action": "published", "release": item, "repository": repository}),
                    ));
                }
                Ok(())
            }
            _ => {
                // The issues list also holds pull requests.
                if item.get("pull_request").is_none() {
                    out.push((
                        "issues",
                        json!({"action": "opened", "issue": item, "repository": repository}),
                    ));
                    if str_at(item, &["closed_at"]).is_some() {
                        out.push((
                            "issues",
                            json!({"action": "closed", "issue": item, "repository": repository}),
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    async fn pull_request(
        &self,
        pr: &Value,
        repository: &Value,
        out: &mut Vec<(&'static str, Value)>,
    ) -> Result<(), BackfillError> {
        let number = pr.get("number").cloned().unwrap_or(Value::Null);
        let body = |action: &str| json!({"action": action, "number": number, "pull_request": pr, "repository": repository});
        out.push(("pull_request", body("opened")));
        if str_at(pr, &["closed_at"]).is_some() {
            out.push(("pull_request", body("closed")));
        }
        // The branch's commits, as the push of its head would carry them: the change's first
        // commit time. Only for a branch of this repository (a fork's pushes never come here).
        let full_name = str_at(repository, &["full_name"]);
        let (Some(head_ref), Some(head_sha), Some(n)) = (
            str_at(pr, &["head", "ref"]),
            str_at(pr, &["head", "sha"]),
            id_at(pr, &["number"]),
        ) else {
            return Ok(());
        };
        if str_at(pr, &["head", "repo", "full_name"]) != full_name {
            return Ok(());
        }
        let url = self.url(&format!("/pulls/{n}/commits?per_page=100"));
        let Fetched::Page { body: commits, .. } = self.client.get(&url, None).await? else {
            return Ok(());
        };
        let commits: Vec<Value> = commits
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                json!({
                    "id": c.get("sha"),
                    "distinct": true,
                    "message": c.pointer("/commit/message"),
                    "timestamp": c.pointer("/commit/committer/date").or(c.pointer("/commit/author/date")),
                    "url": c.get("html_url"),
                    "author": c.pointer("/commit/author"),
                    "committer": c.pointer("/commit/committer"),
                })
            })
            .collect();
        let Some(head) = commits
            .iter()
            .find(|c| c["id"] == head_sha)
            .or(commits.last())
            .cloned()
        else {
            return Ok(());
        };
        out.push((
            "push",
            json!({
                "ref": format!("refs/heads/{head_ref}"),
                "after": head_sha,
                "created": false,
                "deleted": false,
                "forced": false,
                "commits": commits,
                "head_commit": head,
                "repository": repository,
            }),
        ));
        Ok(())
    }

    async fn workflow_run(
        &self,
        run: &Value,
        repository: &Value,
        out: &mut Vec<(&'static str, Value)>,
    ) -> Result<(), BackfillError> {
        let Some(id) = id_at(run, &["id"]) else {
            return Ok(());
        };
        let latest = run.get("run_attempt").and_then(Value::as_i64).unwrap_or(1);
        for attempt in 1..=latest.max(1) {
            let this = if attempt == latest {
                run.clone()
            } else {
                let url = self.url(&format!("/actions/runs/{id}/attempts/{attempt}"));
                match self.client.get(&url, None).await? {
                    Fetched::Page { body, .. } if body.is_object() => body,
                    _ => continue,
                }
            };
            let snapshot = |action: &str, fields: Value| {
                let mut r = this.clone();
                if let (Some(r), Some(fields)) = (r.as_object_mut(), fields.as_object()) {
                    r.extend(fields.clone());
                }
                json!({"action": action, "workflow_run": r, "repository": repository})
            };
            let requested_at = if attempt == 1 {
                this.get("created_at")
            } else {
                this.get("run_started_at")
            };
            out.push((
                "workflow_run",
                snapshot(
                    "requested",
                    json!({"status": "queued", "conclusion": null, "updated_at": requested_at}),
                ),
            ));
            if let Some(started) = this.get("run_started_at").filter(|v| v.is_string()) {
                out.push((
                    "workflow_run",
                    snapshot(
                        "in_progress",
                        json!({"status": "in_progress", "conclusion": null, "updated_at": started}),
                    ),
                ));
            }
            if str_at(&this, &["status"]) == Some("completed") {
                out.push(("workflow_run", snapshot("completed", json!({}))));
            }
            let mut next = Some(self.url(&format!(
                "/actions/runs/{id}/attempts/{attempt}/jobs?per_page=100"
            )));
            while let Some(url) = next.take() {
                let Fetched::Page { body, next: n, .. } = self.client.get(&url, None).await? else {
                    break;
                };
                next = n;
                for job in body["jobs"].as_array().into_iter().flatten() {
                    if job.get("started_at").is_some_and(Value::is_string) {
                        let mut j = job.clone();
                        j["status"] = "in_progress".into();
                        j["conclusion"] = Value::Null;
                        j["completed_at"] = Value::Null;
                        out.push((
                            "workflow_job",
                            json!({"action": "in_progress", "workflow_job": j, "repository": repository}),
                        ));
                    }
                    if str_at(job, &["status"]) == Some("completed") {
                        out.push((
                            "workflow_job",
                            json!({"action": "completed", "workflow_job": job, "repository": repository}),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    async fn deployment(
        &self,
        deployment: &Value,
        repository: &Value,
        out: &mut Vec<(&'static str, Value)>,
    ) -> Result<(), BackfillError> {
        out.push((
            "deployment",
            json!({"action": "created", "deployment": deployment, "repository": repository}),
        ));
        let Some(id) = id_at(deployment, &["id"]) else {
            return Ok(());
        };
        let mut next = Some(self.url(&format!("/deployments/{id}/statuses?per_page=100")));
        while let Some(url) = next.take() {
            let Fetched::Page { body, next: n, .. } = self.client.get(&url, None).await? else {
                break;
            };
            next = n;
            for status in body.as_array().into_iter().flatten() {
                out.push((
                    "deployment_status",
                    json!({
                        "action": "created",
                        "deployment_status": status,
                        "deployment": deployment,
                        "repository": repository,
                    }),
                ));
            }
        }
        Ok(())
    }

    /// Normalise and buffer the deliveries of one page, then commit them: the cursor moves only
    /// past committed pages.
    async fn write(
        &mut self,
        kind: &str,
        url: &str,
        deliveries: Vec<(&'static str, Value)>,
    ) -> Result<(), BackfillError> {
        let store_err = |e: crate::Error| BackfillError::Store(e.to_string());
        for (event, body) in deliveries {
            let now = now_micros();
            let raw = body.to_string();
            let delivery = format!("backfill:{url}");
            let normalised =
                super::normalise(event, &delivery, raw.as_bytes(), now).and_then(|n| {
                    if let Normalised::Event(e) = &n {
                        check_time(e.time, now)
                            .map_err(cdlake_schemas::cdevents::Rejection::invalid)?;
                    }
                    Ok(n)
                });
            match normalised {
                // A branch's push carries the first commit of a change written here, even when
                // that commit is older than `--since`.
                Ok(Normalised::Event(e)) if e.time < self.options.since && event != "push" => {
                    self.count(kind, |c| c.before_since += 1);
                }
                Ok(Normalised::Event(e)) => {
                    match self.ingester.push(*e).await.map_err(store_err)? {
                        Pushed::Accepted => self.count(kind, |c| c.new += 1),
                        Pushed::Duplicate => self.count(kind, |c| c.stored += 1),
                    }
                }
                Ok(_) => {}
                Err(rejection) => {
                    self.count(kind, |c| c.rejected += 1);
                    self.ingester.push_dead_letter(DeadLetter {
                        received_at: now,
                        origin: Origin::Github.as_str().to_string(),
                        source: format!("backfill {event} {url}"),
                        reason: rejection.message,
                        payload: raw.into_bytes(),
                    });
                }
            }
        }
        self.ingester.flush().await.map_err(store_err)?;
        Ok(())
    }
}

/// The list in a page of `kind`: an array, or the runs' `{"workflow_runs": […]}`.
fn page_items<'v>(kind: &str, body: &'v Value) -> Option<&'v Vec<Value>> {
    match kind {
        "runs" => body.get("workflow_runs")?.as_array(),
        _ => body.as_array(),
    }
}

/// µs since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
