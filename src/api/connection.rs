//! `S3Connection`: a bucket/prefix, the credentials to reach it, and what the labelling
//! platform will use it for. Validation that the API server can do lives in the schema
//! (enums, bounds, CEL), so bad input is refused at `kubectl apply`, not in status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{DEFAULT_ORIGIN, SecretName};

/// The bucket and prefix must be reachable with the credentials for every `usage`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "s3connect.io",
    version = "v1alpha1",
    kind = "S3Connection",
    namespaced,
    status = "S3ConnectionStatus",
    shortname = "s3c",
    category = "s3connect",
    doc = "An S3 bucket/prefix that the Labellerr platform reads (Import) and/or writes (Export), validated against the permissions that usage needs.",
    printcolumn = r#"{"name":"Bucket","type":"string","jsonPath":".status.bucket"}"#,
    printcolumn = r#"{"name":"Region","type":"string","jsonPath":".status.region"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"URI","type":"string","jsonPath":".spec.uri","priority":1}"#,
    printcolumn = r#"{"name":"Usage","type":"string","jsonPath":".spec.usage","priority":1}"#,
    printcolumn = r#"{"name":"Last Validated","type":"date","jsonPath":".status.lastValidatedTime","priority":1}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(ACCESS_POINT_RULE).message(ACCESS_POINT_MESSAGE).reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new(ACCESS_POINT_CORS_RULE).message(ACCESS_POINT_CORS_MESSAGE).reason(Reason::FieldValueForbidden))]
pub struct S3ConnectionSpec {
    /// Bucket and optional prefix: `s3://bucket/prefix/`, `bucket/prefix/` or `bucket`. The
    /// bucket may be an access point's ARN (`s3://arn:aws:s3:<region>:<account
    /// id>:accesspoint/<name>/prefix/`).
    #[schemars(length(min = 3, max = 1024))]
    #[x_kube(validation = Rule::new(URI_RULE).message(URI_MESSAGE).reason(Reason::FieldValueInvalid))]
    pub uri: String,

    /// What the platform uses the bucket for; decides which permissions are required.
    /// Import needs list and read; Export also needs write and delete.
    #[serde(default = "default_usage")]
    #[schemars(length(min = 1, max = 2), extend("x-kubernetes-list-type" = "set"))]
    pub usage: Vec<Usage>,

    /// Where the S3 access keys are.
    pub credentials: Credentials,

    /// The bucket's region. When unset it is discovered with GetBucketLocation; when set
    /// and different from the bucket's, the connection reports RegionMismatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"))]
    pub region: Option<String>,

    /// Endpoint of an S3-compatible store (`https://host[:port]`). Only endpoints the
    /// operator's allow-list admits are used. Unset means AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new(ENDPOINT_RULE).message(ENDPOINT_MESSAGE).reason(Reason::FieldValueInvalid))]
    pub endpoint: Option<String>,

    /// Address buckets as `endpoint/bucket` instead of `bucket.endpoint`; most
    /// S3-compatible stores need this.
    #[serde(default)]
    pub force_path_style: bool,

    /// The bucket CORS rule the labelling UI needs to load objects in the browser.
    #[serde(default)]
    pub cors: Cors,

    /// The kind of files in the bucket, as the platform classifies them.
    #[serde(default)]
    pub data_type: DataType,

    /// How often a Ready connection is validated again, as a duration (`30s` to `24h`,
    /// for example `10m` or `1h30m`). Spec and Secret changes re-validate at once.
    #[serde(default = "default_revalidate_interval")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new(INTERVAL_RULE).message(INTERVAL_MESSAGE).reason(Reason::FieldValueInvalid))]
    pub revalidate_interval: String,

