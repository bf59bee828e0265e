//! S3 connections on the platform: the connection test, create, find (how a create whose
//! answer was lost is found again) and delete.

use serde_json::{Value, json};

use super::{
    Body, Call, Client, Credentials, List, PlatformError, api_message, encode, string_field, text_of,
    unknown_if_invalid,
};
use crate::s3::client::Keys;

/// A connection registered on the platform, as its list and details show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    pub id: String,
    pub name: String,
}

/// What the platform needs to test or create an S3 connection.
pub struct ConnectionForm<'a> {
    pub keys: &'a Keys,
    /// `bucket/prefix/` (the connection guide's form; datasets use `folder_path`).
    pub path: String,
    /// `import` or `export`
    pub connection_type: &'a str,
    pub data_type: &'a str,
}

impl Client {
    /// Tests an S3 connection the way the platform's "connection test" does. A `2xx` whose
    /// body says the test failed is a failure.
    pub async fn test_connection(&self, creds: &Credentials, form: &ConnectionForm<'_>) -> Result<(), PlatformError> {
        let fields = vec![
            ("credentials", credentials_json(form.keys)),
            ("connector", "s3".to_owned()),
            ("path", form.path.clone()),
            ("connection_type", form.connection_type.to_owned()),
            ("data_type", form.data_type.to_owned()),
        ];
        let req = Call::new("POST", "/connectors/connections/test").email_id();
        let (value, trace) = self.call(creds, req, Body::Form(fields), Some(form.keys)).await?;
        match test_failure(&value) {
            Some(message) => Err(PlatformError::Rejected { status: 200, message, tracking_id: trace }),
            None => Ok(()),
        }
    }

    /// Creates the connection and returns its id. Like the SDK, the form carries no
    /// `data_type` (the test before it did).
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
            ("credentials", credentials_json(form.keys)),
        ];
        let req = Call::new("POST", "/connectors/connections/create").email_id().create(None);
        let (value, trace) = self.call(creds, req, Body::Form(fields), Some(form.keys)).await?;
        // A success without an id: the platform did something, and no one knows what.
        string_field(&value, "connection_id", &trace).map_err(unknown_if_invalid)
    }

    /// The S3 connections of `connection_type` whose name satisfies `wanted`, through the
    /// list (read to its end) and details endpoints: how a create whose answer was lost is
    /// found again.
    pub async fn find_connections(
        &self,
        creds: &Credentials,
        connection_type: &str,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Vec<Registered>, PlatformError> {
        let query = [("connector", "s3"), ("connection_type", connection_type)];
        let list = List { path: "/connectors/connections/list", items: "connections", cursor: "last_connection_id" };
        let items = self.list_all(creds, &list, &query, true).await?;
        let mut found = Vec::new();
        for item in items {
            let Some(id) = item["connection_id"].as_str() else { continue };
            // The list may carry names; where it does not, the details do.
            let item_name = match item["name"].as_str() {
                Some(n) => n.to_owned(),
                None => match self.connection_name(creds, id).await? {
                    Some(n) => n,
                    // Gone between the list and its details.
                    None => continue,
                },
            };
            if wanted(&item_name) {
                found.push(Registered { id: id.to_owned(), name: item_name });
            }
        }
        Ok(found)
    }

    /// A connection's name, or None when the platform no longer knows the id.
    pub(super) async fn connection_name(&self, creds: &Credentials, id: &str) -> Result<Option<String>, PlatformError> {
        let path = format!("/connectors/connections/{}/details", encode(id));
        let Some(r) = self.get_by_id(creds, Call::new("GET", &path)).await? else { return Ok(None) };
        Ok(Some(r["name"].as_str().unwrap_or_default().to_owned()))
    }

    /// Deletes a connection; one that is already gone counts as deleted.
    pub async fn delete_connection(&self, creds: &Credentials, id: &str) -> Result<(), PlatformError> {
        let body = Body::Json(json!({"connection_id": id}));
        let req = Call::new("POST", "/connectors/connections/delete").email_id();
        match self.call(creds, req, body, None).await {
            Ok(_) | Err(PlatformError::Rejected { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn credentials_json(keys: &Keys) -> String {
    json!({"access_key_id": keys.access_key_id, "secret_access_key": keys.secret_access_key}).to_string()
}

/// Why a connection test answered with a `2xx` failed, if its body says it did: an error
/// (see `body_error`, already turned into a refusal), no result at all, or a result that
/// reports failure.
pub(super) fn test_failure(value: &Value) -> Option<String> {
    let r = &value["response"];
    if r.is_null() {
        return Some(format!("the connection test gave no result: {}", api_message(value, b"")));
    }
    let said = |k: &str| r[k].as_str().map(str::to_ascii_lowercase);
    let failed = r["success"].as_bool() == Some(false)
        || r["status"].as_bool() == Some(false)
        || said("status").is_some_and(|s| matches!(s.as_str(), "failed" | "failure" | "error"));
    failed.then(|| text_of(r.get("message")).unwrap_or_else(|| "the connection test failed".into()))
}
