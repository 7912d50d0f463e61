//! Pulling history from a provider's REST API (`cdlake backfill`): a client that is a good API
//! citizen, and the cursor that makes a backfill resumable.
//!
//! The client follows `Link: <…>; rel="next"` pagination, revalidates a page it fetched before
//! with its ETag (`If-None-Match`; a `304` costs no rate limit), waits out the primary rate limit
//! (`X-RateLimit-Remaining: 0` until `X-RateLimit-Reset`; GitLab's `RateLimit-…`) and a
//! secondary one (`Retry-After`, else a minute; GitLab answers `429`), and retries 5xx answers, dropped connections and cut bodies with back-off
//! ([`crate::retry::backoff`]). Anything else (401, 404, 422) is an error that says what to fix.
//!
//! The [`Cursor`] is kept in the store, one per repository: per kind of object, the next page
//! to fetch; per page fetched, its ETag and the page after it. It is saved after each page is
//! committed, so an interrupted backfill continues at the page it stopped in, and rows written
//! twice are duplicates of the same facts.
//!
//! [`Backfill`] is the loop every provider shares: page through each kind of object, turn each
//! object into the deliveries the provider would have sent when it happened ([`History`]:
//! `sources::github::backfill`, `sources::gitlab::backfill`), normalise them with the webhook
//! normaliser, write them, commit, move the cursor.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cdlake_schemas::store::{Store, StoreError};
use cdlake_schemas::{DeadLetter, Origin};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::envelope::Envelope;
use crate::ingester::{Ingester, Pushed, now_micros};
use crate::sources::{Normalised, normalise};

/// Rate-limit waits allowed for one request before giving up (each is a `Retry-After` or a
/// primary-limit reset).
const MAX_RATE_WAITS: u32 = 30;

/// What the client has done, for a progress line.
#[derive(Debug, Clone, Default)]
pub struct ApiStatus {
    pub requests: u64,
    /// Requests retried after a 5xx, a dropped connection or a cut body.
    pub retried: u64,
    /// Pages that had not changed since the last backfill (`304 Not Modified`).
    pub not_modified: u64,
    /// Waits for a rate limit.
    pub rate_limited: u64,
    /// The last `X-RateLimit-Remaining` and `X-RateLimit-Reset` (GitLab: `RateLimit-…`;
    /// seconds since the epoch).
    pub remaining: Option<u64>,
    pub reset: Option<i64>,
    /// Until when (seconds since the epoch) the client is waiting, and why.
    pub waiting: Option<(i64, String)>,
}

/// A page of an API answer.
#[derive(Debug)]
pub enum Fetched {
    Page {
        body: Value,
        next: Option<String>,
        etag: Option<String>,
    },
    /// The page is as it was when its ETag was taken.
    NotModified,
}

/// Why a request failed for good.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{url} answered {status}: {message}{hint}")]
    Refused {
        url: String,
        status: u16,
        message: String,
        hint: &'static str,
    },
    #[error(
        "{url} failed {attempts} times, the last: {last}. Run the same command again to continue where it stopped"
    )]
    Unavailable {
        url: String,
        attempts: u32,
        last: String,
    },
}

/// An HTTP client for one provider's REST API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    headers: HeaderMap,
    retries: u32,
    status: Arc<Mutex<ApiStatus>>,
}

