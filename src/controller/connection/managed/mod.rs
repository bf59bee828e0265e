//! Managed credentials (`spec.credentials.managed`): the IAM user, its policy and its access
//! key, made and rotated by the operator, with the key in a Secret the S3Connection owns.
//!
//! Check first, mint after: before any IAM call the connection must be covered by an
//! `S3AccessGrant` (read fresh from the API server, never from a cache), its namespace must
//! be within its quota of IAM users, and a requested rotation within the minimum interval
//! waits. A connection no longer covered has its keys deactivated and deleted at once.
//!
//! Exactly once: the finalizer is set before anything is made in IAM; a user is adopted
//! only when its tags name this installation and this S3Connection's uid; a key is written
//! to the Secret as soon as IAM returns it, and any key of the user that the Secret does
//! not hold (an answer lost before the write) is deleted before another is made, so AWS's
//! two-key limit is never in the way. The previous key is deleted only after a validation
//! with the new one is Ready.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, Preconditions};

use crate::api::annotations::{IAM_USER_FINALIZER, ROTATE_ANNOTATION, ROTATED_FOR_ANNOTATION};
use crate::api::conditions::Reason;
use crate::api::connection::{ManagedCredentialsStatus, S3Connection, managed_secret_name};
use crate::api::grant::{self, S3AccessGrant};
use crate::controller::{Context, FIELD_MANAGER};
use crate::iam::{Iam, IamError, Owner};
use crate::s3::client::Keys;
use crate::s3::uri::Location;
use crate::timing::Budget;
use crate::validation::Blocker;

mod plan;

const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";

/// The operator's set-up for managed credentials.
#[derive(Clone, Debug)]
pub struct Managed {
    pub iam: Iam,
    pub installation: Installation,
    /// The least time between two rotations a person asks for (the annotation); a key's
    /// age-based rotation is days apart anyway.
    pub min_rotation_interval: std::time::Duration,
    /// The most managed IAM users one namespace may have.
    pub max_per_namespace: u32,
    /// IAM writes per namespace, and policy changes per connection, spaced.
    pub budget: std::sync::Arc<Budget>,
    /// How often the sweep looks for users whose connection is gone or no longer granted.
    pub sweep_interval: std::time::Duration,
}

/// This installation of the operator: its id tags every IAM user it makes, so that two
/// installations in one AWS account never touch each other's users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installation {
    /// Made once (a random UUID) and kept in a ConfigMap in the operator's namespace.
    pub id: String,
    /// The installation's name (the Helm release's full name).
    pub release: String,
}

const INSTALLATION_KEY: &str = "id";

/// Reads this installation's id from the ConfigMap `<release>-installation` in
/// `namespace`, making it on first start. Two replicas starting together agree: the one
/// whose create loses reads the winner's. A new id is refused (and its ConfigMap deleted
/// again, so that the next start looks again) while IAM holds users tagged for the same
/// release under another id: they would otherwise be left with live keys that no
/// installation can prove its own.
pub async fn installation(
    client: &kube::Client,
    namespace: &str,
    release: &str,
    iam: &Iam,
) -> Result<Installation, String> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    let name = format!("{release}-installation");
    let read =
        |cm: &ConfigMap| cm.data.as_ref().and_then(|d| d.get(INSTALLATION_KEY)).filter(|v| !v.is_empty()).cloned();
    let failed = |e: kube::Error| format!("ConfigMap {namespace}/{name}: {e}");
    if let Some(id) = api.get_opt(&name).await.map_err(failed)?.as_ref().and_then(read) {
        return Ok(Installation { id, release: release.to_owned() });
    }
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".to_owned(), "s3connect".to_owned())])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(INSTALLATION_KEY.to_owned(), crate::platform::uuid4())])),
        ..Default::default()
    };
    let made = match api.create(&Default::default(), &cm).await {
        Ok(made) => made,
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let won = api.get(&name).await.map_err(failed)?;
            let id = read(&won).ok_or_else(|| {
                format!("ConfigMap {namespace}/{name} has no {INSTALLATION_KEY:?}: delete it and restart the operator")
            })?;
            return Ok(Installation { id, release: release.to_owned() });
        }
        Err(e) => return Err(failed(e)),
    };
    let id = read(&made).ok_or_else(|| {
        format!("ConfigMap {namespace}/{name} has no {INSTALLATION_KEY:?}: delete it and restart the operator")
    })?;
    let earlier = earlier_ids(iam, release, &id)
        .await
        .map_err(|e| format!("{e} (looking for users of an earlier id of installation {release:?})"));
    if let Some(message) = match earlier {
        Ok(ids) if ids.is_empty() => None,
        Ok(ids) => Some(format!(
            "IAM holds users under {} tagged for installation {release:?} with id {}, but ConfigMap {namespace}/{name} was missing and a new id was about to be made: to adopt those users, put the old id back (kubectl -n {namespace} create configmap {name} --from-literal=id={}) and restart; to leave them to a person, remove their {} tag",
            iam.path(),
            ids.join(", "),
            ids[0],
            crate::iam::TAG_INSTALLATION
        )),
        Err(e) => Some(e),
    } {
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: made.uid(), resource_version: None }),
            ..Default::default()
        };
        let _ = api.delete(&name, &params).await;
        return Err(message);
    }
    Ok(Installation { id, release: release.to_owned() })
}

