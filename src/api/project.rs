//! `AnnotationProject`: the annotation project on the Labellerr platform that labels the
//! files of one or more Datasets, the second half of the manual's last step ("Creating
//! Dataset & Annotation Project"). Its template (the annotation guideline) is created once
//! from inline questions or named by id; the project is created once, then its rotations
//! and attached datasets follow the spec.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::ObjectName;
use super::connection::DataType;

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "s3connect.io",
    version = "v1alpha1",
    kind = "AnnotationProject",
    namespaced,
    status = "AnnotationProjectStatus",
    shortname = "s3ap",
    category = "s3connect",
    doc = "An annotation project on the Labellerr platform over Datasets of this namespace: its template created once from inline questions (or named by id), the project created once, its rotations and datasets kept as the spec says.",
    printcolumn = r#"{"name":"Datasets","type":"string","jsonPath":".spec.datasetRefs[*].name"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Project","type":"string","jsonPath":".status.projectId","priority":1}"#,
    printcolumn = r#"{"name":"Template","type":"string","jsonPath":".status.templateId","priority":1}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message","priority":1}"#
)]
/// The datasets to label, the template to label them with, and how the work rotates.
#[x_kube(validation = Rule::new(IMMUTABLE_RULE).message(IMMUTABLE_MESSAGE))]
#[x_kube(validation = Rule::new("has(self.template) != has(self.adopt)").message("exactly one of template (for a project the operator creates) and adopt (a project made in the platform's UI, which keeps its own template)"))]
#[serde(rename_all = "camelCase")]
pub struct AnnotationProjectSpec {
    /// Datasets of this namespace to label (at least one); the project is created once each
    /// is Ready with files. Adding or removing one later attaches or detaches it.
    #[schemars(length(min = 1, max = 64))]
    pub dataset_refs: Vec<DatasetRef>,
    /// Ids of platform datasets made elsewhere, attached as well.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub dataset_ids: Vec<PlatformId>,
    /// The kind of files (default: the datasets'); every dataset must have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_type: Option<DataType>,
    /// The project's name on the platform (default: `<namespace>/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[^\x00-\x1f\x7f]+$"))]
    pub display_name: Option<String>,
    /// The email of the person the platform shows as its creator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 254), regex(pattern = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"))]
    pub created_by: Option<String>,
    /// Let the platform pre-annotate with AI.
    #[serde(default, rename = "useAI")]
    pub use_ai: bool,
    /// The annotation guideline: an existing template's id, or questions to make one from.
    /// Required unless `adopt` is set (an adopted project keeps its own template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Template>,
    /// How many annotators, reviewers and client reviewers see each file.
    #[serde(default)]
    pub rotations: Rotations,
    /// What deleting this object does to the platform's project: `Retain` (the default)
    /// keeps it, `Archive` archives it, `Delete` deletes it (permanently).
    #[serde(default)]
    pub deletion_policy: ProjectDeletionPolicy,
    /// Take over a project made in the platform's UI instead of creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<Adopt>,
}

/// The platform has no update call for a template's questions, a project's data type, name,
/// creator or AI setting, or whom it was adopted from.
const IMMUTABLE_RULE: &str = "has(self.template) == has(oldSelf.template) && (!has(self.template) || self.template == oldSelf.template) \
    && has(self.dataType) == has(oldSelf.dataType) && (!has(self.dataType) || self.dataType == oldSelf.dataType) \
    && has(self.displayName) == has(oldSelf.displayName) && (!has(self.displayName) || self.displayName == oldSelf.displayName) \
    && has(self.createdBy) == has(oldSelf.createdBy) && (!has(self.createdBy) || self.createdBy == oldSelf.createdBy) \
    && self.useAI == oldSelf.useAI \
    && has(self.adopt) == has(oldSelf.adopt) && (!has(self.adopt) || self.adopt == oldSelf.adopt)";
const IMMUTABLE_MESSAGE: &str = "template (its questions are fixed once created: the platform has no update call), dataType, displayName, createdBy, useAI and adopt are immutable: delete and re-create the AnnotationProject; datasetRefs, datasetIds, rotations and deletionPolicy may change";

/// An AnnotationProject of the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct ProjectRef {
    /// Name of the AnnotationProject, in the same namespace.
    pub name: ObjectName,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct DatasetRef {
    /// Name of the Dataset, in the same namespace.
    pub name: ObjectName,
}

