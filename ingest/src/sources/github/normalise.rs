//! GitHub deliveries (`X-GitHub-Event`) to rows; see the mapping in `sources::webhook`.

use cdlake_schemas::{Event, cdevents::Rejection, event::labels_json};
use serde_json::Value;

use crate::sources::Normalised;
use crate::sources::webhook::{
    DEFAULT_INCIDENT_ENVIRONMENT, Meaning, Provider, Row, at, earliest_commit, environment_label,
    feature_branch, first_time, id_at, is_full_sha, is_incident_label, label_names, prepare, purl,
    reverted, str_at, time_at,
};

/// Normalise one GitHub delivery: `kind` is the event name header (`X-GitHub-Event`, e.g.
/// "pull_request"), `delivery` the delivery id, `body` the raw JSON body, `ingested_at` µs since
/// the epoch, UTC. The row's `event_id` is the fact it records (`fact::fact_id`), so a
/// redelivery, or the same fact pulled by a backfill, is a duplicate; a delivery that names no
/// such fact keeps its delivery id.
pub fn normalise(
    kind: &str,
    delivery: &str,
    body: &[u8],
    ingested_at: i64,
) -> Result<Normalised, Rejection> {
    let (row, value) = prepare(Provider::Github, delivery, body, ingested_at)?;
    normalise_delivery(&row, kind.trim(), &value)
}

fn normalise_delivery(row: &Row<'_>, kind: &str, body: &Value) -> Result<Normalised, Rejection> {
    if kind.is_empty() {
        return Err(Rejection::missing(
            "GitHub delivery has no event name: send the X-GitHub-Event header",
        ));
    }
    if !kind
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Rejection::invalid(format!(
            "X-GitHub-Event {kind:?} is not a GitHub event name (e.g. pull_request)"
        )));
    }
    if kind == "ping" {
        return Ok(Normalised::Ping);
    }
    let d = Delivery {
        row,
        kind,
        body,
        action: str_at(body, &["action"]),
        repository: str_at(body, &["repository", "full_name"]),
    };
    let mut event = match kind {
        "pull_request" => d.pull_request()?,
        "push" => d.push()?,
        "workflow_run" => d.workflow_run()?,
        "workflow_job" => d.workflow_job()?,
        "check_run" => d.check_run()?,
        "deployment" => d.deployment()?,
        "deployment_status" => d.deployment_status()?,
        "release" => d.release()?,
        "package" | "registry_package" => d.package()?,
        "issues" => d.issues()?,
        _ => d.other(),
    };
    // A time that fell back to the ingestion time names no fact.
    let payload_time = event.time != row.ingested_at;
    if let Some(id) = super::fact::fact_id(kind, body, &event, payload_time) {
        event.event_id = id;
    }
    Ok(Normalised::Event(Box::new(event)))
}

struct Delivery<'a> {
    row: &'a Row<'a>,
    kind: &'a str,
    body: &'a Value,
    action: Option<&'a str>,
    repository: Option<&'a str>,
}

impl<'a> Delivery<'a> {
    /// The as-is row `github.<event>.<action>` with the repository filled.
    fn base(&self) -> Event {
        let mut e = self.row.event(
            str_at(self.body, &["repository", "html_url"]),
            self.kind,
            self.action,
        );
        e.repository = self.repository.map(str::to_string);
        if let Some(repo) = self.repository {
            e.subject_id = repo.to_string();
        }
        e
    }

