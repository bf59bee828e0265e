//! The sweep: IAM read from IAM itself, on a period and at start, so that what a lost or
//! raced event left behind does not outlive it. Every user under the operator's path that
//! carries this installation's tags is held against the API server (its S3Connection by
//! uid) and the grants (read fresh):
//! - its S3Connection is gone, has another uid, or no longer asks for managed credentials
//!   (a finalizer stripped by a script, a deletion while the operator was down): an
//!   orphan. Its keys are deactivated and deleted and its policy removed, and the user
//!   is deleted unless its tags say Retain (a grant allowed it).
//! - its S3Connection exists and no grant covers it any more (a namespace label removed, a
//!   grant deleted while the watch relisted, a connection parked Stalled and never
//!   reconciled): its keys and policy go, and the connection is reconciled so that its
//!   status and Secret follow.
//!
//! Paced (one user at a time, `PACE` apart) so that the sweep never competes with the
//! reconciles for IAM's account-wide rate; reported as events, a metric and a log line.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::ObjectRef;

use super::managed::Managed;
use crate::api::S3Connection;
use crate::api::conditions::OperatorReason;
use crate::api::grant::{self, S3AccessGrant};
use crate::controller::Context;
use crate::iam::{Iam, TAG_INSTALLATION, TAG_NAME, TAG_NAMESPACE, TAG_RELEASED, TAG_UID};
use crate::s3::uri::Location;
use crate::telemetry::metrics::METRICS;

/// The least time between two users the sweep looks at (each costs one or two IAM reads).
const PACE: Duration = Duration::from_millis(50);

/// What one sweep did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub looked_at: usize,
    pub orphans: usize,
    pub revoked: usize,
    pub failed: usize,
}

/// Sweeps at start and then every `sweep_interval`, until the process ends. Connections
/// whose keys it revoked are sent to `recheck`, so that their status says so at once.
pub async fn run(ctx: Arc<Context>, recheck: futures::channel::mpsc::UnboundedSender<ObjectRef<S3Connection>>) {
    let Some(managed) = ctx.config.managed.clone() else { return };
    loop {
        let swept = once(&ctx, &managed, &recheck).await;
        if swept.orphans + swept.revoked + swept.failed > 0 {
            tracing::info!(
                users = swept.looked_at,
                orphans = swept.orphans,
                revoked = swept.revoked,
                failed = swept.failed,
                "managed-credentials sweep"
            );
        } else {
            tracing::debug!(users = swept.looked_at, "managed-credentials sweep: nothing to do");
        }
        tokio::time::sleep(managed.sweep_interval).await;
    }
}

/// Whether this instance serves `namespace` (sharded instances leave the others' alone).
fn serves(config: &crate::controller::Config, namespace: &str) -> bool {
    config.namespace.as_deref().is_none_or(|only| only == namespace)
        && !config.ignore_namespaces.iter().any(|i| i == namespace)
}

/// What the sweep does with one of this installation's users.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Its connection stands and a grant covers it.
    Keep,
    /// Its connection is gone (or is another object, or no longer managed).
    Orphan,
    /// Its connection stands and no grant covers it.
    Uncovered,
    /// Not this instance's to judge (another shard's namespace), or being deleted (the
    /// finalizer's work).
    Skip,
}

/// Pure: the verdict on a user with `tags`, given its S3Connection as the API server has it
/// and whether a grant covers that connection.
pub fn judge(tags: &BTreeMap<String, String>, conn: Option<&S3Connection>, covered: impl FnOnce() -> bool) -> Verdict {
    let Some(conn) = conn else { return Verdict::Orphan };
    if conn.uid().as_deref() != tags.get(TAG_UID).map(String::as_str) || conn.spec.credentials.managed.is_none() {
        return Verdict::Orphan;
    }
    if conn.metadata.deletion_timestamp.is_some() {
        return Verdict::Skip;
    }
    if covered() { Verdict::Keep } else { Verdict::Uncovered }
}