/// The ids other than `id` that IAM users under the path carry for `release`.
async fn earlier_ids(iam: &Iam, release: &str, id: &str) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    for user in iam.users().await.map_err(|e| e.to_string())? {
        let Some(tags) = iam.tags(&user).await.map_err(|e| e.to_string())? else { continue };
        if tags.get(crate::iam::TAG_RELEASE).map(String::as_str) == Some(release)
            && !tags.contains_key(crate::iam::TAG_RELEASED)
            && let Some(other) = tags.get(crate::iam::TAG_INSTALLATION).filter(|i| *i != id)
            && !ids.contains(other)
        {
            ids.push(other.clone());
        }
    }
    Ok(ids)
}

/// Whether the chart's admission policy for Secrets is in force for the operator's own
/// identity: a dry-run create of a Secret it does not own (no label, no owner) in
/// `namespace` must be refused by that policy. Without it, RBAC's create/patch/delete on
/// Secrets would let a stolen operator token write any Secret, so managed credentials are
/// not switched on.
pub async fn admission_enforced(client: &kube::Client, namespace: &str) -> Result<(), String> {
    let probe = Secret {
        metadata: ObjectMeta { name: Some("s3connect-admission-check".into()), ..Default::default() },
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    let params = kube::api::PostParams { dry_run: true, ..Default::default() };
    let fix = "install the chart's ValidatingAdmissionPolicies (Kubernetes 1.30 or later; Helm value managedCredentials.enabled renders them) and run the operator as the chart's ServiceAccount, or pass --require-admission-policy=false to accept the risk";
    match Api::<Secret>::namespaced(client.clone(), namespace).create(&params, &probe).await {
        Ok(_) => Err(format!(
            "a dry-run write of a Secret the operator does not own in namespace {namespace:?} was admitted: {fix}"
        )),
        Err(kube::Error::Api(e)) if e.message.contains("s3connect operator may only write") => Ok(()),
        Err(kube::Error::Api(e)) => Err(format!(
            "a dry-run write of a Secret in namespace {namespace:?} was refused, but not by the s3connect admission policy ({}: {}): {fix}",
            e.code, e.message
        )),
        Err(e) => Err(format!("the admission policy could not be checked ({e}); retry by restarting the operator")),
    }
}

/// Deletes the managed key Secret `secret` (already shown to be the connection's), only if
/// it is still that object (its uid as a precondition); one already gone is fine.
pub async fn delete_secret(secrets: &Api<Secret>, secret: &Secret) -> Result<(), kube::Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: secret.uid(), resource_version: None }),
        ..Default::default()
    };
    match secrets.delete(&secret.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Who the connection's IAM user belongs to.
pub fn owner(managed: &Managed, conn: &S3Connection) -> Owner {
    Owner {
        installation: managed.installation.id.clone(),
        release: managed.installation.release.clone(),
        namespace: conn.namespace().unwrap_or_default(),
        name: conn.name_any(),
        uid: conn.uid().unwrap_or_default(),
    }
}

/// What `ensure` found or did.
pub struct Ensured {
    pub status: ManagedCredentialsStatus,
    /// The Secret with the current key, as read or just written: the validation reads
    /// its keys from this, not from another GET.
    pub secret: Option<Secret>,
}

fn blocked(reason: Reason, message: String) -> Blocker {
    Blocker::Managed { reason, message }
}

/// The condition reason for what IAM said.
pub fn reason_of(e: &IamError) -> Reason {
    match e {
        IamError::Denied { .. } => Reason::OperatorIamDenied,
        IamError::Foreign { .. } | IamError::Unprovable { .. } => Reason::ManagedResourceConflict,
        IamError::Rejected { .. } => Reason::IamRejected,
        IamError::Unavailable { .. } => Reason::IamUnavailable,
    }
}

fn from_iam(e: &IamError) -> Blocker {
    blocked(reason_of(e), e.to_string())
}

/// The grant that covers the connection, or what is missing; grants and the namespace's
/// labels are read fresh, since a stale cache could mint a key a grant no longer allows.
async fn granted(
    ctx: &Context,
    conn: &S3Connection,
    location: &Location,
) -> Result<Result<grant::Coverage, String>, kube::Error> {
    let namespace = conn.namespace().unwrap_or_default();
    let grants = Api::<S3AccessGrant>::all(ctx.client.clone()).list(&ListParams::default()).await?.items;
    let labels = if grants.iter().any(|g| g.spec.namespace_selector.is_some()) {
        Api::<Namespace>::all(ctx.client.clone()).get_metadata(&namespace).await?.metadata.labels.unwrap_or_default()
    } else {
        BTreeMap::new()
    };
    let spec = conn.spec.credentials.managed.as_ref();
    let request = grant::Request {
        namespace: &namespace,
        namespace_labels: &labels,
        bucket: &location.bucket,
        prefix: &location.prefix,
        usages: &conn.spec.usage,
        deletion_policy: spec.map(|m| m.deletion_policy).unwrap_or_default(),
    };
    Ok(grant::decide(&grants, &request))
}

/// Makes sure the connection's IAM user, policy and a current key exist, rotating the key
/// when it is due. Err is a blocker for the status (or a Kubernetes error to retry).
///
/// Every decision is made from IAM's own state, read first (the user's tags, its keys and
/// their dates, its inline policy), and from the API server: nothing a tenant can write on
/// the Secret decides whether a policy is current, how old a key is, or whether a key
/// exists at all. The steps: the target (which user and Secret, and that the Secret is
/// ours), the grant, IAM's state and the quota, what needs doing, the IAM writes, and the
/// new key's Secret.
pub async fn ensure(ctx: &Context, conn: &S3Connection) -> Result<Result<Ensured, Blocker>, kube::Error> {
    let t = match target(ctx, conn).await? {
        Ok(t) => t,
        Err(blocker) => return Ok(Err(blocker)),
    };
    let coverage = match covered(ctx, conn, &t).await? {
        Ok(c) => c,
        Err(blocker) => return Ok(Err(blocker)),
    };
    let (held, others) = match observe(&t).await {
        Ok(o) => o,
        Err(e) => return Ok(Err(from_iam(&e))),
    };
    let wanted = crate::validation::least_privilege(&coverage.spec(&conn.spec)).unwrap_or_default();
    let deletion_policy = format!("{:?}", t.spec.deletion_policy);
    // Rotation is recorded on the Secret, read fresh from the API server: a reconcile that
    // sees an older copy of the S3Connection never rotates twice for one request.
    let key_id = t.secret.as_ref().and_then(|s| value(s, ACCESS_KEY_ID));
    let previous = conn.status.as_ref().and_then(|s| s.managed_credentials.as_ref());
    let recorded = previous.and_then(|m| m.key_digest.clone());
    let handled = t.secret.as_ref().and_then(|s| s.annotations().get(ROTATED_FOR_ANNOTATION).cloned());
    let facts = plan::Facts {
        user: &t.user,
        secret_name: &t.secret_name,
        namespace: &t.namespace,
        secret: t.secret.as_ref().map(|_| plan::SecretFacts { key_id: key_id.as_deref(), handled: handled.as_deref() }),
        held: held.as_ref(),
        others,
        max_per_namespace: t.managed.max_per_namespace as usize,
        wanted_policy: &wanted,
        deletion_policy: &deletion_policy,
        rotation: t.spec.rotation(),
        min_rotation_interval: t.managed.min_rotation_interval,
        rotate_asked: conn.annotations().get(ROTATE_ANNOTATION).map(String::as_str),
        delivered: recorded.as_deref(),
        now: Timestamp::now(),
    };
    let plan = match plan::plan(&facts) {
        Ok(plan) => plan,
        Err((reason, message)) => return Ok(Err(blocked(reason, message))),
    };
    let now = facts.now;
    let status = ManagedCredentialsStatus {
        user_name: t.user.clone(),
        user_path: t.managed.iam.path().to_owned(),
        secret_name: t.secret_name.clone(),
        key_created_time: plan.key_created.map(Time),
        // Still true when the previous key could not be deleted yet: tried again.
        retiring_previous_key: previous.is_some_and(|m| m.retiring_previous_key),
        last_handled_rotate_at: plan.handled.clone(),
        grant: Some(coverage.grant.clone()),
        rotation_waits_until: plan.waits_until.map(Time),
        key_digest: plan.delivered.clone(),
    };
    if plan.steps.is_empty() {
        return Ok(Ok(Ensured { status, secret: t.secret }));
    }
    match execute(&t, held.as_ref(), &plan, &wanted, &deletion_policy).await {
        Err(blocker) => Ok(Err(blocker)),
        Ok(None) => Ok(Ok(Ensured { status, secret: t.secret })),
        Ok(Some(keys)) => write_key(&t, status, &plan, keys, now).await.map(Ok),
    }
}

/// Which IAM user and Secret a managed connection has, once the Secret is shown to be
/// this S3Connection's (or absent).
struct Target<'a> {
    spec: &'a crate::api::connection::ManagedCredentials,
    managed: &'a Managed,
    location: Location,
    namespace: String,
    name: String,
    uid: String,
    user: String,
    secret_name: String,
    secrets: Api<Secret>,
    secret: Option<Secret>,
    owner: Owner,
}

