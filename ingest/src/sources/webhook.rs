//! What GitHub and GitLab webhook deliveries share on their way to the CDEvents meaning (see
//! DESIGN.md); each provider's mapping is in its folder ([`super::github`], [`super::gitlab`]).
//!
//! Normalising is pure: one delivery (event name header, delivery id, raw body) in, one
//! `events` row out, or a [`Rejection`] naming what is wrong with it. The delivery id becomes
//! the row's `event_id`, so a redelivery is a duplicate and is de-duplicated downstream; the
//! body is kept byte for byte in `payload`.
//!
//! Deliveries that carry a CDEvents meaning get that CDEvents type (spec v0.4.1 versions):
//!
//! | delivery | row |
//! |---|---|
//! | GitHub `pull_request` opened/reopened, GitLab merge request open/reopen | `change.created` |
//! | GitHub `pull_request` closed and merged, GitLab merge request merge | `change.merged` |
//! | GitHub `pull_request` closed unmerged, GitLab merge request close | `change.abandoned` |
//! | GitHub `pull_request` synchronize, GitLab merge request update, a push to a branch | `change.updated` |
//! | GitHub `workflow_run`, GitLab pipeline | `pipelinerun.queued` / `started` / `finished` |
//! | GitHub `workflow_job` and `check_run`, GitLab job | `taskrun.started` / `finished` |
//! | GitHub `deployment_status` success, GitLab deployment success | `service.deployed` |
//! | GitHub `release` published, GitLab release create | `artifact.published` |
//! | an issue labelled `incident` (GitLab: or of type incident) opened / closed | `incident.detected` / `resolved` |
//!
//! Everything else is stored as it came, typed `github.<event>.<action>` or
//! `gitlab.<object_kind>.<action or status>` (subject = the event, predicate = the action or
//! `received`), with the linking fields that the payload gives (repository, change, artifact,
//! url …). In particular a GitHub `deployment` (created) is a request to deploy, not a
//! deployment, and stays `github.deployment.created`; ref deletions and tag pushes are not
//! changes and stay `github.push` / `gitlab.tag_push`.
//!
//! Conventions of every row: `event_source` is the repository's web URL (falling back to
//! `github` / `gitlab`), `origin` and `spec_version` are the provider, `repository` is the
//! repository's full path, a change is `<repository>#<number>` (GitLab: `<path>!<iid>`), an
//! artifact is the purl of a commit or tag (`pkg:github/<repository>@<sha>`), and a service is
//! named by its repository (a GitHub deployment's `payload.service` overrides it). An incident
//! is `<repository>#<issue number>` in the environment named by an `env:<x>` or
//! `environment:<x>` label (GitLab scoped labels `env::<x>` too), else `production`: an issue
//! labelled `incident` reports a production incident unless it says otherwise.
//!
//! A row's time is read from the payload (RFC 3339, or GitLab's `2015-04-20 08:13:45 UTC` and
//! `2021-04-28 21:50:00 +0200`), so a redelivery carries the same time and falls in the same
//! date partition as the original; only a payload without any time gets `ingested_at`.
//!
//! GitLab has no ping: its "Test" button sends a sample of the real hook, which is stored.

use cdlake_schemas::{
    Event,
    cdevents::{self, Rejection},
};
use serde_json::Value;

/// Check what every delivery must be (UTF-8, a JSON object, with a delivery id) and read it:
/// the row everything of this delivery shares, and the parsed body. `delivery` is the delivery
/// id (X-GitHub-Delivery; for GitLab Idempotency-Key or X-Gitlab-Event-UUID): it becomes
/// `event_id`, so a redelivery is a duplicate. `ingested_at` is µs since the epoch, UTC.
pub(super) fn prepare<'a>(
    provider: Provider,
    delivery: &'a str,
    body: &'a [u8],
    ingested_at: i64,
) -> Result<(Row<'a>, Value), Rejection> {
    let (text, value) = json_object(body, provider.name())?;
    let delivery = delivery.trim();
    if delivery.is_empty() {
        return Err(Rejection::missing(match provider {
            Provider::Github => "GitHub delivery has no id: send the X-GitHub-Delivery header",
            Provider::Gitlab => {
                "GitLab delivery has no id: send the Idempotency-Key or X-Gitlab-Event-UUID header"
            }
        }));
    }
    let row = Row {
        provider,
        delivery,
        text,
        ingested_at,
    };
    Ok((row, value))
}