impl ApiClient {
    /// A client sending `headers` (authentication, `Accept`) with every request, retrying a
    /// failing request `retries` times.
    pub fn new(headers: HeaderMap, retries: u32) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("cdlake/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            http,
            headers,
            retries,
            status: Arc::default(),
        })
    }

    /// The client's counters, shared: read them for progress.
    pub fn status(&self) -> Arc<Mutex<ApiStatus>> {
        self.status.clone()
    }

    fn with_status<T>(&self, f: impl FnOnce(&mut ApiStatus) -> T) -> T {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s)
    }

    /// Sleep `secs`, shown as a wait for `why`.
    async fn wait(&self, secs: u64, why: &str) {
        let until = chrono::Utc::now().timestamp() + secs as i64;
        self.with_status(|s| s.waiting = Some((until, why.to_string())));
        tokio::time::sleep(Duration::from_secs(secs)).await;
        self.with_status(|s| s.waiting = None);
    }

    /// GET a JSON page; `etag` revalidates a page fetched before.
    pub async fn get(&self, url: &str, etag: Option<&str>) -> Result<Fetched, ApiError> {
        let (mut failures, mut waits) = (0u32, 0u32);
        let fail = |failures: &mut u32, last: String| {
            *failures += 1;
            if *failures > self.retries {
                Err(ApiError::Unavailable {
                    url: url.to_string(),
                    attempts: *failures,
                    last,
                })
            } else {
                Ok(())
            }
        };
        loop {
            // The primary limit is spent: wait for its reset rather than be refused.
            let reset_in = self.with_status(|s| match (s.remaining, s.reset) {
                (Some(0), Some(reset)) => Some(reset - chrono::Utc::now().timestamp()),
                _ => None,
            });
            if let Some(secs) = reset_in.filter(|s| *s > 0) {
                self.wait(secs as u64 + 1, "the API rate limit to reset")
                    .await;
                self.with_status(|s| s.remaining = None);
            }
            let mut request = self.http.get(url).headers(self.headers.clone());
            if let Some(etag) = etag {
                request = request.header(reqwest::header::IF_NONE_MATCH, etag);
            }
            self.with_status(|s| s.requests += 1);
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    fail(&mut failures, describe(&e))?;
                    self.retry_pause(failures).await;
                    continue;
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            self.note_rate_limit(&headers);
            if status == StatusCode::NOT_MODIFIED {
                self.with_status(|s| s.not_modified += 1);
                return Ok(Fetched::NotModified);
            }
            if status.is_success() {
                let parsed = match response.bytes().await {
                    Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
                        .map_err(|e| format!("the answer is not JSON ({e})")),
                    Err(e) => Err(describe(&e)),
                };
                match parsed {
                    Ok(body) => {
                        return Ok(Fetched::Page {
                            body,
                            next: next_link(&headers),
                            etag: header(&headers, "etag").map(str::to_string),
                        });
                    }
                    Err(last) => {
                        fail(&mut failures, last)?;
                        self.retry_pause(failures).await;
                        continue;
                    }
                }
            }
            let text = response.text().await.unwrap_or_default();
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| text.chars().take(300).collect());
            let retry_after = header(&headers, "retry-after").and_then(|v| v.trim().parse().ok());
            let primary = rate_header(&headers, "remaining") == Some("0");
            let limited = status == StatusCode::TOO_MANY_REQUESTS
                || (status == StatusCode::FORBIDDEN
                    && (retry_after.is_some()
                        || primary
                        || message.to_ascii_lowercase().contains("rate limit")));
            if limited {
                waits += 1;
                if waits > MAX_RATE_WAITS {
                    return Err(ApiError::Refused {
                        url: url.to_string(),
                        status: status.as_u16(),
                        message,
                        hint: " (still rate limited after 30 waits: try again later)",
                    });
                }
                self.with_status(|s| s.rate_limited += 1);
                // A secondary limit says how long in Retry-After; the primary one in its reset
                // (the wait happens at the top of the loop); without either, GitHub asks for a
                // minute.
                match (retry_after, primary) {
                    (Some(secs), _) => self.wait(secs, "a secondary rate limit").await,
                    (None, true) => {}
                    (None, false) => self.wait(60, "a secondary rate limit").await,
                }
                continue;
            }
            if status.is_server_error() {
                fail(&mut failures, format!("{status}: {message}"))?;
                self.retry_pause(failures).await;
                continue;
            }
            return Err(ApiError::Refused {
                url: url.to_string(),
                status: status.as_u16(),
                message,
                hint: match status.as_u16() {
                    401 => {
                        " (the token is missing, expired or wrong: set GITHUB_TOKEN or GITLAB_TOKEN)"
                    }
                    403 => " (the token may lack read access to this repository)",
                    404 => " (check the repository or project name, and that the token can see it)",
                    _ => "",
                },
            });
        }
    }

    async fn retry_pause(&self, failures: u32) {
        self.with_status(|s| s.retried += 1);
        tokio::time::sleep(crate::retry::backoff(failures.saturating_sub(1))).await;
    }

    fn note_rate_limit(&self, headers: &HeaderMap) {
        let remaining = rate_header(headers, "remaining").and_then(|v| v.parse().ok());
        let reset = rate_header(headers, "reset").and_then(|v| v.parse().ok());
        self.with_status(|s| {
            if remaining.is_some() {
                s.remaining = remaining;
            }
            if reset.is_some() {
                s.reset = reset;
            }
        });
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A rate-limit header: GitHub's `X-RateLimit-<what>`, or GitLab's `RateLimit-<what>`.
fn rate_header<'a>(headers: &'a HeaderMap, what: &str) -> Option<&'a str> {
    header(headers, &format!("x-ratelimit-{what}"))
        .or_else(|| header(headers, &format!("ratelimit-{what}")))
}

