//! S3AccessGrants as the connection controller sees them: a change of a grant's spec (or
//! its deletion) re-checks every managed connection at once, so that keys a grant no longer
//! covers are revoked within one reconcile; and each grant's status counts the connections
//! it serves.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use crate::api::S3Connection;
use crate::api::conditions::{self, NamedCond, Reason, Status};
use crate::api::grant::{GrantReason, S3AccessGrant, S3AccessGrantStatus};
use crate::controller::{Context, FIELD_MANAGER};

/// How often grant statuses are brought up to date.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// One item each time a grant's spec changes or a grant goes (not on status writes),
/// including a grant deleted while the watch was relisting (it is missing from the relist).
pub fn changes(ctx: &Context) -> impl Stream<Item = ()> + Send + 'static {
    let mut seen: HashMap<String, Option<i64>> = HashMap::new();
    let mut relisted: Option<HashMap<String, Option<i64>>> = None;
    watcher(Api::<S3AccessGrant>::all(ctx.client.clone()), watcher::Config::default())
        .backoff(super::super::watch_backoff())
        .filter_map(move |event| {
            let changed = match event {
                Ok(watcher::Event::Init) => {
                    relisted = Some(HashMap::new());
                    false
                }
                Ok(watcher::Event::InitApply(g)) => {
                    let (uid, generation) = (g.uid().unwrap_or_default(), g.metadata.generation);
                    relisted.get_or_insert_with(HashMap::new).insert(uid.clone(), generation);
                    seen.get(&uid) != Some(&generation)
                }
                Ok(watcher::Event::InitDone) => {
                    let now = relisted.take().unwrap_or_default();
                    let gone = seen.keys().any(|uid| !now.contains_key(uid));
                    seen = now;
                    gone
                }
                Ok(watcher::Event::Apply(g)) => {
                    seen.insert(g.uid().unwrap_or_default(), g.metadata.generation) != Some(g.metadata.generation)
                }
                Ok(watcher::Event::Delete(g)) => {
                    seen.remove(&g.uid().unwrap_or_default());
                    true
                }
                Err(_) => false,
            };
            futures::future::ready(changed.then_some(()))
        })
}

/// The name of each namespace whose labels change (a grant's namespaceSelector may select
/// it no more, or now): a metadata-only watch, so nothing but names and labels is held.
pub fn namespace_label_changes(ctx: &Context) -> impl Stream<Item = String> + Send + 'static {
    let mut labels: HashMap<String, u64> = HashMap::new();
    let config = match &ctx.config.namespace {
        Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
        None => watcher::Config::default(),
    };
    watcher(Api::<kube::api::PartialObjectMeta<Namespace>>::all(ctx.client.clone()), config)
        .backoff(super::super::watch_backoff())
        .filter_map(move |event| {
            let changed = match event {
                Ok(watcher::Event::Apply(ns) | watcher::Event::InitApply(ns)) => {
                    let name = ns.name_any();
                    let hash = labels_hash(ns.metadata.labels.as_ref());
                    // The first sight of a namespace is no change: the connections in it
                    // were decided with the labels it has.
                    match labels.insert(name.clone(), hash) {
                        Some(old) if old != hash => Some(name),
                        _ => None,
                    }
                }
                Ok(watcher::Event::Delete(ns)) => {
                    labels.remove(&ns.name_any());
                    None
                }
                _ => None,
            };
            futures::future::ready(changed)
        })
}

fn labels_hash(labels: Option<&std::collections::BTreeMap<String, String>>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    labels.hash(&mut h);
    h.finish()
}

