//! S3AccessGrants as the connection controller sees them: a change of a grant's spec (or
//! its deletion) re-checks every managed connection at once, so that keys a grant no longer
//! covers are revoked within one reconcile; so does a change of a namespace's labels. The
//! grants' own status is `controller::grant`'s.

use std::collections::HashMap;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::api::S3Connection;
use crate::api::grant::S3AccessGrant;
use crate::controller::Context;

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
