//! What every controller that calls the platform shares: the API credentials from their
//! Secret, and a failed call as a condition that says what to do.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use super::Context;
use crate::api::conditions::{
    CONNECTION_READY, Cond, ConnectionReadyReason, NamedCond, READY, REGISTERED, Reason, Status,
};
use crate::api::connection::{PlatformSecretRef, S3Connection, Usage};
use crate::platform::{Credentials, PlatformError};

/// What a resource needs of its S3Connection, for the messages that say what is missing.
pub struct Need {
    pub usage: Usage,
    /// The reason when the connection lacks `usage`.
    pub wrong_usage: ConnectionReadyReason,
    /// Why that usage matters, after "add it to its spec.usage".
    pub why_usage: &'static str,
    /// What needs the registration ("exports", "datasets").
    pub for_what: &'static str,
    /// What does not happen meanwhile ("nothing is submitted").
    pub withheld: &'static str,
}

/// Why a resource cannot use its S3Connection `name` yet, from the connection as it is;
/// None when it can. A connection that is not Ready passes on its own reason, so that the
/// resource names what to fix there.
pub fn connection_problem(conn: Option<&S3Connection>, name: &str, need: &Need) -> Option<NamedCond> {
    let not = |reason: &str, message: String| Some(NamedCond::new(CONNECTION_READY, Status::False, reason, message));
    let Some(conn) = conn else {
        return not(
            ConnectionReadyReason::ConnectionNotFound.as_str(),
            format!(
                "S3Connection {name:?} was not found in this namespace: create it, or fix spec.connectionRef.name."
            ),
        );
    };
    if !conn.spec.usage.contains(&need.usage) {
        return not(
            need.wrong_usage.as_str(),
            format!(
                "S3Connection {name:?} does not have {:?} usage: add {:?} to its spec.usage {}.",
                need.usage, need.usage, need.why_usage
            ),
        );
    }
    if conn.spec.platform.is_none() {
        return not(
            ConnectionReadyReason::ConnectionNotRegistered.as_str(),
            format!(
                "S3Connection {name:?} has no spec.platform: set it so that the connection is registered with the platform, which {} need.",
                need.for_what
            ),
        );
    }
    let status = conn.status.as_ref();
    match status.and_then(|s| s.conditions.iter().find(|c| c.type_ == READY)) {
        Some(r) if r.status == "True" && status.is_some_and(|s| s.platform_connection_id.is_some()) => None,
        Some(r) if r.status == "True" => not(
            ConnectionReadyReason::ConnectionNotRegistered.as_str(),
            format!("S3Connection {name:?} is not registered with the platform yet."),
        ),
        Some(r) => not(&r.reason, format!("S3Connection {name:?} is not ready, so {}: {}", need.withheld, r.message)),
        None => not(
            ConnectionReadyReason::ConnectionNotFound.as_str(),
            format!("S3Connection {name:?} has not been validated yet."),
        ),
    }
}

/// The platform credentials a connection names, or the condition (of type `type_`) that
/// says what is missing; Err when the Secret could not be read.
pub async fn credentials_of(
    ctx: &Context,
    conn: &S3Connection,
    namespace: &str,
    type_: &'static str,
) -> Result<Result<Credentials, NamedCond>, (String, kube::Error)> {
    let Some(p) = &conn.spec.platform else {
        return Ok(Err(NamedCond::new(
            type_,
            Status::False,
            ConnectionReadyReason::ConnectionNotRegistered.as_str(),
            "The S3Connection has no spec.platform.",
        )));
    };
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(&p.secret_ref.name)
        .await
        .map_err(|source| (format!("Secret {namespace}/{}", &*p.secret_ref.name), source))?;
    Ok(credentials(secret.as_ref(), &p.secret_ref, namespace).map_err(|c| NamedCond { type_, ..c.into() }))
}

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
    let get = |key: &str| match crate::credentials::secret_value(secret, key) {
        Ok(v) => Ok(v),
        Err(crate::credentials::BadValue::Missing) => Err(Cond::failed(
            REGISTERED,
            Reason::PlatformSecretKeyMissing,
            format!(
                "Secret {:?} has no key {key:?} (it has: {}): add it, or name the key that holds it in spec.platform.secretRef.",
                &*refs.name,
                crate::credentials::secret_keys(secret).join(", ")
            ),
        )),
        Err(crate::credentials::BadValue::Invalid) => Err(Cond::failed(
            REGISTERED,
            Reason::SecretValueInvalid,
            crate::credentials::invalid_value_message(&refs.name, key),
        )),
    };
    Ok(Credentials {
        api_key: get(&refs.api_key_key)?,
        api_secret: get(&refs.api_secret_key)?,
        client_id: get(&refs.client_id_key)?,
        namespace: namespace.to_owned(),
    })
}

