//! The watch wiring: what triggers a reconcile (spec changes, referenced Secrets, grants,
//! namespace labels, the sweep), the error policy, and the run loop.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tracing::warn;

use super::{Error, grants, reconcile, schedule, sweep};
use crate::api::connection::S3Connection;
use crate::controller::Context;
use crate::timing::{jitter_fraction, parse_interval};

fn error_kind(err: &Error) -> &'static str {
    match err {
        Error::NoNamespace(_) => "NoNamespace",
        Error::ReadSecret { .. } => "ReadSecret",
        Error::WriteStatus { .. } => "WriteStatus",
        Error::WriteManaged { .. } => "WriteManaged",
    }
}

fn error_policy(conn: Arc<S3Connection>, err: &Error, ctx: Arc<Context>) -> Action {
    if let Error::WriteStatus { source, .. } = err
        && crate::controller::status::is_conflict(source)
    {
        return crate::controller::status::after_conflict("S3Connection", &conn.name_any());
    }
    let uid = conn.uid().unwrap_or_default();
    let failures = ctx.record_failure(&uid);
    let delay =
        schedule::after_api_error(failures, parse_interval(&conn.spec.revalidate_interval), jitter_fraction(&uid));
    crate::telemetry::metrics::METRICS.reconcile_error("S3Connection", error_kind(err));
    warn!(connection = %conn.name_any(), error = %err, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// Reconcile when the spec changes or deletion starts, not on our own status writes.
fn trigger_hash(conn: &S3Connection) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    conn.metadata.generation.hash(&mut h);
    conn.metadata.deletion_timestamp.is_some().hash(&mut h);
    conn.annotations().get(crate::api::annotations::SKIP_CLEANUP).hash(&mut h);
    crate::api::annotations::requested_at(conn.annotations()).hash(&mut h);
    conn.annotations().get(crate::api::annotations::ROTATE_ANNOTATION).hash(&mut h);
    // Deletion goes one finalizer at a time (platform registrations, then the IAM user).
    conn.finalizers().hash(&mut h);
    Some(h.finish())
}

/// The connections that reference `secret`, for re-validation within seconds of a change.
fn referencing(store: &Store<S3Connection>, secret: &PartialObjectMeta<Secret>) -> Vec<ObjectRef<S3Connection>> {
    let (namespace, name) = (secret.namespace(), secret.name_any());
    store
        .state()
        .iter()
        .filter(|c| c.namespace() == namespace)
        .filter(|c| {
            *c.spec.credentials.secret(&c.name_any()).name == *name
                || c.spec.platform.as_ref().is_some_and(|p| *p.secret_ref.name == *name)
        })
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// Secrets per LIST page of the metadata watch.
const SECRET_PAGE: u32 = 10;

/// The last event of each Secret in `batch` (errors kept), in order.
fn last_per_secret<E>(batch: Vec<Result<PartialObjectMeta<Secret>, E>>) -> Vec<Result<PartialObjectMeta<Secret>, E>> {
    let key = |r: &Result<PartialObjectMeta<Secret>, E>| r.as_ref().ok().map(|s| (s.namespace(), s.name_any()));
    let mut out: Vec<Result<PartialObjectMeta<Secret>, E>> = Vec::with_capacity(batch.len());
    for item in batch {
        if let Some(k) = key(&item)
            && let Some(i) = out.iter().position(|o| key(o).as_ref() == Some(&k))
        {
            drop(out.remove(i));
        }
        out.push(item);
    }
    out
}

/// Runs the controller until a termination signal.
pub async fn run(ctx: Arc<Context>) {
    // Metadata only: secret values never sit in the operator's memory between probes.
    let secrets = crate::controller::api::<PartialObjectMeta<Secret>>(&ctx);
    // Small LIST pages: a tenant's Secrets may carry up to 256 KiB of annotations each, and
    // a page of 500 of them would be over 100 MB at once (10 per page: 600 such Secrets
    // cost the operator 9 MiB more at its peak than none, measured).
    let secret_changes = watcher(secrets, ctx.config.watch_config().page_size(SECRET_PAGE))
        .backoff(crate::controller::watch_backoff())
        .touched_objects()
        // A burst of events for one Secret (someone re-annotating it in a loop) maps once.
        .ready_chunks(256)
        .flat_map(|batch| futures::stream::iter(last_per_secret(batch)));
    crate::controller::run_controller(
        ctx.clone(),
        "S3Connection",
        crate::controller::api(&ctx),
        trigger_hash,
        secret_changes,
        referencing,
        reconcile,
        error_policy,
        |controller, store| {
            if ctx.config.managed.is_none() {
                return controller;
            }
            // A grant changed or went: every managed connection is checked again at once; a
            // namespace's labels changed: its managed connections are. The sweep finds
            // what these miss, and what a Stalled connection's reconciles never see.
            let (recheck, rechecks) = futures::channel::mpsc::unbounded();
            // Once per installation: with shards, by the instance that does the cluster-wide
            // work. The sweep reads each user's connection from the API server, so it judges
            // every shard's; each shard still re-checks its own managed connections at once
            // when a grant or a namespace's labels change (below).
            if ctx.config.cluster_wide {
                tokio::spawn(crate::controller::grant::run(ctx.clone(), store.clone()));
                tokio::spawn(sweep::run(ctx.clone(), recheck));
            }
            let all = store.clone();
            let changes = grants::changes(&ctx)
                .flat_map(move |()| futures::stream::iter(grants::managed_connections(&all, None)));
            let labelled = grants::namespace_label_changes(&ctx)
                .flat_map(move |ns| futures::stream::iter(grants::managed_connections(&store, Some(&ns))));
            controller.reconcile_on(futures::stream::select(futures::stream::select(changes, labelled), rechecks))
        },
    )
    .await;
}
