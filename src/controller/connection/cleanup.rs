//! Deletion and its guards: the finalizers set before anything is made outside the cluster,
//! and the clean-up of platform registrations and the managed IAM user they hold back.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use tracing::info;

use super::facts::get_secret;
use super::{Error, Version, managed, register};
use crate::api::conditions::{self, Cond};
use crate::api::connection::{S3Connection, S3ConnectionStatus};
use crate::controller::{Context, finalizer};
use crate::timing::jitter_fraction;

fn has_finalizer(conn: &S3Connection) -> bool {
    finalizer::has(conn, crate::api::annotations::PLATFORM_CONNECTION_FINALIZER)
}

/// Sets the finalizers to `finalizers`, failing if the object changed meanwhile; returns
/// the object's new resourceVersion.
async fn set_finalizers(ctx: &Context, conn: &S3Connection, finalizers: Vec<String>) -> Result<Option<String>, Error> {
    finalizer::set(&ctx.client, conn, finalizers).await.map_err(|source| Error::WriteStatus {
        namespace: conn.namespace().unwrap_or_default(),
        name: conn.name_any(),
        source,
    })
}

/// Finalizers before anything is registered or made in IAM, so that nothing outside the
/// cluster outlives the object; one write for both (each is removed only once what it
/// holds is gone). Returns the version later writes are preconditioned on.
pub(super) async fn ensure_finalizers(ctx: &Context, conn: &S3Connection) -> Result<Version, Error> {
    let wants = [
        (conn.spec.platform.is_some(), crate::api::annotations::PLATFORM_CONNECTION_FINALIZER),
        (conn.spec.credentials.managed.is_some(), crate::api::annotations::IAM_USER_FINALIZER),
    ];
    let added: Vec<(bool, &str)> = wants.into_iter().filter(|(wanted, _)| *wanted).collect();
    let written_at: Version = Arc::new(std::sync::Mutex::new(conn.resource_version()));
    if let Some(finalizers) = finalizer::wanted(conn, &added) {
        let written = set_finalizers(ctx, conn, finalizers).await?;
        if let Ok(mut v) = written_at.lock() {
            *v = written;
        }
    }
    Ok(written_at)
}

/// Deletion: remove the platform connections, then the finalizer.
pub(super) async fn clean_up(conn: &S3Connection, ctx: &Context) -> Result<Action, Error> {
    if !has_finalizer(conn) {
        // Platform registrations first (they hold the keys), then the IAM user.
        return clean_up_managed(conn, ctx).await;
    }
    let namespace = conn.namespace().unwrap_or_default();
    let connections = conn.status.as_ref().map(|s| s.platform_connections.clone()).unwrap_or_default();
    let skip = conn.annotations().get(crate::api::annotations::SKIP_CLEANUP).is_some_and(|v| v == "true");
    // Every registration under the connection's names goes, recorded or not (a create
    // whose answer was lost, a duplicate): the finalizer is there so that none keeps keys.
    if !skip && conn.spec.platform.is_some() {
        let owner = format!("{namespace}/{}", conn.name_any());
        let failed = match &conn.spec.platform {
            None => None,
            Some(p) => {
                let secret = get_secret(ctx, &namespace, &p.secret_ref.name).await?;
                match crate::controller::platform::credentials(secret.as_ref(), &p.secret_ref, &namespace) {
                    Err(cond) => Some(cond),
                    Ok(creds) => match register::remove_all(
                        &ctx.platform,
                        &creds,
                        &owner,
                        &conn.uid().unwrap_or_default(),
                        &connections,
                    )
                    .await
                    {
                        Ok(_) => None,
                        Err((doing, e)) => {
                            Some(crate::controller::platform::failure(conditions::REGISTERED, &doing, &e))
                        }
                    },
                }
            }
        };
        if let Some(cond) = failed {
            let message = format!(
                "{} The S3Connection is deleted once its platform connections are; to let it go without that, annotate it {}=true.",
                cond.message,
                crate::api::annotations::SKIP_CLEANUP
            );
            return Ok(deletion_waits(ctx, conn, Cond { message, ..cond }).await);
        }
    }
    set_finalizers(ctx, conn, finalizer::without(conn, crate::api::annotations::PLATFORM_CONNECTION_FINALIZER)).await?;
    info!(connection = %format!("{namespace}/{}", conn.name_any()), skipped = skip, "platform connections removed");
    Ok(Action::await_change())
}

