//! Templates and annotation projects (shared/docs: "Annotation projects"). The paths of
//! the dataset changes moved three times in 2025: they are named here, once.

use serde_json::{Value, json};

use super::{Body, Call, Client, Credentials, List, PlatformError, string_field, unknown_if_invalid};

const ATTACH_PATH: &str = "/actions/jobs/add_datasets_to_project";
const DETACH_PATH: &str = "/actions/jobs/delete_datasets_from_project";
/// The question types that draw on the file: their colour is also their one option.
const DRAWING: [&str; 4] = ["BoundingBox", "polygon", "polyline", "dot"];

/// One question of a template, as the platform takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateQuestion<'a> {
    pub number: usize,
    pub id: String,
    pub question: &'a str,
    pub option_type: &'static str,
    pub required: bool,
    pub options: Vec<&'a str>,
    pub color: Option<&'a str>,
}

/// A template as the platform lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateInfo {
    pub id: String,
    pub name: String,
}

/// What a project is made of.
pub struct ProjectRequest<'a> {
    pub name: &'a str,
    pub datasets: &'a [String],
    pub data_type: &'a str,
    pub template_id: &'a str,
    pub rotations: [u32; 3],
    pub use_ai: bool,
    pub created_by: Option<&'a str>,
}

/// A project as the platform shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectInfo {
    pub name: String,
    /// 300 ready; 400 and above failed; None: still processing.
    pub status_code: Option<i64>,
    pub template_id: String,
    pub data_type: String,
    pub datasets: Vec<String>,
}

/// A template's id and name, from a list item or `get_template`'s answer.
fn template_info(t: &Value, id: &str) -> TemplateInfo {
    let name = t["template_name"].as_str().or_else(|| t["templateName"].as_str()).unwrap_or_default();
    TemplateInfo { id: id.to_owned(), name: name.to_owned() }
}

fn rotations(r: [u32; 3]) -> Value {
    json!({"annotation_rotation_count": r[0], "review_rotation_count": r[1], "client_review_rotation_count": r[2]})
}

