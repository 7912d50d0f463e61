//! GitLab deliveries (`X-Gitlab-Event`, `object_kind`) to rows; see the mapping in
//! `sources::webhook`.
//!
//! The body's `object_kind` (or a system hook's `event_name`) says what a delivery is; the
//! header is used only when the body does not say. Job hooks carry no `project` object: their
//! project is read from `repository.homepage` (its path is the project's path, unless GitLab
//! is served under a relative URL root).

use cdlake_schemas::{Event, cdevents::Rejection, event::labels_json};
use serde_json::Value;

use crate::sources::Normalised;
use crate::sources::webhook::{
    DEFAULT_INCIDENT_ENVIRONMENT, Meaning, Provider, Row, at, earliest_commit, environment_label,
    feature_branch, id_at, is_full_sha, is_incident_label, label_names, parse_time, prepare, purl,
    reverted, str_at, time_at,
};

/// The `object_kind` that an `X-Gitlab-Event` header announces.
fn kind_of_header(header: &str) -> Option<&'static str> {
    const HOOKS: [(&str, &str); 13] = [
        ("Merge Request Hook", "merge_request"),
        ("Push Hook", "push"),
        ("Tag Push Hook", "tag_push"),
        ("Pipeline Hook", "pipeline"),
        ("Job Hook", "build"),
        ("Build Hook", "build"),
        ("Deployment Hook", "deployment"),
        ("Release Hook", "release"),
        ("Issue Hook", "issue"),
        ("Confidential Issue Hook", "issue"),
        ("Note Hook", "note"),
        ("Confidential Note Hook", "note"),
        ("Wiki Page Hook", "wiki_page"),
    ];
    HOOKS
        .iter()
        .find(|(h, _)| h.eq_ignore_ascii_case(header))
        .map(|&(_, kind)| kind)
}

/// A header that is itself one of the kinds [`kind_of_header`] knows (`cdlake rebuild
/// --renormalise` passes the kind it stored).
fn known_kind(header: &str) -> Option<&'static str> {
    [
        "merge_request",
        "push",
        "tag_push",
        "pipeline",
        "build",
        "deployment",
        "release",
        "issue",
        "note",
        "wiki_page",
    ]
    .into_iter()
    .find(|k| *k == header)
}

/// Normalise one GitLab delivery: `kind` is the event name header (`X-Gitlab-Event`, e.g.
/// "Merge Request Hook", or the `object_kind` itself; the body's `object_kind` wins),
/// `delivery` the delivery id, `body` the raw JSON body, `ingested_at` µs since the epoch, UTC.
/// The row's `event_id` is the fact it records (`fact::fact_id`), so a redelivery, or the same
/// fact pulled by a backfill, is a duplicate; a delivery that names no such fact keeps its
/// delivery id.
pub fn normalise(
    kind: &str,
    delivery: &str,
    body: &[u8],
    ingested_at: i64,
) -> Result<Normalised, Rejection> {
    let (row, value) = prepare(Provider::Gitlab, delivery, body, ingested_at)?;
    normalise_delivery(&row, kind.trim(), &value)
}

fn normalise_delivery(row: &Row<'_>, header: &str, body: &Value) -> Result<Normalised, Rejection> {
    let kind = str_at(body, &["object_kind"])
        .or_else(|| str_at(body, &["event_name"]))
        .or_else(|| kind_of_header(header))
        .or_else(|| known_kind(header))
        .ok_or_else(|| {
            Rejection::missing(format!(
                "GitLab delivery has no `object_kind` and its X-Gitlab-Event header {header:?} is not a known hook (e.g. \"Merge Request Hook\")"
            ))
        })?;
    let d = Delivery {
        row,
        kind,
        body,
        attributes: body.get("object_attributes").filter(|a| a.is_object()),
        repository: project_path(body),
    };
    let mut event = match kind {
        "merge_request" => d.merge_request()?,
        "push" => d.push(true)?,
        "tag_push" => d.push(false)?,
        "pipeline" => d.pipeline()?,
        "build" | "job" => d.job()?,
        "deployment" => d.deployment()?,
        "release" => d.release()?,
        "issue" | "work_item" => d.issue()?,
        _ => d.other(),
    };
    // A time that fell back to the ingestion time names no fact.
    let payload_time = event.time != row.ingested_at;
    if let Some(id) = super::fact::fact_id(kind, body, &event, payload_time) {
        event.event_id = id;
    }
    Ok(Normalised::Event(Box::new(event)))
}

