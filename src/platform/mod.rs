//! The Labellerr platform API client: auth headers, a request tracking id on every call,
//! timeouts, and errors that separate a rejection (4xx, with the API's message) from an
//! internal error (5xx, with the tracking id users quote to support).
//!
//! Retries depend on what a repeat could do. Reads, tests and deletes are repeated on a
//! 429, a 5xx, a timeout or a lost connection. A create (a connection, an export) is
//! repeated only where the platform provably did not act: the connection was never made,
//! or it answered 429. After a timeout, a connection lost once the request was sent, or a
//! 5xx (the platform may fail after acting), the outcome is `Unknown` and the caller
//! decides: a registration is looked up by its name, an export waits for a person.

mod projects;
pub use projects::{ProjectInfo, ProjectRequest, TemplateInfo, TemplateQuestion};

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};

use crate::s3::client::Keys;

/// The most of an answer the client reads (the platform's answers are a few kilobytes).
const MAX_BODY: usize = 4 << 20;

pub const DEFAULT_URL: &str = "https://api.labellerr.com";
/// The labelling UI's origin, which the connection calls carry like the SDK's.
const ORIGIN: &str = "https://pro.labellerr.com";
const ATTEMPTS: u32 = 3;

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
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials(client_id: {}, ** redacted **)", self.client_id)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    /// A 4xx: the request was understood and refused.
    #[error("the platform refused the request (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    /// A 5xx or 429 after retries.
    #[error("the platform had an internal error (HTTP {status}); quote tracking id {tracking_id} to Labellerr support")]
    Internal { status: u16, tracking_id: String },
    #[error("could not reach the platform ({detail}); tracking id {tracking_id}")]
    Unreachable { detail: String, tracking_id: String },
    #[error("the platform answered unexpectedly ({detail}); tracking id {tracking_id}")]
    Invalid { detail: String, tracking_id: String },
    /// A create whose request reached the platform but whose answer did not say what
    /// happened (a timeout, a lost connection, a 5xx): it may or may not have acted.
    #[error("the platform may or may not have done it ({detail}); tracking id {tracking_id}")]
    Unknown { detail: String, tracking_id: String },
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

    /// The tracking id of the call, where there was one to quote.
    pub fn tracking_id(&self) -> Option<&str> {
        match self {
            PlatformError::Internal { tracking_id, .. }
            | PlatformError::Unreachable { tracking_id, .. }
            | PlatformError::Invalid { tracking_id, .. }
            | PlatformError::Unknown { tracking_id, .. } => Some(tracking_id),
            PlatformError::Rejected { .. } | PlatformError::NoFilesWithStatus { .. } => None,
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

/// A connection registered on the platform, as its list and details show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    pub id: String,
    pub name: String,
}

/// What the platform needs to test or create an S3 connection.
pub struct ConnectionForm<'a> {
    pub keys: &'a Keys,
    /// `bucket/prefix/`
    pub path: String,
    /// `import` or `export`
    pub connection_type: &'a str,
    pub data_type: &'a str,
}

pub struct ExportRequest<'a> {
    pub name: &'a str,
    /// Only the files updated after this time (Unix milliseconds): an incremental run.
    pub updated_after: Option<i64>,
    pub description: &'a str,
    pub format: &'a str,
    pub statuses: Vec<&'a str>,
    pub connection_id: &'a str,
    /// `bucket/path/to/folder/`
    pub folder_path: String,
}

/// What a dataset is made from.
pub struct DatasetRequest<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub data_type: &'a str,
    /// An import connection's id.
    pub connection_id: &'a str,
    /// `bucket/prefix/folder/`
    pub path: String,
    pub multimodal_indexing: bool,
}

/// A dataset as the platform shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetInfo {
    pub name: String,
    pub description: String,
    /// image, video, audio, document or text.
    pub data_type: String,
    pub files_count: i64,
    /// 300: processed; 400 and above: failed; anything else: processing.
    pub status_code: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExportState {
    Running(String),
    Succeeded,
    Failed(String),
}

