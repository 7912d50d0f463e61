//! `cdlake backfill gitlab`: the history the webhooks did not bring, pulled through GitLab's REST
//! API (v4) and written as the rows the webhooks would have written.
//!
//! As for GitHub (`sources::github::backfill`), each fact the API shows becomes the hook GitLab
//! would have sent when it happened, in the hook's shape, and goes through the webhook
//! normaliser ([`super::normalise`]); its identity is the fact ([`super::fact`]), so a fact
//! that came by webhook, or by an earlier backfill, is a duplicate.
//!
//! | kind              | API (`/projects/{id}/…`)                                          | hooks |
//! |-------------------|-------------------------------------------------------------------|-------|
//! | `merge_requests`  | `merge_requests?state=all&order_by=updated_at&sort=asc&updated_after=…`, each one's `/commits` | `merge_request` open, merge or close; a `push` of the source branch with its commits' times (the change's first commit) |
//! | `pipelines`       | `pipelines?updated_after=…`, each one's detail and `/jobs?include_retried=true` | `pipeline` pending, running, and its final status; `build` (job) running and its final status |
//! | `deployments`     | `deployments?order_by=updated_at&updated_after=…`                  | `deployment` running and its final status |
//! | `releases`        | `releases?order_by=released_at`                                    | `release` create |
//! | `incidents`       | `issues?issue_type=incident&state=all&updated_after=…`, and `issues?labels=incident…` (`incident_labels`) | `issue` open, close |
//!
//! What the API does not keep is not backfilled: the earlier runs of a retried pipeline (the
//! API shows its last one; retried jobs are listed), a merge request's reopenings, and labels as
//! they were at the time. A running hook has the time GitLab's hook has (the pipeline's
//! `created_at`: pipeline hooks carry no start time).

use cdlake_schemas::Origin;
use serde_json::{Value, json};

use crate::backfill::{ApiClient, Delivery, Fetched, History, all_pages, path_part_ok, rfc3339};
pub use crate::backfill::{BackfillError, KindCounts, Options};
use crate::sources::webhook::{id_at, str_at, time_at};

/// The kinds of object a backfill pulls, in order.
pub const KINDS: [&str; 6] = [
    "merge_requests",
    "pipelines",
    "deployments",
    "releases",
    "incidents",
    "incident_labels",
];

/// `GROUP[/SUBGROUP…]/NAME`, checked.
pub fn check_project(project: &str) -> Result<(), BackfillError> {
    let parts: Vec<&str> = project.split('/').collect();
    if parts.len() >= 2 && parts.iter().all(|p| path_part_ok(p)) {
        Ok(())
    } else {
        Err(BackfillError::Invalid(format!(
            "--project {project:?} is not GROUP/NAME (e.g. --project gitlab-org/gitlab-runner)"
        )))
    }
}

/// Where the cursor of `project` lives in the store: `_cdlake/<whose>/gitlab/<project>.json`.
pub fn cursor_path(whose: &str, project: &str) -> String {
    format!("_cdlake/{whose}/gitlab/{project}.json")
}

/// The REST root of the GitLab at `url` (`https://gitlab.example.com` →
/// `https://gitlab.example.com/api/v4`; a URL that names the root already is kept).
pub fn api_root(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.ends_with("/api/v4") {
        url.to_string()
    } else {
        format!("{url}/api/v4")
    }
}

/// One project's history in GitLab's REST API.
pub struct Project {
    api_url: String,
    path: String,
    /// The project as hooks carry it (built from the API's project by `prepare`).
    project: Value,
    /// The project's web URL.
    web_url: String,
}

impl Project {
    /// The project `GROUP/NAME` under the REST root `api_url` (see [`api_root`]).
    pub fn new(api_url: &str, path: &str) -> Result<Self, BackfillError> {
        check_project(path)?;
        Ok(Project {
            api_url: api_url.trim_end_matches('/').to_string(),
            path: path.to_string(),
            project: Value::Null,
            web_url: String::new(),
        })
    }

    /// `/projects/<path, URL-encoded><rest>`.
    fn url(&self, rest: &str) -> String {
        format!(
            "{}/projects/{}{rest}",
            self.api_url,
            self.path.replace('/', "%2F")
        )
    }

