//! Registering a validated connection with the Labellerr platform, bringing it up to date
//! when the keys change, and removing it when the S3Connection is deleted.

use k8s_openapi::api::core::v1::Secret;

use crate::api::conditions::{Cond, REGISTERED, Reason};
use crate::api::connection::{PlatformConnection, PlatformSecretRef, S3ConnectionSpec, Usage};
use crate::platform::{self, ConnectionForm, Credentials, PlatformError};
use crate::s3::client::Keys;
use crate::s3::uri::Location;

/// Held while the platform has a connection for the object.
pub const FINALIZER: &str = "s3connect.io/platform-connection";
/// `"true"` releases the finalizer without deleting the platform connection (for when the
/// platform is gone for good, or the connection was removed there by hand).
pub const SKIP_CLEANUP: &str = "s3connect.io/skip-platform-cleanup";

/// The platform API credentials from their Secret, or the condition that says what is
/// missing.
pub fn credentials(secret: Option<&Secret>, refs: &PlatformSecretRef, namespace: &str) -> Result<Credentials, Cond> {
    let Some(secret) = secret else {
        return Err(Cond::failed(
            REGISTERED,
            Reason::PlatformSecretNotFound,
            format!(
                "Secret {:?} (spec.platform.secretRef) was not found in namespace {namespace:?}: create it with the keys {}, {} and {} from the Labellerr API settings.",
                &*refs.name, refs.api_key_key, refs.api_secret_key, refs.client_id_key
            ),
        ));
    };
    let get = |key: &str| match crate::controller::secret_value(secret, key) {
        Ok(v) => Ok(v),
        Err(crate::controller::BadValue::Missing) => Err(Cond::failed(
            REGISTERED,
            Reason::PlatformSecretKeyMissing,
            format!(
                "Secret {:?} has no key {key:?} (it has: {}): add it, or name the key that holds it in spec.platform.secretRef.",
                &*refs.name,
                crate::controller::secret_keys(secret).join(", ")
            ),
        )),
        Err(crate::controller::BadValue::Invalid) => {
            Err(Cond::failed(REGISTERED, Reason::SecretValueInvalid, invalid_value_message(&refs.name, key)))
        }
    };
    Ok(Credentials {
        api_key: get(&refs.api_key_key)?,
        api_secret: get(&refs.api_secret_key)?,
        client_id: get(&refs.client_id_key)?,
    })
}

/// Names the Secret and key of a value that is not visible ASCII, never the value.
pub fn invalid_value_message(secret: &str, key: &str) -> String {
    format!(
        "The value of key {key:?} in Secret {secret:?} has characters no credential has (a control character, a line break or space inside it, or non-ASCII): paste the value again, exactly as issued, without quotes."
    )
}

/// The condition for a failed platform call.
pub fn failure(doing: &str, e: &PlatformError) -> Cond {
    match e {
        PlatformError::Rejected { message, .. } => Cond::failed(
            REGISTERED,
            Reason::PlatformRejected,
            format!("The platform refused {doing}: {message}. Fix what it names; the operator retries with backoff."),
        ),
        PlatformError::Internal { tracking_id, .. } | PlatformError::Invalid { tracking_id, .. } => Cond::failed(
            REGISTERED,
            Reason::PlatformInternalError,
            format!(
                "The platform had an internal error while {doing} (tracking id {tracking_id}); retrying with backoff. If it persists, quote the tracking id to Labellerr support."
            ),
        ),
        PlatformError::Unreachable { detail, tracking_id } => Cond::failed(
            REGISTERED,
            Reason::PlatformUnreachable,
            format!(
                "Could not reach the platform while {doing} ({detail}, tracking id {tracking_id}): check the operator's --platform-url and its network path; retrying with backoff."
            ),
        ),
    }
}

fn connection_type(usage: Usage) -> &'static str {
    match usage {
        Usage::Import => "import",
        Usage::Export => "export",
    }
}

/// The id DatasetExports use: the Export registration, else the Import one.
pub fn primary_id(connections: &[PlatformConnection]) -> Option<String> {
    let find = |t: &str| connections.iter().find(|c| c.connection_type == t).map(|c| c.id.clone());
    find("export").or_else(|| find("import"))
}