impl Client {
    /// Creates a template; its questions are fixed from then on.
    pub async fn create_template(
        &self,
        creds: &Credentials,
        data_type: &str,
        name: &str,
        questions: &[TemplateQuestion<'_>],
        tracking_id: &str,
    ) -> Result<String, PlatformError> {
        let questions: Vec<Value> = questions
            .iter()
            .map(|q| {
                // As the SDK (every version) sends a drawing question: its colour is its
                // option too; the platform draws with the option.
                let options: Vec<&str> = match q.color {
                    Some(c) if DRAWING.contains(&q.option_type) => vec![c],
                    _ => q.options.clone(),
                };
                let mut v = json!({
                    "question_number": q.number,
                    "question": q.question,
                    "question_id": q.id,
                    "option_type": q.option_type,
                    "required": q.required,
                    "options": options.iter().map(|o| json!({"option_name": o})).collect::<Vec<_>>(),
                });
                if let Some(c) = q.color {
                    v["color"] = json!(c);
                }
                v
            })
            .collect();
        let body = Body::Json(json!({"templateName": name, "questions": questions}));
        let query = [("data_type", data_type)];
        let call = Call::new("POST", "/annotations/create_template").query(&query).create(Some(tracking_id));
        let (value, trace) = self.call(creds, call, body, None).await?;
        string_field(&value, "template_id", &trace).map_err(unknown_if_invalid)
    }

    /// The templates of `data_type`, read to the list's end: how a create whose answer was
    /// lost is found again.
    pub async fn list_templates(
        &self,
        creds: &Credentials,
        data_type: &str,
    ) -> Result<Vec<TemplateInfo>, PlatformError> {
        let query = [("data_type", data_type)];
        let list =
            List { path: "/annotations/list_questions_templates", items: "templates", cursor: "last_template_id" };
        let items = self.list_all(creds, &list, &query, false).await?;
        Ok(items.iter().filter_map(|t| Some(template_info(t, t["template_id"].as_str()?))).collect())
    }

    /// The template `id`, or None when the platform does not know it.
    pub async fn get_template(&self, creds: &Credentials, id: &str) -> Result<Option<TemplateInfo>, PlatformError> {
        let query = [("template_id", id)];
        let call = Call::new("GET", "/annotations/get_template").query(&query);
        Ok(self.get_by_id(creds, call).await?.map(|t| template_info(&t, id)))
    }

    pub async fn create_project(
        &self,
        creds: &Credentials,
        req: &ProjectRequest<'_>,
        tracking_id: &str,
    ) -> Result<String, PlatformError> {
        let mut body = json!({
            "project_name": req.name,
            "attached_datasets": req.datasets,
            "data_type": req.data_type,
            "annotation_template_id": req.template_id,
            "rotations": rotations(req.rotations),
            "use_ai": req.use_ai,
        });
        if let Some(who) = req.created_by {
            body["created_by"] = json!(who);
        }
        let call = Call::new("POST", "/projects/create").create(Some(tracking_id));
        let (value, trace) = self.call(creds, call, Body::Json(body), None).await?;
        string_field(&value, "project_id", &trace).map_err(unknown_if_invalid)
    }

    /// The project `id`, or None when the platform does not know it.
    pub async fn get_project(&self, creds: &Credentials, id: &str) -> Result<Option<ProjectInfo>, PlatformError> {
        let path = format!("/projects/project/{}", super::encode(id));
        // A project deleted in the UI answers 404 or, as the SDK reads it, a null response.
        let Some(r) = self.get_by_id(creds, Call::new("GET", &path)).await? else { return Ok(None) };
        let r = &r;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        Ok(Some(ProjectInfo {
            name: text(&r["project_name"]),
            status_code: r["status_code"].as_i64().or_else(|| r["status_code"].as_str().and_then(|s| s.parse().ok())),
            template_id: text(&r["annotation_template_id"]),
            data_type: text(&r["data_type"]),
            datasets: r["attached_datasets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str())
                .map(str::to_owned)
                .collect(),
        }))
    }

    /// The ids of every project of the account, read to the list's end (older SDKs read
    /// `response.projects`, newer ones a list in `response`: both are taken).
    pub async fn list_projects(&self, creds: &Credentials) -> Result<Vec<String>, PlatformError> {
        let list =
            List { path: "/project_drafts/projects/detailed_list", items: "projects", cursor: "last_project_id" };
        let items = self.list_all(creds, &list, &[], false).await?;
        Ok(items.iter().filter_map(|p| p["project_id"].as_str().map(str::to_owned)).collect())
    }

    /// Deletes a project (permanently); one that is already gone counts as deleted.
    pub async fn delete_project(&self, creds: &Credentials, id: &str) -> Result<(), PlatformError> {
        let path = format!("/projects/project/{}", super::encode(id));
        match self.call(creds, Call::new("DELETE", &path).email_id(), Body::Empty, None).await {
            Ok(_) | Err(PlatformError::Rejected { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn archive_project(&self, creds: &Credentials, id: &str) -> Result<(), PlatformError> {
        let call = Call::new("POST", "/projects/archive").email_id();
        self.call(creds, call, Body::Json(json!({"project_id": id})), None).await.map(|_| ())
    }

    /// Sets the rotations; setting the same twice is setting them once.
    pub async fn set_rotations(&self, creds: &Credentials, id: &str, r: [u32; 3]) -> Result<(), PlatformError> {
        let query = [("project_id", id)];
        let call = Call::new("POST", "/projects/rotations/add").query(&query);
        self.call(creds, call, Body::Json(rotations(r)), None).await.map(|_| ())
    }

    /// Attaches (or, with `detach`, detaches) `datasets`: one platform job, never repeated
    /// blindly (the caller checks the project's datasets after an unknown outcome).
    pub async fn change_datasets(
        &self,
        creds: &Credentials,
        id: &str,
        datasets: &[String],
        detach: bool,
        tracking_id: &str,
    ) -> Result<(), PlatformError> {
        let query = [("project_id", id)];
        let call =
            Call::new("POST", if detach { DETACH_PATH } else { ATTACH_PATH }).query(&query).create(Some(tracking_id));
        self.call(creds, call, Body::Json(json!({"attached_datasets": datasets})), None).await.map(|_| ())
    }
}
