//! What one reconcile reads before it decides: managed credentials, the key Secret (as a
//! digest of the values used) and the platform Secret.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use tracing::warn;

use super::{Error, managed};
use crate::api::connection::{CredentialsSecretRef, S3Connection};
use crate::controller::Context;
use crate::timing::{jitter_fraction, parse_interval};
use crate::validation::Blocker;

/// What one reconcile of a connection knows before it decides anything.
pub(super) struct Facts {
    pub(super) name: String,
    pub(super) namespace: String,
    pub(super) uid: String,
    pub(super) refs: CredentialsSecretRef,
    /// Managed credentials as made (or kept) in IAM, or what stops them.
    pub(super) managed_status: Option<crate::api::connection::ManagedCredentialsStatus>,
    pub(super) managed_blocker: Option<Blocker>,
    pub(super) secret: Option<Secret>,
    /// The operator's RBAC forbids reading the Secret.
    pub(super) forbidden: bool,
    pub(super) secret_version: Option<String>,
    pub(super) secret_digest: Option<String>,
    pub(super) rotation_waits_until: Option<Timestamp>,
    pub(super) platform_secret: Option<Secret>,
    pub(super) platform_secret_version: Option<String>,
    pub(super) interval: Duration,
    pub(super) jitter: f64,
    pub(super) now: Timestamp,
    pub(super) requested: Option<String>,
}

/// Managed credentials first (the IAM user and a current key exist before the Secret is
/// read), then the key Secret and the platform Secret.
pub(super) async fn gather(
    ctx: &Context,
    conn: &S3Connection,
    name: String,
    namespace: String,
) -> Result<Facts, Error> {
    let uid = conn.uid().unwrap_or_default();
    let spec = &conn.spec;
    let (mut managed_status, mut managed_blocker, mut managed_secret) = (None, None, None);
    if spec.credentials.managed.is_some() {
        match managed::ensure(ctx, conn).await {
            Ok(Ok(ensured)) => (managed_status, managed_secret) = (Some(ensured.status), Some(ensured.secret)),
            Ok(Err(blocker)) => managed_blocker = Some(blocker),
            Err(source) => return Err(Error::WriteManaged { namespace, name, source }),
        }
    }
    let refs = spec.credentials.secret(&name);
    let read = match managed_secret {
        Some(secret) => Ok(secret),
        None => get_secret(ctx, &namespace, &refs.name).await,
    };
    let (secret, forbidden) = match read {
        Ok(s) => (s, false),
        Err(Error::ReadSecret { source: kube::Error::Api(e), name: secret, .. }) if e.code == 403 => {
            warn!(connection = %format!("{namespace}/{name}"), secret = %secret, "the operator's RBAC forbids reading the Secret");
            (None, true)
        }
        Err(e) => return Err(e),
    };
    let platform_secret = match &spec.platform {
        Some(p) => get_secret(ctx, &namespace, &p.secret_ref.name).await?,
        None => None,
    };
    Ok(Facts {
        secret_version: secret.as_ref().and_then(|s| s.metadata.resource_version.clone()),
        secret_digest: secret.as_ref().and_then(|s| credentials_digest(&uid, s, &refs)),
        rotation_waits_until: managed_status.as_ref().and_then(|m| m.rotation_waits_until.as_ref()).map(|t| t.0),
        platform_secret_version: platform_secret.as_ref().and_then(|s| s.metadata.resource_version.clone()),
        interval: parse_interval(&spec.revalidate_interval),
        jitter: jitter_fraction(&uid),
        now: Timestamp::now(),
        requested: crate::api::annotations::requested_at(conn.annotations()),
        name,
        namespace,
        uid,
        refs,
        managed_status,
        managed_blocker,
        secret,
        forbidden,
        platform_secret,
    })
}

pub(super) async fn get_secret(ctx: &Context, namespace: &str, name: &str) -> Result<Option<Secret>, Error> {
    Api::<Secret>::namespaced(ctx.client.clone(), namespace).get_opt(name).await.map_err(|source| Error::ReadSecret {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source,
    })
}

/// A digest of the key values the connection uses, salted with its uid (so that equal keys
/// of two connections do not show as equal): what decides whether the Secret changed, so
/// that a change of its labels or annotations changes nothing. None while a key is missing.
fn credentials_digest(uid: &str, secret: &Secret, refs: &CredentialsSecretRef) -> Option<String> {
    use sha2::Digest;
    let data = secret.data.as_ref()?;
    let mut hash = sha2::Sha256::new();
    hash.update(uid.as_bytes());
    for (i, key) in
        [&refs.access_key_id_key, &refs.secret_access_key_key, &refs.session_token_key].into_iter().enumerate()
    {
        let value = data.get(key.as_str()).map(|v| v.0.as_slice());
        if i < 2 && value.is_none() {
            return None;
        }
        hash.update([0xff]);
        hash.update(value.unwrap_or_default().trim_ascii());
    }
    Some(hash.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect())
}