/// Read a body as a JSON object (a leading BOM is allowed): the text, kept as the payload, and
/// the value.
pub(super) fn json_object<'a>(body: &'a [u8], tool: &str) -> Result<(&'a str, Value), Rejection> {
    let text = std::str::from_utf8(body).map_err(Rejection::not_utf8)?;
    let json = text.strip_prefix('\u{feff}').unwrap_or(text);
    let value: Value = serde_json::from_str(json)
        .map_err(|e| Rejection::malformed_json(format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(Rejection::invalid(format!(
            "{tool} webhook body is not a JSON object"
        )));
    }
    Ok((text, value))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Provider {
    Github,
    Gitlab,
}

impl Provider {
    /// The provider's name as stored in `origin`, `spec_version` and as-is event types.
    pub(super) fn id(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Gitlab => "gitlab",
        }
    }

    /// The provider's name in messages.
    pub(super) fn name(self) -> &'static str {
        match self {
            Provider::Github => "GitHub",
            Provider::Gitlab => "GitLab",
        }
    }
}

/// What every row of one delivery shares.
pub(super) struct Row<'a> {
    pub(super) provider: Provider,
    pub(super) delivery: &'a str,
    pub(super) text: &'a str,
    pub(super) ingested_at: i64,
}

impl Row<'_> {
    /// A row with the delivery's identity, provenance and payload, typed as-is
    /// (`<provider>.<event>[.<predicate>]`) until [`Meaning::set`] says better.
    pub(super) fn event(
        &self,
        source: Option<&str>,
        event: &str,
        predicate: Option<&str>,
    ) -> Event {
        let mut e = Event {
            event_id: self.delivery.to_string(),
            event_source: source.unwrap_or(self.provider.id()).to_string(),
            spec_version: self.provider.id().to_string(),
            origin: self.provider.id().to_string(),
            time: self.ingested_at,
            ingested_at: self.ingested_at,
            subject_id: self.delivery.to_string(),
            payload: self.text.to_string(),
            ..Event::default()
        };
        as_is(&mut e, self.provider, event, predicate);
        e
    }
}

/// A push's fact: `<ref>/<after>`, and for a deletion (`after` all zeros, which repeats when a
/// branch is deleted, made again and deleted again) `<ref>/<after>/<before>`.
pub(super) fn push_fact(body: &Value) -> Option<String> {
    let (git_ref, after) = (str_at(body, &["ref"])?, str_at(body, &["after"])?);
    if !after.is_empty() && after.bytes().all(|b| b == b'0') {
        Some(format!("{git_ref}/{after}/{}", str_at(body, &["before"])?))
    } else {
        Some(format!("{git_ref}/{after}"))
    }
}

/// Type a row as-is: `<provider>.<event>.<predicate>`, or `<provider>.<event>` with predicate
/// `received` when there is none.
pub(super) fn as_is(e: &mut Event, provider: Provider, event: &str, predicate: Option<&str>) {
    let event = token(event);
    let predicate = predicate.map(token).filter(|p| !p.is_empty());
    e.event_type = match &predicate {
        Some(p) => format!("{}.{event}.{p}", provider.id()),
        None => format!("{}.{event}", provider.id()),
    };
    e.subject = event;
    e.predicate = predicate.unwrap_or_else(|| "received".to_string());
}

