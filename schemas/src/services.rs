//! `[[services]]` of `cdlake.toml`: which service an event is of, where the source alone cannot
//! tell (several services in one repository, one deployment workflow per service). Applied by
//! the receivers, the backfill and `cdlake rebuild --renormalise` when they normalise, so the
//! `service` column holds the answer and every view reads it as it is.
//!
//! ```toml
//! [[services]]
//! service = "billing"
//! repository = "acme/monorepo"            # the event's repository, exactly (any case)
//! paths = ["services/billing/**"]         # a file a push changed matches one of these globs
//!
//! [[services]]
//! service = "checkout"
//! repository = "acme/monorepo"
//! labels = ["checkout"]                   # a label of the change or issue, any case
//!
//! [[services]]
//! service = "search"
//! workflows = ["deploy-search*"]          # the workflow (pipeline) or job (task) name
//!
//! [[services]]
//! service = "payments"
//! environment_prefix = "payments-"        # the environment starts with this
//! ```
//!
//! A rule holds for an event when every condition it names holds; the first rule that holds,
//! in file order, names the event's service, in place of what the source said. A condition
//! the event has nothing for does not hold (a rule with `paths` never matches a deployment).

use serde::Deserialize;

use crate::Event;

/// One `[[services]]` rule.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceRule {
    /// The service the events it matches are of.
    pub service: String,
    /// The event's repository (`owner/name`, a GitLab project path), compared without case.
    #[serde(default)]
    pub repository: Option<String>,
    /// Globs of changed files (`*` within a path segment, `**` across segments, `?` one
    /// character): one file of a push matching one of them.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Labels of a change or an issue, compared without case: the event has one of them.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Globs of workflow or job names: the event's `pipeline` or `task` matches one.
    #[serde(default)]
    pub workflows: Vec<String>,
    /// The event's environment starts with this.
    #[serde(default)]
    pub environment_prefix: Option<String>,
}

impl ServiceRule {
    /// Why the rule cannot be used, if it cannot: no service, or no condition (it would claim
    /// every event).
    pub fn check(&self) -> Result<(), String> {
        if self.service.trim().is_empty() {
            return Err("a [[services]] rule has no `service`".into());
        }
        let blank = |s: &str| s.trim().is_empty();
        if self.repository.as_deref().is_some_and(blank)
            || self.environment_prefix.as_deref().is_some_and(blank)
            || self.paths.iter().any(|s| blank(s))
            || self.labels.iter().any(|s| blank(s))
            || self.workflows.iter().any(|s| blank(s))
        {
            return Err(format!(
                "the [[services]] rule for {:?} has an empty condition (a repository, path, label, workflow or environment_prefix of \"\"): remove it or give it a value",
                self.service
            ));
        }
        let given = |o: &Option<String>| o.as_deref().is_some_and(|s| !blank(s));
        if !given(&self.repository)
            && self.paths.is_empty()
            && self.labels.is_empty()
            && self.workflows.is_empty()
            && !given(&self.environment_prefix)
        {
            return Err(format!(
                "the [[services]] rule for {:?} names no condition: give it a repository, paths, labels, workflows or an environment_prefix",
                self.service
            ));
        }
        Ok(())
    }

    /// Whether every condition the rule names holds for `event`, whose push changed `paths`.
    pub fn matches(&self, event: &Event, paths: &[String]) -> bool {
        self.matches_with(event, || paths.to_vec())
    }

    /// [`ServiceRule::matches`], reading the changed paths (`paths()`) only when every other
    /// condition holds and the rule names paths.
    fn matches_with(&self, event: &Event, paths: impl FnOnce() -> Vec<String>) -> bool {
        let repository = self.repository.as_deref().is_none_or(|r| {
            event
                .repository
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(r.trim()))
        });
        let prefix = self.environment_prefix.as_deref().is_none_or(|p| {
            event
                .environment
                .as_deref()
                .is_some_and(|e| e.starts_with(p.trim()))
        });
        let labels = self.labels.is_empty()
            || labels_of(event).iter().any(|l| {
                self.labels
                    .iter()
                    .any(|want| want.trim().eq_ignore_ascii_case(l))
            });
        let workflows = self.workflows.is_empty()
            || [&event.pipeline, &event.task]
                .into_iter()
                .flatten()
                .any(|name| self.workflows.iter().any(|g| glob_match(g, name)));
        repository
            && prefix
            && labels
            && workflows
            && (self.paths.is_empty()
                || paths()
                    .iter()
                    .any(|p| self.paths.iter().any(|g| glob_match(g, p))))
    }
}

