//! The Labellerr platform API client: auth headers, a request tracking id on every call,
//! timeouts, and errors that separate a rejection (4xx, with the API's message) from an
//! internal error (5xx, with the tracking id users quote to support).
//!
//! Every request is shaped as Labellerr's own Python SDK sends it (the table in this
//! module's tests holds each one: method, path, query, headers, body), and every answer is
//! read as the SDK reads it: a `200` whose `response` is null is "not found" for an id,
//! error text may be in `message`, in `error` or in both, and the server's `tracking_id`
//! is kept beside the request's `uuid` for support.
//!
//! Retries depend on what a repeat could do. Reads, tests and deletes are repeated on a
//! 429, a 5xx, a timeout or a lost connection. A create (a connection, an export) is
//! repeated only where the platform provably did not act: the connection was never made,
//! or it answered 429. After a timeout, a connection lost once the request was sent, or a
//! 5xx (the platform may fail after acting), the outcome is `Unknown` and the caller
//! decides: a registration is looked up by its name, an export waits for a person.

mod connections;
mod datasets;
mod exports;
mod projects;
pub use connections::{ConnectionForm, Registered};
pub use datasets::{DatasetInfo, DatasetRequest};
pub use exports::{ExportRequest, ExportState};
pub use projects::{ProjectInfo, ProjectRequest, TemplateInfo, TemplateQuestion};

#[cfg(test)]
mod requests;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::Value;

use crate::s3::client::Keys;
use crate::s3::uri::Location;

/// The most of an answer the client reads (the platform's answers are a few kilobytes).
const MAX_BODY: usize = 4 << 20;

pub const DEFAULT_URL: &str = "https://api.labellerr.com";
/// The labelling UI's origin, which every call carries like the SDK's (the platform
/// stores it on the datasets and projects it makes).
const ORIGIN: &str = "https://pro.labellerr.com";
const ATTEMPTS: u32 = 3;
/// A bound on the pages of one list, so that a platform that always says "more" cannot
/// keep the operator reading.
const MAX_PAGES: usize = 1000;

/// The form of a folder in a dataset's and a sync's `path`: `s3://bucket/prefix/`. The
/// dataset guide says "relative to the bucket", but its troubleshooting, the S3 guide and
/// the SDK's test against a real bucket all use this form, the only one real use backs.
/// Decided here, once, for every call that names a folder to read files from.
pub fn folder_path(location: &Location) -> String {
    format!("s3://{}/{}", location.bucket, location.prefix)
}

/// The ids a support ticket needs: the `uuid` this client sent with the request, and the
/// platform's own `tracking_id` from its answer, where it gave one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    pub request: String,
    pub server: Option<String>,
}

impl Trace {
    /// The tracking ids to show for a call whose answer was lost: the recorded one (the
    /// intent's), and the platform's own where its answer gave one.
    pub fn or_recorded(&self, recorded: String) -> String {
        if self.request.is_empty() { recorded } else { self.to_string() }
    }
}

impl std::fmt::Display for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.server {
            Some(server) => write!(f, "{}, server tracking id {server}", self.request),
            None => f.write_str(&self.request),
        }
    }
}

impl From<String> for Trace {
    fn from(request: String) -> Self {
        Trace { request, server: None }
    }
}

impl From<&str> for Trace {
    fn from(request: &str) -> Self {
        Trace { request: request.to_owned(), server: None }
    }
}

/// How long the client waits for an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Reads, tests, deletes.
    pub call: Duration,
    /// Creates: the platform may be slow to accept, and giving up early only turns a
    /// success into an unknown outcome.
    pub create: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { call: Duration::from_secs(30), create: Duration::from_secs(120) }
    }
}