/// A name usable as one dot-separated part of an event type: characters other than ASCII
/// letters, digits, `_` and `-` become `_`.
pub(super) fn token(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The CDEvents types that webhooks normalise to, with their spec v0.4.1 versions (checked
/// against the conformance examples in the tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Meaning {
    ChangeCreated,
    ChangeUpdated,
    ChangeMerged,
    ChangeAbandoned,
    BranchCreated,
    PipelineRunQueued,
    PipelineRunStarted,
    PipelineRunFinished,
    TaskRunStarted,
    TaskRunFinished,
    ServiceDeployed,
    ArtifactPublished,
    IncidentDetected,
    IncidentResolved,
}

impl Meaning {
    #[cfg(test)]
    pub(super) const ALL: [Meaning; 14] = [
        Meaning::ChangeCreated,
        Meaning::ChangeUpdated,
        Meaning::ChangeMerged,
        Meaning::ChangeAbandoned,
        Meaning::BranchCreated,
        Meaning::PipelineRunQueued,
        Meaning::PipelineRunStarted,
        Meaning::PipelineRunFinished,
        Meaning::TaskRunStarted,
        Meaning::TaskRunFinished,
        Meaning::ServiceDeployed,
        Meaning::ArtifactPublished,
        Meaning::IncidentDetected,
        Meaning::IncidentResolved,
    ];

    /// (subject, predicate, version).
    pub(super) fn parts(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Meaning::ChangeCreated => ("change", "created", "0.3.0"),
            Meaning::ChangeUpdated => ("change", "updated", "0.2.0"),
            Meaning::ChangeMerged => ("change", "merged", "0.2.0"),
            Meaning::ChangeAbandoned => ("change", "abandoned", "0.2.0"),
            Meaning::BranchCreated => ("branch", "created", "0.2.0"),
            Meaning::PipelineRunQueued => ("pipelinerun", "queued", "0.2.0"),
            Meaning::PipelineRunStarted => ("pipelinerun", "started", "0.2.0"),
            Meaning::PipelineRunFinished => ("pipelinerun", "finished", "0.2.0"),
            Meaning::TaskRunStarted => ("taskrun", "started", "0.2.0"),
            Meaning::TaskRunFinished => ("taskrun", "finished", "0.2.0"),
            Meaning::ServiceDeployed => ("service", "deployed", "0.2.0"),
            Meaning::ArtifactPublished => ("artifact", "published", "0.2.0"),
            Meaning::IncidentDetected => ("incident", "detected", "0.2.0"),
            Meaning::IncidentResolved => ("incident", "resolved", "0.2.0"),
        }
    }

    pub(super) fn event_type(self) -> String {
        let (subject, predicate, version) = self.parts();
        format!("dev.cdevents.{subject}.{predicate}.{version}")
    }

    /// Give a row this CDEvents type.
    pub(super) fn set(self, e: &mut Event) {
        let (subject, predicate, _) = self.parts();
        e.event_type = self.event_type();
        e.subject = subject.to_string();
        e.predicate = predicate.to_string();
    }
}

/// The value at a path of object keys.
pub(super) fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.as_object()?.get(*key))
}

/// The non-empty (after trimming) string at a path.
pub(super) fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path)?
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// An id at a path: a number or a non-empty string, as a string.
pub(super) fn id_at(v: &Value, path: &[&str]) -> Option<String> {
    match at(v, path)? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }
}

/// The time at a path: a string in any format [`parse_time`] knows, or a number of seconds
/// since the epoch.
pub(super) fn time_at(v: &Value, path: &[&str]) -> Option<i64> {
    match at(v, path)? {
        Value::String(s) => parse_time(s),
        Value::Number(n) => n.as_i64()?.checked_mul(1_000_000),
        _ => None,
    }
}

/// The first time found at the given paths.
pub(super) fn first_time(v: &Value, paths: &[&[&str]]) -> Option<i64> {
    paths.iter().find_map(|p| time_at(v, p))
}

/// Parse a time as webhooks write it, to µs since the epoch UTC: RFC 3339
/// (`2021-02-23T02:41:37.000Z`), GitLab's `2015-04-20 08:13:45 UTC` and
/// `2021-04-28 21:50:00 +0200`.
pub(super) fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(t) = cdevents::parse_time(s) {
        return Some(t);
    }
    if let Some(naive) = s.strip_suffix("UTC").or_else(|| s.strip_suffix('Z')) {
        let naive = naive.trim_end();
        return ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(naive, f).ok())
            .map(|t| t.and_utc().timestamp_micros());
    }
    ["%Y-%m-%d %H:%M:%S%.f %z", "%Y-%m-%d %H:%M:%S%.f%z"]
        .iter()
        .find_map(|f| chrono::DateTime::parse_from_str(s, f).ok())
        .map(|t| t.timestamp_micros())
}