/// The labels of an event (its `labels`, a JSON array of names).
fn labels_of(event: &Event) -> Vec<String> {
    event
        .labels
        .as_deref()
        .and_then(|l| serde_json::from_str::<Vec<String>>(l).ok())
        .unwrap_or_default()
}

/// The files a push changed, as its payload lists them (GitHub's and GitLab's push payloads:
/// `commits[].added`, `modified`, `removed`), leaving out commits GitHub marks as not new to
/// the branch (`"distinct": false`: main's commits merged into a feature branch); none for
/// any other payload.
pub fn changed_paths(payload: &str) -> Vec<String> {
    if !payload.contains("\"commits\"") {
        return Vec::new();
    }
    let Ok(body) = serde_json::from_str::<serde_json::Value>(payload) else {
        return Vec::new();
    };
    let mut out: Vec<String> = body
        .get("commits")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
        .filter(|commit| commit.get("distinct").and_then(|d| d.as_bool()) != Some(false))
        .flat_map(|commit| {
            ["added", "modified", "removed"]
                .into_iter()
                .filter_map(|k| commit.get(k).and_then(|v| v.as_array()))
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_string))
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Set the service of `event` by the first of `rules` that holds for it; whether one did.
pub fn apply(rules: &[ServiceRule], event: &mut Event) -> bool {
    if rules.is_empty() {
        return false;
    }
    // The payload is parsed at most once, and only for a rule whose other conditions hold.
    let mut paths: Option<Vec<String>> = None;
    let found = rules.iter().find(|r| {
        r.matches_with(event, || {
            paths
                .get_or_insert_with(|| changed_paths(&event.payload))
                .clone()
        })
    });
    match found {
        Some(rule) => {
            event.service = Some(rule.service.trim().to_string());
            true
        }
        None => false,
    }
}

/// Whether `path` matches the glob `pattern`: `**` is any number of whole segments, `*` any
/// characters but `/`, `?` one character but `/`; everything else is itself. A trailing `/`
/// in the pattern is ignored. Time is bounded by the product of the lengths (no backtracking
/// blow-up on patterns a contributor's file names could feed).
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let split = |s: &str| -> Vec<Vec<char>> {
        s.trim()
            .trim_matches('/')
            .split('/')
            .map(|seg| seg.chars().collect())
            .collect()
    };
    let (pattern, path) = (split(pattern), split(path));
    let any_depth = |seg: &Vec<char>| seg.len() == 2 && seg[0] == '*' && seg[1] == '*';
    // reach[j]: the pattern's segments so far match the path's first j segments.
    let mut reach = vec![false; path.len() + 1];
    reach[0] = true;
    for seg in &pattern {
        let mut next = vec![false; path.len() + 1];
        if any_depth(seg) {
            let mut seen = false;
            for (j, r) in reach.iter().enumerate() {
                seen |= *r;
                next[j] = seen;
            }
        } else {
            for j in 0..path.len() {
                next[j + 1] = reach[j] && segment_match(seg, &path[j]);
            }
        }
        reach = next;
    }
    reach[path.len()]
}