#[derive(Clone)]
pub struct Client {
    base: String,
    http: crate::net::Https,
    timeouts: Timeouts,
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
        Ok(Client { base: base_url.trim_end_matches('/').to_owned(), http, timeouts })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Tests an S3 connection the way the platform's "connection test" does.
    pub async fn test_connection(&self, creds: &Credentials, form: &ConnectionForm<'_>) -> Result<(), PlatformError> {
        let fields = vec![
            ("credentials", credentials_json(form.keys)),
            ("connector", "s3".to_owned()),
            ("path", form.path.clone()),
            ("connection_type", form.connection_type.to_owned()),
            ("data_type", form.data_type.to_owned()),
        ];
        let req = Call {
            method: "POST",
            path: "/connectors/connections/test",
            query: &[],
            effect: Effect::Idempotent,
            tracking_id: None,
        };
        self.call(creds, req, Body::Form(fields), true, Some(form.keys)).await?;
        Ok(())
    }

    /// Creates the connection and returns its id.
    pub async fn create_connection(
        &self,
        creds: &Credentials,
        form: &ConnectionForm<'_>,
        name: &str,
        description: &str,
    ) -> Result<String, PlatformError> {
        let fields = vec![
            ("client_id", creds.client_id.clone()),
            ("connector", "s3".to_owned()),
            ("name", name.to_owned()),
            ("description", description.to_owned()),
            ("connection_type", form.connection_type.to_owned()),
            ("data_type", form.data_type.to_owned()),
            ("credentials", credentials_json(form.keys)),
        ];
        let req = Call {
            method: "POST",
            path: "/connectors/connections/create",
            query: &[],
            effect: Effect::Create,
            tracking_id: None,
        };
        let (value, tracking_id) = self.call(creds, req, Body::Form(fields), true, Some(form.keys)).await?;
        // A success without an id: the platform did something, and no one knows what.
        string_field(&value, "connection_id", &tracking_id).map_err(unknown_if_invalid)
    }

