//! Exports of a project's annotations to an S3 connection: submit, and read their state.

use serde_json::{Value, json};

use super::{Body, Call, Client, Credentials, PlatformError, string_field, unknown_if_invalid};

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

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExportState {
    Running(String),
    Succeeded,
    Failed(String),
}

impl Client {
    /// Submits an export to S3 and returns its report id. The SDK sends no `uuid` with this
    /// call; s3connect does (the tracking id `tracking_id`, recorded by the caller
    /// beforehand), so that the submission can be quoted to support.
    pub async fn create_export(
        &self,
        creds: &Credentials,
        project_id: &str,
        req: &ExportRequest<'_>,
        tracking_id: &str,
    ) -> Result<String, PlatformError> {
        let mut body = json!({
            "export_name": req.name,
            "export_description": req.description,
            "export_format": req.format,
            "statuses": req.statuses,
            "export_destination": "s3",
            "connection_id": req.connection_id,
            "export_folder_path": req.folder_path,
            "question_ids": ["all"],
        });
        if let Some(ms) = req.updated_after {
            body["updated_after_timestamp"] = json!(ms);
        }
        let query = [("project_id", project_id)];
        let call = Call::new("POST", "/sdk/export/files").query(&query).create(Some(tracking_id));
        let (value, trace) = self.call(creds, call, Body::Json(body), None).await?;
        string_field(&value, "report_id", &trace).map_err(unknown_if_invalid)
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
        let (value, _) = self.call(creds, Call::new("POST", "/exports/status").query(&query), body, None).await?;
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
}