    /// Register the connection with the Labellerr platform once every probe passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

const URI_RULE: &str = r"self.matches('^(s3://)?([a-z0-9][a-z0-9.-]{1,61}[a-z0-9]|arn:aws(-cn|-us-gov)?:s3:[a-z0-9-]{1,32}:[0-9]{12}:accesspoint/[a-z0-9][a-z0-9-]{1,48}[a-z0-9])(/[^/\\x00-\\x1f\\x7f]+)*/?$') && !self.matches('/[.][.]?(/|$)')";
const URI_MESSAGE: &str = "uri must be s3://bucket/prefix/, bucket/prefix/ or bucket: a bucket name is 3-63 lowercase letters, digits, dots or hyphens, starting and ending with a letter or digit (or an access point ARN, arn:aws:s3:<region>:<account id>:accesspoint/<name>), and the prefix has no empty (//), '.' or '..' segments and no control characters";
/// An access point ARN is AWS's (no S3-compatible store has one), is addressed by its
/// own host name, names no bucket a grant could match, and is no `s3://bucket/prefix/`
/// path the platform's SDK speaks of.
const ACCESS_POINT_RULE: &str = "!self.uri.matches('^(s3://)?arn:') || (!has(self.endpoint) && !self.forcePathStyle && has(self.credentials.secretRef) && !has(self.platform))";
const ACCESS_POINT_MESSAGE: &str = "an access point ARN is AWS's and has its own host name: remove endpoint and forcePathStyle, give the keys with credentials.secretRef (managed credentials are granted by bucket name), and leave out platform (the platform reads buckets by name: register the bucket itself)";
/// S3 answers GetBucketCors through an access point but never PutBucketCors.
const ACCESS_POINT_CORS_RULE: &str = "!self.uri.matches('^(s3://)?arn:') || self.cors.mode != 'Apply'";
const ACCESS_POINT_CORS_MESSAGE: &str = "S3 does not change a bucket's CORS through an access point: set cors.mode to Verify (and put the rule on the bucket itself) or Ignore";
const ENDPOINT_RULE: &str = r"self.matches('^https?://[A-Za-z0-9.:\\[\\]_-]+/?$')";
const ENDPOINT_MESSAGE: &str =
    "endpoint must be http(s)://host[:port] with no path, query or user info, for example https://s3.example.com";
const INTERVAL_RULE: &str =
    "self.matches('^([0-9]+[smh])+$') && duration(self) >= duration('30s') && duration(self) <= duration('24h')";
const INTERVAL_MESSAGE: &str =
    "revalidateInterval must be a duration of s, m and h parts between 30s and 24h, for example 10m or 1h30m";

/// What the platform does with the bucket.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, schemars::JsonSchema)]
pub enum Usage {
    /// The platform lists and reads objects to build datasets.
    Import,
    /// The platform writes exported annotations.
    Export,
}

fn default_usage() -> Vec<Usage> {
    vec![Usage::Import]
}

fn default_revalidate_interval() -> String {
    "10m".to_owned()
}

/// A Secret in the connection's namespace holding S3 access keys. There is no namespace
/// field on purpose: a cross-namespace reference would let anyone who may create an
/// S3Connection read any Secret through the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(CREDENTIALS_RULE).message(CREDENTIALS_MESSAGE).reason(Reason::FieldValueInvalid))]
pub struct Credentials {
    /// The Secret with the access keys, and the names of its keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<CredentialsSecretRef>,
    /// Keys the operator makes itself: an IAM user under the path `/s3connect/`, with
    /// exactly the policy `s3connect policy` prints for this uri and usage, and an access key
    /// in a Secret the operator owns (named in `status.managedCredentials.secretName`),
    /// rotated on `rotationInterval` and deleted with the connection. A cluster admin
    /// must grant the namespace this bucket, prefix, usage and deletion policy with an
    /// S3AccessGrant; until then nothing is made in IAM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedCredentials>,
}

const CREDENTIALS_RULE: &str = "has(self.secretRef) != has(self.managed)";
const CREDENTIALS_MESSAGE: &str =
    "credentials needs exactly one of secretRef (keys you provide) and managed (keys the operator makes)";

/// Access keys the operator creates, rotates and deletes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedCredentials {
    /// How old a key may get before the operator replaces it, in days (`90d`, AWS's
    /// recommendation, by default). The new key is validated (and registered with the
    /// platform) before the old one is deleted, so Ready never goes False for a rotation.
    #[serde(default = "default_rotation_interval")]
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,3}d$"))]
    pub rotation_interval: String,
    /// What deleting the S3Connection does to the IAM user: `Delete` (its keys, policy
    /// and the user itself) or `Retain` (left in IAM for a person).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn default_rotation_interval() -> String {
    "90d".to_owned()
}

impl ManagedCredentials {
    /// The rotation interval.
    pub fn rotation(&self) -> std::time::Duration {
        let days: u64 = self.rotation_interval.trim_end_matches('d').parse().unwrap_or(90);
        std::time::Duration::from_secs(days.clamp(1, 9999) * 86_400)
    }
}