/// One segment against a pattern of `*` and `?`, with one backtracking point (linear in
/// practice, at worst the product of the lengths).
fn segment_match(pattern: &[char], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(c) if *c == '?' || *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_segments_and_any_depth() {
        for (pattern, path, expected) in [
            ("services/billing/**", "services/billing/src/main.rs", true),
            ("services/billing/**", "services/billing", true),
            ("services/billing/**", "services/billing-v2/a.rs", false),
            ("services/*/Dockerfile", "services/cart/Dockerfile", true),
            (
                "services/*/Dockerfile",
                "services/cart/sub/Dockerfile",
                false,
            ),
            ("**/*.proto", "api/v1/billing.proto", true),
            ("**/*.proto", "billing.proto", true),
            ("docs/?.md", "docs/a.md", true),
            ("docs/?.md", "docs/ab.md", false),
            ("deploy-search*", "deploy-search-prod", true),
            ("deploy-search*", "deploy-searc", false),
            ("README.md", "README.md", true),
            ("README.md", "docs/README.md", false),
            ("services/billing/", "services/billing", true),
            ("**/**/x.rs", "a/b/x.rs", true),
            ("docs/?.md", "docs/é.md", true),
            ("a*a*a*a*a*a*b", "a".repeat(4000).as_str(), false),
            ("**/**/**/**/**/z", "a/".repeat(300).as_str(), false),
        ] {
            assert_eq!(glob_match(pattern, path), expected, "{pattern} ~ {path}");
        }
    }

    fn rule(service: &str) -> ServiceRule {
        ServiceRule {
            service: service.into(),
            ..ServiceRule::default()
        }
    }

    #[test]
    fn every_condition_a_rule_names_must_hold_and_the_first_rule_wins() {
        let push = Event {
            repository: Some("Acme/Mono".into()),
            service: None,
            payload: r#"{"commits":[{"added":["services/billing/a.rs"],"modified":["README.md"],"removed":[]},
                                    {"added":[],"modified":["services/cart/b.rs"],"removed":["old.txt"]}]}"#
                .into(),
            ..Event::default()
        };
        let merged_main = r#"{"commits":[{"distinct":false,"added":["services/cart/old.rs"]},
                                         {"distinct":true,"modified":["services/billing/a.rs"]}]}"#;
        assert_eq!(changed_paths(merged_main), ["services/billing/a.rs"]);
        assert_eq!(
            changed_paths(&push.payload),
            [
                "README.md",
                "old.txt",
                "services/billing/a.rs",
                "services/cart/b.rs"
            ]
        );
        let billing = ServiceRule {
            repository: Some("acme/mono".into()),
            paths: vec!["services/billing/**".into()],
            ..rule("billing")
        };
        let cart = ServiceRule {
            paths: vec!["services/cart/**".into()],
            ..rule("cart")
        };
        let elsewhere = ServiceRule {
            repository: Some("acme/other".into()),
            ..billing.clone()
        };
        let mut e = push.clone();
        assert!(apply(
            &[elsewhere.clone(), cart.clone(), billing.clone()],
            &mut e
        ));
        assert_eq!(e.service.as_deref(), Some("cart"));
        let mut e = push.clone();
        assert!(apply(&[billing.clone(), cart.clone()], &mut e));
        assert_eq!(e.service.as_deref(), Some("billing"));
        let mut e = push.clone();
        assert!(!apply(std::slice::from_ref(&elsewhere), &mut e));
        assert_eq!(e.service, None);

        // Labels, workflows and environments; a condition the event has nothing for fails.
        let deployment = Event {
            environment: Some("payments-production".into()),
            pipeline: Some("Deploy payments".into()),
            service: Some("acme/mono".into()),
            ..Event::default()
        };
        let by_env = ServiceRule {
            environment_prefix: Some("payments-".into()),
            ..rule("payments")
        };
        let by_workflow = ServiceRule {
            workflows: vec!["Deploy pay*".into()],
            ..rule("payments-wf")
        };
        let by_label = ServiceRule {
            labels: vec!["Checkout".into()],
            ..rule("checkout")
        };
        let mut e = deployment.clone();
        assert!(!apply(&[by_label.clone(), billing.clone()], &mut e));
        assert_eq!(e.service.as_deref(), Some("acme/mono"));
        assert!(apply(
            &[by_label.clone(), by_workflow.clone(), by_env.clone()],
            &mut e
        ));
        assert_eq!(e.service.as_deref(), Some("payments-wf"));
        let mut e = deployment.clone();
        assert!(apply(&[by_env], &mut e));
        assert_eq!(e.service.as_deref(), Some("payments"));
        let mut change = Event {
            labels: Some(r#"["bug","checkout"]"#.into()),
            ..Event::default()
        };
        assert!(apply(&[by_workflow, by_label], &mut change));
        assert_eq!(change.service.as_deref(), Some("checkout"));
    }

    #[test]
    fn a_rule_without_a_service_or_a_condition_is_refused() {
        assert!(rule("").check().is_err());
        let err = rule("billing").check().unwrap_err();
        assert!(err.contains("names no condition"), "{err}");
        let blank = ServiceRule {
            repository: Some(" ".into()),
            ..rule("billing")
        };
        assert!(blank.check().is_err());
        let blank_beside = ServiceRule {
            paths: vec!["services/billing/**".into()],
            environment_prefix: Some(String::new()),
            ..rule("billing")
        };
        let err = blank_beside.check().unwrap_err();
        assert!(err.contains("empty condition"), "{err}");
        let ok = ServiceRule {
            repository: Some("acme/mono".into()),
            ..rule("billing")
        };
        assert_eq!(ok.check(), Ok(()));
    }
}