/// The purl of a commit or tag of a repository: `pkg:<provider>/<repository>@<version>`, the
/// version percent-encoded where the purl spec asks.
pub(super) fn purl(provider: Provider, repository: &str, version: &str) -> String {
    let mut out = format!("pkg:{}/{repository}@", provider.id());
    for b in version.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A full commit sha: 40 (SHA-1) or 64 (SHA-256) hex digits, not all zero (which is how both
/// providers say "no commit": a created or deleted ref).
pub(super) fn is_full_sha(s: &str) -> bool {
    matches!(s.len(), 40 | 64)
        && s.bytes().all(|b| b.is_ascii_hexdigit())
        && s.bytes().any(|b| b != b'0')
}

/// Label names of a label list: objects with a `name` (GitHub) or `title` (GitLab), or strings.
pub(super) fn label_names(labels: Option<&Value>) -> impl Iterator<Item = &str> {
    labels
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| match l {
            Value::String(s) => Some(s.as_str()),
            other => str_at(other, &["name"]).or_else(|| str_at(other, &["title"])),
        })
}

/// The branch a change event records (`events.branch`): `name` unless it is the repository's
/// default branch (`default`), whose pushes and requests belong to no one change.
pub(super) fn feature_branch(name: Option<&str>, default: Option<&str>) -> Option<String> {
    let name = name?.strip_prefix("refs/heads/").unwrap_or(name?);
    (!name.is_empty() && Some(name) != default).then(|| name.to_string())
}

/// The earliest time of a push's `commits` (`events.first_commit_at`), leaving out those GitHub
/// marks as not distinct (already pushed to another branch, such as the default branch merged in).
pub(super) fn earliest_commit(push: &Value) -> Option<i64> {
    push.get("commits")?
        .as_array()?
        .iter()
        .filter(|c| at(c, &["distinct"]).and_then(Value::as_bool) != Some(false))
        .filter_map(|c| time_at(c, &["timestamp"]))
        .min()
}

/// What a pull or merge request reverts (`events.reverts`), from its title and body as each
/// provider's revert button and `git revert` write them: the reverted change's id (GitHub's
/// `Reverts owner/repo#12` or `#12`; GitLab's `This reverts merge request !12`, also with a
/// project path before the `!`), else the purl of the reverted commit (`This reverts commit
/// <sha>`), else `""` when only the title says `Revert "…"`. `None`: not a revert.
pub(super) fn reverted(
    provider: Provider,
    repository: &str,
    title: Option<&str>,
    body: Option<&str>,
) -> Option<String> {
    let body = body.unwrap_or_default();
    // The word after each occurrence of `marker`, without the punctuation that ends a sentence.
    let after = |marker: &'static str| {
        body.match_indices(marker).filter_map(move |(at, _)| {
            let rest = &body[at + marker.len()..];
            let word = rest.split_whitespace().next()?;
            Some(word.trim_end_matches(['.', ',', ';', ':', ')', '"', '\'']))
        })
    };
    let (marker, sep) = match provider {
        Provider::Github => ("Reverts ", '#'),
        Provider::Gitlab => ("This reverts merge request ", '!'),
    };
    let change = after(marker).find_map(|word| {
        let (path, number) = word.rsplit_once(sep)?;
        let numeric = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
        match path {
            _ if !numeric => None,
            "" => Some(format!("{repository}{sep}{number}")),
            path if path.contains('/') && !path.contains(char::is_whitespace) => {
                Some(format!("{path}{sep}{number}"))
            }
            _ => None,
        }
    });
    let commit = || {
        after("This reverts commit ")
            .find(|word| is_full_sha(word))
            .map(|sha| purl(provider, repository, &sha.to_ascii_lowercase()))
    };
    let titled = || {
        title
            .is_some_and(|t| t.trim_start().starts_with("Revert \""))
            .then(String::new)
    };
    change.or_else(commit).or_else(titled)
}

pub(super) fn is_incident_label(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("incident")
}

/// The environment an `env:<x>` or `environment:<x>` label names (also GitLab's scoped
/// `env::<x>`); the first such label wins.
pub(super) fn environment_label<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<String> {
    names.into_iter().find_map(|name| {
        let (key, value) = name.split_once(':')?;
        let key = key.trim();
        let value = value.strip_prefix(':').unwrap_or(value).trim();
        (key.eq_ignore_ascii_case("env") || key.eq_ignore_ascii_case("environment"))
            .then_some(value)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    })
}

/// The environment an incident issue is in: its label's, else production.
pub(super) const DEFAULT_INCIDENT_ENVIRONMENT: &str = "production";

#[cfg(test)]
pub(super) mod tests;