/// The connection's managed set-up, or why there is none (switched off, an invalid uri,
/// a Secret of that name that is not the connection's).
async fn target<'a>(ctx: &'a Context, conn: &'a S3Connection) -> Result<Result<Target<'a>, Blocker>, kube::Error> {
    let (namespace, name) = (conn.namespace().unwrap_or_default(), conn.name_any());
    let Some(spec) = &conn.spec.credentials.managed else {
        return Ok(Err(blocked(Reason::ManagedCredentialsDisabled, "spec.credentials.managed is not set.".into())));
    };
    let Some(managed) = &ctx.config.managed else {
        return Ok(Err(blocked(
            Reason::ManagedCredentialsDisabled,
            "This operator does not manage credentials: ask the cluster admin to switch them on (flag --managed-credentials, Helm value managedCredentials.enabled) and to grant this namespace the bucket with an S3AccessGrant, or use spec.credentials.secretRef.".into(),
        )));
    };
    // An invalid uri is reported by the validation as usual.
    let Ok(location) = Location::parse(&conn.spec.uri) else {
        return Ok(Err(blocked(Reason::IamRejected, "spec.uri is invalid: fix it first.".into())));
    };
    let user = crate::iam::user_name(&namespace, &name);
    let secret_name = managed_secret_name(&name);
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    let secret = secrets.get_opt(&secret_name).await?;
    let uid = conn.uid().unwrap_or_default();
    let ours = |s: &Secret| s.owner_references().iter().any(|o| o.uid == uid && o.controller == Some(true));
    if let Some(s) = &secret
        && !ours(s)
    {
        return Ok(Err(blocked(
            Reason::ManagedResourceConflict,
            format!(
                "Secret {secret_name:?} exists and is not this S3Connection's: rename or delete it, so the operator can write the managed key there."
            ),
        )));
    }
    let owner = owner(managed, conn);
    Ok(Ok(Target { spec, managed, location, namespace, name, uid, user, secret_name, secrets, secret, owner }))
}

