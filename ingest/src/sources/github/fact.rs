//! One fact, one row: the `event_id` of a GitHub row is derived from the fact it records (the
//! object's id, the action and, where an action can repeat, its time), not from the delivery
//! that brought it. A webhook redelivery, the same fact delivered twice, and the same fact
//! pulled again by `cdlake backfill github` all get the same identity, so the store keeps one
//! row of it.
//!
//! A delivery whose kind or action names no fact that happens once (an `edited` release, an
//! event kind cdlake does not know) keeps its delivery id: then only a redelivery is a
//! duplicate, as before.

use cdlake_schemas::Event;
use serde_json::Value;

use crate::sources::webhook::{id_at, push_fact, str_at};

/// The fact identity of the row `event` normalised from a delivery of `kind` with `body`, or
/// `None` to keep the delivery id. `payload_time` says whether `event.time` came from the
/// payload (a time that fell back to the ingestion time would make every delivery distinct).
pub(super) fn fact_id(
    kind: &str,
    body: &Value,
    event: &Event,
    payload_time: bool,
) -> Option<String> {
    let action = str_at(body, &["action"]).unwrap_or("none");
    let time = payload_time.then_some(event.time);
    let object_id = |key: &str| body.get(key).and_then(|o| id_at(o, &["id"]));
    let attempt = |key: &str| {
        body.get(key)
            .and_then(|o| o.get("run_attempt"))
            .and_then(Value::as_i64)
            .unwrap_or(1)
    };
    // Labelling twice in one second is two facts; so is the label.
    let label = || {
        str_at(body, &["label", "name"])
            .map(|l| format!("/{l}"))
            .unwrap_or_default()
    };
    match kind {
        "pull_request" => Some(format!(
            "pull_request/{}/{action}/{}{}",
            object_id("pull_request")?,
            time?,
            label()
        )),
        "issues" => Some(format!(
            "issues/{}/{action}/{}{}",
            object_id("issue")?,
            time?,
            label()
        )),
        "push" => Some(format!("push/{}", push_fact(body)?)),
        "workflow_run" => Some(format!(
            "workflow_run/{}/{}/{action}",
            object_id("workflow_run")?,
            attempt("workflow_run")
        )),
        "workflow_job" => Some(format!(
            "workflow_job/{}/{}/{action}",
            object_id("workflow_job")?,
            attempt("workflow_job")
        )),
        "check_run" => Some(format!(
            "check_run/{}/{action}/{}",
            object_id("check_run")?,
            time?
        )),
        "deployment" => Some(format!("deployment/{}/{action}", object_id("deployment")?)),
        "deployment_status" => Some(format!(
            "deployment_status/{}/{action}",
            object_id("deployment_status")?
        )),
        "release" if action != "edited" => {
            Some(format!("release/{}/{action}", object_id("release")?))
        }
        "package" | "registry_package" => Some(format!(
            "{kind}/{}/{action}",
            body.get(kind)
                .and_then(|p| p.get("package_version"))
                .and_then(|v| id_at(v, &["id"]))?
        )),
        _ => None,
    }
}

/// The `X-GitHub-Event` of a stored row, which the row does not keep: the kind in an as-is
/// type (`github.<kind>.<action>`), else the kinds the row's subject can come from, told apart
/// by the object the payload carries (a `deployment_status` made by Actions also carries its
/// `workflow_run` and `check_run`: the subject says it is a deployment). `cdlake rebuild
/// --renormalise` runs the normaliser again with it.
pub(crate) fn stored_kind<'a>(event_type: &'a str, subject: &str, body: &Value) -> Option<&'a str> {
    if let Some(rest) = event_type.strip_prefix("github.") {
        return rest.split('.').next().filter(|k| !k.is_empty());
    }
    let has = |key: &str| body.get(key).is_some_and(Value::is_object);
    let kinds: &[(&'static str, &str)] = match subject {
        "change" | "branch" => &[("pull_request", "pull_request"), ("push", "")],
        "pipelinerun" => &[("workflow_run", "workflow_run")],
        "taskrun" => &[("workflow_job", "workflow_job"), ("check_run", "check_run")],
        "service" => &[("deployment_status", "deployment_status")],
        "artifact" => &[
            ("release", "release"),
            ("registry_package", "registry_package"),
            ("package", "package"),
        ],
        "incident" => &[("issues", "issue")],
        _ => &[],
    };
    kinds
        .iter()
        .find(|(_, key)| {
            if key.is_empty() {
                body.get("ref").is_some_and(Value::is_string)
                    && body.get("after").is_some_and(Value::is_string)
            } else {
                has(key)
            }
        })
        .map(|(kind, _)| *kind)
}