/// One sweep over every user under the operator's path.
pub async fn once(
    ctx: &Context,
    managed: &Managed,
    recheck: &futures::channel::mpsc::UnboundedSender<ObjectRef<S3Connection>>,
) -> Swept {
    let mut swept = Swept::default();
    let iam = &managed.iam;
    let users = match iam.users().await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, "the managed-credentials sweep could not list IAM users; trying again at the next sweep");
            METRICS.managed_sweep("failed");
            return swept;
        }
    };
    // Never judge "uncovered" from a grant list that could not be read.
    let grants = match Api::<S3AccessGrant>::all(ctx.client.clone()).list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => {
            tracing::warn!(error = %e, "the managed-credentials sweep could not list S3AccessGrants; trying again at the next sweep");
            return swept;
        }
    };
    let mut labels: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    let mut pace = tokio::time::interval(PACE);
    for user in &users {
        pace.tick().await;
        let tags = match iam.tags(user).await {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(user = %user, error = %e, "the managed-credentials sweep could not read a user's tags");
                swept.failed += 1;
                METRICS.managed_sweep("failed");
                continue;
            }
        };
        let tag = |k: &str| tags.get(k).cloned().unwrap_or_default();
        if tag(TAG_INSTALLATION) != managed.installation.id || tags.contains_key(TAG_RELEASED) {
            continue;
        }
        let (namespace, name) = (tag(TAG_NAMESPACE), tag(TAG_NAME));
        if !serves(&ctx.config, &namespace) || name.is_empty() {
            continue;
        }
        swept.looked_at += 1;
        let conn = match Api::<S3Connection>::namespaced(ctx.client.clone(), &namespace).get_opt(&name).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(user = %user, error = %e, "the managed-credentials sweep could not read the user's S3Connection");
                swept.failed += 1;
                continue;
            }
        };
        let verdict = match conn.as_ref() {
            Some(c) => match labels_of(ctx, &grants, &mut labels, &namespace).await {
                Some(l) => judge(&tags, Some(c), || covered(&grants, c, &l)),
                None => {
                    swept.failed += 1;
                    continue;
                }
            },
            None => judge(&tags, None, || false),
        };
        let regarding = ObjectReference {
            api_version: Some("s3connect.io/v1alpha1".into()),
            kind: Some("S3Connection".into()),
            namespace: Some(namespace.clone()),
            name: Some(name.clone()),
            uid: tags.get(TAG_UID).cloned(),
            ..Default::default()
        };
        match verdict {
            Verdict::Keep | Verdict::Skip => {}
            Verdict::Orphan => clear_orphan(ctx, iam, user, &tags, regarding, &mut swept).await,
            Verdict::Uncovered => revoke_uncovered(ctx, iam, user, regarding, conn.as_ref(), recheck, &mut swept).await,
        }
    }
    swept
}

/// The labels of `namespace`, read once per sweep and only when a grant selects namespaces
/// by label; None when they could not be read.
async fn labels_of(
    ctx: &Context,
    grants: &[S3AccessGrant],
    cache: &mut HashMap<String, BTreeMap<String, String>>,
    namespace: &str,
) -> Option<BTreeMap<String, String>> {
    match cache.get(namespace) {
        Some(l) => Some(l.clone()),
        None if grants.iter().any(|g| g.spec.namespace_selector.is_some()) => {
            match Api::<Namespace>::all(ctx.client.clone()).get_metadata_opt(namespace).await {
                Ok(ns) => {
                    let l = ns.and_then(|n| n.metadata.labels).unwrap_or_default();
                    cache.insert(namespace.to_owned(), l.clone());
                    Some(l)
                }
                Err(_) => None,
            }
        }
        None => Some(BTreeMap::new()),
    }
}

/// A user whose S3Connection is gone: its access goes (and the user, unless retained).
async fn clear_orphan(
    ctx: &Context,
    iam: &Iam,
    user: &str,
    tags: &BTreeMap<String, String>,
    regarding: ObjectReference,
    swept: &mut Swept,
) {
    let (namespace, name) =
        (regarding.namespace.clone().unwrap_or_default(), regarding.name.clone().unwrap_or_default());
    match iam.clear_orphan(user, tags).await {
        Ok((keys, deleted)) => {
            swept.orphans += 1;
            METRICS.managed_sweep(if deleted { "orphan_deleted" } else { "orphan_keys_deleted" });
            let note = if deleted {
                format!(
                    "IAM user {user:?} was made for S3Connection {namespace}/{name}, which is gone: its {keys} access key(s), its policy and the user were deleted."
                )
            } else {
                format!(
                    "IAM user {user:?} was made for S3Connection {namespace}/{name}, which is gone: its {keys} access key(s) and its policy were deleted; the user is kept (deletionPolicy Retain)."
                )
            };
            tracing::warn!(user = %user, connection = %format!("{namespace}/{name}"), keys, user_deleted = deleted, "the sweep removed an orphaned managed IAM user's access");
            ctx.event(regarding, true, OperatorReason::OrphanedUserRemoved.as_str(), "Sweep", &note).await;
        }
        Err(e) => {
            swept.failed += 1;
            METRICS.managed_sweep("failed");
            tracing::warn!(user = %user, error = %e, "the sweep could not remove an orphaned managed IAM user");
        }
    }
}