/// What a cluster admin granted, before anything in IAM; keys of a connection no longer
/// covered go now.
async fn covered(
    ctx: &Context,
    conn: &S3Connection,
    t: &Target<'_>,
) -> Result<Result<grant::Coverage, Blocker>, kube::Error> {
    let message = match granted(ctx, conn, &t.location).await? {
        Ok(g) => return Ok(Ok(g)),
        Err(message) => message,
    };
    // One sentence whether this reconcile revoked or an earlier one did (or there was never
    // a key), so that the status does not flip between the two.
    let message = format!("{message} Any managed access key it had was deactivated and deleted.");
    let had = t.secret.is_some() || conn.status.as_ref().is_some_and(|s| s.managed_credentials.is_some());
    if !had {
        return Ok(Err(blocked(Reason::ManagedBucketNotAllowed, message)));
    }
    let revoked = match t.managed.iam.revoke(&t.user, &t.owner).await {
        Ok(n) => n,
        Err(e) => return Ok(Err(from_iam(&e))),
    };
    if let Some(s) = &t.secret {
        delete_secret(&t.secrets, s).await?;
    }
    tracing::warn!(connection = %format!("{}/{}", t.namespace, t.name), user = %t.user, keys = revoked, "no S3AccessGrant covers the connection any more: its managed access keys were deactivated and deleted");
    Ok(Err(blocked(Reason::ManagedBucketNotAllowed, message)))
}

