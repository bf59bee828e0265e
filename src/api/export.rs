//! `DatasetExport`: export the annotations of a Labellerr project to a folder of an
//! Export connection, once, or on a schedule (each run into its own folder, incremental
//! runs only what changed since the last successful one). What is exported is immutable,
//! like a Job's: a different export is a new object, which is what makes "a restart never
//! submits twice" checkable; only the schedule's interval and history may change.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
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
    doc = "An export of a Labellerr project's annotations to a folder of an S3Connection with Export usage, run once or on a schedule.",
    printcolumn = r#"{"name":"Connection","type":"string","jsonPath":".spec.connectionRef.name"}"#,
    printcolumn = r#"{"name":"Format","type":"string","jsonPath":".spec.format"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Report","type":"string","jsonPath":".status.reportId","priority":1}"#,
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule","priority":1}"#,
    printcolumn = r#"{"name":"Next run","type":"date","jsonPath":".status.nextRunTime","priority":1}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message","priority":1}"#
)]
/// What to export, from which project, in which format, to which folder of which
/// connection. Immutable: a different export is a new object.
#[x_kube(validation = Rule::new(IMMUTABLE_RULE).message(IMMUTABLE_MESSAGE))]
#[x_kube(validation = Rule::new("!self.incremental || has(self.schedule)").message("incremental needs a schedule: each run exports what changed since the last successful one"))]
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
    /// Run the export again at this interval (a duration of s, m and h parts between 5m and
    /// 168h, for example `24h`), each run into its own folder `<folder>/<run start>/`
    /// (UTC, `20261204T060000Z`). Without it the export runs once. A new value of the
    /// `s3connect.io/run-now` annotation starts a run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new(SCHEDULE_RULE).message(SCHEDULE_MESSAGE).reason(Reason::FieldValueInvalid))]
    pub schedule: Option<String>,
    /// With a schedule: each run exports only the files updated since the start of the
    /// last successful run (the first run exports everything).
    #[serde(default)]
    pub incremental: bool,
    /// With a schedule: how many of the last runs the status lists (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 50), with = "Option<i32>")]
    pub runs_history_limit: Option<u32>,
}

/// What is exported never changes (a different export is a new object); the schedule's
/// interval and the history limit may.
const IMMUTABLE_RULE: &str = "self.connectionRef == oldSelf.connectionRef \
    && has(self.projectId) == has(oldSelf.projectId) && (!has(self.projectId) || self.projectId == oldSelf.projectId) \
    && has(self.projectRef) == has(oldSelf.projectRef) && (!has(self.projectRef) || self.projectRef == oldSelf.projectRef) \
    && self.format == oldSelf.format && self.statuses == oldSelf.statuses && self.folder == oldSelf.folder \
    && has(self.name) == has(oldSelf.name) && (!has(self.name) || self.name == oldSelf.name) \
    && has(self.description) == has(oldSelf.description) && (!has(self.description) || self.description == oldSelf.description) \
    && has(self.schedule) == has(oldSelf.schedule) && self.incremental == oldSelf.incremental";
const IMMUTABLE_MESSAGE: &str = "spec is immutable but for schedule's interval and runsHistoryLimit (a one-shot export stays one-shot, a recurring one recurring): delete and re-create the DatasetExport to run a different export";

const SCHEDULE_RULE: &str =
    "self.matches('^([0-9]+[smh])+$') && duration(self) >= duration('5m') && duration(self) <= duration('168h')";
const SCHEDULE_MESSAGE: &str = "schedule must be a duration of s, m and h parts between 5m and 168h, for example 24h";

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

/// Workflow statuses of a file on the platform, all fourteen the export guide lists (`r_`:
/// at review, `cr_`: at client review). Exports usually take `review`, `client_review`
/// and/or `accepted`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    Assigned,
    Review,
    RAssigned,
    ClientReview,
    CrAssigned,
    Accepted,
    Rejected,
    ClientRejected,
    Skipped,
    RSkipped,
    CrSkipped,
    Critical,
    RCritical,
    CrCritical,
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
    /// With a schedule: when the next run starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<Time>,
    /// With a schedule: when the run in progress was submitted (recorded with its intent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_started_time: Option<MicroTime>,
    /// With `incremental`: the start of the last successful run; the next run exports the
    /// files updated after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_run_time: Option<MicroTime>,
    /// With a schedule: the last runs, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<ExportRun>,
    /// The value of the `s3connect.io/run-now` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_run_now: Option<String>,
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
    Scheduled,
    RunUnconfirmed,
    NoNewFiles,
}
}

/// One run of a scheduled export.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportRun {
    /// When it was submitted.
    pub start_time: MicroTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Succeeded, Failed, NoFiles (nothing to export: for an incremental run, nothing
    /// changed) or Unconfirmed (the platform's answer was lost; never resubmitted, and the
    /// next incremental run covers its files).
    pub result: RunResult,
    /// The platform's id of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_id: Option<String>,
    /// The tracking id it was submitted with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_id: Option<String>,
    /// Where its files are: `s3://bucket/prefix/folder/<run start>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// For an incremental run: it exported the files updated after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_after: Option<MicroTime>,
    /// What the platform said, for a run that did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum RunResult {
    Succeeded,
    Failed,
    NoFiles,
    Unconfirmed,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ExportPhase {
    Pending,
    Submitted,
    Running,
    Succeeded,
    Failed,
}
