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

use crate::api::annotations::{IAM_USER_FINALIZER, ROTATE_ANNOTATION};
use crate::api::conditions::Reason;
use crate::api::connection::{ManagedCredentialsStatus, S3Connection, managed_secret_name};
use crate::api::grant::{self, S3AccessGrant};
use crate::controller::{Context, FIELD_MANAGER};
use crate::iam::{Iam, IamError, Owner};
use crate::s3::uri::Location;
use crate::validation::Blocker;

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
/// whose create loses reads the winner's.
pub async fn installation(client: &kube::Client, namespace: &str, release: &str) -> Result<Installation, String> {
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
        Err(kube::Error::Api(e)) if e.code == 409 => api.get(&name).await.map_err(failed)?,
        Err(e) => return Err(failed(e)),
    };
    let id = read(&made).ok_or_else(|| {
        format!("ConfigMap {namespace}/{name} has no {INSTALLATION_KEY:?}: delete it and restart the operator")
    })?;
    Ok(Installation { id, release: release.to_owned() })
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
        IamError::Foreign { .. } => Reason::ManagedResourceConflict,
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
) -> Result<Result<String, String>, kube::Error> {
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

/// Where the connection stands among its namespace's managed connections, oldest first
/// (read fresh): the first `--max-managed-per-namespace` are served, so a namespace's
/// newest connection waits, never an established one.
async fn quota_rank(ctx: &Context, conn: &S3Connection) -> Result<(usize, usize), kube::Error> {
    let namespace = conn.namespace().unwrap_or_default();
    let all = Api::<S3Connection>::namespaced(ctx.client.clone(), &namespace).list(&ListParams::default()).await?;
    let mut managed: Vec<_> = all
        .items
        .iter()
        .filter(|c| c.spec.credentials.managed.is_some() && c.metadata.deletion_timestamp.is_none())
        .map(|c| (c.metadata.creation_timestamp.clone().map(|t| t.0), c.uid().unwrap_or_default()))
        .collect();
    managed.sort();
    let uid = conn.uid().unwrap_or_default();
    let rank = managed.iter().position(|(_, u)| *u == uid).unwrap_or(managed.len());
    Ok((rank, managed.len()))
}

/// Makes sure the connection's IAM user, policy and a current key exist, rotating the key
/// when it is due. Err is a blocker for the status (or a Kubernetes error to retry).
pub async fn ensure(ctx: &Context, conn: &S3Connection) -> Result<Result<Ensured, Blocker>, kube::Error> {
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
    let iam = &managed.iam;
    let user = crate::iam::user_name(&namespace, &name);
    let secret_name = managed_secret_name(&name);
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    let secret = secrets.get_opt(&secret_name).await?;
    let uid = conn.uid().unwrap_or_default();
    let ours = |s: &Secret| s.owner_references().iter().any(|o| o.uid == uid);
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

    // What a cluster admin granted, before anything in IAM; keys of a connection no
    // longer covered go now.
    let grant_name = match granted(ctx, conn, &location).await? {
        Ok(g) => g,
        Err(message) => {
            // One sentence whether this reconcile revoked or an earlier one did (or there
            // was never a key), so that the status does not flip between the two.
            let message = format!("{message} Any managed access key it had was deactivated and deleted.");
            let had = secret.is_some() || conn.status.as_ref().is_some_and(|s| s.managed_credentials.is_some());
            if !had {
                return Ok(Err(blocked(Reason::ManagedBucketNotAllowed, message)));
            }
            let revoked = match iam.revoke(&user, &owner).await {
                Ok(n) => n,
                Err(e) => return Ok(Err(from_iam(&e))),
            };
            if let Some(s) = &secret {
                delete_secret(&secrets, s).await?;
            }
            tracing::warn!(connection = %format!("{namespace}/{name}"), user = %user, keys = revoked, "no S3AccessGrant covers the connection any more: its managed access keys were deactivated and deleted");
            return Ok(Err(blocked(Reason::ManagedBucketNotAllowed, message)));
        }
    };
    let current = secret.as_ref().and_then(|s| value(s, ACCESS_KEY_ID));
    // A namespace's quota of IAM users applies before a new user is made.
    if current.is_none() {
        let (rank, total) = quota_rank(ctx, conn).await?;
        let max = managed.max_per_namespace as usize;
        if rank >= max {
            return Ok(Err(blocked(
                Reason::ManagedQuotaExceeded,
                format!(
                    "Namespace {namespace:?} has {total} S3Connections with managed credentials and the operator makes IAM users for at most {max} per namespace (--max-managed-per-namespace); this one is newer than the first {max}: delete another, ask the cluster admin to raise the limit, or use spec.credentials.secretRef."
                ),
            )));
        }
    }

    let policy = crate::validation::least_privilege(&conn.spec).unwrap_or_default();
    let policy_hash = crate::text::short_hash(&policy.to_string());
    let annotation = |k: &str| secret.as_ref().and_then(|s| s.annotations().get(k).cloned());
    let created =
        annotation(crate::api::annotations::KEY_CREATED_AT_ANNOTATION).and_then(|t| t.parse::<Timestamp>().ok());
    // Rotation is recorded on the Secret, read fresh from the API server: a reconcile that
    // sees an older copy of the S3Connection never rotates twice for one request.
    let handled = annotation(crate::api::annotations::ROTATED_FOR_ANNOTATION);
    let rotate_asked = conn.annotations().get(ROTATE_ANNOTATION).cloned();
    let now = Timestamp::now();
    let due = rotation_due(created, now, spec.rotation());
    let asked = rotate_asked.is_some() && rotate_asked != handled;
    // Asked-for rotations are spaced: a tenant cannot churn IAM keys toward AWS's quotas.
    let waits_until = created
        .filter(|_| asked && !due)
        .and_then(|c| c.checked_add(managed.min_rotation_interval).ok())
        .filter(|until| *until > now);
    let mut status = ManagedCredentialsStatus {
        user_name: user.clone(),
        user_path: iam.path().to_owned(),
        secret_name: secret_name.clone(),
        key_created_time: created.map(Time),
        // Still true when the previous key could not be deleted yet: tried again.
        retiring_previous_key: conn
            .status
            .as_ref()
            .and_then(|s| s.managed_credentials.as_ref())
            .is_some_and(|m| m.retiring_previous_key),
        last_handled_rotate_at: handled.clone(),
        grant: Some(grant_name),
        rotation_waits_until: waits_until.map(Time),
    };

    let needs_key = current.is_none();
    let needs_policy =
        annotation(crate::api::annotations::POLICY_HASH_ANNOTATION).as_deref() != Some(policy_hash.as_str());
    let rotate = !needs_key && (due || asked) && waits_until.is_none();
    if !needs_key && !needs_policy && !rotate {
        return Ok(Ok(Ensured { status, secret }));
    }
    // Whatever is about to change in IAM, the user is this connection's first (its tags),
    // never a person's or another installation's of the same name.
    if let Err(e) = iam.ensure_user(&user, &owner).await {
        return Ok(Err(from_iam(&e)));
    }
    if (needs_key || needs_policy)
        && let Err(e) = iam.put_policy(&user, &policy).await
    {
        return Ok(Err(from_iam(&e)));
    }
    let mut keys_to_write = None;
    if needs_key || rotate {
        // Keys the Secret does not hold are answers lost before they were written: delete
        // them first (this also keeps the user under AWS's two-key limit).
        let listed = match iam.keys(&user).await {
            Ok(k) => k,
            Err(e) => return Ok(Err(from_iam(&e))),
        };
        for key in listed.iter().filter(|k| Some(&k.id) != current.as_ref()) {
            if let Err(e) = iam.delete_key(&user, &key.id).await {
                return Ok(Err(from_iam(&e)));
            }
        }
        match iam.create_key(&user).await {
            Ok(keys) => keys_to_write = Some(keys),
            Err(e) => return Ok(Err(from_iam(&e))),
        }
    }
    // Write what changed: the key (at once, as it exists only in this answer) and the
    // policy version.
    let mut annotations = BTreeMap::from([(crate::api::annotations::POLICY_HASH_ANNOTATION.to_owned(), policy_hash)]);
    let mut data = secret.as_ref().and_then(|s| s.data.clone()).unwrap_or_default();
    match &keys_to_write {
        Some(keys) => {
            data.insert(ACCESS_KEY_ID.into(), ByteString(keys.access_key_id.clone().into_bytes()));
            data.insert(SECRET_ACCESS_KEY.into(), ByteString(keys.secret_access_key.clone().into_bytes()));
            annotations.insert(crate::api::annotations::KEY_CREATED_AT_ANNOTATION.into(), now.to_string());
            status.key_created_time = Some(Time(now));
        }
        None => {
            if let Some(c) = created {
                annotations.insert(crate::api::annotations::KEY_CREATED_AT_ANNOTATION.into(), c.to_string());
            }
        }
    }
    let handled_now = if rotate && asked { rotate_asked.clone() } else { handled };
    if let Some(h) = &handled_now {
        annotations.insert(crate::api::annotations::ROTATED_FOR_ANNOTATION.into(), h.clone());
    }
    status.last_handled_rotate_at = handled_now;
    let owner_ref = OwnerReference {
        api_version: "s3connect.io/v1alpha1".into(),
        kind: "S3Connection".into(),
        name: name.clone(),
        uid: uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let desired = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.clone()),
            namespace: Some(namespace.clone()),
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
        secrets.patch(&secret_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired)).await?;
    let connection = format!("{namespace}/{name}");
    if rotate && keys_to_write.is_some() {
        status.retiring_previous_key = true;
        tracing::info!(connection = %connection, user = %user, "managed access key rotated; the previous one goes once Ready");
    } else if keys_to_write.is_some() {
        tracing::info!(connection = %connection, user = %user, "managed access key created");
    }
    Ok(Ok(Ensured { status, secret: Some(written) }))
}