/// IAM's truth about the user (whether it exists, provably ours, with its keys, their
/// dates and its policy), and, when a user is about to be made, how many the namespace's
/// other connections have (a Secret without a user is a conflict, counted for nothing).
async fn observe(t: &Target<'_>) -> Result<(Option<crate::iam::Held>, usize), IamError> {
    let held = t.managed.iam.observe(&t.user, &t.owner).await?;
    let others =
        if held.is_none() && t.secret.is_none() { users_of(t.managed, &t.namespace, &t.uid).await? } else { 0 };
    Ok((held, others))
}

/// The plan's IAM writes, in order, once the namespace's budget has room for all of them.
/// Returns the new key, if one was made.
async fn execute(
    t: &Target<'_>,
    held: Option<&crate::iam::Held>,
    plan: &plan::Plan,
    wanted: &serde_json::Value,
    deletion_policy: &str,
) -> Result<Option<Keys>, Blocker> {
    let (managed, iam) = (t.managed, &t.managed.iam);
    if let Err(at) = managed.budget.take(&t.namespace, &t.uid, plan.steps.len(), plan.policy_spaced) {
        return Err(blocked(
            Reason::IamWritesSpaced,
            format!(
                "The operator spaces IAM writes so that one namespace cannot throttle IAM for every other (at most {} a minute per namespace, a policy change per connection every {} s): this connection's changes are made at {at}.",
                managed.budget.per_minute,
                managed.budget.policy_spacing.as_secs()
            ),
        ));
    }
    let mut made = None;
    for step in &plan.steps {
        // The user's tags prove it is this connection's before anything changes in IAM.
        let done = match step {
            plan::Step::EnsureUser => iam.ensure_user(&t.user, &t.owner, deletion_policy, held.map(|h| &h.tags)).await,
            plan::Step::PutPolicy => iam.put_policy(&t.user, wanted).await,
            plan::Step::DeleteKey(id) => iam.delete_key(&t.user, id).await,
            plan::Step::CreateKey => iam.create_key(&t.user).await.map(|keys| made = Some(keys)),
        };
        done.map_err(|e| from_iam(&e))?;
    }
    Ok(made)
}