/// API credentials read from a Secret. `Debug` never prints them.
#[derive(Clone)]
pub struct Credentials {
    pub api_key: String,
    pub api_secret: String,
    pub client_id: String,
    /// The namespace whose objects the calls are for: its budget of platform calls pays.
    pub namespace: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials(client_id: {}, ** redacted **)", self.client_id)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    /// A 4xx, or a 2xx whose body says it failed: the request was understood and refused.
    #[error("the platform refused the request (HTTP {status}): {message} (tracking id {tracking_id})")]
    Rejected { status: u16, message: String, tracking_id: Trace },
    /// A 5xx or 429 after retries.
    #[error("the platform had an internal error (HTTP {status}); quote tracking id {tracking_id} to Labellerr support")]
    Internal { status: u16, tracking_id: Trace },
    #[error("could not reach the platform ({detail}); tracking id {tracking_id}")]
    Unreachable { detail: String, tracking_id: Trace },
    #[error("the platform answered unexpectedly ({detail}); tracking id {tracking_id}")]
    Invalid { detail: String, tracking_id: Trace },
    /// A create whose request reached the platform but whose answer did not say what
    /// happened (a timeout, a lost connection, a 5xx): it may or may not have acted.
    #[error("the platform may or may not have done it ({detail}); tracking id {tracking_id}")]
    Unknown { detail: String, tracking_id: Trace },
    /// A list read to prove that something is absent did not reach its end: absence is not
    /// proven, so nothing may be created on the strength of it.
    #[error("the platform's list could not be read to its end ({detail}); tracking id {tracking_id}")]
    Incomplete { detail: String, tracking_id: Trace },
    /// The platform's "No files found with the given status": the export was refused and
    /// nothing was created.
    #[error("the platform found no files in the requested statuses: {message}")]
    NoFilesWithStatus { message: String },
}

impl PlatformError {
    /// Failures worth retrying by themselves.
    pub fn is_transient(&self) -> bool {
        !matches!(self, PlatformError::Rejected { .. } | PlatformError::NoFilesWithStatus { .. })
    }

    /// The tracking ids of the call, where there were some to quote.
    pub fn tracking_id(&self) -> Option<&Trace> {
        match self {
            PlatformError::Rejected { tracking_id, .. }
            | PlatformError::Internal { tracking_id, .. }
            | PlatformError::Unreachable { tracking_id, .. }
            | PlatformError::Invalid { tracking_id, .. }
            | PlatformError::Unknown { tracking_id, .. }
            | PlatformError::Incomplete { tracking_id, .. } => Some(tracking_id),
            PlatformError::NoFilesWithStatus { .. } => None,
        }
    }
}

/// Whether a call may be repeated when its outcome is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    /// Reading, testing or deleting: doing it twice is doing it once.
    Idempotent,
    /// Creating: doing it twice makes two.
    Create,
}

#[derive(Clone)]
pub struct Client {
    base: String,
    http: crate::net::Https,
    timeouts: Timeouts,
    /// Calls one namespace may make a minute (a burst of as many after a quiet minute);
    /// None: unbounded (`s3connect check`, tests of the client).
    budget: Option<std::sync::Arc<crate::timing::Budget>>,
}

