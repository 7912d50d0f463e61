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

use cdlake_schemas::Origin;
use serde_json::{Value, json};

use crate::backfill::{ApiClient, Delivery, Fetched, History, all_pages, path_part_ok};
pub use crate::backfill::{BackfillError, KindCounts, Options, rfc3339};
use crate::sources::webhook::{id_at, str_at, time_at};

/// The kinds of object a backfill pulls, in order.
pub const KINDS: [&str; 5] = ["pulls", "runs", "deployments", "releases", "incidents"];

/// `OWNER/NAME`, checked.
pub fn check_repo(repo: &str) -> Result<(), BackfillError> {
    match repo.split_once('/') {
        Some((owner, name)) if path_part_ok(owner) && path_part_ok(name) => Ok(()),
        _ => Err(BackfillError::Invalid(format!(
            "--repo {repo:?} is not OWNER/NAME (e.g. --repo cdevents/spec)"
        ))),
    }
}

/// Where the cursor of `repo` lives in the store: `_cdlake/<whose>/github/<repo>.json`.
pub fn cursor_path(whose: &str, repo: &str) -> String {
    format!("_cdlake/{whose}/github/{repo}.json")
}

/// One repository's history in GitHub's REST API.
pub struct Repository {
    api_url: String,
    repo: String,
    /// The repository object every delivery carries (fetched by `prepare`).
    repository: Value,
}

impl Repository {
    /// The repository `OWNER/NAME` under the REST root `api_url`.
    pub fn new(api_url: &str, repo: &str) -> Result<Self, BackfillError> {
        check_repo(repo)?;
        Ok(Repository {
            api_url: api_url.trim_end_matches('/').to_string(),
            repo: repo.to_string(),
            repository: Value::Null,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/repos/{}{path}", self.api_url, self.repo)
    }
}

impl History for Repository {
    const ORIGIN: Origin = Origin::Github;
    const KINDS: &'static [&'static str] = &KINDS;

    async fn prepare(&mut self, client: &ApiClient) -> Result<(), BackfillError> {
        self.repository = match client.get(&self.url(""), None).await? {
            Fetched::Page { body, .. } if body.is_object() => body,
            _ => {
                return Err(BackfillError::Invalid(format!(
                    "{} did not answer with a repository",
                    self.url("")
                )));
            }
        };
        Ok(())
    }

    fn first_page(&self, kind: &str, since: i64) -> String {
        let since = rfc3339(since);
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

    /// An array, or the runs' `{"workflow_runs": […]}`.
    fn page_items<'v>(&self, kind: &str, body: &'v Value) -> Option<&'v Vec<Value>> {
        match kind {
            "runs" => body.get("workflow_runs")?.as_array(),
            _ => body.as_array(),
        }
    }

    fn older_than_since(&self, kind: &str, item: &Value, since: i64) -> bool {
        let field = match kind {
            "pulls" => "updated_at",
            "deployments" | "releases" => "created_at",
            _ => return false,
        };
        time_at(item, &[field]).is_some_and(|t| t < since)
    }

    async fn deliveries(
        &self,
        client: &ApiClient,
        kind: &str,
        item: &Value,
        out: &mut Vec<Delivery>,
    ) -> Result<(), BackfillError> {
        let repository = &self.repository;
        match kind {
            "pulls" => self.pull_request(client, item, out).await,
            "runs" => self.workflow_run(client, item, out).await,
            "deployments" => self.deployment(client, item, out).await,
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
}

impl Repository {
    async fn pull_request(
        &self,
        client: &ApiClient,
        pr: &Value,
        out: &mut Vec<Delivery>,
    ) -> Result<(), BackfillError> {
        let repository = &self.repository;
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
        let commits: Vec<Value> = all_pages(client, url, Value::as_array)
            .await?
            .iter()
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
        client: &ApiClient,
        run: &Value,
        out: &mut Vec<Delivery>,
    ) -> Result<(), BackfillError> {
        let repository = &self.repository;
        let Some(id) = id_at(run, &["id"]) else {
            return Ok(());
        };
        let latest = run.get("run_attempt").and_then(Value::as_i64).unwrap_or(1);
        for attempt in 1..=latest.max(1) {
            let this = if attempt == latest {
                run.clone()
            } else {
                let url = self.url(&format!("/actions/runs/{id}/attempts/{attempt}"));
                match client.get(&url, None).await? {
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
            let jobs = all_pages(
                client,
                self.url(&format!(
                    "/actions/runs/{id}/attempts/{attempt}/jobs?per_page=100"
                )),
                |page| page["jobs"].as_array(),
            )
            .await?;
            for job in &jobs {
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
        Ok(())
    }

    async fn deployment(
        &self,
        client: &ApiClient,
        deployment: &Value,
        out: &mut Vec<Delivery>,
    ) -> Result<(), BackfillError> {
        let repository = &self.repository;
        out.push((
            "deployment",
            json!({"action": "created", "deployment": deployment, "repository": repository}),
        ));
        let Some(id) = id_at(deployment, &["id"]) else {
            return Ok(());
        };
        let statuses = all_pages(
            client,
            self.url(&format!("/deployments/{id}/statuses?per_page=100")),
            Value::as_array,
        )
        .await?;
        for status in statuses {
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
        Ok(())
    }
}