/// The managed connections (of `namespace`, or all), for a re-check after a grant or a
/// namespace's labels changed.
pub fn managed_connections(store: &Store<S3Connection>, namespace: Option<&str>) -> Vec<ObjectRef<S3Connection>> {
    store
        .state()
        .iter()
        .filter(|c| c.spec.credentials.managed.is_some())
        .filter(|c| namespace.is_none_or(|ns| c.namespace().as_deref() == Some(ns)))
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// Keeps each grant's status current: Ready, and how many connections it serves (from the
/// connections' own status). Writes only what changed.
pub async fn keep_status(ctx: Arc<Context>, store: Store<S3Connection>) {
    let api = Api::<S3AccessGrant>::all(ctx.client.clone());
    let mut tick = tokio::time::interval(STATUS_EVERY);
    let mut last_listed: Option<std::time::Instant> = None;
    loop {
        tick.tick().await;
        let grants = match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) => {
                tracing::warn!(error = %e, "could not list S3AccessGrants for their status");
                continue;
            }
        };
        let served = if ctx.config.sees_all_labels() {
            served_by(store.state().iter().map(|c| c.as_ref()))
        } else {
            // A shard's cache holds its own connections only: the grants' counts come from
            // the API server, a page at a time, and less often.
            if !listing_due(&mut last_listed) {
                continue;
            }
            match served_listed(&ctx).await {
                Ok(served) => served,
                Err(e) => {
                    tracing::warn!(error = %e, "could not list S3Connections for the S3AccessGrants' counts");
                    continue;
                }
            }
        };
        for grant in grants.iter().filter(|g| counts_all(&ctx.config, g)) {
            let name = grant.name_any();
            let status = status_of(grant, served.get(&name).copied().unwrap_or(0));
            if grant.status.as_ref().is_some_and(|s| same(s, &status)) {
                continue;
            }
            let patch =
                serde_json::json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "S3AccessGrant", "status": status});
            if let Err(e) =
                api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await
            {
                tracing::warn!(grant = %name, error = %e, "could not write the S3AccessGrant's status");
            }
        }
    }
}

/// How many connections each grant serves, from the connections' own status.
fn served_by<'a>(connections: impl Iterator<Item = &'a S3Connection>) -> HashMap<String, i64> {
    let mut served: HashMap<String, i64> = HashMap::new();
    for c in connections {
        if let Some(grant) =
            c.status.as_ref().and_then(|s| s.managed_credentials.as_ref()).and_then(|m| m.grant.clone())
        {
            *served.entry(grant).or_default() += 1;
        }
    }
    served
}

/// With shards, the counts are listed once a minute.
const LIST_EVERY: Duration = Duration::from_secs(60);

fn listing_due(last: &mut Option<std::time::Instant>) -> bool {
    if last.is_some_and(|at| at.elapsed() < LIST_EVERY) {
        return false;
    }
    *last = Some(std::time::Instant::now());
    true
}

/// How many connections each grant serves, over every S3Connection of this instance's
/// namespaces whatever its labels, read 25 a page (a page's objects are dropped once
/// counted).
async fn served_listed(ctx: &Context) -> Result<HashMap<String, i64>, kube::Error> {
    let api = crate::controller::api::<S3Connection>(ctx);
    let mut served: HashMap<String, i64> = HashMap::new();
    let mut params = ListParams::default().limit(25);
    if let Some(fields) = ctx.config.skipped_namespaces() {
        params = params.fields(&fields);
    }
    loop {
        let page = api.list(&params).await?;
        for (grant, n) in served_by(page.items.iter()) {
            *served.entry(grant).or_default() += n;
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(next) => params = params.continue_token(&next),
            None => return Ok(served),
        }
    }
}

/// Whether this instance sees every connection `grant` may serve, and so may write its
/// count: it serves every namespace the grant names, and all namespaces when the grant has
/// a selector. Instances sharded by namespace (`--namespace`, `--ignore-namespaces`) leave
/// the others' grants alone instead of writing each other's partial counts.
pub fn counts_all(config: &crate::controller::Config, grant: &S3AccessGrant) -> bool {
    let serves = |ns: &str| {
        config.namespace.as_deref().is_none_or(|only| only == ns) && !config.ignore_namespaces.iter().any(|i| i == ns)
    };
    let whole_cluster = config.namespace.is_none() && config.ignore_namespaces.is_empty();
    grant.spec.namespaces.iter().all(|ns| serves(ns)) && (grant.spec.namespace_selector.is_none() || whole_cluster)
}

fn same(old: &S3AccessGrantStatus, new: &S3AccessGrantStatus) -> bool {
    let key = |s: &S3AccessGrantStatus| {
        (
            s.observed_generation,
            s.connections,
            s.conditions
                .iter()
                .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone(), c.message.clone()))
                .collect::<Vec<_>>(),
        )
    };
    key(old) == key(new)
}

