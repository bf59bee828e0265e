//! Managed credentials (`spec.credentials.managed`): the IAM user, its policy and its access
//! key, made and rotated by the operator, with the key in a Secret the S3Connection owns.
//!
//! Exactly once: the finalizer is set before anything is made in IAM; the user is adopted
//! by name (under the operator's path only); a key is written to the Secret as soon as IAM
//! returns it, and any key of the user that the Secret does not hold (an answer lost before
//! the write) is deleted before another is made, so AWS's two-key limit is never in the way.
//! The previous key is deleted only after a validation with the new one is Ready.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};

use super::decide::Blocker;
use crate::api::conditions::Reason;
use crate::api::connection::{ManagedCredentialsStatus, ROTATE_ANNOTATION, S3Connection, managed_secret_name};
use crate::controller::{Context, FIELD_MANAGER};
use crate::iam::{Iam, IamError};
use crate::s3::uri::Location;

/// Held while IAM resources of the connection may exist.
pub const FINALIZER: &str = "s3connect.io/iam-user";
const CREATED_ANNOTATION: &str = "s3connect.io/key-created-at";
const POLICY_ANNOTATION: &str = "s3connect.io/policy-hash";
const ROTATED_FOR_ANNOTATION: &str = "s3connect.io/rotated-for";
const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
const SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";

/// The operator's set-up for managed credentials.
#[derive(Clone, Debug)]
pub struct Managed {
    /// Bucket name patterns (`*` matches any run of characters) keys may be made for.
    pub buckets: Vec<String>,
    pub iam: Iam,
}

