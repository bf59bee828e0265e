//! `DatasetExport`: export the annotations of a Labellerr project to a folder of an
//! Export connection, once. The spec is immutable, like a Job's: a different export is a
//! new object, which is what makes "a restart never submits twice" checkable.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::ObjectName;

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "s3connect.io",
    version = "v1alpha1",
    kind = "DatasetExport",
    namespaced,
    status = "DatasetExportStatus",
    shortname = "dsx",
    category = "s3connect",
    doc = "An export of a Labellerr project's annotations to a folder of an S3Connection with Export usage, run once.",
    printcolumn = r#"{"name":"Connection","type":"string","jsonPath":".spec.connectionRef.name"}"#,
    printcolumn = r#"{"name":"Format","type":"string","jsonPath":".spec.format"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Report","type":"string","jsonPath":".status.reportId","priority":1}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message","priority":1}"#
)]
/// What to export, from which project, in which format, to which folder of which
/// connection. Immutable: a different export is a new object.
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: delete and re-create the DatasetExport to run a different export"))]
#[x_kube(validation = Rule::new("has(self.projectId) != has(self.projectRef)").message("give exactly one of projectId (a project made elsewhere) and projectRef (an AnnotationProject of this namespace)"))]
#[serde(rename_all = "camelCase")]
pub struct DatasetExportSpec {
    /// The S3Connection (same namespace) to write to; it needs Export usage and platform
    /// registration.
    pub connection_ref: ConnectionRef,
    /// The Labellerr project whose annotations are exported (or `projectRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[^\x00-\x1f\x7f]+$"))]
    pub project_id: Option<String>,
    /// An AnnotationProject of this namespace whose project is exported, once it is Ready
    /// (or `projectId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_ref: Option<crate::api::project::ProjectRef>,
    /// The export's file format: json, coco_json, csv or png.
    pub format: ExportFormat,
    /// Export the files in any of these workflow statuses.
    #[schemars(length(min = 1, max = 5), extend("x-kubernetes-list-type" = "set"))]
    pub statuses: Vec<FileStatus>,
    /// Folder under the connection's prefix, for example `exports/2026-11/`.
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^[^\x00-\x1f\x7f]+$"))]
    #[x_kube(validation = Rule::new(FOLDER_RULE).message(FOLDER_MESSAGE).reason(Reason::FieldValueInvalid))]
    pub folder: String,
    /// Name of the export on the platform (default: the object's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[^\x00-\x1f\x7f]+$"))]
    pub name: Option<String>,
    /// Description of the export on the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), regex(pattern = r"^[^\x00-\x1f\x7f]*$"))]
    pub description: Option<String>,
}

const FOLDER_RULE: &str = "!self.startsWith('/') && !self.contains('//') && !self.matches('(^|/)[.][.]?(/|$)')";
const FOLDER_MESSAGE: &str = "folder must be a relative path under the connection's prefix, without a leading '/', empty segments or '.'/'..' segments, for example exports/run-1/";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct ConnectionRef {
    /// Name of the S3Connection, in the same namespace.
    pub name: ObjectName,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    Json,
    CocoJson,
    Csv,
    Png,
}

/// Workflow statuses of a file on the platform. Exports usually take `review`,
/// `client_review` and/or `accepted`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    Review,
    RAssigned,
    ClientReview,
    CrAssigned,
    Accepted,
}

/// What the operator last observed of the export.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetExportStatus {
    /// The generation of the spec this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Submitted, Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ExportPhase>,
    /// The platform's id of this export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_id: Option<String>,
    /// Where the export is written: `s3://bucket/prefix/folder/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Set just before the export is submitted, cleared once the outcome is recorded: found
    /// set without a reportId after a restart, the submission's outcome is unknown and it is
    /// not repeated (see the `s3connect.io/report-id` and `s3connect.io/resubmit` annotations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission_started_time: Option<Time>,
    /// The tracking id the submission was sent with (recorded with the intent), to quote
    /// to Labellerr support when its outcome is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission_tracking_id: Option<String>,
    /// The last `s3connect.io/requested-at` (or Flux's `reconcile.fluxcd.io/requestedAt`)
    /// value acted on: a new value re-checks the export at once (it never resubmits one
    /// whose submission is unconfirmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// The value of the `s3connect.io/resubmit` annotation last acted on: each new value
    /// asks for one more submission, never more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_resubmit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// ConnectionReady, Submitted, Complete, Ready, and Reconciling or Stalled while not
    /// Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

crate::api::conditions::reasons! {
/// The reasons of a DatasetExport's own conditions (its ConnectionReady passes on the
/// connection's reason as it is).
pub enum ExportReason {
    Submitting,
    Submitted,
    SubmissionUnconfirmed,
    NoFilesWithStatus,
    ExportRunning,
    ExportSucceeded,
    ExportFailed,
    ReportNotFound,
    PlatformRejected,
    PlatformInternalError,
    PlatformUnreachable,
    ProjectNotFound,
    ProjectNotReady,
}
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ExportPhase {
    Pending,
    Submitted,
    Running,
    Succeeded,
    Failed,
}