/// Whether a key made at `created` is `interval` old. A key of unknown age (the annotation
/// removed by hand) is not rotated on age alone.
fn rotation_due(created: Option<Timestamp>, now: Timestamp, interval: std::time::Duration) -> bool {
    created.is_some_and(|c| std::time::Duration::try_from(now.duration_since(c)).is_ok_and(|age| age >= interval))
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
/// policy and keys go (unless `retain`), then the finalizer may. The user name is derived
/// from the connection and ownership from its tags, so nothing else needs to be kept. Err
/// is the reason and the sentence the status shows while it waits.
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
    if retain {
        return Ok(());
    }
    managed.iam.delete_user(&user, &owner(managed, conn)).await.map(|_| ()).map_err(|e| (reason_of(&e), e.to_string()))
}

/// Whether deleting the connection keeps its IAM user.
pub fn retains(conn: &S3Connection) -> bool {
    conn.spec
        .credentials
        .managed
        .as_ref()
        .is_some_and(|m| m.deletion_policy == crate::api::connection::DeletionPolicy::Retain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_rotated_once_it_is_as_old_as_the_interval() {
        let at = |days: i64| Timestamp::from_second(1_800_000_000 + days * 86_400).unwrap();
        let ninety = crate::api::connection::ManagedCredentials {
            rotation_interval: "90d".into(),
            deletion_policy: Default::default(),
        }
        .rotation();
        assert_eq!(ninety, std::time::Duration::from_secs(90 * 86_400));
        assert!(!rotation_due(Some(at(0)), at(89), ninety));
        assert!(rotation_due(Some(at(0)), at(90), ninety));
        assert!(!rotation_due(None, at(1000), ninety), "unknown age");
        assert!(!rotation_due(Some(at(10)), at(0), ninety), "a clock behind the key's date");
    }

    #[test]
    fn bucket_patterns_match_whole_names() {
        let m = |patterns: &[&str], bucket: &str| {
            patterns.iter().any(|p| crate::endpoints::glob(p.as_bytes(), bucket.as_bytes()))
        };
        assert!(m(&["labelling-*"], "labelling-cats"));
        assert!(!m(&["labelling-*"], "other-labelling-cats"));
        assert!(m(&["a", "team-*-data"], "team-x-data"));
        assert!(!m(&[], "anything"));
        assert!(m(&["*"], "anything"));
    }
}