    /// The object a delivery of this kind must carry.
    fn object(&self, key: &str) -> Result<&'a Value, Rejection> {
        match self.body.get(key) {
            Some(v @ Value::Object(_)) => Ok(v),
            _ => Err(Rejection::missing(format!(
                "GitHub {} delivery has no `{key}` object",
                self.kind
            ))),
        }
    }

    fn id(&self, object: &Value, key: &str, field: &str) -> Result<String, Rejection> {
        id_at(object, &[field]).ok_or_else(|| {
            Rejection::missing(format!(
                "GitHub {} delivery has no `{key}.{field}`",
                self.kind
            ))
        })
    }

    fn repo(&self) -> Result<&'a str, Rejection> {
        self.repository.ok_or_else(|| {
            Rejection::missing(format!(
                "GitHub {} delivery has no `repository.full_name`",
                self.kind
            ))
        })
    }

    /// The purl of a commit of this repository, when the sha is a full one.
    fn commit(&self, sha: Option<&str>) -> Option<String> {
        let (repo, sha) = (self.repository?, sha?);
        is_full_sha(sha).then(|| purl(Provider::Github, repo, sha))
    }

    /// The first time at the given fields of `object`, else the delivery's ingestion time.
    fn time(&self, object: &Value, fields: &[&str]) -> i64 {
        fields
            .iter()
            .find_map(|f| time_at(object, &[f]))
            .unwrap_or(self.row.ingested_at)
    }

    fn pull_request(&self) -> Result<Event, Rejection> {
        let pr = self.object("pull_request")?;
        let repo = self.repo()?;
        let number = id_at(pr, &["number"])
            .or_else(|| id_at(self.body, &["number"]))
            .ok_or_else(|| {
                Rejection::missing("GitHub pull_request delivery has no `pull_request.number`")
            })?;
        let change = format!("{repo}#{number}");
        let mut e = self.base();
        e.subject_id = change.clone();
        e.change_id = Some(change);
        e.url = str_at(pr, &["html_url"]).map(str::to_string);
        e.labels = labels_json(label_names(at(pr, &["labels"])));
        e.reverts = reverted(
            Provider::Github,
            repo,
            str_at(pr, &["title"]),
            str_at(pr, &["body"]),
        );
        // The source branch, when it is in this repository (a fork's pushes never come here).
        let head_repo = str_at(pr, &["head", "repo", "full_name"]);
        if head_repo.is_none_or(|r| r == repo) {
            e.branch = feature_branch(
                str_at(pr, &["head", "ref"]),
                str_at(pr, &["base", "repo", "default_branch"])
                    .or_else(|| str_at(self.body, &["repository", "default_branch"])),
            );
        }
        let merged = at(pr, &["merged"])
            .and_then(Value::as_bool)
            .unwrap_or_else(|| time_at(pr, &["merged_at"]).is_some());
        let (meaning, fields): (_, &[&str]) = match self.action {
            Some("opened") => (Some(Meaning::ChangeCreated), &["created_at", "updated_at"]),
            Some("reopened") => (Some(Meaning::ChangeCreated), &["updated_at", "created_at"]),
            Some("closed") if merged => (
                Some(Meaning::ChangeMerged),
                &["merged_at", "closed_at", "updated_at"],
            ),
            Some("closed") => (Some(Meaning::ChangeAbandoned), &["closed_at", "updated_at"]),
            Some("synchronize" | "edited") => (Some(Meaning::ChangeUpdated), &["updated_at"]),
            _ => (None, &["updated_at", "created_at"]),
        };
        if meaning == Some(Meaning::ChangeMerged) {
            e.artifact_id = self.commit(str_at(pr, &["merge_commit_sha"]));
        }
        e.time = self.time(pr, fields);
        if let Some(m) = meaning {
            m.set(&mut e);
        }
        Ok(e)
    }

    /// A push to a branch is `change.updated` of `<repository>@<after>`, at the head commit's
    /// time, and a push that creates one `branch.created` of `<repository>@<ref>`; both record
    /// the branch and its earliest commit (not for the default branch). A ref deletion or a
    /// tag push records no change and stays as-is.
    fn push(&self) -> Result<Event, Rejection> {
        let repo = self.repo()?;
        let after = str_at(self.body, &["after"])
            .ok_or_else(|| Rejection::missing("GitHub push delivery has no `after` commit sha"))?;
        let git_ref = str_at(self.body, &["ref"]);
        let deleted = at(self.body, &["deleted"]).and_then(Value::as_bool) == Some(true)
            || !is_full_sha(after);
        let tag = git_ref.is_some_and(|r| r.starts_with("refs/tags/"));
        let mut e = self.base();
        e.time = first_time(
            self.body,
            &[&["head_commit", "timestamp"], &["repository", "pushed_at"]],
        )
        .unwrap_or(self.row.ingested_at);
        e.url = str_at(self.body, &["head_commit", "url"])
            .or_else(|| str_at(self.body, &["compare"]))
            .map(str::to_string);
        e.artifact_id = self.commit(Some(after));
        e.subject_id = match (deleted, git_ref) {
            (true, Some(r)) => format!("{repo}@{r}"),
            _ => format!("{repo}@{after}"),
        };
        if !deleted && !tag {
            if at(self.body, &["created"]).and_then(Value::as_bool) == Some(true) {
                e.subject_id = format!("{repo}@{}", git_ref.unwrap_or(after));
                Meaning::BranchCreated.set(&mut e);
            } else {
                e.change_id = Some(e.subject_id.clone());
                Meaning::ChangeUpdated.set(&mut e);
            }
            e.branch = feature_branch(
                git_ref,
                str_at(self.body, &["repository", "default_branch"])
                    .or_else(|| str_at(self.body, &["repository", "master_branch"])),
            );
            if e.branch.is_some() {
                e.first_commit_at = earliest_commit(self.body);
            }
        }
        Ok(e)
    }

    fn workflow_run(&self) -> Result<Event, Rejection> {
        let run = self.object("workflow_run")?;
        let id = self.id(run, "workflow_run", "id")?;
        let mut e = self.base();
        e.subject_id = id.clone();
        e.run_id = Some(id);
        e.attempt = run.get("run_attempt").and_then(Value::as_i64);
        e.pipeline = str_at(run, &["name"])
            .or_else(|| str_at(self.body, &["workflow", "name"]))
            .map(str::to_string);
        e.url = str_at(run, &["html_url"]).map(str::to_string);
        e.artifact_id = self.commit(str_at(run, &["head_sha"]));
        e.trace_id = e
            .trace_id
            .take()
            .or_else(|| collector_trace_id(id_at(run, &["id"]), run.get("run_attempt")));
        let (meaning, fields): (_, &[&str]) = match self.action {
            Some("requested") => (
                Some(Meaning::PipelineRunQueued),
                &["updated_at", "created_at"],
            ),
            Some("in_progress") => (
                Some(Meaning::PipelineRunStarted),
                &["run_started_at", "updated_at"],
            ),
            Some("completed") => (
                Some(Meaning::PipelineRunFinished),
                &["updated_at", "run_started_at"],
            ),
            _ => (None, &["updated_at", "created_at"]),
        };
        e.time = self.time(run, fields);
        if meaning == Some(Meaning::PipelineRunFinished) || meaning.is_none() {
            e.outcome = str_at(run, &["conclusion"]).map(str::to_string);
        }
        if let Some(m) = meaning {
            m.set(&mut e);
        }
        Ok(e)
    }

    fn workflow_job(&self) -> Result<Event, Rejection> {
        let job = self.object("workflow_job")?;
        let id = self.id(job, "workflow_job", "id")?;
        let mut e = self.base();
        e.subject_id = id;
        e.task = str_at(job, &["name"]).map(str::to_string);
        e.run_id = id_at(job, &["run_id"]);
        e.attempt = job.get("run_attempt").and_then(Value::as_i64);
        e.pipeline = str_at(job, &["workflow_name"]).map(str::to_string);
        e.url = str_at(job, &["html_url"]).map(str::to_string);
        e.artifact_id = self.commit(str_at(job, &["head_sha"]));
        e.trace_id = e
            .trace_id
            .take()
            .or_else(|| collector_trace_id(e.run_id.clone(), job.get("run_attempt")));
        let (meaning, fields): (_, &[&str]) = match self.action {
            Some("in_progress") => (Some(Meaning::TaskRunStarted), &["started_at", "created_at"]),
            Some("completed") => (
                Some(Meaning::TaskRunFinished),
                &["completed_at", "started_at"],
            ),
            _ => (None, &["created_at", "started_at"]),
        };
        e.time = self.time(job, fields);
        if meaning == Some(Meaning::TaskRunFinished) {
            e.outcome = str_at(job, &["conclusion"]).map(str::to_string);
        }
        if let Some(m) = meaning {
            m.set(&mut e);
        }
        Ok(e)
    }

    /// A check run is a task of its check suite (`run_id`).
    fn check_run(&self) -> Result<Event, Rejection> {
        let check = self.object("check_run")?;
        let id = self.id(check, "check_run", "id")?;
        let mut e = self.base();
        e.subject_id = id;
        e.task = str_at(check, &["name"]).map(str::to_string);
        e.run_id = id_at(check, &["check_suite", "id"]);
        e.url = str_at(check, &["html_url"]).map(str::to_string);
        e.artifact_id = self.commit(str_at(check, &["head_sha"]));
        let (meaning, fields): (_, &[&str]) = match self.action {
            Some("created") => (Some(Meaning::TaskRunStarted), &["started_at"]),
            Some("completed") => (
                Some(Meaning::TaskRunFinished),
                &["completed_at", "started_at"],
            ),
            _ => (None, &["completed_at", "started_at"]),
        };
        e.time = self.time(check, fields);
        if meaning != Some(Meaning::TaskRunStarted) {
            e.outcome = str_at(check, &["conclusion"]).map(str::to_string);
        }
        if let Some(m) = meaning {
            m.set(&mut e);
        }
        Ok(e)
    }

    /// The service a deployment deploys: `deployment.payload.service` when the deploying tool
    /// says, else the repository.
    fn service(&self, deployment: Option<&Value>) -> Option<String> {
        deployment
            .and_then(|d| str_at(d, &["payload", "service"]))
            .or(self.repository)
            .map(str::to_string)
    }

    /// The workflow that made a deployment, when GitHub Actions did (`workflow_run.name`):
    /// what `[[services]]` rules with `workflows` match.
    fn deploying_workflow(&self) -> Option<String> {
        str_at(self.body, &["workflow_run", "name"]).map(str::to_string)
    }

    /// A deployment request: as-is, with its service, environment and commit.
    fn deployment(&self) -> Result<Event, Rejection> {
        let deployment = self.object("deployment")?;
        let mut e = self.base();
        e.service = self.service(Some(deployment));
        e.pipeline = self.deploying_workflow();
        e.environment = str_at(deployment, &["environment"]).map(str::to_string);
        e.artifact_id = self.commit(str_at(deployment, &["sha"]));
        e.subject_id = id_at(deployment, &["id"])
            .or_else(|| e.service.clone())
            .unwrap_or(e.subject_id);
        e.time = self.time(deployment, &["created_at", "updated_at"]);
        Ok(e)
    }

    /// A successful deployment status is `service.deployed`; other states stay as-is.
    fn deployment_status(&self) -> Result<Event, Rejection> {
        let status = self.object("deployment_status")?;
        let deployment = self.body.get("deployment").filter(|d| d.is_object());
        let state = str_at(status, &["state"]);
        let mut e = self.base();
        e.service = self.service(deployment);
        e.pipeline = self.deploying_workflow();
        e.environment = str_at(status, &["environment"])
            .or_else(|| deployment.and_then(|d| str_at(d, &["environment"])))
            .map(str::to_string);
        e.artifact_id = self.commit(deployment.and_then(|d| str_at(d, &["sha"])));
        e.url = ["log_url", "target_url", "environment_url"]
            .iter()
            .find_map(|f| str_at(status, &[f]))
            .map(str::to_string);
        e.outcome = state.map(str::to_string);
        e.time = self.time(status, &["created_at", "updated_at"]);
        if state == Some("success") {
            let Some(service) = e.service.clone() else {
                return Err(Rejection::missing(
                    "GitHub deployment_status delivery has no `repository.full_name` to name the deployed service",
                ));
            };
            e.subject_id = service;
            Meaning::ServiceDeployed.set(&mut e);
        } else {
            e.subject_id = id_at(status, &["id"])
                .or_else(|| e.service.clone())
                .unwrap_or(e.subject_id);
        }
        Ok(e)
    }

    /// A published release is `artifact.published` of `pkg:github/<repository>@<tag>`.
    fn release(&self) -> Result<Event, Rejection> {
        let release = self.object("release")?;
        let repo = self.repo()?;
        let tag = str_at(release, &["tag_name"]).ok_or_else(|| {
            Rejection::missing("GitHub release delivery has no `release.tag_name`")
        })?;
        let artifact = purl(Provider::Github, repo, tag);
        let mut e = self.base();
        e.subject_id = artifact.clone();
        e.artifact_id = Some(artifact);
        e.url = str_at(release, &["html_url"]).map(str::to_string);
        let fields: &[&str] = match self.action {
            Some("created") => &["created_at", "published_at"],
            _ => &["published_at", "created_at"],
        };
        e.time = self.time(release, fields);
        if self.action == Some("published") {
            Meaning::ArtifactPublished.set(&mut e);
        }
        Ok(e)
    }

    /// A container image published to a registry (GHCR): `package` and `registry_package`
    /// `published` are `artifact.published` of the image's OCI purl,
    /// `pkg:oci/<name>@<digest>?repository_url=<registry>/<namespace>/<name>`; other packages and
    /// actions stay as-is.
    fn package(&self) -> Result<Event, Rejection> {
        let pkg = self.object(self.kind)?;
        let mut e = self.base();
        let version = pkg.get("package_version").unwrap_or(&Value::Null);
        e.url = str_at(version, &["html_url"])
            .or_else(|| str_at(pkg, &["html_url"]))
            .map(str::to_string);
        e.time = self.time(version, &["updated_at", "created_at"]);
        let container = [&["package_type"][..], &["ecosystem"]].iter().any(|f| {
            str_at(pkg, f).is_some_and(|t| {
                t.eq_ignore_ascii_case("container") || t.eq_ignore_ascii_case("docker")
            })
        });
        let digest = str_at(version, &["container_metadata", "tag", "digest"])
            .or_else(|| str_at(version, &["version"]))
            .or_else(|| str_at(version, &["name"]))
            .filter(|d| d.starts_with("sha256:") || d.starts_with("sha512:"));
        let name = str_at(pkg, &["name"]);
        if let (true, Some("published"), Some(name), Some(digest)) =
            (container, self.action, name, digest)
        {
            let artifact = oci_purl(name, digest, str_at(version, &["package_url"]));
            e.subject_id = artifact.clone();
            e.artifact_id = Some(artifact);
            Meaning::ArtifactPublished.set(&mut e);
        }
        Ok(e)
    }

    /// An issue labelled `incident`: opened, reopened or labelled `incident` is
    /// `incident.detected`, closed is `incident.resolved`; other issues stay as-is.
    fn issues(&self) -> Result<Event, Rejection> {
        let issue = self.object("issue")?;
        let repo = self.repo()?;
        let number = self.id(issue, "issue", "number")?;
        let mut e = self.base();
        e.subject_id = format!("{repo}#{number}");
        e.url = str_at(issue, &["html_url"]).map(str::to_string);
        let added = str_at(self.body, &["label", "name"]);
        let labels = || label_names(issue.get("labels")).chain(added);
        let added_incident = self.action == Some("labeled") && added.is_some_and(is_incident_label);
        let incident = added_incident || labels().any(is_incident_label);
        let (meaning, fields): (_, &[&str]) = match self.action {
            Some("opened") if incident => (
                Some(Meaning::IncidentDetected),
                &["created_at", "updated_at"],
            ),
            Some("reopened") if incident => (Some(Meaning::IncidentDetected), &["updated_at"]),
            Some("labeled") if added_incident => (Some(Meaning::IncidentDetected), &["updated_at"]),
            Some("closed") if incident => (
                Some(Meaning::IncidentResolved),
                &["closed_at", "updated_at"],
            ),
            _ => (None, &["updated_at", "created_at"]),
        };
        if incident {
            e.service = Some(repo.to_string());
            e.environment = Some(
                environment_label(labels())
                    .unwrap_or_else(|| DEFAULT_INCIDENT_ENVIRONMENT.to_string()),
            );
        }
        e.time = self.time(issue, fields);
        if let Some(m) = meaning {
            m.set(&mut e);
        }
        Ok(e)
    }

    /// Any other delivery: as-is, with what the object named by the event carries.
    fn other(&self) -> Event {
        let mut e = self.base();
        let object = self.body.get(self.kind).filter(|o| o.is_object());
        if let Some(object) = object {
            if let Some(id) = id_at(object, &["id"]) {
                e.subject_id = id;
            }
            e.url = str_at(object, &["html_url"]).map(str::to_string);
            e.artifact_id = self.commit(str_at(object, &["head_sha"]));
            e.outcome = str_at(object, &["conclusion"]).map(str::to_string);
            e.time = self.time(object, &["updated_at", "created_at"]);
        }
        e
    }
}