/// A request error as one line, with its cause (a reset connection, a timeout).
fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The `rel="next"` URL of a `Link` header (RFC 8288), as GitHub and GitLab paginate.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|link| {
            let (target, params) = link.trim().split_once(';')?;
            let next = params.split(';').any(|p| {
                let p = p.trim();
                p == "rel=\"next\"" || p == "rel=next"
            });
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            next.then(|| target.to_string())
        })
}

/// A header map of `(name, value)` pairs; a value that is not a valid header is refused.
pub fn headers(pairs: &[(&str, &str)]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        let mut value = HeaderValue::from_str(value)
            .map_err(|_| format!("the {name} header has characters a header cannot carry"))?;
        value.set_sensitive(
            name == reqwest::header::AUTHORIZATION || name.as_str() == "private-token",
        );
        map.insert(name, value);
    }
    Ok(map)
}

/// Where a backfill of one repository stands.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Cursor {
    /// The `--since` of the backfill the positions belong to.
    pub since: String,
    /// Per kind of object (`pulls`, `runs`, …).
    pub kinds: BTreeMap<String, KindCursor>,
    /// Per page URL fetched and committed: its ETag and what follows it.
    pub pages: BTreeMap<String, PageMemo>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KindCursor {
    /// The next page to fetch; `None` with `done` false: the first.
    pub next: Option<String>,
    pub done: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PageMemo {
    pub etag: String,
    pub next: Option<String>,
    /// The page held the oldest facts wanted: no page after it is read.
    pub last: bool,
}

impl Cursor {
    /// The cursor at `path` in the store, for a backfill since `since`: a finished backfill, or
    /// one with another `since`, starts over (keeping the ETags, so unchanged pages cost no rate
    /// limit).
    pub async fn load(store: &Store, path: &str, since: &str) -> Result<Self, StoreError> {
        let mut cursor: Cursor = match store.get(path).await? {
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            None => Cursor::default(),
        };
        let finished = !cursor.kinds.is_empty() && cursor.kinds.values().all(|k| k.done);
        if cursor.since != since || finished {
            cursor.since = since.to_string();
            cursor.kinds.clear();
        }
        Ok(cursor)
    }

    pub async fn save(&self, store: &Store, path: &str) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(self).expect("a cursor is plain data");
        store.put(path, json).await
    }
}

/// What to pull.
#[derive(Debug, Clone)]
pub struct Options {
    /// The REST root, e.g. `https://api.github.com`, `https://ghe.example.com/api/v3` or
    /// `https://gitlab.example.com/api/v4`.
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

/// Counts per kind, shared with a progress display.
pub type SharedCounts = Arc<Mutex<BTreeMap<String, KindCounts>>>;

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

/// A delivery the provider would have sent: its event name and body.
pub type Delivery = (&'static str, Value);

/// One repository's or project's history in a provider's API: how each kind of object is
/// listed, and which deliveries each object was.
#[allow(
    async_fn_in_trait,
    reason = "used with concrete types, whose futures are Send where they are spawned"
)]
pub trait History {
    /// The `origin` of the rows (and of dead letters).
    const ORIGIN: Origin;
    /// The kinds of object, in the order they are pulled.
    const KINDS: &'static [&'static str];
    /// Fetch what every delivery carries (the repository, the project); called first.
    async fn prepare(&mut self, client: &ApiClient) -> Result<(), BackfillError>;
    /// The first page of `kind`.
    fn first_page(&self, kind: &str, since: i64) -> String;
    /// The objects in a page of `kind`.
    fn page_items<'v>(&self, kind: &str, body: &'v Value) -> Option<&'v Vec<Value>>;
    /// Whether a list sorted newest first has reached objects older than `since`.
    fn older_than_since(&self, kind: &str, item: &Value, since: i64) -> bool;
    /// The deliveries the provider sent for `item` as it happened.
    async fn deliveries(
        &self,
        client: &ApiClient,
        kind: &str,
        item: &Value,
        out: &mut Vec<Delivery>,
    ) -> Result<(), BackfillError>;
    /// Whether a row of `event` older than `--since` is written anyway: the push that carries
    /// a change's commits (its first commit may be older).
    fn kept_before_since(&self, event: &str) -> bool {
        event == "push"
    }
}