pub struct Registration {
    pub cond: Cond,
    pub connections: Vec<PlatformConnection>,
}

/// Makes sure there is one platform connection per usage, registered with the current
/// keys. Each is tested first and created only when the platform's own test passes; a
/// registration with older keys is replaced (new one first, then the old one deleted).
#[allow(clippy::too_many_arguments)]
pub async fn register(
    client: &platform::Client,
    creds: &Credentials,
    spec: &S3ConnectionSpec,
    location: &Location,
    keys: &Keys,
    existing: &[PlatformConnection],
    credentials_version: &str,
    owner: &str,
) -> Registration {
    let mut connections: Vec<PlatformConnection> = Vec::new();
    for usage in &spec.usage {
        let kind = connection_type(*usage);
        let current = existing.iter().find(|c| c.connection_type == kind);
        if let Some(c) = current.filter(|c| c.credentials_version == credentials_version) {
            connections.push(c.clone());
            continue;
        }
        let form = ConnectionForm {
            keys,
            path: format!("{}/{}", location.bucket, location.prefix),
            connection_type: kind,
            data_type: spec.data_type.as_str(),
        };
        if let Err(e) = client.test_connection(creds, &form).await {
            let doing = format!("the {kind} connection test for {location}");
            return Registration { cond: failure(&doing, &e), connections: keep(existing, connections) };
        }
        let name = format!("s3connect {owner} {kind}");
        let description = format!("Managed by s3connect (S3Connection {owner}) for {location}");
        let id = match client.create_connection(creds, &form, &name, &description).await {
            Ok(id) => id,
            Err(e) => {
                let doing = format!("creating the {kind} connection for {location}");
                return Registration { cond: failure(&doing, &e), connections: keep(existing, connections) };
            }
        };
        if let Some(old) = current
            && let Err(e) = client.delete_connection(creds, &old.id).await
        {
            tracing::warn!(connection = owner, platform_connection = %old.id, error = %e, "could not delete the replaced platform connection");
        }
        connections.push(PlatformConnection {
            connection_type: kind.to_owned(),
            id,
            credentials_version: credentials_version.to_owned(),
        });
    }
    let ids: Vec<String> = connections.iter().map(|c| format!("{} {}", c.connection_type, c.id)).collect();
    Registration {
        cond: Cond::ok(
            REGISTERED,
            Reason::Registered,
            format!("Registered with the platform at {}: {}.", client.base_url(), ids.join(", ")),
        ),
        connections,
    }
}

/// What is registered so far, plus the earlier registrations not yet replaced.
fn keep(existing: &[PlatformConnection], mut done: Vec<PlatformConnection>) -> Vec<PlatformConnection> {
    for c in existing {
        if !done.iter().any(|d| d.connection_type == c.connection_type) {
            done.push(c.clone());
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pc(t: &str, id: &str) -> PlatformConnection {
        PlatformConnection { connection_type: t.into(), id: id.into(), credentials_version: "1".into() }
    }

    #[test]
    fn exports_use_the_export_registration() {
        assert_eq!(primary_id(&[pc("import", "i"), pc("export", "e")]).as_deref(), Some("e"));
        assert_eq!(primary_id(&[pc("import", "i")]).as_deref(), Some("i"));
        assert_eq!(primary_id(&[]), None);
    }

    #[test]
    fn a_failure_keeps_the_registrations_not_yet_replaced() {
        let kept = keep(&[pc("import", "old-i"), pc("export", "old-e")], vec![pc("import", "new-i")]);
        assert_eq!(kept, [pc("import", "new-i"), pc("export", "old-e")]);
    }

    #[test]
    fn platform_failures_name_the_reason_and_the_tracking_id() {
        let c = failure("x", &PlatformError::Internal { status: 500, tracking_id: "abc-123".into() });
        assert_eq!(c.reason, Reason::PlatformInternalError);
        assert!(c.message.contains("tracking id abc-123") && c.message.contains("Labellerr support"));
        let c = failure("x", &PlatformError::Rejected { status: 400, message: "bad path".into() });
        assert_eq!(c.reason, Reason::PlatformRejected);
        assert!(c.message.contains("bad path"));
    }
}