    /// The S3 connections of `connection_type` whose name satisfies `wanted`, through the
    /// list and details endpoints: how a create whose answer was lost is found again.
    pub async fn find_connections(
        &self,
        creds: &Credentials,
        connection_type: &str,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Vec<Registered>, PlatformError> {
        let query = [("connection_type", connection_type), ("connector", "s3")];
        let req = Call {
            method: "GET",
            path: "/connectors/connections/list",
            query: &query,
            effect: Effect::Idempotent,
            tracking_id: None,
        };
        let (value, tracking_id) = self.call(creds, req, Body::Empty, true, None).await?;
        let items = value["response"].as_array().ok_or_else(|| PlatformError::Invalid {
            detail: "no response list in the answer".into(),
            tracking_id: tracking_id.clone(),
        })?;
        let mut found = Vec::new();
        for item in items {
            let Some(id) = item["connection_id"].as_str() else { continue };
            // The list may carry names; where it does not, the details do.
            let item_name = match item["name"].as_str() {
                Some(n) => n.to_owned(),
                None => self.connection_name(creds, id).await?,
            };
            if wanted(&item_name) {
                found.push(Registered { id: id.to_owned(), name: item_name });
            }
        }
        Ok(found)
    }

    async fn connection_name(&self, creds: &Credentials, id: &str) -> Result<String, PlatformError> {
        let path = format!("/connectors/connections/{}/details", encode(id));
        let req = Call { method: "GET", path: &path, query: &[], effect: Effect::Idempotent, tracking_id: None };
        let (value, _) = self.call(creds, req, Body::Empty, true, None).await?;
        Ok(value["response"]["name"].as_str().unwrap_or_default().to_owned())
    }

    /// Deletes a connection; one that is already gone counts as deleted.
    pub async fn delete_connection(&self, creds: &Credentials, id: &str) -> Result<(), PlatformError> {
        let body = Body::Json(json!({"connection_id": id}));
        let req = Call {
            method: "POST",
            path: "/connectors/connections/delete",
            query: &[],
            effect: Effect::Idempotent,
            tracking_id: None,
        };
        match self.call(creds, req, body, true, None).await {
            Ok(_) | Err(PlatformError::Rejected { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Submits an export to S3 with the tracking id `tracking_id` (recorded by the caller
    /// beforehand) and returns its report id.
    pub async fn create_export(
        &self,
        creds: &Credentials,
        project_id: &str,
        req: &ExportRequest<'_>,
        tracking_id: &str,
    ) -> Result<String, PlatformError> {
        let body = Body::Json(json!({
            "export_name": req.name,
            "export_description": req.description,
            "export_format": req.format,
            "statuses": req.statuses,
            "export_destination": "s3",
            "connection_id": req.connection_id,
            "export_folder_path": req.folder_path,
            "question_ids": ["all"],
        }));
        let body = match (body, req.updated_after) {
            (Body::Json(mut v), Some(ms)) => {
                v["updated_after_timestamp"] = json!(ms);
                Body::Json(v)
            }
            (b, _) => b,
        };
        let query = [("project_id", project_id)];
        let req = Call {
            method: "POST",
            path: "/sdk/export/files",
            query: &query,
            effect: Effect::Create,
            tracking_id: Some(tracking_id),
        };
        match self.call(creds, req, body, false, None).await {
            Ok((value, tracking_id)) => string_field(&value, "report_id", &tracking_id).map_err(unknown_if_invalid),
            // The one documented refusal with a remedy of its own.
            Err(PlatformError::Rejected { message, .. }) if message.to_ascii_lowercase().contains("no files found") => {
                Err(PlatformError::NoFilesWithStatus { message })
            }
            Err(e) => Err(e),
        }
    }

    /// The state of an export, or None when the platform does not know the report id.
    pub async fn export_status(
        &self,
        creds: &Credentials,
        project_id: &str,
        report_id: &str,
    ) -> Result<Option<ExportState>, PlatformError> {
        let body = Body::Json(json!({"report_ids": [report_id]}));
        let query = [("project_id", project_id)];
        let req = Call {
            method: "POST",
            path: "/exports/status",
            query: &query,
            effect: Effect::Idempotent,
            tracking_id: None,
        };
        let (value, _) = self.call(creds, req, body, false, None).await?;
        // Some SDK versions read `status`, others `response`: accept both.
        let items = value.get("status").or_else(|| value.get("response")).and_then(Value::as_array);
        let Some(item) = items.into_iter().flatten().find(|i| i["report_id"] == report_id) else {
            return Ok(None);
        };
        let status = item["export_status"].as_str().unwrap_or_default();
        Ok(Some(if status.eq_ignore_ascii_case("failed") {
            ExportState::Failed(
                item.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("the platform reports the export failed")
                    .to_owned(),
            )
        } else if item["is_completed"].as_bool() == Some(true) && status.eq_ignore_ascii_case("created") {
            ExportState::Succeeded
        } else {
            ExportState::Running(status.to_owned())
        }))
    }

    /// Creates a dataset from an import connection's folder, with the tracking id
    /// `tracking_id` (recorded by the caller beforehand), and returns its id.
    pub async fn create_dataset(
        &self,
        creds: &Credentials,
        req: &DatasetRequest<'_>,
        tracking_id: &str,
    ) -> Result<String, PlatformError> {
        let body = Body::Json(json!({
            "dataset_name": req.name,
            "dataset_description": req.description,
            "data_type": req.data_type,
            "connection_id": req.connection_id,
            "path": req.path,
            "client_id": creds.client_id,
            "es_multimodal_index": req.multimodal_indexing,
        }));
        let call = Call {
            method: "POST",
            path: "/datasets/create",
            query: &[],
            effect: Effect::Create,
            tracking_id: Some(tracking_id),
        };
        let (value, tracking_id) = self.call(creds, call, body, false, None).await?;
        string_field(&value, "dataset_id", &tracking_id).map_err(unknown_if_invalid)
    }

    /// The dataset `id`, or None when the platform does not know it.
    pub async fn get_dataset(&self, creds: &Credentials, id: &str) -> Result<Option<DatasetInfo>, PlatformError> {
        let path = format!("/datasets/{}", encode(id));
        let call = Call { method: "GET", path: &path, query: &[], effect: Effect::Idempotent, tracking_id: None };
        let value = match self.call(creds, call, Body::Empty, false, None).await {
            Ok((value, _)) => value,
            Err(PlatformError::Rejected { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let r = &value["response"];
        let number = |v: &Value| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(0);
        Ok(Some(DatasetInfo {
            name: r["name"].as_str().unwrap_or_default().to_owned(),
            description: r["description"].as_str().unwrap_or_default().to_owned(),
            data_type: r["data_type"].as_str().unwrap_or_default().to_owned(),
            files_count: number(&r["files_count"]),
            status_code: number(&r["status_code"]),
        }))
    }

    /// The ids of the datasets of `data_type` named `name`, through the (paged) list: how
    /// a create whose answer was lost is found again.
    pub async fn find_datasets(
        &self,
        creds: &Credentials,
        data_type: &str,
        name: &str,
    ) -> Result<Vec<String>, PlatformError> {
        let mut found = Vec::new();
        let mut after: Option<String> = None;
        // A bound on pages, so that a platform that always says "more" cannot loop us.
        for _ in 0..100 {
            let mut query = vec![("data_type", data_type), ("permission_level", "client"), ("page_size", "100")];
            if let Some(a) = &after {
                query.push(("last_dataset_id", a));
            }
            let call = Call {
                method: "GET",
                path: "/datasets/list",
                query: &query,
                effect: Effect::Idempotent,
                tracking_id: None,
            };
            let (value, _) = self.call(creds, call, Body::Empty, false, None).await?;
            let page = &value["response"];
            for d in page["datasets"].as_array().into_iter().flatten() {
                if d["name"].as_str() == Some(name)
                    && let Some(id) = d["dataset_id"].as_str()
                {
                    found.push(id.to_owned());
                }
            }
            match (page["has_more"].as_bool(), page["last_dataset_id"].as_str()) {
                (Some(true), Some(last)) if after.as_deref() != Some(last) => after = Some(last.to_owned()),
                _ => return Ok(found),
            }
        }
        Ok(found)
    }

    /// Deletes a dataset; one that is already gone counts as deleted.
    pub async fn delete_dataset(&self, creds: &Credentials, id: &str) -> Result<(), PlatformError> {
        let path = format!("/datasets/{}/delete", encode(id));
        let call = Call { method: "DELETE", path: &path, query: &[], effect: Effect::Idempotent, tracking_id: None };
        match self.call(creds, call, Body::Empty, false, None).await {
            Ok(_) | Err(PlatformError::Rejected { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Syncs the new files of the connection's `path` into `project_id`'s dataset. Doing it
    /// twice adds nothing twice.
    #[allow(clippy::too_many_arguments)]
    pub async fn sync_dataset(
        &self,
        creds: &Credentials,
        project_id: &str,
        dataset_id: &str,
        connection_id: &str,
        path: &str,
        data_type: &str,
    ) -> Result<(), PlatformError> {
        let body = Body::Json(json!({
            "client_id": creds.client_id,
            "project_id": project_id,
            "dataset_id": dataset_id,
            "path": path,
            "data_type": data_type,
            "email_id": creds.api_key,
            "connection_id": connection_id,
        }));
        let call = Call {
            method: "POST",
            path: "/connectors/datasets/sync",
            query: &[],
            effect: Effect::Idempotent,
            tracking_id: None,
        };
        self.call(creds, call, body, false, None).await.map(|_| ())
    }

    /// One API call, repeated as its effect allows. Returns the body (the whole JSON, so
    /// callers can read `response` or `status`) and the call's tracking id.
    async fn call(
        &self,
        creds: &Credentials,
        req: Call<'_>,
        body: Body,
        connection_call: bool,
        s3_keys: Option<&Keys>,
    ) -> Result<(Value, String), PlatformError> {
        let result = self.call_once(creds, &req, body, connection_call, s3_keys).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(PlatformError::Rejected { .. } | PlatformError::NoFilesWithStatus { .. }) => "rejected",
            Err(PlatformError::Internal { .. }) => "internal_error",
            Err(PlatformError::Unreachable { .. }) => "unreachable",
            Err(PlatformError::Invalid { .. }) => "invalid",
            Err(PlatformError::Unknown { .. }) => "unknown",
        };
        crate::telemetry::metrics::METRICS.platform_request(metric_path(req.path), outcome);
        result
    }

    async fn call_once(
        &self,
        creds: &Credentials,
        req: &Call<'_>,
        body: Body,
        connection_call: bool,
        s3_keys: Option<&Keys>,
    ) -> Result<(Value, String), PlatformError> {
        let tracking_id = req.tracking_id.map_or_else(uuid4, str::to_owned);
        let mut url = format!("{}{}?client_id={}&uuid={tracking_id}", self.base, req.path, encode(&creds.client_id));
        for (k, v) in req.query {
            url.push_str(&format!("&{k}={}", encode(v)));
        }
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
        let unknown = |detail: String| PlatformError::Unknown { detail, tracking_id: tracking_id.clone() };
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let mut request = http::Request::builder()
                .method(req.method)
                .uri(&url)
                .header("api_key", &creds.api_key)
                .header("api_secret", &creds.api_secret)
                .header("client_id", &creds.client_id)
                .header("source", "s3connect");
            if connection_call {
                request = request.header("email_id", &creds.api_key).header("origin", ORIGIN);
            }
            let request =
                request.header("content-type", &content_type).body(Full::new(bytes.clone())).map_err(|e| {
                    PlatformError::Invalid {
                        detail: format!("request not built: {e}"),
                        tracking_id: tracking_id.clone(),
                    }
                })?;
            let response = match tokio::time::timeout(timeout, self.http.request(request)).await {
                Err(_) if create => return Err(unknown(format!("no answer within {} s", timeout.as_secs()))),
                Err(_) => {
                    last = Some(PlatformError::Unreachable {
                        detail: "timed out".into(),
                        tracking_id: tracking_id.clone(),
                    });
                    continue;
                }
                Ok(Err(e)) => {
                    let detail =
                        redact(&std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string()));
                    // A connection that was never made carried no request: safe to repeat.
                    if create && !e.is_connect() {
                        return Err(unknown(format!("the connection was lost after sending: {detail}")));
                    }
                    last = Some(PlatformError::Unreachable { detail, tracking_id: tracking_id.clone() });
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
                    return Err(unknown("the answer was cut off".into()));
                }
                _ => {
                    last = Some(PlatformError::Unreachable {
                        detail: "the answer was cut off".into(),
                        tracking_id: tracking_id.clone(),
                    });
                    continue;
                }
            };
            let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            match status {
                200..=299 => return Ok((value, tracking_id)),
                // Refused before doing anything: safe to repeat, even a create.
                429 => last = Some(PlatformError::Internal { status, tracking_id: tracking_id.clone() }),
                // The platform may fail after acting: a create's outcome is unknown.
                500..=599 if create => return Err(unknown(format!("HTTP {status}"))),
                500..=599 => last = Some(PlatformError::Internal { status, tracking_id: tracking_id.clone() }),
                _ => {
                    return Err(PlatformError::Rejected { status, message: redact(&api_message(&value, &body)) });
                }
            }
        }
        Err(last.unwrap_or_else(|| unknown("no attempt was made".into())))
    }
}

/// One call: what it does to the platform decides whether it may be repeated.
struct Call<'a> {
    method: &'static str,
    path: &'a str,
    query: &'a [(&'a str, &'a str)],
    effect: Effect,
    /// A tracking id the caller chose (and recorded) before the call; else a new one.
    tracking_id: Option<&'a str>,
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

fn credentials_json(keys: &Keys) -> String {
    json!({"access_key_id": keys.access_key_id, "secret_access_key": keys.secret_access_key}).to_string()
}

fn unknown_if_invalid(e: PlatformError) -> PlatformError {
    match e {
        PlatformError::Invalid { detail, tracking_id } => PlatformError::Unknown { detail, tracking_id },
        other => other,
    }
}

fn string_field(value: &Value, field: &str, tracking_id: &str) -> Result<String, PlatformError> {
    value["response"][field].as_str().map(str::to_owned).ok_or_else(|| PlatformError::Invalid {
        detail: format!("no response.{field} in the answer"),
        tracking_id: tracking_id.to_owned(),
    })
}

/// The API's error text: `message`, else `error` (a string or an object), else the body.
fn api_message(value: &Value, body: &[u8]) -> String {
    let pick = |v: &Value| match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(_) => v.get("message").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    value
        .get("message")
        .and_then(pick)
        .or_else(|| value.get("error").and_then(pick))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned())
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
        let c = Credentials { api_key: "key-123".into(), api_secret: "secret-456".into(), client_id: "42".into() };
        let shown = format!("{c:?}");
        assert!(!shown.contains("key-123") && !shown.contains("secret-456"));
        assert!(PlatformError::Internal { status: 500, tracking_id: "t-1".into() }.to_string().contains("t-1"));
    }
}