/// A user no grant covers any more: its keys are deactivated and deleted and its policy
/// removed, and its connection is looked at again so that its status says so.
async fn revoke_uncovered(
    ctx: &Context,
    iam: &Iam,
    user: &str,
    regarding: ObjectReference,
    conn: Option<&S3Connection>,
    recheck: &futures::channel::mpsc::UnboundedSender<ObjectRef<S3Connection>>,
    swept: &mut Swept,
) {
    let (namespace, name) =
        (regarding.namespace.clone().unwrap_or_default(), regarding.name.clone().unwrap_or_default());
    // Nothing to write when an earlier sweep or reconcile already revoked.
    let has_access = match (iam.keys(user).await, iam.policy(user).await) {
        (Ok(k), Ok(p)) => !k.is_empty() || p.is_some(),
        _ => true,
    };
    if !has_access {
        return;
    }
    match iam.revoke_ours(user).await {
        Ok(keys) => {
            swept.revoked += 1;
            METRICS.managed_sweep("uncovered_revoked");
            let note = format!(
                "No S3AccessGrant covers this S3Connection any more: the {keys} access key(s) of IAM user {user:?} were deactivated and deleted, and its policy removed."
            );
            tracing::warn!(user = %user, connection = %format!("{namespace}/{name}"), keys, "the sweep revoked a managed user no grant covers");
            ctx.event(regarding, true, OperatorReason::UncoveredKeysRevoked.as_str(), "Sweep", &note).await;
            if let Some(c) = conn {
                let _ = recheck.unbounded_send(ObjectRef::from_obj(c));
            }
        }
        Err(e) => {
            swept.failed += 1;
            METRICS.managed_sweep("failed");
            tracing::warn!(user = %user, error = %e, "the sweep could not revoke a managed user no grant covers");
        }
    }
}

/// Whether a grant covers `conn` as its spec stands, with its namespace's `labels`.
fn covered(grants: &[S3AccessGrant], conn: &S3Connection, labels: &BTreeMap<String, String>) -> bool {
    let Ok(location) = Location::parse(&conn.spec.uri) else { return false };
    let namespace = conn.namespace().unwrap_or_default();
    let request = grant::Request {
        namespace: &namespace,
        namespace_labels: labels,
        bucket: &location.bucket,
        prefix: &location.prefix,
        usages: &conn.spec.usage,
        deletion_policy: conn.spec.credentials.managed.as_ref().map(|m| m.deletion_policy).unwrap_or_default(),
    };
    grant::decide(grants, &request).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(uid: &str, managed: bool, deleting: bool) -> S3Connection {
        let credentials =
            if managed { serde_json::json!({"managed": {}}) } else { serde_json::json!({"secretRef": {"name": "k"}}) };
        let mut c = S3Connection::new(
            "c",
            serde_json::from_value(serde_json::json!({"uri": "s3://b/", "credentials": credentials})).unwrap(),
        );
        c.metadata.uid = Some(uid.into());
        c.metadata.namespace = Some("ns".into());
        if deleting {
            c.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        }
        c
    }

    #[test]
    fn a_user_is_an_orphan_unless_its_own_managed_connection_stands() {
        let tags = BTreeMap::from([(TAG_UID.to_owned(), "u1".to_owned())]);
        assert_eq!(judge(&tags, None, || true), Verdict::Orphan, "the connection is gone");
        assert_eq!(judge(&tags, Some(&conn("u2", true, false)), || true), Verdict::Orphan, "another object, same name");
        assert_eq!(judge(&tags, Some(&conn("u1", false, false)), || true), Verdict::Orphan, "no longer managed");
        assert_eq!(judge(&tags, Some(&conn("u1", true, true)), || false), Verdict::Skip, "the finalizer's work");
        assert_eq!(judge(&tags, Some(&conn("u1", true, false)), || true), Verdict::Keep);
        assert_eq!(judge(&tags, Some(&conn("u1", true, false)), || false), Verdict::Uncovered);
        // A user with no uid tag never matches a connection.
        assert_eq!(judge(&BTreeMap::new(), Some(&conn("u1", true, false)), || true), Verdict::Orphan);
    }
}