    fn merge_request(&self, mr: &Value, action: &str, out: &mut Vec<Delivery>) {
        let mut attributes = json!({
            "id": mr.get("id"),
            "iid": mr.get("iid"),
            "title": mr.get("title"),
            "description": mr.get("description"),
            "created_at": mr.get("created_at"),
            "updated_at": mr.get("created_at"),
            "source_branch": mr.get("source_branch"),
            "target_branch": mr.get("target_branch"),
            "source_project_id": mr.get("source_project_id"),
            "target_project_id": mr.get("target_project_id"),
            "url": mr.get("web_url"),
            "state": "opened",
            "action": action,
        });
        match action {
            "merge" => {
                attributes["state"] = "merged".into();
                attributes["updated_at"] = mr["merged_at"].clone();
                attributes["merged_at"] = mr["merged_at"].clone();
                // The commit that landed: a merge commit, else the squashed one, else (a
                // fast-forward) the request's head.
                attributes["merge_commit_sha"] = ["merge_commit_sha", "squash_commit_sha", "sha"]
                    .iter()
                    .find_map(|f| mr.get(*f).filter(|v| v.is_string()))
                    .cloned()
                    .unwrap_or(Value::Null);
            }
            "close" => {
                attributes["state"] = "closed".into();
                attributes["updated_at"] = mr["closed_at"].clone();
                attributes["closed_at"] = mr["closed_at"].clone();
            }
            _ => {}
        }
        out.push((
            "merge_request",
            json!({
                "object_kind": "merge_request",
                "event_type": "merge_request",
                "project": self.project,
                "object_attributes": attributes,
                "labels": hook_labels(mr),
            }),
        ));
    }

    async fn merge_request_deliveries(
        &self,
        client: &ApiClient,
        mr: &Value,
        out: &mut Vec<Delivery>,
    ) -> Result<(), BackfillError> {
        self.merge_request(mr, "open", out);
        if str_at(mr, &["merged_at"]).is_some() {
            self.merge_request(mr, "merge", out);
        } else if str_at(mr, &["closed_at"]).is_some() {
            self.merge_request(mr, "close", out);
        }
        // The source branch's commits, as the push of its head would carry them: the change's
        // first commit time. Only for a branch of this project (a fork's pushes never come here).
        let same_project = mr.get("source_project_id") == mr.get("target_project_id");
        let (Some(branch), Some(head), Some(iid)) = (
            str_at(mr, &["source_branch"]),
            str_at(mr, &["sha"]),
            id_at(mr, &["iid"]),
        ) else {
            return Ok(());
        };
        if !same_project {
            return Ok(());
        }
        let commits = all_pages(
            client,
            self.url(&format!("/merge_requests/{iid}/commits?per_page=100")),
            Value::as_array,
        )
        .await?;
        let oldest = commits
            .iter()
            .min_by_key(|c| time_at(c, &["committed_date"]).unwrap_or(i64::MAX));
        let Some(oldest) = oldest else {
            return Ok(());
        };
        let before = oldest
            .pointer("/parent_ids/0")
            .and_then(Value::as_str)
            .unwrap_or_else(|| str_at(oldest, &["id"]).unwrap_or_default());
        let hook_commits: Vec<Value> = commits
            .iter()
            .map(|c| {
                json!({
                    "id": c.get("id"),
                    "message": c.get("message"),
                    "title": c.get("title"),
                    "timestamp": c.get("committed_date").or(c.get("authored_date")),
                    "url": c.get("web_url"),
                    "author": {"name": c.get("author_name"), "email": c.get("author_email")},
                })
            })
            .collect();
        out.push((
            "push",
            json!({
                "object_kind": "push",
                "event_name": "push",
                "before": before,
                "after": head,
                "ref": format!("refs/heads/{branch}"),
                "checkout_sha": head,
                "project": self.project,
                "commits": hook_commits,
                "total_commits_count": commits.len(),
            }),
        ));
        Ok(())
    }

    async fn pipeline_deliveries(
        &self,
        client: &ApiClient,
        listed: &Value,
        out: &mut Vec<Delivery>,
    ) -> Result<(), BackfillError> {
        let Some(id) = id_at(listed, &["id"]) else {
            return Ok(());
        };
        // The list has no start and finish times: the pipeline's own page has.
        let pipeline = match client
            .get(&self.url(&format!("/pipelines/{id}")), None)
            .await?
        {
            Fetched::Page { body, .. } if body.is_object() => body,
            _ => listed.clone(),
        };
        let hook = |status: &str, finished: bool| {
            json!({
                "object_kind": "pipeline",
                "object_attributes": {
                    "id": pipeline.get("id"),
                    "iid": pipeline.get("iid"),
                    "name": pipeline.get("name"),
                    "ref": pipeline.get("ref"),
                    "tag": pipeline.get("tag"),
                    "sha": pipeline.get("sha"),
                    "before_sha": pipeline.get("before_sha"),
                    "source": pipeline.get("source"),
                    "status": status,
                    "created_at": pipeline.get("created_at"),
                    "finished_at": if finished { pipeline["finished_at"].clone() } else { Value::Null },
                    "duration": if finished { pipeline["duration"].clone() } else { Value::Null },
                    "url": pipeline.get("web_url"),
                },
                "project": self.project,
            })
        };
        out.push(("pipeline", hook("pending", false)));
        if str_at(&pipeline, &["started_at"]).is_some() {
            out.push(("pipeline", hook("running", false)));
        }
        let status = str_at(&pipeline, &["status"]).unwrap_or_default();
        if str_at(&pipeline, &["finished_at"]).is_some()
            && matches!(status, "success" | "failed" | "canceled" | "skipped")
        {
            out.push(("pipeline", hook(status, true)));
        }
        let jobs = all_pages(
            client,
            self.url(&format!(
                "/pipelines/{id}/jobs?include_retried=true&per_page=100"
            )),
            Value::as_array,
        )
        .await?;
        for job in &jobs {
            self.job(job, &pipeline, out);
        }
        Ok(())
    }

