//! The platform stand-in's test controls: projects with files in workflow statuses,
//! injected faults, and what it holds (connections, exports, calls).

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

use super::{env, http::send};

async fn admin(method: &str, path: &str, body: Option<Value>) -> Value {
    let url = format!("{}/_admin/{path}", env().platform_url);
    let request = http::Request::builder()
        .method(method)
        .uri(&url)
        .header("content-type", "application/json")
        .body(Full::new(body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()))))
        .unwrap();
    let (status, text) = send(request).await;
    assert!(status.is_success(), "{method} {url}: {status} {text}");
    serde_json::from_str(&text).expect("JSON from the stand-in")
}

/// A project whose files are `(name, status)`.
pub async fn project(id: &str, files: &[(&str, &str)]) {
    let files: Vec<Value> = files
        .iter()
        .enumerate()
        .map(|(i, (name, status))| json!({"file_id": format!("f{i}"), "name": name, "status": status, "annotations": [{"bbox": [1, 2, 3, 4]}]}))
        .collect();
    admin("POST", "projects", Some(json!({"project_id": id, "files": files}))).await;
}

/// A project made as a person makes one in the platform's UI (its own template, no
/// s3connect identity) over `datasets`: its id.
pub async fn ui_project(name: &str, data_type: &str, datasets: &[&str]) -> String {
    let body = json!({"project_name": name, "template_name": format!("{name} guideline"), "data_type": data_type, "attached_datasets": datasets});
    admin("POST", "annotation_projects", Some(body)).await["project_id"].as_str().unwrap().to_owned()
}

/// Files of `project` annotated or reviewed now: each `(name, status)` is set (added if
/// new) with the current time as its update time.
pub async fn update_files(project: &str, files: &[(&str, &str)]) {
    let files: Vec<Value> = files.iter().map(|(name, status)| json!({"name": name, "status": status})).collect();
    admin("POST", &format!("projects/{project}/files"), Some(json!({"files": files}))).await;
}

/// The platform changing a project by itself: `fields` (say `status_code`) set.
pub async fn set_project(project: &str, fields: Value) {
    admin("POST", &format!("annotation_projects/{project}"), Some(fields)).await;
}

/// A project deleted in the platform's UI, outside Git.
pub async fn delete_ui(project: &str) {
    admin("DELETE", &format!("annotation_projects/{project}"), None).await;
}

/// Makes the next `count` calls to `endpoint` (`export/create`, `connections/test`, ...)
/// answer `status` (0: answer normally), optionally after `delay` seconds, or accept and
/// then hold the answer for `delay_after` seconds.
pub async fn fault(endpoint: &str, settings: Value) {
    let mut body = settings;
    body["endpoint"] = json!(endpoint);
    admin("POST", "faults", Some(body)).await;
}

/// Waits until no answer of `endpoint` whose fault was scoped by `key` = `value`
/// (`project_id`, `connection_id`, `name`) is held any more: the held call has been
/// answered (or its client gave up and the stand-in let it go).
pub async fn until_answered(endpoint: &str, key: &str, value: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let held = state().await["held"].as_array().cloned().unwrap_or_default();
        if !held.iter().any(|h| h["endpoint"] == endpoint && h[key] == value) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{endpoint} ({key}={value}) still held: {held:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

pub async fn state() -> Value {
    admin("GET", "state", None).await
}

/// Every call the stand-in has seen, with its method, path, query, headers and body.
pub async fn requests() -> Vec<Value> {
    admin("GET", "state?requests=1", None).await["requests"].as_array().cloned().unwrap_or_default()
}

/// Switches the stand-in's modes named in `modes` (`unknown_as_null`, `split_text`,
/// `processing_seconds` with `processing_name`, `page_size`, `project_list`).
pub async fn modes(modes: Value) {
    admin("POST", "modes", Some(modes)).await;
}

/// The platform's connections registered under the S3Connection `owner`'s names.
pub async fn registrations(owner: &str) -> Vec<Value> {
    let prefix = registration_prefix(owner);
    state().await["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"].as_str().is_some_and(|n| n.starts_with(&prefix)))
        .cloned()
        .collect()
}

/// How many times the platform was asked to create a registration of the S3Connection
/// `owner` (its call log: a create the platform later lost still counts).
pub async fn registration_creates(owner: &str) -> usize {
    let prefix = registration_prefix(owner);
    requests()
        .await
        .iter()
        .filter(|r| r["path"] == "/connectors/connections/create")
        .filter(|r| r["body"]["name"].as_str().is_some_and(|n| n.starts_with(&prefix)))
        .count()
}

/// How the operator's registration names of the S3Connection `owner` begin.
fn registration_prefix(owner: &str) -> String {
    format!("s3connect {owner} ")
}

/// The exports the platform holds for `project`.
pub async fn exports(project: &str) -> Vec<Value> {
    state().await["exports"].as_array().unwrap().iter().filter(|e| e["project_id"] == project).cloned().collect()
}