/// What happens to managed IAM resources when the S3Connection is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the access keys, the inline policy and the user.
    #[default]
    Delete,
    /// Leave them in IAM.
    Retain,
}

/// The name of the Secret the operator writes a managed connection's keys to.
pub fn managed_secret_name(connection: &str) -> String {
    const SUFFIX: &str = "-s3connect-keys";
    if connection.len() + SUFFIX.len() <= 253 {
        return format!("{connection}{SUFFIX}");
    }
    let hash = crate::text::short_hash(connection);
    format!("{}-{hash}{SUFFIX}", &connection[..253 - SUFFIX.len() - hash.len() - 1])
}

impl Credentials {
    /// The Secret the keys are read from: the one named, or the one the operator writes.
    pub fn secret(&self, connection: &str) -> CredentialsSecretRef {
        match &self.secret_ref {
            Some(r) => r.clone(),
            None => CredentialsSecretRef {
                name: managed_secret_name(connection).into(),
                access_key_id_key: default_access_key_id_key(),
                secret_access_key_key: default_secret_access_key_key(),
                session_token_key: default_session_token_key(),
            },
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Name of the Secret, in the same namespace.
    pub name: SecretName,
    /// Key of the access key id in the Secret.
    #[serde(default = "default_access_key_id_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub access_key_id_key: String,
    /// Key of the secret access key in the Secret.
    #[serde(default = "default_secret_access_key_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub secret_access_key_key: String,
    /// Key of an optional session token; used when the Secret has it.
    #[serde(default = "default_session_token_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub session_token_key: String,
}

fn default_access_key_id_key() -> String {
    "AWS_ACCESS_KEY_ID".to_owned()
}
fn default_secret_access_key_key() -> String {
    "AWS_SECRET_ACCESS_KEY".to_owned()
}
fn default_session_token_key() -> String {
    "AWS_SESSION_TOKEN".to_owned()
}

/// How the operator treats the bucket's CORS configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cors {
    /// `Apply` adds the rule when missing (other rules are kept), `Verify` only checks
    /// it, `Ignore` skips CORS.
    #[serde(default)]
    pub mode: CorsMode,
    /// Origins the labelling UI is served from: `*`, or `http(s)://host[:port]` in ASCII
    /// with at most one `*`, as S3 accepts them.
    #[serde(default = "default_origins")]
    #[schemars(
        length(min = 1, max = 16),
        inner(
            length(min = 1, max = 256),
            regex(pattern = r"^(\*|https?://([A-Za-z0-9.:\[\]_-]+|[A-Za-z0-9.:\[\]_-]*\*[A-Za-z0-9.:\[\]_-]*))$")
        )
    )]
    pub allowed_origins: Vec<String>,
}

impl Default for Cors {
    fn default() -> Self {
        Self { mode: CorsMode::default(), allowed_origins: default_origins() }
    }
}

fn default_origins() -> Vec<String> {
    vec![DEFAULT_ORIGIN.to_owned()]
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum CorsMode {
    #[default]
    Apply,
    Verify,
    Ignore,
}

/// The platform's data types.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    #[default]
    Image,
    Video,
    Audio,
    Document,
    Text,
}

impl DataType {
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Image => "image",
            DataType::Video => "video",
            DataType::Audio => "audio",
            DataType::Document => "document",
            DataType::Text => "text",
        }
    }
}

/// Registration with the Labellerr platform.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Platform {
    pub secret_ref: PlatformSecretRef,
}

/// A Secret in the same namespace with the platform's API key, API secret and client id.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlatformSecretRef {
    /// Name of the Secret, in the same namespace.
    pub name: SecretName,
    /// Key of the Labellerr API key in the Secret.
    #[serde(default = "default_api_key_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub api_key_key: String,
    /// Key of the Labellerr API secret in the Secret.
    #[serde(default = "default_api_secret_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub api_secret_key: String,
    /// Key of the Labellerr client id in the Secret.
    #[serde(default = "default_client_id_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub client_id_key: String,
}

fn default_api_key_key() -> String {
    "LABELLERR_API_KEY".to_owned()
}
fn default_api_secret_key() -> String {
    "LABELLERR_API_SECRET".to_owned()
}
fn default_client_id_key() -> String {
    "LABELLERR_CLIENT_ID".to_owned()
}