enum Body {
    Json(Value),
    Form(Vec<(&'static str, String)>),
    Empty,
}

impl Client {
    /// A client for `base_url`, trusting the system's CA certificates.
    pub fn new(base_url: &str) -> Result<Self, String> {
        Self::with_timeouts(base_url, Timeouts::default())
    }

    /// Like `new`, with other timeouts.
    pub fn with_timeouts(base_url: &str, timeouts: Timeouts) -> Result<Self, String> {
        // The system's roots plus the extra CA bundle, if any; the environment's proxy.
        let roots = crate::net::roots()?;
        if roots.is_empty() {
            return Err(
                "no CA certificates to trust for the platform API: mount the system's CA bundle, or give --ca-bundle"
                    .into(),
            );
        }
        let http = crate::net::https_client(roots, Duration::from_secs(10), Duration::from_secs(20))?;
        Ok(Client { base: base_url.trim_end_matches('/').to_owned(), http, timeouts, budget: None })
    }

    /// Bounds the calls one namespace makes to `per_minute` (a burst of as many after a
    /// quiet minute); the rest wait their turn.
    pub fn with_namespace_budget(mut self, per_minute: u32) -> Self {
        self.budget = Some(std::sync::Arc::new(crate::timing::Budget::new(per_minute, Duration::ZERO)));
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The `response` of a GET of one object by id, or None when the platform does not know
    /// the id: a 404, or (as the SDK reads it) a 2xx whose `response` is null.
    async fn get_by_id(&self, creds: &Credentials, req: Call<'_>) -> Result<Option<Value>, PlatformError> {
        match self.call(creds, req.gone_if_null(), Body::Empty, None).await {
            Ok((mut value, _)) => Ok(match value["response"].take() {
                Value::Null => None,
                r => Some(r),
            }),
            Err(PlatformError::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every item of a list, page after page until the platform says there are no more.
    /// A page is `response` as a list, or an object with the items under `list.items`;
    /// `has_more` (in `response` or beside it) and the cursor `list.cursor` lead to the next
    /// page. A list that says more follow but gives no new cursor, or that does not end
    /// within `MAX_PAGES`, is `Incomplete`: absence is then not proven.
    async fn list_all(
        &self,
        creds: &Credentials,
        list: &List,
        query: &[(&str, &str)],
        email_id: bool,
    ) -> Result<Vec<Value>, PlatformError> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        let mut trace = Trace::default();
        for _ in 0..MAX_PAGES {
            let mut q: Vec<(&str, &str)> = query.to_vec();
            if let Some(a) = &after {
                q.push((list.cursor, a.as_str()));
            }
            let mut call = Call::new("GET", list.path).query(&q);
            if email_id {
                call = call.email_id();
            }
            let (value, t) = self.call(creds, call, Body::Empty, None).await?;
            trace = t;
            let page = &value["response"];
            let (items, meta) = match page {
                Value::Array(items) => (items, &value),
                Value::Object(_) => match page[list.items].as_array() {
                    Some(items) => (items, page),
                    None => {
                        return Err(PlatformError::Invalid {
                            detail: format!("no response.{} in the answer", list.items),
                            tracking_id: trace,
                        });
                    }
                },
                _ => {
                    return Err(PlatformError::Invalid { detail: "no list in the answer".into(), tracking_id: trace });
                }
            };
            all.extend(items.iter().cloned());
            if meta["has_more"].as_bool() != Some(true) {
                return Ok(all);
            }
            match meta[list.cursor].as_str() {
                Some(next) if after.as_deref() != Some(next) => after = Some(next.to_owned()),
                _ => {
                    return Err(PlatformError::Incomplete {
                        detail: format!("{} said more items follow but gave no new {}", list.path, list.cursor),
                        tracking_id: trace,
                    });
                }
            }
        }
        Err(PlatformError::Incomplete {
            detail: format!("{} did not end within {MAX_PAGES} pages", list.path),
            tracking_id: trace,
        })
    }

    /// One API call, repeated as its effect allows. Returns the body (the whole JSON, so
    /// callers can read `response` or `status`) and the call's tracking ids.
    async fn call(
        &self,
        creds: &Credentials,
        req: Call<'_>,
        body: Body,
        s3_keys: Option<&Keys>,
    ) -> Result<(Value, Trace), PlatformError> {
        // One namespace's burst (a loop over its objects, a tenant's script) waits here for
        // its own budget; the platform's rate limits are shared by every team. A create is
        // counted but never waits: its intent is already in the status, and a wait between
        // the two would widen the window in which a restart leaves it unconfirmed (creates
        // are once per object, so they cannot loop).
        if let Some(budget) = &self.budget {
            let mut spaced = false;
            while let Some(wait) = budget.take_one(&creds.namespace) {
                if req.effect == Effect::Create {
                    break;
                }
                if !spaced {
                    crate::telemetry::metrics::METRICS.platform_request(metric_path(req.path), "spaced");
                    spaced = true;
                }
                tokio::time::sleep(wait).await;
            }
        }
        let result = self.call_once(creds, &req, body, s3_keys).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(PlatformError::Rejected { .. } | PlatformError::NoFilesWithStatus { .. }) => "rejected",
            Err(PlatformError::Internal { .. }) => "internal_error",
            Err(PlatformError::Unreachable { .. }) => "unreachable",
            Err(PlatformError::Invalid { .. } | PlatformError::Incomplete { .. }) => "invalid",
            Err(PlatformError::Unknown { .. }) => "unknown",
        };
        crate::telemetry::metrics::METRICS.platform_request(metric_path(req.path), outcome);
        result
    }

    /// The request as the SDK would send it: its headers on every call (`origin` included),
    /// `email_id` where the SDK adds it, the tracking id and the client id in the query.
    fn request(
        &self,
        creds: &Credentials,
        req: &Call<'_>,
        tracking_id: &str,
        content_type: &str,
        bytes: Bytes,
    ) -> Result<http::Request<Full<Bytes>>, http::Error> {
        let mut url = format!("{}{}?client_id={}&uuid={tracking_id}", self.base, req.path, encode(&creds.client_id));
        for (k, v) in req.query {
            url.push_str(&format!("&{k}={}", encode(v)));
        }
        let mut request = http::Request::builder()
            .method(req.method)
            .uri(&url)
            .header("api_key", &creds.api_key)
            .header("api_secret", &creds.api_secret)
            .header("client_id", &creds.client_id)
            .header("source", "s3connect")
            .header("origin", ORIGIN);
        if req.email_id {
            request = request.header("email_id", &creds.api_key);
        }
        request.header("content-type", content_type).body(Full::new(bytes))
    }

    async fn call_once(
        &self,
        creds: &Credentials,
        req: &Call<'_>,
        body: Body,
        s3_keys: Option<&Keys>,
    ) -> Result<(Value, Trace), PlatformError> {
        let tracking_id = req.tracking_id.map_or_else(uuid4, str::to_owned);
        let (content_type, bytes) = match &body {
            Body::Json(v) => ("application/json".to_owned(), Bytes::from(v.to_string())),
            Body::Form(fields) => multipart(fields),
            Body::Empty => ("application/json".to_owned(), Bytes::new()),
        };
        let redact = |text: &str| {
            let mut out = text.replace(&creds.api_key, "[redacted]").replace(&creds.api_secret, "[redacted]");
            if let Some(keys) = s3_keys {
                out = keys.redact(&out);
            }
            out
        };
        let create = req.effect == Effect::Create;
        let timeout = if create { self.timeouts.create } else { self.timeouts.call };
        let ours = || Trace::from(tracking_id.clone());
        let unknown = |detail: String, tracking_id: Trace| PlatformError::Unknown { detail, tracking_id };
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let request = self.request(creds, req, &tracking_id, &content_type, bytes.clone()).map_err(|e| {
                PlatformError::Invalid { detail: format!("request not built: {e}"), tracking_id: ours() }
            })?;
            let response = match tokio::time::timeout(timeout, self.http.request(request)).await {
                Err(_) if create => return Err(unknown(format!("no answer within {} s", timeout.as_secs()), ours())),
                Err(_) => {
                    last = Some(PlatformError::Unreachable { detail: "timed out".into(), tracking_id: ours() });
                    continue;
                }
                Ok(Err(e)) => {
                    let detail =
                        redact(&std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string()));
                    // A connection that was never made carried no request: safe to repeat.
                    if create && !e.is_connect() {
                        return Err(unknown(format!("the connection was lost after sending: {detail}"), ours()));
                    }
                    last = Some(PlatformError::Unreachable { detail, tracking_id: ours() });
                    continue;
                }
                Ok(Ok(r)) => r,
            };
            let status = response.status().as_u16();
            // Bounded: the platform's answers are small, and a broken proxy in front of it
            // must not take the operator's memory.
            let body = match tokio::time::timeout(timeout, Limited::new(response.into_body(), MAX_BODY).collect()).await
            {
                Ok(Ok(b)) => b.to_bytes(),
                _ if create && (200..300).contains(&status) => {
                    return Err(unknown("the answer was cut off".into(), ours()));
                }
                _ => {
                    last = Some(PlatformError::Unreachable {
                        detail: "the answer was cut off".into(),
                        tracking_id: ours(),
                    });
                    continue;
                }
            };
            let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let trace = Trace {
                request: tracking_id.clone(),
                server: value.get("tracking_id").and_then(Value::as_str).map(redact),
            };
            match status {
                200..=299 => {
                    // A null `response` for an id is "not found", which the caller reads.
                    let gone = req.gone_if_null && value["response"].is_null();
                    let Some(text) = body_error(&value).filter(|_| !gone) else { return Ok((value, trace)) };
                    let message = redact(&text);
                    return Err(if is_no_files(&message) {
                        PlatformError::NoFilesWithStatus { message }
                    } else if create {
                        // Said to have failed, yet answered as a success: it may have acted.
                        unknown(format!("HTTP {status} with the error {message:?}"), trace)
                    } else {
                        PlatformError::Rejected { status, message, tracking_id: trace }
                    });
                }
                // Refused before doing anything: safe to repeat, even a create.
                429 => last = Some(PlatformError::Internal { status, tracking_id: trace }),
                // The platform may fail after acting: a create's outcome is unknown.
                500..=599 if create => return Err(unknown(format!("HTTP {status}"), trace)),
                500..=599 => last = Some(PlatformError::Internal { status, tracking_id: trace }),
                _ => {
                    let message = redact(&api_message(&value, &body));
                    // The one documented refusal with a remedy of its own, in whichever
                    // field it arrives.
                    if is_no_files(&message) {
                        return Err(PlatformError::NoFilesWithStatus { message });
                    }
                    return Err(PlatformError::Rejected { status, message, tracking_id: trace });
                }
            }
        }
        Err(last.unwrap_or_else(|| unknown("no attempt was made".into(), ours())))
    }
}

/// A list endpoint: where its items are when `response` is an object, and the query
/// parameter (and answer field) that names the last item of a page.
struct List {
    path: &'static str,
    items: &'static str,
    cursor: &'static str,
}

/// One call: what it does to the platform decides whether it may be repeated.
struct Call<'a> {
    method: &'static str,
    path: &'a str,
    query: &'a [(&'a str, &'a str)],
    effect: Effect,
    /// A tracking id the caller chose (and recorded) before the call; else a new one.
    tracking_id: Option<&'a str>,
    /// The SDK's `email_id` header (the api key): connection calls, project delete and
    /// archive.
    email_id: bool,
    /// A GET of one object by id: a null `response` is "not found", not a failure.
    gone_if_null: bool,
}

impl<'a> Call<'a> {
    fn new(method: &'static str, path: &'a str) -> Self {
        Call {
            method,
            path,
            query: &[],
            effect: Effect::Idempotent,
            tracking_id: None,
            email_id: false,
            gone_if_null: false,
        }
    }