/// The condition (of type `type_`) for a failed platform call while `doing` something.
pub fn failure(type_: &'static str, doing: &str, e: &PlatformError) -> Cond {
    match e {
        PlatformError::Rejected { message, tracking_id, .. } => Cond::failed(
            type_,
            Reason::PlatformRejected,
            format!(
                "The platform refused {doing}: {message} (tracking id {tracking_id}). Fix what it names; the operator retries with backoff."
            ),
        ),
        PlatformError::NoFilesWithStatus { message } => Cond::failed(
            type_,
            Reason::PlatformRejected,
            format!("The platform refused {doing}: {message}. Fix what it names; the operator retries with backoff."),
        ),
        PlatformError::Incomplete { detail, tracking_id } => Cond::failed(
            type_,
            Reason::RegistrationUnconfirmed,
            format!(
                "Could not read the platform's whole list while {doing} ({detail}, tracking id {tracking_id}), so the operator cannot prove the object absent and creates nothing; it looks again with backoff."
            ),
        ),
        PlatformError::Internal { tracking_id, .. } | PlatformError::Invalid { tracking_id, .. } => Cond::failed(
            type_,
            Reason::PlatformInternalError,
            format!(
                "The platform had an internal error while {doing} (tracking id {tracking_id}); retrying with backoff. If it persists, quote the tracking id to Labellerr support."
            ),
        ),
        PlatformError::Unknown { detail, tracking_id } => Cond::failed(
            type_,
            Reason::RegistrationUnconfirmed,
            format!(
                "The platform did not say whether it finished {doing} ({detail}, tracking id {tracking_id}); the operator looks for the result by name before trying again, so nothing is created twice."
            ),
        ),
        PlatformError::Unreachable { detail, tracking_id } => Cond::failed(
            type_,
            Reason::PlatformUnreachable,
            format!(
                "Could not reach the platform while {doing} ({detail}, tracking id {tracking_id}): check the operator's --platform-url and its network path; retrying with backoff."
            ),
        ),
    }
}

/// The platform project an object names: `project_id` as given, or the AnnotationProject
/// `project_ref`'s once it is Ready. Otherwise the condition (of type `type_`, with the
/// kind's reasons `not_found` and `not_ready`) saying what it waits for; Err when the
/// AnnotationProject could not be read.
pub async fn project_id_of(
    ctx: &Context,
    namespace: &str,
    project_id: Option<&str>,
    project_ref: Option<&crate::api::project::ProjectRef>,
    type_: &'static str,
    (not_found, not_ready): (&str, &str),
) -> Result<Result<String, NamedCond>, (String, kube::Error)> {
    if let Some(id) = project_id {
        return Ok(Ok(id.to_owned()));
    }
    let name = project_ref.map(|r| r.name.to_string()).unwrap_or_default();
    let project = Api::<crate::api::AnnotationProject>::namespaced(ctx.client.clone(), namespace)
        .get_opt(&name)
        .await
        .map_err(|source| (format!("AnnotationProject {namespace}/{name}"), source))?;
    let Some(project) = project else {
        let message =
            format!("AnnotationProject {name:?} was not found in this namespace: create it, or fix projectRef.name.");
        return Ok(Err(NamedCond::new(type_, Status::False, not_found, message)));
    };
    let status = project.status.unwrap_or_default();
    let ready = status.conditions.iter().find(|c| c.type_ == READY);
    match (ready, status.project_id) {
        (Some(r), Some(id)) if r.status == "True" => Ok(Ok(id)),
        (r, _) => {
            let why = r.map_or_else(|| "not looked at yet".to_owned(), |r| format!("{}: {}", r.reason, r.message));
            let message = format!("AnnotationProject {name:?} is not Ready ({why}); waiting for it.");
            Ok(Err(NamedCond::new(type_, Status::False, not_ready, message)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_failures_name_the_reason_and_the_tracking_id() {
        let c = failure(REGISTERED, "x", &PlatformError::Internal { status: 500, tracking_id: "abc-123".into() });
        assert_eq!(c.reason, Reason::PlatformInternalError);
        assert!(c.message.contains("tracking id abc-123") && c.message.contains("Labellerr support"));
        let c = failure(
            REGISTERED,
            "x",
            &PlatformError::Rejected {
                status: 400,
                message: "bad path".into(),
                tracking_id: crate::platform::Trace { request: "u-2".into(), server: Some("5e7".into()) },
            },
        );
        assert_eq!(c.reason, Reason::PlatformRejected);
        assert!(c.message.contains("bad path") && c.message.contains("u-2, server tracking id 5e7"), "{}", c.message);
        let c = failure(
            REGISTERED,
            "creating",
            &PlatformError::Unknown { detail: "HTTP 500".into(), tracking_id: "t-9".into() },
        );
        assert_eq!(c.reason, Reason::RegistrationUnconfirmed);
        assert!(c.message.contains("t-9") && c.message.contains("by name"), "{}", c.message);
        assert!(Reason::RegistrationUnconfirmed.is_transient());
    }
}