/// Writes a new key to the connection's Secret at once: it exists only in IAM's answer.
async fn write_key(
    t: &Target<'_>,
    mut status: ManagedCredentialsStatus,
    plan: &plan::Plan,
    keys: Keys,
    now: Timestamp,
) -> Result<Ensured, kube::Error> {
    let mut annotations = BTreeMap::new();
    let mut data = t.secret.as_ref().and_then(|s| s.data.clone()).unwrap_or_default();
    data.insert(ACCESS_KEY_ID.into(), ByteString(keys.access_key_id.clone().into_bytes()));
    data.insert(SECRET_ACCESS_KEY.into(), ByteString(keys.secret_access_key.clone().into_bytes()));
    status.key_created_time = Some(Time(now));
    status.key_digest = Some(plan::key_digest(&keys.access_key_id));
    if let Some(h) = &plan.handled {
        annotations.insert(ROTATED_FOR_ANNOTATION.into(), h.clone());
    }
    let owner_ref = OwnerReference {
        api_version: "s3connect.io/v1alpha1".into(),
        kind: "S3Connection".into(),
        name: t.name.clone(),
        uid: t.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let desired = Secret {
        metadata: ObjectMeta {
            name: Some(t.secret_name.clone()),
            namespace: Some(t.namespace.clone()),
            annotations: Some(annotations),
            labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".to_owned(), "s3connect".to_owned())])),
            owner_references: Some(vec![owner_ref]),
            ..Default::default()
        },
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    let written =
        t.secrets.patch(&t.secret_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired)).await?;
    let connection = format!("{}/{}", t.namespace, t.name);
    if plan.rotate {
        status.retiring_previous_key = true;
        tracing::info!(connection = %connection, user = %t.user, "managed access key rotated; the previous one goes once Ready");
    } else {
        tracing::info!(connection = %connection, user = %t.user, "managed access key created");
    }
    Ok(Ensured { status, secret: Some(written) })
}

/// How many IAM users this installation made for other S3Connections of `namespace`, as
/// IAM lists them (names under the path, confirmed by their tags; released users are a
/// person's and do not count).
async fn users_of(managed: &Managed, namespace: &str, uid: &str) -> Result<usize, IamError> {
    let prefix = crate::iam::user_name(namespace, "");
    // A long name is cut to its first 55 characters: compare no more than that.
    let prefix = &prefix[..prefix.len().min(55)];
    let mut n = 0;
    for user in managed.iam.users().await?.iter().filter(|u| u.starts_with(prefix)) {
        let Some(tags) = managed.iam.tags(user).await? else { continue };
        let tag = |k: &str| tags.get(k).map(String::as_str);
        if tag(crate::iam::TAG_INSTALLATION) == Some(managed.installation.id.as_str())
            && tag(crate::iam::TAG_NAMESPACE) == Some(namespace)
            && tag(crate::iam::TAG_UID) != Some(uid)
            && !tags.contains_key(crate::iam::TAG_RELEASED)
        {
            n += 1;
        }
    }
    Ok(n)
}

fn value(secret: &Secret, key: &str) -> Option<String> {
    secret.data.as_ref()?.get(key).and_then(|v| String::from_utf8(v.0.clone()).ok())
}

/// After a Ready validation with a new key (`status.retiringPreviousKey`): deletes every
/// other key of the user (the previous one; any a person added), once the user is shown
/// to be this connection's.
pub async fn retire_previous(
    ctx: &Context,
    conn: &S3Connection,
    secret: &Secret,
    status: &mut ManagedCredentialsStatus,
) {
    let Some(managed) = &ctx.config.managed else { return };
    if !status.retiring_previous_key {
        return;
    }
    let namespace = conn.namespace().unwrap_or_default();
    let Some(current) = value(secret, ACCESS_KEY_ID) else { return };
    let user = &status.user_name;
    match managed.iam.delete_other_keys(user, &owner(managed, conn), &current).await {
        Ok(deleted) => {
            status.retiring_previous_key = false;
            if deleted > 0 {
                tracing::info!(connection = %format!("{namespace}/{}", conn.name_any()), user = %user, deleted, "previous managed access key deleted");
            }
        }
        Err(e) => {
            tracing::warn!(user = %user, error = %e, "the previous managed access key could not be deleted yet");
        }
    }
}

/// Deletion of the connection, or managed credentials taken out of its spec: the user, its
/// policy and keys go (unless `retain`: then the user is tagged released, a person's from
/// then on), then the finalizer may. The user name is derived from the connection and
/// ownership from its tags, so nothing else needs to be kept. A user that is provably
/// someone else's is left alone; one whose ownership cannot be proven keeps the finalizer
/// (ManagedResourceConflict), never a reported success. Err is the reason and the
/// sentence the status shows while it waits.
pub async fn remove(ctx: &Context, conn: &S3Connection, retain: bool) -> Result<(), (Reason, String)> {
    let user = crate::iam::user_name(&conn.namespace().unwrap_or_default(), &conn.name_any());
    let Some(managed) = &ctx.config.managed else {
        return Err((
            Reason::ManagedCredentialsDisabled,
            format!(
                "This operator's managed credentials are switched off, so it cannot delete IAM user {user:?} that it made for this S3Connection: switch them on again (--managed-credentials, Helm value managedCredentials.enabled) to delete it, or remove the finalizer {IAM_USER_FINALIZER} to leave the user in IAM."
            ),
        ));
    };
    let owner = owner(managed, conn);
    let done = if retain {
        managed.iam.release(&user, &owner).await
    } else {
        managed.iam.delete_user(&user, &owner).await.map(|_| ())
    };
    done.map_err(|e| (reason_of(&e), e.to_string()))
}

/// Whether deleting the connection keeps its IAM user.
pub fn retains(conn: &S3Connection) -> bool {
    conn.spec
        .credentials
        .managed
        .as_ref()
        .is_some_and(|m| m.deletion_policy == crate::api::connection::DeletionPolicy::Retain)
}
