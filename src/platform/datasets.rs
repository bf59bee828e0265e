//! Datasets made from an import connection's folder: create, read, find, delete and sync.

use serde_json::{Value, json};

use super::{Body, Call, Client, Credentials, List, PlatformError, encode, string_field, unknown_if_invalid};

/// What a dataset is made from.
pub struct DatasetRequest<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub data_type: &'a str,
    /// An import connection's id.
    pub connection_id: &'a str,
    /// `s3://bucket/prefix/folder/`: see `folder_path`.
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

impl Client {
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
        let call = Call::new("POST", "/datasets/create").create(Some(tracking_id));
        let (value, trace) = self.call(creds, call, body, None).await?;
        string_field(&value, "dataset_id", &trace).map_err(unknown_if_invalid)
    }

    /// The dataset `id`, or None when the platform does not know it.
    pub async fn get_dataset(&self, creds: &Credentials, id: &str) -> Result<Option<DatasetInfo>, PlatformError> {
        let path = format!("/datasets/{}", encode(id));
        let Some(r) = self.get_by_id(creds, Call::new("GET", &path)).await? else { return Ok(None) };
        let number = |v: &Value| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(0);
        Ok(Some(DatasetInfo {
            name: r["name"].as_str().unwrap_or_default().to_owned(),
            description: r["description"].as_str().unwrap_or_default().to_owned(),
            data_type: r["data_type"].as_str().unwrap_or_default().to_owned(),
            files_count: number(&r["files_count"]),
            status_code: number(&r["status_code"]),
        }))
    }

    /// The ids of the datasets of `data_type` named `name`, through the list read to its
    /// end: how a create whose answer was lost is found again.
    pub async fn find_datasets(
        &self,
        creds: &Credentials,
        data_type: &str,
        name: &str,
    ) -> Result<Vec<String>, PlatformError> {
        let query = [("data_type", data_type), ("permission_level", "client"), ("page_size", "100")];
        let list = List { path: "/datasets/list", items: "datasets", cursor: "last_dataset_id" };
        let items = self.list_all(creds, &list, &query, false).await?;
        Ok(items
            .iter()
            .filter(|d| d["name"].as_str() == Some(name))
            .filter_map(|d| d["dataset_id"].as_str().map(str::to_owned))
            .collect())
    }

    /// Deletes a dataset; one that is already gone counts as deleted.
    pub async fn delete_dataset(&self, creds: &Credentials, id: &str) -> Result<(), PlatformError> {
        let path = format!("/datasets/{}/delete", encode(id));
        match self.call(creds, Call::new("DELETE", &path), Body::Empty, None).await {
            Ok(_) | Err(PlatformError::Rejected { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Syncs the new files of the connection's `path` (see `folder_path`) into
    /// `project_id`'s dataset. Doing it twice adds nothing twice.
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
        self.call(creds, Call::new("POST", "/connectors/datasets/sync"), body, None).await.map(|_| ())
    }
}
