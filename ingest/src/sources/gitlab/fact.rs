//! One fact, one row, for GitLab as for GitHub (`sources::github::fact`): a GitLab row's
//! `event_id` is the fact it records (the object's id, its action or status and, where that
//! can repeat, its time), so a redelivery, the same hook sent by two webhooks, and a fact
//! pulled again by `cdlake backfill gitlab` are one row.
//!
//! Merge requests and issues are `update`d many times, so their identity carries the time the
//! normaliser took from the payload, in whole seconds (hooks write `2016-08-12 15:23:28 UTC`,
//! the API the same time with milliseconds), and for an update a digest of what it changed (two
//! updates in one second, an assignee and then the `incident` label, are two facts). A
//! pipeline's statuses carry their time too: a retried pipeline finishes again later (its
//! second `running` has its first one's time, as hooks carry only `created_at`, and is one fact
//! with it). A merge
//! happens once, and its hook and the API disagree on its time (`updated_at` against
//! `merged_at`): its identity has none. A release is its tag (the API has no release id). A
//! delivery whose time is not in its payload, a release `update` and an unknown hook keep their
//! delivery id.

use cdlake_schemas::Event;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::sources::webhook::{id_at, push_fact, str_at};

/// The fact identity of the row `event` normalised from a GitLab delivery whose `object_kind`
/// is `kind`, or `None` to keep the delivery id. `payload_time` says whether `event.time` came
/// from the payload.
pub(super) fn fact_id(
    kind: &str,
    body: &Value,
    event: &Event,
    payload_time: bool,
) -> Option<String> {
    let time = payload_time.then_some(event.time.div_euclid(1_000_000));
    let attributes = body.get("object_attributes");
    let attribute = |field: &str| attributes.and_then(|a| id_at(a, &[field]));
    // What an update changed, as a short digest of its `changes`.
    let changed = |action: &str| match body.get("changes") {
        Some(changes) if action == "update" => {
            let digest = Sha256::digest(changes.to_string().as_bytes());
            format!("/{}", hex::encode(&digest[..4]))
        }
        _ => String::new(),
    };
    match kind {
        "merge_request" => match attribute("action")?.as_str() {
            "merge" => Some(format!("merge_request/{}/merge", attribute("id")?)),
            action => Some(format!(
                "merge_request/{}/{action}/{}{}",
                attribute("id")?,
                time?,
                changed(action)
            )),
        },
        "issue" | "work_item" => {
            let action = attribute("action")?;
            Some(format!(
                "issue/{}/{action}/{}{}",
                attribute("id")?,
                time?,
                changed(&action)
            ))
        }
        "push" | "tag_push" => Some(format!("{kind}/{}", push_fact(body)?)),
        "pipeline" => Some(format!(
            "pipeline/{}/{}/{}",
            attribute("id")?,
            attribute("status")?,
            time?
        )),
        "build" | "job" => Some(format!(
            "build/{}/{}/{}",
            id_at(body, &["build_id"])?,
            str_at(body, &["build_status"])?,
            time?
        )),
        "deployment" => Some(format!(
            "deployment/{}/{}",
            id_at(body, &["deployment_id"])?,
            str_at(body, &["status"])?
        )),
        "release" => match str_at(body, &["action"])? {
            "update" => None,
            action => Some(format!("release/{}/{action}", str_at(body, &["tag"])?)),
        },
        _ => None,
    }
}
