//! `Dataset`: a dataset on the Labellerr platform made from a folder of an Import
//! connection, the manual's "Creating Dataset" step. Created once, followed until the
//! platform has processed it, optionally synced with a project on a schedule.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::ObjectName;
use super::connection::DataType;

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "s3connect.io",
    version = "v1alpha1",
    kind = "Dataset",
    namespaced,
    status = "DatasetStatus",
    shortname = "s3ds",
    category = "s3connect",
    doc = "A dataset on the Labellerr platform made from a folder of an S3Connection with Import usage, created once and followed until the platform has processed it.",
    printcolumn = r#"{"name":"Connection","type":"string","jsonPath":".spec.connectionRef.name"}"#,
    printcolumn = r#"{"name":"Files","type":"integer","jsonPath":".status.filesCount"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Path","type":"string","jsonPath":".spec.path","priority":1}"#,
    printcolumn = r#"{"name":"Dataset","type":"string","jsonPath":".status.datasetId","priority":1}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message","priority":1}"#
)]
/// Which folder of which connection makes the dataset, and what happens to it later.
#[x_kube(validation = Rule::new(IMMUTABLE_RULE).message(IMMUTABLE_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct DatasetSpec {
    /// The S3Connection (same namespace) whose bucket holds the files; it needs Import
    /// usage and spec.platform, and is used once it is Ready and registered.
    pub connection_ref: ConnectionRef,
    /// Folder under the connection's prefix, for example `cats/` (default: the prefix
    /// itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^[^\x00-\x1f\x7f]+$"))]
    #[x_kube(validation = Rule::new(PATH_RULE).message(PATH_MESSAGE).reason(Reason::FieldValueInvalid))]
    pub path: Option<String>,
    /// The kind of files (default: the connection's dataType).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_type: Option<DataType>,
    /// The dataset's name on the platform (default: `<namespace>/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[^\x00-\x1f\x7f]+$"))]
    pub display_name: Option<String>,
    /// The dataset's description on the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), regex(pattern = r"^[^\x00-\x1f\x7f]*$"))]
    pub description: Option<String>,
    /// Index the files for multimodal search on the platform.
    #[serde(default)]
    pub multimodal_indexing: bool,
    /// Sync new files of the path into a project's dataset on a schedule (and when the
    /// `s3connect.io/sync-now` annotation gets a new value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<Sync>,
    /// What deleting this object does to the platform's dataset: `Retain` (the default)
    /// keeps it, `Delete` deletes it first.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

const PATH_RULE: &str = "!self.startsWith('/') && !self.contains('//') && !self.matches('(^|/)[.][.]?(/|$)')";
const PATH_MESSAGE: &str = "path must be a folder under the connection's prefix, without a leading '/', empty segments or '.'/'..' segments, for example cats/";
/// The platform cannot change a dataset in place: everything that makes it is fixed once
/// created. `sync` and `deletionPolicy` may change.
const IMMUTABLE_RULE: &str = "self.connectionRef == oldSelf.connectionRef \
    && has(self.path) == has(oldSelf.path) && (!has(self.path) || self.path == oldSelf.path) \
    && has(self.dataType) == has(oldSelf.dataType) && (!has(self.dataType) || self.dataType == oldSelf.dataType) \
    && has(self.displayName) == has(oldSelf.displayName) && (!has(self.displayName) || self.displayName == oldSelf.displayName) \
    && has(self.description) == has(oldSelf.description) && (!has(self.description) || self.description == oldSelf.description) \
    && self.multimodalIndexing == oldSelf.multimodalIndexing";
const IMMUTABLE_MESSAGE: &str = "connectionRef, path, dataType, displayName, description and multimodalIndexing are immutable (the platform cannot change a dataset in place): delete and re-create the Dataset; sync and deletionPolicy may change";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct ConnectionRef {
    /// Name of the S3Connection, in the same namespace.
    pub name: ObjectName,
}

/// Syncing new files into a project.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.projectId) != has(self.projectRef)").message("give exactly one of sync.projectId and sync.projectRef"))]
pub struct Sync {
    /// The Labellerr project whose dataset receives the new files (or `projectRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[^\x00-\x1f\x7f]+$"))]
    pub project_id: Option<String>,
    /// An AnnotationProject of this namespace, once it is Ready (or `projectId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_ref: Option<crate::api::project::ProjectRef>,
    /// How often, as a duration (`5m` to `24h`, for example `1h`).
    #[serde(default = "default_sync_interval")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new(SYNC_INTERVAL_RULE).message(SYNC_INTERVAL_MESSAGE).reason(Reason::FieldValueInvalid))]
    pub interval: String,
}

const SYNC_INTERVAL_RULE: &str =
    "self.matches('^([0-9]+[smh])+$') && duration(self) >= duration('5m') && duration(self) <= duration('24h')";
const SYNC_INTERVAL_MESSAGE: &str =
    "sync.interval must be a duration of s, m and h parts between 5m and 24h, for example 1h";

fn default_sync_interval() -> String {
    "1h".to_owned()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum DeletionPolicy {
    /// Deleting the Dataset leaves the platform's dataset.
    #[default]
    Retain,
    /// Deleting the Dataset deletes the platform's dataset first.
    Delete,
}

/// What the operator last observed of the dataset.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetStatus {
    /// The generation of the spec this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Creating, Ready or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DatasetPhase>,
    /// The platform's id of the dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_id: Option<String>,
    /// The name it was created under on the platform.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_name: Option<String>,
    /// Files in the dataset, as the platform counts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_count: Option<i64>,
    /// The platform's status code: 300 processed, 400 and above failed, else processing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i64>,
    /// Set just before the create call, cleared once its outcome is recorded: found set
    /// without a datasetId, the dataset is looked up by its name before any new create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_started_time: Option<Time>,
    /// The create call's tracking id, to quote to Labellerr support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_tracking_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// The last `s3connect.io/requested-at` (or Flux's `reconcile.fluxcd.io/requestedAt`)
    /// value acted on: a new value looks at the platform's dataset again at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// The value of the last `s3connect.io/sync-now` annotation acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_sync: Option<String>,
    /// ConnectionReady, Ready, and Reconciling or Stalled while not Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum DatasetPhase {
    /// Waiting for its connection.
    Pending,
    /// Created; the platform is processing it.
    Creating,
    Ready,
    Failed,
}

crate::api::conditions::reasons! {
/// The reasons of a Dataset's own conditions (ConnectionReady passes on the connection's).
pub enum DatasetReason {
    Creating,
    Processing,
    DatasetReady,
    /// The manual's "Dataset has no files".
    NoFiles,
    /// The manual's "Dataset creation shows status 500 or Failed".
    DatasetFailed,
    CreationUnconfirmed,
    /// A dataset of that name exists on the platform and is not this Dataset's.
    NameInUse,
    /// Deleting the platform's dataset failed; the finalizer stays.
    DeletionBlocked,
    ProjectNotFound,
    ProjectNotReady,
    PlatformRejected,
    PlatformInternalError,
    PlatformUnreachable,
}
}