    /// A job's hooks: running, and its final status.
    fn job(&self, job: &Value, pipeline: &Value, out: &mut Vec<Delivery>) {
        let hook = |status: &str, finished: bool| {
            json!({
                "object_kind": "build",
                "ref": job.get("ref"),
                "tag": job.get("tag"),
                "sha": job.pointer("/commit/id").or(pipeline.get("sha")),
                "build_id": job.get("id"),
                "build_name": job.get("name"),
                "build_stage": job.get("stage"),
                "build_status": status,
                "build_created_at": job.get("created_at"),
                "build_started_at": job.get("started_at"),
                "build_finished_at": if finished { job["finished_at"].clone() } else { Value::Null },
                "build_duration": if finished { job["duration"].clone() } else { Value::Null },
                "build_allow_failure": job.get("allow_failure"),
                "build_failure_reason": job.get("failure_reason"),
                "pipeline_id": pipeline.get("id"),
                "project_id": self.project.get("id"),
                "project_name": self.project.get("name"),
                "commit": job.get("commit"),
                "repository": {
                    "name": self.project.get("name"),
                    "homepage": self.web_url,
                    "url": self.project.get("url"),
                    "git_http_url": self.project.get("git_http_url"),
                    "git_ssh_url": self.project.get("git_ssh_url"),
                },
            })
        };
        if str_at(job, &["started_at"]).is_some() {
            out.push(("build", hook("running", false)));
        }
        let status = str_at(job, &["status"]).unwrap_or_default();
        if str_at(job, &["finished_at"]).is_some()
            && matches!(status, "success" | "failed" | "canceled" | "skipped")
        {
            out.push(("build", hook(status, true)));
        }
    }

    /// A deployment's hooks: running (when its job started), and its final status.
    fn deployment(&self, d: &Value, out: &mut Vec<Delivery>) {
        let sha = str_at(d, &["sha"]).unwrap_or_default();
        let hook = |status: &str, at: Option<&Value>| {
            json!({
                "object_kind": "deployment",
                "status": status,
                "status_changed_at": at,
                "deployment_id": d.get("id"),
                "deployable_id": d.pointer("/deployable/id"),
                "deployable_url": d.pointer("/deployable/web_url"),
                "environment": d.pointer("/environment/name"),
                "environment_slug": d.pointer("/environment/slug"),
                "environment_external_url": d.pointer("/environment/external_url"),
                "project": self.project,
                "short_sha": sha.get(..8).unwrap_or(sha),
                "commit_url": format!("{}/-/commit/{sha}", self.web_url),
                "commit_title": d.pointer("/deployable/commit/title"),
                "ref": d.get("ref"),
            })
        };
        if let Some(started) = d
            .pointer("/deployable/started_at")
            .filter(|v| v.is_string())
        {
            out.push(("deployment", hook("running", Some(started))));
        }
        let status = str_at(d, &["status"]).unwrap_or_default();
        if matches!(status, "success" | "failed" | "canceled") {
            let at = d
                .get("finished_at")
                .filter(|v| v.is_string())
                .or(d.get("updated_at"));
            out.push(("deployment", hook(status, at)));
        }
    }

    fn release(&self, r: &Value, out: &mut Vec<Delivery>) {
        out.push((
            "release",
            json!({
                "object_kind": "release",
                "action": "create",
                "tag": r.get("tag_name"),
                "name": r.get("name"),
                "description": r.get("description"),
                "created_at": r.get("created_at"),
                "released_at": r.get("released_at"),
                "url": r.pointer("/_links/self"),
                "commit": r.get("commit"),
                "project": self.project,
            }),
        ));
    }