    fn query(self, query: &'a [(&'a str, &'a str)]) -> Self {
        Call { query, ..self }
    }

    /// A create, sent with `tracking_id` when the caller recorded one beforehand.
    fn create(self, tracking_id: Option<&'a str>) -> Self {
        Call { effect: Effect::Create, tracking_id, ..self }
    }

    fn email_id(self) -> Self {
        Call { email_id: true, ..self }
    }

    fn gone_if_null(self) -> Self {
        Call { gone_if_null: true, ..self }
    }
}

/// The metric label for a path: ids in paths would make a series per connection.
fn metric_path(path: &str) -> &'static str {
    match path {
        "/connectors/connections/test" => "/connectors/connections/test",
        "/connectors/connections/create" => "/connectors/connections/create",
        "/connectors/connections/delete" => "/connectors/connections/delete",
        "/connectors/connections/list" => "/connectors/connections/list",
        "/sdk/export/files" => "/sdk/export/files",
        "/exports/status" => "/exports/status",
        "/datasets/create" => "/datasets/create",
        "/datasets/list" => "/datasets/list",
        "/connectors/datasets/sync" => "/connectors/datasets/sync",
        "/annotations/create_template" => "/annotations/create_template",
        "/annotations/list_questions_templates" => "/annotations/list_questions_templates",
        "/projects/create" => "/projects/create",
        "/project_drafts/projects/detailed_list" => "/project_drafts/projects/detailed_list",
        "/projects/archive" => "/projects/archive",
        "/annotations/get_template" => "/annotations/get_template",
        "/projects/rotations/add" => "/projects/rotations/add",
        "/actions/jobs/add_datasets_to_project" => "/actions/jobs/add_datasets_to_project",
        "/actions/jobs/delete_datasets_from_project" => "/actions/jobs/delete_datasets_from_project",
        p if p.starts_with("/projects/project/") => "/projects/project/{id}",
        p if p.ends_with("/details") => "/connectors/connections/{id}/details",
        p if p.starts_with("/datasets/") && p.ends_with("/delete") => "/datasets/{id}/delete",
        p if p.starts_with("/datasets/") => "/datasets/{id}",
        _ => "other",
    }
}

