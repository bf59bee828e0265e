//! The S3Connection controller: fetch facts (Secret, probes) -> decide (pure) -> write
//! status (server-side apply) -> schedule the next validation. This file is the driver;
//! each step is a module of its own: `cleanup` (deletion and finalizers), `facts`, `due`,
//! `validate`, `settle` (the status and what next) and `watch` (what triggers a reconcile).

mod cleanup;
mod due;
mod facts;
pub mod grants;
pub mod managed;
pub mod register;
pub mod schedule;
mod settle;
pub mod sweep;
mod validate;
mod watch;

pub use self::watch::run;

use std::sync::Arc;
use std::time::Instant;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use self::cleanup::{clean_up, ensure_finalizers, switch_off_managed};
use self::due::not_due;
use self::facts::gather;
use self::settle::{finish, publish_events, settle};
use self::validate::validate;
use super::{Context, finalizer};
use crate::api::connection::S3Connection;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("S3Connection {0} has no namespace")]
    NoNamespace(String),
    #[error("reading Secret {namespace}/{name} failed ({}): {source}", read_hint(source))]
    ReadSecret { namespace: String, name: String, source: kube::Error },
    #[error("writing the status of S3Connection {namespace}/{name} failed: {source}")]
    WriteStatus { namespace: String, name: String, source: kube::Error },
    #[error("writing the managed credentials of S3Connection {namespace}/{name} failed: {source}")]
    WriteManaged { namespace: String, name: String, source: kube::Error },
}

/// What to look at when reading a Secret failed: RBAC only when the API server said so.
fn read_hint(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(s) if s.code == 403 => "check the operator's RBAC for secrets",
        kube::Error::Api(s) if s.code < 500 && s.code != 429 => "the API server refused the read",
        _ => "the API server did not answer; retrying",
    }
}

/// The resourceVersion every status write of one reconcile is preconditioned on: the
/// object's as read, then as each write left it.
type Version = Arc<std::sync::Mutex<Option<String>>>;

fn current(version: &Version) -> Option<String> {
    version.lock().map(|v| v.clone()).unwrap_or_default()
}

/// One reconcile, as named steps: deletion; finalizers; the facts (managed credentials,
/// the Secrets); whether a validation is due; the validation (probes, then the platform
/// registration); the status it leads to; the write; what next.
pub async fn reconcile(conn: Arc<S3Connection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let name = conn.name_any();
    let namespace = conn.namespace().ok_or_else(|| Error::NoNamespace(name.clone()))?;
    if conn.metadata.deletion_timestamp.is_some() {
        crate::telemetry::metrics::METRICS.forget(&conn.uid().unwrap_or_default());
        return clean_up(&conn, &ctx).await;
    }
    let written_at = ensure_finalizers(&ctx, &conn).await?;
    // Managed credentials taken out of the spec: the IAM user they made goes too (no live
    // key is left behind), then the finalizer.
    if conn.spec.credentials.managed.is_none()
        && finalizer::has(conn.as_ref(), crate::api::annotations::IAM_USER_FINALIZER)
    {
        return switch_off_managed(&conn, &ctx).await;
    }
    let facts = gather(&ctx, &conn, name, namespace).await?;
    if let Some(action) = not_due(&ctx, &conn, &facts).await {
        return Ok(action);
    }
    ctx.validation_started(&facts.uid);
    let validated = validate(&ctx, &conn, &facts, &written_at).await;
    let settled = settle(&ctx, &conn, &facts, &validated).await;
    let mut written = current(&written_at);
    super::status::apply(&ctx, conn.as_ref(), &settled.status, &mut written).await.map_err(|source| {
        Error::WriteStatus { namespace: facts.namespace.clone(), name: facts.name.clone(), source }
    })?;
    if !settled.holding {
        publish_events(&ctx, &conn, &settled.old, &validated.verdict).await;
    }
    Ok(finish(&ctx, &facts, &validated, &settled, started))
}