/// One repository's (or project's) backfill: every kind of its [`History`], continuing from
/// the cursor at `cursor_path` in the store.
pub struct Backfill<'a, H> {
    pub client: &'a ApiClient,
    pub ingester: &'a mut Ingester,
    pub store: &'a Store,
    pub options: &'a Options,
    pub history: H,
    pub cursor_path: String,
    pub counts: SharedCounts,
}

impl<H: History> Backfill<'_, H> {
    fn count(&self, kind: &str, f: impl FnOnce(&mut KindCounts)) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        f(counts.entry(kind.to_string()).or_default());
    }

    /// Pull every kind, continuing from the cursor in the store.
    pub async fn run(&mut self) -> Result<(), BackfillError> {
        let store_err = |e: StoreError| BackfillError::Store(e.to_string());
        let since = rfc3339(self.options.since);
        let mut cursor = Cursor::load(self.store, &self.cursor_path, &since)
            .await
            .map_err(store_err)?;
        self.history.prepare(self.client).await?;
        for kind in H::KINDS {
            let state = cursor.kinds.entry(kind.to_string()).or_default().clone();
            if state.done {
                continue;
            }
            let mut next = Some(
                state
                    .next
                    .unwrap_or_else(|| self.history.first_page(kind, self.options.since)),
            );
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
                        let items = self.history.page_items(kind, &body).ok_or_else(|| {
                            BackfillError::Invalid(format!(
                                "{url} did not answer with a list of {kind}"
                            ))
                        })?;
                        let mut deliveries = Vec::new();
                        let mut last = false;
                        for item in items {
                            if self
                                .history
                                .older_than_since(kind, item, self.options.since)
                            {
                                last = true;
                                continue;
                            }
                            self.history
                                .deliveries(self.client, kind, item, &mut deliveries)
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
                    .save(self.store, &self.cursor_path)
                    .await
                    .map_err(store_err)?;
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
        deliveries: Vec<Delivery>,
    ) -> Result<(), BackfillError> {
        let store_err = |e: crate::Error| BackfillError::Store(e.to_string());
        for (event, body) in deliveries {
            let now = now_micros();
            let raw = body.to_string();
            // Through the webhook normaliser, as a delivery received now (its time checked).
            // A delivery that names no fact keeps this id: one per body, so two such
            // deliveries are two rows, and the same one pulled again is one.
            let delivery = format!(
                "backfill:{}",
                hex::encode(&Sha256::digest(raw.as_bytes())[..16])
            );
            let envelope =
                Envelope::webhook(H::ORIGIN, event, &delivery, "backfill", raw.clone().into());
            let normalised = normalise(&envelope, now);
            match normalised {
                Ok(Normalised::Event(e))
                    if e.time < self.options.since && !self.history.kept_before_since(event) =>
                {
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
                        origin: H::ORIGIN.as_str().to_string(),
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

/// Every page of a list (for the objects under one object: a pull request's commits, a
/// pipeline's jobs), each page's items (`items` picks them from the page).
pub async fn all_pages(
    client: &ApiClient,
    first: String,
    items: impl Fn(&Value) -> Option<&Vec<Value>>,
) -> Result<Vec<Value>, BackfillError> {
    let mut out = Vec::new();
    let mut next = Some(first);
    while let Some(url) = next.take() {
        let Fetched::Page { body, next: n, .. } = client.get(&url, None).await? else {
            break;
        };
        next = n;
        out.extend(items(&body).into_iter().flatten().cloned());
    }
    Ok(out)
}

/// Whether `p` is one part of a repository or project path (`OWNER`, `NAME`, a group): letters,
/// digits, `-`, `_` and `.`, and not `.` or `..`.
pub fn path_part_ok(p: &str) -> bool {
    !p.is_empty()
        && p != "."
        && p != ".."
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// µs since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            reqwest::header::LINK,
            HeaderValue::from_static(
                "<https://api.github.com/repositories/1/pulls?page=1>; rel=\"prev\", <https://api.github.com/repositories/1/pulls?page=3>; rel=\"next\", <https://api.github.com/repositories/1/pulls?page=9>; rel=\"last\"",
            ),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.github.com/repositories/1/pulls?page=3")
        );
        h.insert(
            reqwest::header::LINK,
            HeaderValue::from_static("<https://x/a?page=1>; rel=\"first\""),
        );
        assert_eq!(next_link(&h), None);
        assert_eq!(next_link(&HeaderMap::new()), None);
    }
}