    fn issue(&self, issue: &Value, out: &mut Vec<Delivery>) {
        let hook = |action: &str, state: &str, updated: Option<&Value>| {
            json!({
                "object_kind": "issue",
                "event_type": if issue["issue_type"] == "incident" { "incident" } else { "issue" },
                "project": self.project,
                "object_attributes": {
                    "id": issue.get("id"),
                    "iid": issue.get("iid"),
                    "title": issue.get("title"),
                    "description": issue.get("description"),
                    "issue_type": issue.get("issue_type"),
                    "type": issue.get("type"),
                    "state": state,
                    "created_at": issue.get("created_at"),
                    "updated_at": updated,
                    "closed_at": if action == "close" { issue.get("closed_at") } else { None },
                    "url": issue.get("web_url"),
                    "action": action,
                },
                "labels": hook_labels(issue),
            })
        };
        out.push(("issue", hook("open", "opened", issue.get("created_at"))));
        if let Some(closed) = issue.get("closed_at").filter(|v| v.is_string()) {
            out.push(("issue", hook("close", "closed", Some(closed))));
        }
    }
}

/// The API's labels (strings) as hooks carry them (objects with a title).
fn hook_labels(object: &Value) -> Value {
    object
        .get("labels")
        .and_then(Value::as_array)
        .map(|labels| {
            labels
                .iter()
                .map(|l| match l {
                    Value::String(title) => json!({"title": title}),
                    other => other.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
}

impl History for Project {
    const ORIGIN: Origin = Origin::Gitlab;
    const KINDS: &'static [&'static str] = &KINDS;

    async fn prepare(&mut self, client: &ApiClient) -> Result<(), BackfillError> {
        let p = match client.get(&self.url(""), None).await? {
            Fetched::Page { body, .. } if body.is_object() => body,
            _ => {
                return Err(BackfillError::Invalid(format!(
                    "{} did not answer with a project",
                    self.url("")
                )));
            }
        };
        self.web_url = str_at(&p, &["web_url"]).unwrap_or_default().to_string();
        self.project = json!({
            "id": p.get("id"),
            "name": p.get("name"),
            "description": p.get("description"),
            "web_url": p.get("web_url"),
            "avatar_url": p.get("avatar_url"),
            "git_ssh_url": p.get("ssh_url_to_repo"),
            "git_http_url": p.get("http_url_to_repo"),
            "namespace": p.pointer("/namespace/name"),
            "path_with_namespace": p.get("path_with_namespace"),
            "default_branch": p.get("default_branch"),
            "homepage": p.get("web_url"),
            "url": p.get("http_url_to_repo"),
            "ssh_url": p.get("ssh_url_to_repo"),
            "http_url": p.get("http_url_to_repo"),
        });
        Ok(())
    }

    fn first_page(&self, kind: &str, since: i64) -> String {
        let since = rfc3339(since);
        match kind {
            "merge_requests" => self.url(&format!(
                "/merge_requests?state=all&order_by=updated_at&sort=asc&updated_after={since}&per_page=100"
            )),
            "pipelines" => self.url(&format!(
                "/pipelines?order_by=updated_at&sort=asc&updated_after={since}&per_page=100"
            )),
            "deployments" => self.url(&format!(
                "/deployments?order_by=updated_at&sort=asc&updated_after={since}&per_page=100"
            )),
            "releases" => self.url("/releases?order_by=released_at&sort=desc&per_page=100"),
            "incidents" => self.url(&format!(
                "/issues?issue_type=incident&state=all&order_by=updated_at&sort=asc&updated_after={since}&per_page=100"
            )),
            _ => self.url(&format!(
                "/issues?labels=incident&state=all&order_by=updated_at&sort=asc&updated_after={since}&per_page=100"
            )),
        }
    }

    fn page_items<'v>(&self, _kind: &str, body: &'v Value) -> Option<&'v Vec<Value>> {
        body.as_array()
    }

    /// Releases are listed newest first with no time filter; the other lists are filtered by
    /// `updated_after` and sorted oldest update first, so an object updated while the list is
    /// paged through (or before an interrupted backfill resumes) moves to a page still to come
    /// rather than onto one read already.
    fn older_than_since(&self, kind: &str, item: &Value, since: i64) -> bool {
        kind == "releases"
            && time_at(item, &["released_at"])
                .or_else(|| time_at(item, &["created_at"]))
                .is_some_and(|t| t < since)
    }

    async fn deliveries(
        &self,
        client: &ApiClient,
        kind: &str,
        item: &Value,
        out: &mut Vec<Delivery>,
    ) -> Result<(), BackfillError> {
        match kind {
            "merge_requests" => self.merge_request_deliveries(client, item, out).await?,
            "pipelines" => self.pipeline_deliveries(client, item, out).await?,
            "deployments" => self.deployment(item, out),
            "releases" => self.release(item, out),
            _ => self.issue(item, out),
        }
        Ok(())
    }
}