fn unknown_if_invalid(e: PlatformError) -> PlatformError {
    match e {
        PlatformError::Invalid { detail, tracking_id } => PlatformError::Unknown { detail, tracking_id },
        other => other,
    }
}

fn string_field(value: &Value, field: &str, trace: &Trace) -> Result<String, PlatformError> {
    value["response"][field].as_str().map(str::to_owned).ok_or_else(|| PlatformError::Invalid {
        detail: format!("no response.{field} in the answer"),
        tracking_id: trace.clone(),
    })
}

/// The text of one of the API's error fields: a string, or an object's `message`.
fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        v @ Value::Object(_) => v.get("message").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// The API's error text: `message` and `error` both (they may say different things), else
/// the body.
fn api_message(value: &Value, body: &[u8]) -> String {
    match (text_of(value.get("message")), text_of(value.get("error"))) {
        (Some(m), Some(e)) if m == e || m.contains(&e) => m,
        (Some(m), Some(e)) if e.contains(&m) => e,
        (Some(m), Some(e)) => format!("{m}: {e}"),
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
    }
}

/// The failure a `2xx` answer carries in its body, if any: a non-empty `error` (a success
/// has `"error": null` and `"message": "200: Success"`).
fn body_error(value: &Value) -> Option<String> {
    text_of(value.get("error")).map(|_| api_message(value, b""))
}