/// What the operator last observed. Never holds secret material: the Secret appears only
/// as its resourceVersion.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3ConnectionStatus {
    /// The generation of the spec this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// CredentialsValid, BucketReachable, ReadPermitted, WritePermitted (Export),
    /// CorsConfigured, Registered (with spec.platform), Ready, and Reconciling or Stalled
    /// while not Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Bucket name, normalised from `uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Key prefix, normalised from `uri` (empty, or ending in `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The bucket's region, as S3 reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The endpoint requests were sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Each action the usage needs, and whether the credentials are allowed it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["action"]))]
    pub permissions: Vec<PermissionCheck>,
    /// An IAM policy (JSON) with exactly the statements that would allow every denied
    /// action, scoped to this bucket and prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_policy: Option<String>,
    /// Key of one object found under the prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_object: Option<String>,
    /// What the operator found or did about the bucket's CORS rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsState>,
    /// The connection's id on the Labellerr platform, once registered: the Export
    /// registration when usage has Export (what DatasetExports use), else the Import one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_connection_id: Option<String>,
    /// Every registration on the platform, one per usage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["connectionType"]))]
    pub platform_connections: Vec<PlatformConnection>,
    /// Registrations being created: recorded before the platform is asked, so that one
    /// whose answer was lost (a timeout, a restart) is found again by its name instead of
    /// being created twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["connectionType"]))]
    pub platform_registration_intents: Vec<RegistrationIntent>,
    /// resourceVersion of the platform Secret last used (never its content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_secret_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_validated_time: Option<Time>,
    /// resourceVersion of the credentials Secret that was validated (never its content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_version: Option<String>,
    /// A salted digest of the key values that were validated (never the values): a change
    /// of the Secret that leaves them as they were (labels, annotations) is no change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_digest: Option<String>,
    /// The value of the last `s3connect.io/requested-at` (or Flux's
    /// `reconcile.fluxcd.io/requestedAt`) annotation acted on: a new value validates at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// With managed credentials: the IAM user and Secret the operator made (never a key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_credentials: Option<ManagedCredentialsStatus>,
}

/// What the operator made for managed credentials. Key material lives in the Secret only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedCredentialsStatus {
    /// The IAM user's name (under `userPath`).
    pub user_name: String,
    /// The IAM path the operator creates users under.
    pub user_path: String,
    /// The Secret holding the current access key (owned by this S3Connection).
    pub secret_name: String,
    /// When the current access key was created; it is replaced after `rotationInterval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_created_time: Option<Time>,
    /// The previous access key still exists: it is deleted once the connection is Ready
    /// with the new one.
    #[serde(default)]
    pub retiring_previous_key: bool,
    /// The value of the last `s3connect.io/rotate-keys-at` annotation acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_rotate_at: Option<String>,
    /// The S3AccessGrant that covers this connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// A rotation asked for with the annotation waits until then: keys are rotated on
    /// request at most once per the operator's `--min-rotation-interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_waits_until: Option<Time>,
    /// A digest of the access key id last written to the Secret (never the id): a newer
    /// key in IAM is one whose answer was lost, replaced at once; a Secret deleted after
    /// its key was delivered gets a new key only after `--min-rotation-interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub key_digest: Option<String>,
}

/// One registration of the connection on the platform.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlatformConnection {
    /// `import` or `export`.
    pub connection_type: String,
    /// The platform's connection id.
    pub id: String,
    /// Which keys were registered: the digest of their values (`status.credentialsDigest`),
    /// or, for registrations made before digests, the Secret's resourceVersion.
    pub credentials_version: String,
}

/// A registration the operator is creating on the platform.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationIntent {
    /// `import` or `export`.
    pub connection_type: String,
    /// The name it is created under on the platform.
    pub name: String,
    pub started_time: Time,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PermissionCheck {
    /// IAM action, for example `s3:GetObject`.
    pub action: String,
    /// Allowed, Denied, or Untested (an earlier failure made the probe meaningless).
    pub result: PermissionResult,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum PermissionResult {
    Allowed,
    Denied,
    /// Not probed, because an earlier failure made the probe meaningless.
    Untested,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum CorsState {
    /// The operator added the managed rule.
    Applied,
    /// The rule was there already (Apply mode).
    AlreadyPresent,
    /// The rule is there (Verify mode).
    Verified,
    /// The rule is not there and the operator did not or could not add it.
    Missing,
    /// CORS mode is Ignore.
    Ignored,
}