/// Shows why deletion waits (`cond`, under a field manager of its own so that the main
/// status stays as it is) and retries with backoff.
async fn deletion_waits(ctx: &Context, conn: &S3Connection, cond: Cond) -> Action {
    let patch = serde_json::json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "S3Connection", "status": {
        "conditions": conditions::merge(
            &conn.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default(),
            &[cond],
            conn.metadata.generation,
            &Time(Timestamp::now()),
        ),
    }});
    let _ = Api::<S3Connection>::namespaced(ctx.client.clone(), &conn.namespace().unwrap_or_default())
        .patch_status(&conn.name_any(), &PatchParams::apply("s3connect-cleanup").force(), &Patch::Apply(&patch))
        .await;
    let uid = conn.uid().unwrap_or_default();
    let next = crate::controller::status::Next::Retry { cap: Duration::from_secs(300) };
    crate::controller::status::action(ctx, &uid, next, jitter_fraction(&uid))
}

/// Managed credentials replaced by a secretRef: the operator's IAM user and its Secret go,
/// then the finalizer and the status that named them. Until IAM allows it, the status says
/// why and the connection is retried.
pub(super) async fn switch_off_managed(conn: &S3Connection, ctx: &Context) -> Result<Action, Error> {
    let (namespace, name) = (conn.namespace().unwrap_or_default(), conn.name_any());
    if let Err((reason, e)) = managed::remove(ctx, conn, false).await {
        let message = format!(
            "{e} spec.credentials.managed was removed; the operator deletes the IAM user it made before it uses the new credentials."
        );
        let cond = Cond::failed(conditions::CREDENTIALS_VALID, reason, message);
        return Ok(deletion_waits(ctx, conn, cond).await);
    }
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    let secret_name = crate::api::connection::managed_secret_name(&name);
    let uid = conn.uid().unwrap_or_default();
    if let Some(s) = secrets.get_opt(&secret_name).await.map_err(|source| Error::ReadSecret {
        namespace: namespace.clone(),
        name: secret_name.clone(),
        source,
    })? && s.owner_references().iter().any(|o| o.uid == uid)
    {
        managed::delete_secret(&secrets, &s).await.map_err(|source| Error::WriteManaged {
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        })?;
    }
    let mut version =
        set_finalizers(ctx, conn, finalizer::without(conn, crate::api::annotations::IAM_USER_FINALIZER)).await?;
    if conn.status.as_ref().is_some_and(|s| s.managed_credentials.is_some()) {
        let status = S3ConnectionStatus { managed_credentials: None, ..conn.status.clone().unwrap_or_default() };
        crate::controller::status::apply(ctx, conn, &status, &mut version)
            .await
            .map_err(|source| Error::WriteStatus { namespace: namespace.clone(), name: name.clone(), source })?;
    }
    info!(connection = %format!("{namespace}/{name}"), "managed credentials switched off: the IAM user was removed");
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// Deletion of a managed connection: its IAM user, policy and keys (unless retained), then
/// the finalizer. What IAM refused is shown in the status, and retried.
async fn clean_up_managed(conn: &S3Connection, ctx: &Context) -> Result<Action, Error> {
    if !finalizer::has(conn, crate::api::annotations::IAM_USER_FINALIZER) {
        return Ok(Action::await_change());
    }
    let namespace = conn.namespace().unwrap_or_default();
    if let Err((reason, e)) = managed::remove(ctx, conn, managed::retains(conn)).await {
        let message = format!("{e} The S3Connection is deleted once its IAM user is.");
        let cond = Cond::failed(conditions::CREDENTIALS_VALID, reason, message);
        return Ok(deletion_waits(ctx, conn, cond).await);
    }
    set_finalizers(ctx, conn, finalizer::without(conn, crate::api::annotations::IAM_USER_FINALIZER)).await?;
    info!(connection = %format!("{namespace}/{}", conn.name_any()), "managed IAM user removed");
    Ok(Action::await_change())
}