impl Managed {
    pub fn allows(&self, bucket: &str) -> bool {
        self.buckets.iter().any(|p| crate::endpoints::glob(p.as_bytes(), bucket.as_bytes()))
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
            "This operator does not manage credentials: ask the cluster admin to list the bucket in --managed-buckets (Helm value managedCredentials.buckets) and give the operator an AWS identity, or use spec.credentials.secretRef.".into(),
        )));
    };
    // An invalid uri is reported by the validation as usual.
    let Ok(location) = Location::parse(&conn.spec.uri) else {
        return Ok(Err(blocked(Reason::IamRejected, "spec.uri is invalid: fix it first.".into())));
    };
    if !managed.allows(&location.bucket) {
        return Ok(Err(blocked(
            Reason::ManagedBucketNotAllowed,
            format!(
                "Bucket {:?} is not in the operator's managed-credentials list ({}): ask the cluster admin to add it (flag --managed-buckets, Helm value managedCredentials.buckets), or use spec.credentials.secretRef.",
                location.bucket,
                managed.buckets.join(", ")
            ),
        )));
    }
    let iam = &managed.iam;
    let user = crate::iam::user_name(&namespace, &name);
    let secret_name = managed_secret_name(&name);
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    let secret = secrets.get_opt(&secret_name).await?;
    let uid = conn.uid().unwrap_or_default();
    if let Some(s) = &secret
        && !s.owner_references().iter().any(|o| o.uid == uid)
    {
        return Ok(Err(blocked(
            Reason::ManagedResourceConflict,
            format!(
                "Secret {secret_name:?} exists and is not this S3Connection's: rename or delete it, so the operator can write the managed key there."
            ),
        )));
    }
    // The finalizer is set (by the caller) before anything exists in IAM.

    let policy = crate::check::least_privilege(&conn.spec).unwrap_or_default();
    let policy_hash = crate::api::short_hash(&policy.to_string());
    let annotation = |k: &str| secret.as_ref().and_then(|s| s.annotations().get(k).cloned());
    let current = secret.as_ref().and_then(|s| value(s, ACCESS_KEY_ID));
    let created = annotation(CREATED_ANNOTATION).and_then(|t| t.parse::<Timestamp>().ok());
    // Rotation is recorded on the Secret, read fresh from the API server: a reconcile that
    // sees an older copy of the S3Connection never rotates twice for one request.
    let handled = annotation(ROTATED_FOR_ANNOTATION);
    let rotate_asked = conn.annotations().get(ROTATE_ANNOTATION).cloned();
    let now = Timestamp::now();
    let due = rotation_due(created, now, spec.rotation());
    let asked = rotate_asked.is_some() && rotate_asked != handled;
    let mut status = ManagedCredentialsStatus {
        user_name: user.clone(),
        user_path: iam.path().to_owned(),
        secret_name: secret_name.clone(),
        key_created_time: created.map(Time),
        retiring_previous_key: false,
        last_handled_rotate_at: handled.clone(),
    };

    let needs_key = current.is_none();
    let needs_policy = annotation(POLICY_ANNOTATION).as_deref() != Some(policy_hash.as_str());
    let rotate = !needs_key && (due || asked);
    if !needs_key && !needs_policy && !rotate {
        return Ok(Ok(Ensured { status, secret }));
    }
    let owner = format!("{namespace}/{name}");
    if needs_key || needs_policy {
        if let Err(e) = iam.ensure_user(&user, &owner).await {
            return Ok(Err(from_iam(&e)));
        }
        if let Err(e) = iam.put_policy(&user, &policy).await {
            return Ok(Err(from_iam(&e)));
        }
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
    let mut annotations = BTreeMap::from([(POLICY_ANNOTATION.to_owned(), policy_hash)]);
    let mut data = secret.as_ref().and_then(|s| s.data.clone()).unwrap_or_default();
    match &keys_to_write {
        Some(keys) => {
            data.insert(ACCESS_KEY_ID.into(), ByteString(keys.access_key_id.clone().into_bytes()));
            data.insert(SECRET_ACCESS_KEY.into(), ByteString(keys.secret_access_key.clone().into_bytes()));
            annotations.insert(CREATED_ANNOTATION.into(), now.to_string());
            status.key_created_time = Some(Time(now));
        }
        None => {
            if let Some(c) = created {
                annotations.insert(CREATED_ANNOTATION.into(), c.to_string());
            }
        }
    }
    let handled_now = if rotate && asked { rotate_asked.clone() } else { handled };
    if let Some(h) = &handled_now {
        annotations.insert(ROTATED_FOR_ANNOTATION.into(), h.clone());
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
    if rotate && keys_to_write.is_some() {
        status.retiring_previous_key = true;
        tracing::info!(connection = %owner, user = %user, "managed access key rotated; the previous one goes once Ready");
    } else if keys_to_write.is_some() {
        tracing::info!(connection = %owner, user = %user, "managed access key created");
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

/// After a Ready validation with the key in `secret` (the one validated): deletes every
/// other key of the user (the previous one after a rotation; any a person added). One
/// ListAccessKeys per validation.
pub async fn retire_previous(
    ctx: &Context,
    conn: &S3Connection,
    secret: &Secret,
    status: &mut ManagedCredentialsStatus,
) {
    let Some(managed) = &ctx.config.managed else { return };
    let namespace = conn.namespace().unwrap_or_default();
    let Some(current) = value(secret, ACCESS_KEY_ID) else { return };
    let user = &status.user_name;
    let result = async {
        let mut deleted = 0;
        for key in managed.iam.keys(user).await?.iter().filter(|k| k.id != current) {
            managed.iam.delete_key(user, &key.id).await?;
            deleted += 1;
        }
        Ok::<_, IamError>(deleted)
    }
    .await;
    match result {
        Ok(deleted) => {
            status.retiring_previous_key = false;
            if deleted > 0 {
                tracing::info!(connection = %format!("{namespace}/{}", conn.name_any()), user = %user, deleted, "previous managed access key deleted");
            }
        }
        Err(e) => {
            status.retiring_previous_key = true;
            tracing::warn!(user = %user, error = %e, "the previous managed access key could not be deleted yet");
        }
    }
}

/// Deletion: the user, its policy and keys (unless retained). Err names what IAM refused.
pub async fn remove(ctx: &Context, conn: &S3Connection) -> Result<(), IamError> {
    let Some(managed) = &ctx.config.managed else { return Ok(()) };
    let retain = conn
        .spec
        .credentials
        .managed
        .as_ref()
        .is_some_and(|m| m.deletion_policy == crate::api::connection::DeletionPolicy::Retain);
    if retain {
        return Ok(());
    }
    let user = crate::iam::user_name(&conn.namespace().unwrap_or_default(), &conn.name_any());
    managed.iam.delete_user(&user).await
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