/// The platform's "No files found with the given status", in whichever field it came.
fn is_no_files(text: &str) -> bool {
    text.to_ascii_lowercase().contains("no files found")
}

/// What marks a platform object as made for one Kubernetes object: its uid, in a field the
/// platform keeps (a dataset's description, a template's name). A name another namespace
/// can choose is never enough to adopt or delete anything.
pub fn identity(uid: &str) -> String {
    format!("[s3connect uid={uid}]")
}

/// The uid in a platform object's identity mark, if it carries one.
pub fn identity_in(text: &str) -> Option<&str> {
    let start = text.find("[s3connect uid=")? + "[s3connect uid=".len();
    let rest = &text[start..];
    let uid = &rest[..rest.find(']')?];
    (!uid.is_empty()).then_some(uid)
}

/// A random (version 4) UUID.
pub fn uuid4() -> String {
    let mut b = fastrand::u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn multipart(fields: &[(&'static str, String)]) -> (String, Bytes) {
    let boundary = format!("s3connect-{:032x}", fastrand::u128(..));
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (format!("multipart/form-data; boundary={boundary}"), Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::connections::test_failure;
    use super::*;

    #[test]
    fn an_identity_mark_reads_back_as_its_uid() {
        let mark = identity("0b7c-11");
        assert_eq!(identity_in(&format!("cats {mark}")), Some("0b7c-11"));
        assert_eq!(identity_in("made in the UI"), None);
        assert_eq!(identity_in("[s3connect uid=]"), None);
        assert_eq!(identity_in("[s3connect uid=unterminated"), None);
    }

    #[test]
    fn uuids_are_version_4() {
        let id = uuid4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(uuid4(), uuid4());
    }

    #[test]
    fn the_api_message_comes_from_either_shape() {
        assert_eq!(api_message(&json!({"message": "bad statuses"}), b""), "bad statuses");
        assert_eq!(
            api_message(&json!({"error": "No files found with the given status"}), b""),
            "No files found with the given status"
        );
        assert_eq!(api_message(&json!({"error": {"message": "nested"}}), b""), "nested");
        assert_eq!(api_message(&Value::Null, b"plain text"), "plain text");
        // Both fields, saying different things: both are kept.
        let both = json!({"message": "400: Bad Request", "error": "No files found with the given status"});
        assert_eq!(api_message(&both, b""), "400: Bad Request: No files found with the given status");
        assert!(is_no_files(&api_message(&both, b"")));
    }

    #[test]
    fn a_success_body_is_no_failure_and_an_error_in_a_2xx_body_is() {
        let ok = json!({"message": "200: Success", "response": {"id": "1"}, "error": null, "tracking_id": "ab"});
        assert_eq!(body_error(&ok), None);
        let failed = json!({"message": "200: Success", "response": null, "error": "path not readable"});
        assert_eq!(body_error(&failed).as_deref(), Some("200: Success: path not readable"));
        assert_eq!(test_failure(&json!({"response": {"message": "Connection successful"}})), None);
        assert!(test_failure(&json!({"response": null, "message": "done"})).is_some());
        let said = json!({"response": {"status": "failed", "message": "AccessDenied on ListBucket"}});
        assert_eq!(test_failure(&said).as_deref(), Some("AccessDenied on ListBucket"));
        assert!(test_failure(&json!({"response": {"success": false}})).is_some());
    }

    #[test]
    fn folders_are_named_as_real_use_backs() {
        let l = Location::parse("bucket-1/images/cats").unwrap();
        assert_eq!(folder_path(&l), "s3://bucket-1/images/cats/");
        assert_eq!(folder_path(&Location::parse("bucket-1").unwrap()), "s3://bucket-1/");
    }

    #[test]
    fn tracking_ids_show_the_servers_beside_the_requests() {
        let t = Trace { request: "u-1".into(), server: Some("f00d".into()) };
        let e = PlatformError::Rejected { status: 400, message: "bad".into(), tracking_id: t };
        assert!(e.to_string().contains("u-1, server tracking id f00d"), "{e}");
    }

    #[test]
    fn multipart_bodies_carry_every_field() {
        let (ct, body) = multipart(&[("connector", "s3".into()), ("path", "b/p/".into())]);
        let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains("name=\"connector\"\r\n\r\ns3\r\n"));
        assert!(body.contains("name=\"path\"\r\n\r\nb/p/\r\n"));
        assert!(body.ends_with(&format!("--{boundary}--\r\n")));
    }

    #[test]
    fn credentials_never_debug_print() {
        let c = Credentials {
            api_key: "key-123".into(),
            api_secret: "secret-456".into(),
            client_id: "42".into(),
            namespace: "team".into(),
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("key-123") && !shown.contains("secret-456"));
        assert!(PlatformError::Internal { status: 500, tracking_id: "t-1".into() }.to_string().contains("t-1"));
    }
}