/// The project's path with its namespace: `project.path_with_namespace`, else the path of
/// `repository.homepage` (job hooks have no `project`).
fn project_path(body: &Value) -> Option<String> {
    if let Some(path) = str_at(body, &["project", "path_with_namespace"]) {
        return Some(path.to_string());
    }
    let homepage = str_at(body, &["repository", "homepage"])?;
    let (_, rest) = homepage.split_once("://")?;
    let (_, path) = rest.split_once('/')?;
    let path = path.trim_matches('/');
    (!path.is_empty()).then(|| path.to_string())
}

struct Delivery<'a> {
    row: &'a Row<'a>,
    kind: &'a str,
    body: &'a Value,
    attributes: Option<&'a Value>,
    repository: Option<String>,
}

impl<'a> Delivery<'a> {
    /// The project's web URL (job hooks: the repository's homepage).
    fn web_url(&self) -> Option<&'a str> {
        str_at(self.body, &["project", "web_url"])
            .or_else(|| str_at(self.body, &["repository", "homepage"]))
    }

    /// The as-is row `gitlab.<object_kind>.<predicate>` with the repository filled.
    fn base(&self, predicate: Option<&str>) -> Event {
        let mut e = self.row.event(self.web_url(), self.kind, predicate);
        e.repository.clone_from(&self.repository);
        if let Some(repo) = &self.repository {
            e.subject_id.clone_from(repo);
        }
        e
    }

    fn attributes(&self) -> Result<&'a Value, Rejection> {
        self.attributes.ok_or_else(|| {
            Rejection::missing(format!(
                "GitLab {} delivery has no `object_attributes` object",
                self.kind
            ))
        })
    }

    fn repo(&self) -> Result<&str, Rejection> {
        self.repository.as_deref().ok_or_else(|| {
            Rejection::missing(format!(
                "GitLab {} delivery has no `project.path_with_namespace`",
                self.kind
            ))
        })
    }

    fn id(&self, object: &Value, path: &[&str], name: &str) -> Result<String, Rejection> {
        id_at(object, path).ok_or_else(|| {
            Rejection::missing(format!("GitLab {} delivery has no `{name}`", self.kind))
        })
    }

    /// The purl of a commit of this project, when the sha is a full one.
    fn commit(&self, sha: Option<&str>) -> Option<String> {
        let (repo, sha) = (self.repository.as_deref()?, sha?);
        is_full_sha(sha).then(|| purl(Provider::Gitlab, repo, sha))
    }

    /// The first time at the given fields of `object`, else the delivery's ingestion time.
    fn time(&self, object: &Value, fields: &[&str]) -> i64 {
        fields
            .iter()
            .find_map(|f| time_at(object, &[f]))
            .unwrap_or(self.row.ingested_at)
    }

    /// A GitLab pipeline has no name unless `workflow:name` sets one; the project (whose
    /// `.gitlab-ci.yml` defines it) stands in.
    fn pipeline_name(&self, attributes: Option<&Value>) -> Option<String> {
        attributes
            .and_then(|a| str_at(a, &["name"]))
            .map(str::to_string)
            .or_else(|| self.repository.clone())
    }

    fn merge_request(&self) -> Result<Event, Rejection> {
        let mr = self.attributes()?;
        let repo = self.repo()?;
        let iid = self.id(mr, &["iid"], "object_attributes.iid")?;
        let change = format!("{repo}!{iid}");
        let action = str_at(mr, &["action"]);
        let mut e = self.base(action);
        e.subject_id = change.clone();
        e.change_id = Some(change);
        e.url = str_at(mr, &["url"]).map(str::to_string);
        e.labels = labels_json(label_names(
            at(self.body, &["labels"]).or_else(|| at(mr, &["labels"])),
        ));
        e.reverts = reverted(
            Provider::Gitlab,
            repo,
            str_at(mr, &["title"]),
            str_at(mr, &["description"]),
        );
        // The source branch, when it is in this project (a fork's pushes never come here).
        let (source, target) = (
            at(mr, &["source_project_id"]),
            at(mr, &["target_project_id"]),
        );
        if source.is_none() || source == target {
            e.branch = feature_branch(
                str_at(mr, &["source_branch"]),
                str_at(self.body, &["project", "default_branch"]),
            );
        }
        let (meaning, fields): (_, &[&str]) = match action {
            Some("open") => (Some(Meaning::ChangeCreated), &["created_at", "updated_at"]),
            Some("reopen") => (Some(Meaning::ChangeCreated), &["updated_at", "created_at"]),
            Some("merge") => (Some(Meaning::ChangeMerged), &["merged_at", "updated_at"]),
            Some("close") => (Some(Meaning::ChangeAbandoned), &["closed_at", "updated_at"]),
            Some("update") => (Some(Meaning::ChangeUpdated), &["updated_at"]),
            _ => (None, &["updated_at", "created_at"]),
        };
        if meaning == Some(Meaning::ChangeMerged) {
            e.artifact_id = self.commit(str_at(mr, &["merge_commit_sha"]));
        }
        e.time = self.time(mr, fields);
        if let Some(m) = meaning {
            m.set(&mut e);
        }
        Ok(e)
    }

    /// The time of the pushed commit `sha` (else of the last commit listed).
    fn commit_time_and_url(&self, sha: &str) -> (Option<i64>, Option<String>) {
        let commits = self.body.get("commits").and_then(Value::as_array);
        let commit = commits.and_then(|cs| {
            cs.iter()
                .find(|c| str_at(c, &["id"]) == Some(sha))
                .or_else(|| cs.last())
        });
        (
            commit.and_then(|c| time_at(c, &["timestamp"])),
            commit.and_then(|c| str_at(c, &["url"])).map(str::to_string),
        )
    }

    /// A push to a branch is `change.updated` of `<path>@<after>` at the pushed commit's time,
    /// and a push that creates one `branch.created` of `<path>@<ref>`; both record the branch
    /// and its earliest commit (not for the default branch). A branch deletion and a tag push
    /// stay as-is.
    fn push(&self, branch: bool) -> Result<Event, Rejection> {
        let repo = self.repo()?;
        let after = str_at(self.body, &["after"]).ok_or_else(|| {
            Rejection::missing(format!(
                "GitLab {} delivery has no `after` commit sha",
                self.kind
            ))
        })?;
        let sha = str_at(self.body, &["checkout_sha"])
            .filter(|s| is_full_sha(s))
            .unwrap_or(after);
        let mut e = self.base(None);
        let (time, url) = self.commit_time_and_url(sha);
        e.time = time.unwrap_or(self.row.ingested_at);
        e.url = url;
        e.artifact_id = self.commit(Some(after));
        let deleted = !is_full_sha(after);
        e.subject_id = match (deleted, str_at(self.body, &["ref"])) {
            (true, Some(r)) => format!("{repo}@{r}"),
            _ => format!("{repo}@{after}"),
        };
        if branch && !deleted {
            // `before` is all zeros when the push creates the branch.
            let created = str_at(self.body, &["before"])
                .is_some_and(|b| !b.is_empty() && b.bytes().all(|c| c == b'0'));
            if created {
                e.subject_id = format!("{repo}@{}", str_at(self.body, &["ref"]).unwrap_or(after));
                Meaning::BranchCreated.set(&mut e);
            } else {
                e.change_id = Some(e.subject_id.clone());
                Meaning::ChangeUpdated.set(&mut e);
            }
            e.branch = feature_branch(
                str_at(self.body, &["ref"]),
                str_at(self.body, &["project", "default_branch"]),
            );
            if e.branch.is_some() {
                e.first_commit_at = earliest_commit(self.body);
            }
        }
        Ok(e)
    }

    fn pipeline(&self) -> Result<Event, Rejection> {
        let p = self.attributes()?;
        let id = self.id(p, &["id"], "object_attributes.id")?;
        let status = str_at(p, &["status"]);
        let mut e = self.base(status);
        e.subject_id = id.clone();
        e.pipeline = self.pipeline_name(Some(p));
        e.url = str_at(p, &["url"])
            .map(str::to_string)
            .or_else(|| self.web_url().map(|w| format!("{w}/-/pipelines/{id}")));
        e.run_id = Some(id);
        e.artifact_id = self.commit(str_at(p, &["sha"]));
        let (meaning, fields): (_, &[&str]) = match status {
            Some("pending" | "created") => (Some(Meaning::PipelineRunQueued), &["created_at"]),
            Some("running") => (
                Some(Meaning::PipelineRunStarted),
                &["started_at", "created_at"],
            ),
            Some("success" | "failed" | "canceled" | "skipped") => (
                Some(Meaning::PipelineRunFinished),
                &["finished_at", "created_at"],
            ),
            _ => (None, &["finished_at", "created_at"]),
        };
        e.time = self.time(p, fields);
        if meaning == Some(Meaning::PipelineRunFinished) {
            e.outcome = status.map(str::to_string);
        }
        if let Some(m) = meaning {
            m.set(&mut e);
        }
        Ok(e)
    }

    fn job(&self) -> Result<Event, Rejection> {
        let b = self.body;
        let id = self.id(b, &["build_id"], "build_id")?;
        let status = str_at(b, &["build_status"]);
        let mut e = self.base(status);
        e.subject_id = id.clone();
        e.task = str_at(b, &["build_name"]).map(str::to_string);
        e.run_id = id_at(b, &["pipeline_id"]);
        e.pipeline = self.pipeline_name(None);
        e.url = self.web_url().map(|w| format!("{w}/-/jobs/{id}"));
        e.artifact_id = self.commit(str_at(b, &["sha"]));
        e.environment = str_at(b, &["environment", "name"]).map(str::to_string);
        let (meaning, fields): (_, &[&str]) = match status {
            Some("running") => (
                Some(Meaning::TaskRunStarted),
                &["build_started_at", "build_created_at"],
            ),
            // A skipped job finished without running, as a skipped pipeline does.
            Some("success" | "failed" | "canceled" | "skipped") => (
                Some(Meaning::TaskRunFinished),
                &["build_finished_at", "build_started_at", "build_created_at"],
            ),
            _ => (
                None,
                &["build_finished_at", "build_started_at", "build_created_at"],
            ),
        };
        e.time = self.time(b, fields);
        if meaning == Some(Meaning::TaskRunFinished) {
            e.outcome = status.map(str::to_string);
        }
        if let Some(m) = meaning {
            m.set(&mut e);
        }
        Ok(e)
    }

    /// The deployed commit: the deployment hook names only `short_sha`, but its `commit_url`
    /// ends with the full one.
    fn deployed_sha(&self) -> Option<&'a str> {
        let from_url = str_at(self.body, &["commit_url"])
            .and_then(|u| u.trim_end_matches('/').rsplit('/').next())
            .filter(|s| is_full_sha(s));
        from_url
            .or_else(|| str_at(self.body, &["sha"]))
            .or_else(|| str_at(self.body, &["short_sha"]))
    }

    /// A successful deployment is `service.deployed` of the project; other statuses stay
    /// as-is.
    fn deployment(&self) -> Result<Event, Rejection> {
        let b = self.body;
        let status = str_at(b, &["status"]);
        let mut e = self.base(status);
        e.service.clone_from(&self.repository);
        e.environment = str_at(b, &["environment"]).map(str::to_string);
        e.artifact_id = match (self.repository.as_deref(), self.deployed_sha()) {
            (Some(repo), Some(sha)) => Some(purl(Provider::Gitlab, repo, sha)),
            _ => None,
        };
        e.url = str_at(b, &["deployable_url"]).map(str::to_string);
        e.outcome = status.map(str::to_string);
        e.time = self.time(b, &["status_changed_at"]);
        if status == Some("success") {
            e.subject_id = self.repo()?.to_string();
            Meaning::ServiceDeployed.set(&mut e);
        } else if let Some(id) = id_at(b, &["deployment_id"]) {
            e.subject_id = id;
        }
        Ok(e)
    }

    /// A created release is `artifact.published` of `pkg:gitlab/<path>@<tag>`, at its release
    /// time (but not later than its creation: an upcoming release is published when created).
    fn release(&self) -> Result<Event, Rejection> {
        let b = self.body;
        let repo = self.repo()?;
        let tag = str_at(b, &["tag"])
            .ok_or_else(|| Rejection::missing("GitLab release delivery has no `tag`"))?;
        let action = str_at(b, &["action"]);
        let artifact = purl(Provider::Gitlab, repo, tag);
        let mut e = self.base(action);
        e.subject_id = artifact.clone();
        e.artifact_id = Some(artifact);
        e.url = str_at(b, &["url"]).map(str::to_string);
        let created = time_at(b, &["created_at"]);
        let released = time_at(b, &["released_at"]);
        e.time = match (created, released) {
            (Some(c), Some(r)) => c.min(r),
            (c, r) => c.or(r).unwrap_or(self.row.ingested_at),
        };
        if action == Some("create") {
            Meaning::ArtifactPublished.set(&mut e);
        }
        Ok(e)
    }

    /// An incident issue (labelled `incident`, or of type incident): open and reopen are
    /// `incident.detected`, and so is an update that adds the `incident` label; close is
    /// `incident.resolved`. Other issues stay as-is.
    fn issue(&self) -> Result<Event, Rejection> {
        let issue = self.attributes()?;
        let repo = self.repo()?;
        let iid = self.id(issue, &["iid"], "object_attributes.iid")?;
        let action = str_at(issue, &["action"]);
        let mut e = self.base(action);
        e.subject_id = format!("{repo}#{iid}");
        e.url = str_at(issue, &["url"]).map(str::to_string);
        let labels =
            || label_names(self.body.get("labels")).chain(label_names(issue.get("labels")));
        let typed = ["issue_type", "type"]
            .iter()
            .any(|f| str_at(issue, &[f]).is_some_and(is_incident_label));
        let incident = typed || labels().any(is_incident_label);
        let had =
            label_names(at(self.body, &["changes", "labels", "previous"])).any(is_incident_label);
        let has =
            label_names(at(self.body, &["changes", "labels", "current"])).any(is_incident_label);
        let (meaning, fields): (_, &[&str]) = match action {
            Some("open") if incident => (
                Some(Meaning::IncidentDetected),
                &["created_at", "updated_at"],
            ),
            Some("reopen") if incident => (Some(Meaning::IncidentDetected), &["updated_at"]),
            Some("update") if has && !had => (Some(Meaning::IncidentDetected), &["updated_at"]),
            Some("close") if incident => (
                Some(Meaning::IncidentResolved),
                &["closed_at", "updated_at"],
            ),
            _ => (None, &["updated_at", "created_at"]),
        };
        if incident || meaning.is_some() {
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

    /// Any other delivery: as-is, typed by its action or status.
    fn other(&self) -> Event {
        let a = self.attributes;
        let predicate = a
            .and_then(|a| str_at(a, &["action"]).or_else(|| str_at(a, &["status"])))
            .or_else(|| str_at(self.body, &["action"]))
            .or_else(|| str_at(self.body, &["status"]));
        let mut e = self.base(predicate);
        if let Some(a) = a {
            if let Some(id) = id_at(a, &["id"]) {
                e.subject_id = id;
            }
            e.url = str_at(a, &["url"]).map(str::to_string);
            e.time = self.time(a, &["updated_at", "created_at"]);
        } else if let Some(t) = ["updated_at", "created_at"]
            .iter()
            .find_map(|f| str_at(self.body, &[f]).and_then(parse_time))
        {
            e.time = t;
        }
        e
    }
}