/// The trace id the OpenTelemetry Collector's GitHub receiver gives a workflow run: the first
/// 16 bytes of SHA-256 over `"{run_id}{run_attempt}t"`, in hex. Setting it on `workflow_run`
/// and `workflow_job` events lets that receiver's traces join the webhook events with no
/// configuration (the `pipeline_traces` view).
pub(crate) fn collector_trace_id(
    run_id: Option<String>,
    run_attempt: Option<&serde_json::Value>,
) -> Option<String> {
    use sha2::{Digest, Sha256};
    let run_id = run_id?;
    let attempt = run_attempt.and_then(serde_json::Value::as_u64)?;
    let digest = Sha256::digest(format!("{run_id}{attempt}t").as_bytes());
    Some(hex::encode(&digest[..16]))
}

/// The purl of an OCI image: `pkg:oci/<last segment of name, lower case>@<digest>`, with the
/// `repository_url` that `package_url` names (`ghcr.io/owner/name:tag` without its tag).
pub(super) fn oci_purl(name: &str, digest: &str, package_url: Option<&str>) -> String {
    let last = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
    let mut out = format!("pkg:oci/{last}@{}", digest.replace(':', "%3A"));
    let repository = package_url.map(|u| {
        let u = u.split('@').next().unwrap_or(u);
        // A `:` after the last `/` starts the tag (one before it is a registry's port).
        match (u.rfind(':'), u.rfind('/')) {
            (Some(colon), Some(slash)) if colon > slash => &u[..colon],
            _ => u,
        }
    });
    if let Some(repository) = repository.filter(|r| !r.is_empty()) {
        out.push_str(&format!(
            "?repository_url={}",
            repository.to_ascii_lowercase()
        ));
    }
    out
}