/// Pure: the status a grant should have, serving `connections`.
pub fn status_of(grant: &S3AccessGrant, connections: i64) -> S3AccessGrantStatus {
    let bad_selector = grant.spec.namespace_selector.as_ref().and_then(|s| {
        match kube::core::Selector::try_from(s.clone()) {
        Err(e) => Some(e.to_string()),
        Ok(selector) if selector.selects_all() => Some(
            "an empty selector selects no namespace here (a grant to every namespace must say so with an expression)"
                .to_owned(),
        ),
        Ok(_) => None,
    }
    });
    let cond = match bad_selector {
        Some(why) if grant.spec.namespaces.is_empty() => NamedCond::new(
            conditions::READY,
            Status::False,
            GrantReason::InvalidSelector.as_str(),
            format!("spec.namespaceSelector cannot be used ({why}): fix it, or list spec.namespaces."),
        ),
        _ => NamedCond::new(
            conditions::READY,
            Status::True,
            Reason::Validated.as_str(),
            format!("Serves {connections} managed S3Connection(s)."),
        ),
    };
    let generation = grant.meta().generation;
    let old = grant.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    S3AccessGrantStatus {
        observed_generation: generation,
        conditions: conditions::merge_named(&old, &[cond], generation, &Time(Timestamp::now())),
        connections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(spec: serde_json::Value) -> S3AccessGrant {
        S3AccessGrant::new("g", serde_json::from_value(spec).unwrap())
    }

    fn config(namespace: Option<&str>, ignore: &[&str]) -> crate::controller::Config {
        crate::controller::Config {
            allowed_endpoints: crate::endpoints::AllowList::new(Vec::<String>::new()),
            concurrency: 1,
            label_selector: None,
            cluster_wide: true,
            validation_timeout: Duration::from_secs(1),
            transient_grace: Duration::from_secs(1),
            unreachable_grace: Duration::from_secs(1),
            min_validation_spacing: Duration::ZERO,
            secret_grace: Duration::from_secs(1),
            namespace: namespace.map(str::to_owned),
            ignore_namespaces: ignore.iter().map(|s| (*s).to_owned()).collect(),
            managed: None,
        }
    }

    #[test]
    fn only_an_instance_that_sees_all_of_a_grants_namespaces_writes_its_count() {
        let named = grant(serde_json::json!({"namespaces": ["a", "b"], "buckets": [{"bucket": "x"}]}));
        let selected =
            grant(serde_json::json!({"namespaceSelector": {"matchLabels": {"t": "a"}}, "buckets": [{"bucket": "x"}]}));
        assert!(counts_all(&config(None, &[]), &named) && counts_all(&config(None, &[]), &selected));
        assert!(!counts_all(&config(Some("a"), &[]), &named), "a shard serving a alone");
        assert!(counts_all(
            &config(Some("a"), &[]),
            &grant(serde_json::json!({"namespaces": ["a"], "buckets": [{"bucket": "x"}]}))
        ));
        assert!(!counts_all(&config(None, &["b"]), &named));
        assert!(!counts_all(&config(None, &["c"]), &selected), "a selector may choose an ignored namespace");
    }

    #[test]
    fn a_grant_is_ready_unless_its_selector_cannot_choose_a_namespace() {
        let ok = status_of(&grant(serde_json::json!({"namespaces": ["a"], "buckets": [{"bucket": "b"}]})), 3);
        assert_eq!((ok.connections, ok.conditions[0].status.as_str()), (3, "True"));
        assert!(ok.conditions[0].message.contains("Serves 3"), "{:?}", ok.conditions);
        let bad = status_of(
            &grant(
                serde_json::json!({"namespaceSelector": {"matchExpressions": [{"key": "t", "operator": "Nope"}]}, "buckets": [{"bucket": "b"}]}),
            ),
            0,
        );
        assert_eq!(
            (bad.conditions[0].status.as_str(), bad.conditions[0].reason.as_str()),
            ("False", "InvalidSelector")
        );
        let empty = status_of(&grant(serde_json::json!({"namespaceSelector": {}, "buckets": [{"bucket": "b"}]})), 0);
        assert!(empty.conditions[0].message.contains("selects no namespace"), "{:?}", empty.conditions);
    }
}