/// A platform id: printable, no spaces.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(transparent)]
pub struct PlatformId(#[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9._:-]+$"))] pub String);

/// Exactly one of `templateId` and `questions`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.templateId) != (has(self.questions) && size(self.questions) > 0)").message("template needs exactly one of templateId (an existing template) and questions (to make one)"))]
#[x_kube(validation = Rule::new(OPTIONS_RULE).message(OPTIONS_MESSAGE))]
pub struct Template {
    /// An existing template on the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<PlatformId>,
    /// The name of the template made from `questions` (default: the project's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[^\x00-\x1f\x7f]+$"))]
    pub name: Option<String>,
    /// The questions annotators answer, in order; numbered and given stable ids by the
    /// operator. Fixed once the template is created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub questions: Vec<Question>,
}

/// Every object is small: one operator caches every AnnotationProject of every tenant, so
/// a template may hold at most 500 options in all (about 70 KB), not 50 x 200.
const OPTIONS_RULE: &str =
    "!has(self.questions) || self.questions.map(q, has(q.options) ? size(q.options) : 0).sum() <= 500";
const OPTIONS_MESSAGE: &str = "a template holds at most 500 options across its questions";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(self.type in ['BoundingBox', 'polygon', 'polyline', 'dot']) || has(self.color)").message("a drawing question (BoundingBox, polygon, polyline, dot) needs a color, for example '#FF0000'"))]
#[x_kube(validation = Rule::new("self.type in ['BoundingBox', 'polygon', 'polyline', 'dot', 'input'] || (has(self.options) && size(self.options) > 0)").message("a choice question (radio, boolean, select, dropdown, stt, imc) needs options"))]
pub struct Question {
    /// What the annotator is asked, for example `Where is the cat?`.
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^[^\x00-\x1f\x7f]+$"))]
    pub question: String,
    /// The kind of answer.
    #[serde(rename = "type")]
    pub type_: QuestionType,
    /// Whether every file needs an answer.
    #[serde(default)]
    pub required: bool,
    /// The choices, for choice types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 200))]
    pub options: Vec<QuestionOption>,
    /// The drawing color, for drawing types (`#RRGGBB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^#[0-9A-Fa-f]{6}$"))]
    pub color: Option<String>,
}

/// One choice of a question.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(transparent)]
pub struct QuestionOption(#[schemars(length(min = 1, max = 128), regex(pattern = r"^[^\x00-\x1f\x7f]+$"))] pub String);

/// The platform's answer types, spelled as it spells them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum QuestionType {
    BoundingBox,
    #[serde(rename = "polygon")]
    Polygon,
    #[serde(rename = "polyline")]
    Polyline,
    #[serde(rename = "dot")]
    Dot,
    #[serde(rename = "input")]
    Input,
    #[serde(rename = "radio")]
    Radio,
    #[serde(rename = "boolean")]
    Boolean,
    #[serde(rename = "select")]
    Select,
    #[serde(rename = "dropdown")]
    Dropdown,
    #[serde(rename = "stt")]
    Stt,
    #[serde(rename = "imc")]
    Imc,
}

impl QuestionType {
    pub fn as_str(self) -> &'static str {
        match self {
            QuestionType::BoundingBox => "BoundingBox",
            QuestionType::Polygon => "polygon",
            QuestionType::Polyline => "polyline",
            QuestionType::Dot => "dot",
            QuestionType::Input => "input",
            QuestionType::Radio => "radio",
            QuestionType::Boolean => "boolean",
            QuestionType::Select => "select",
            QuestionType::Dropdown => "dropdown",
            QuestionType::Stt => "stt",
            QuestionType::Imc => "imc",
        }
    }
}

/// How many people see each file at each stage (each at least 1; 1/1/1 is the free plan's
/// only choice).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rotations {
    /// Annotators per file.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100), with = "i32")]
    pub annotation: u32,
    /// Reviewers per file.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100), with = "i32")]
    pub review: u32,
    /// Client reviewers per file.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100), with = "i32")]
    pub client_review: u32,
}

fn one() -> u32 {
    1
}

impl Default for Rotations {
    fn default() -> Self {
        Rotations { annotation: 1, review: 1, client_review: 1 }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum ProjectDeletionPolicy {
    /// Deleting the AnnotationProject leaves the platform's project.
    #[default]
    Retain,
    /// Deleting it archives the platform's project first.
    Archive,
    /// Deleting it deletes the platform's project first, permanently.
    Delete,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Adopt {
    /// The id of the project made in the UI.
    pub project_id: PlatformId,
}

/// A change of the attached datasets being made (the intent, recorded before the call).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetChange {
    /// Datasets being attached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attach: Vec<String>,
    /// Datasets being detached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detach: Vec<String>,
    /// The call's tracking id, to quote to Labellerr support.
    pub tracking_id: String,
    pub started_time: Time,
}

/// What the operator last observed of the project.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnnotationProjectStatus {
    /// The generation of the spec this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Creating, Ready or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ProjectPhase>,
    /// The template the project uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    /// Set just before the template's create call, cleared once its outcome is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_creation_started_time: Option<Time>,
    /// The template create call's tracking id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_tracking_id: Option<String>,
    /// The platform's id of the project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// The name it was created under on the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_name: Option<String>,
    /// Set just before the project's create call, cleared once its outcome is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_started_time: Option<Time>,
    /// The project create call's tracking id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_tracking_id: Option<String>,
    /// The platform's status code: 300 ready, 400 and above failed, else processing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i64>,
    /// The datasets attached on the platform.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attached_datasets: Vec<String>,
    /// A change of the attached datasets under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_change: Option<DatasetChange>,
    /// The rotations as last set on the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotations: Option<Rotations>,
    /// The last `s3connect.io/requested-at` (or Flux's) value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// DatasetsReady, TemplateReady, Created, Ready, and Reconciling or Stalled while not
    /// Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ProjectPhase {
    /// Waiting for its datasets (or a template).
    Pending,
    /// Being created, or processed by the platform.
    Creating,
    Ready,
    Failed,
}

crate::api::conditions::reasons! {
    /// The reasons of an AnnotationProject's conditions.
    pub enum ProjectReason {
        DatasetNotFound,
        DatasetNotReady,
        DatasetEmpty,
        DatasetsReady,
        DataTypeMismatch,
        TemplateCreating,
        TemplateCreated,
        TemplateGiven,
        TemplateRejected,
        TemplateUnconfirmed,
        Creating,
        Processing,
        ProjectReady,
        ProjectFailed,
        ProjectNotFound,
        CreationUnconfirmed,
        Adopted,
        ProjectOwnedElsewhere,
        DatasetOwnedElsewhere,
        RotationsRejected,
        DatasetsChanging,
        DatasetChangeUnconfirmed,
        DeletionBlocked,
        PlatformRejected,
        PlatformInternalError,
        PlatformUnreachable,
    }
}
