//! The controllers and what they share: the Kubernetes client, event publishing and the
//! operator's configuration.

pub mod connection;
pub mod export;

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Resource;
use kube::api::Api;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;

use crate::endpoints::AllowList;

/// A Secret's value at `key`, trimmed of the whitespace that copy-paste and `echo` leave
/// (a trailing newline otherwise shows up as SignatureDoesNotMatch); None when missing or
/// blank.
pub fn secret_value(secret: &k8s_openapi::api::core::v1::Secret, key: &str) -> Option<String> {
    let value = secret.data.as_ref()?.get(key)?;
    Some(String::from_utf8_lossy(&value.0).trim().to_owned()).filter(|v| !v.is_empty())
}

/// A Secret's key names (never its values), for messages about a missing key.
pub fn secret_keys(secret: &k8s_openapi::api::core::v1::Secret) -> Vec<String> {
    secret.data.as_ref().map(|d| d.keys().cloned().collect()).unwrap_or_default()
}

/// The field manager for everything the operator writes with server-side apply.
pub const FIELD_MANAGER: &str = "s3connect";

#[derive(Clone, Debug)]
pub struct Config {
    pub allowed_endpoints: AllowList,
    /// Reconciles running at once; bounds the probe load on S3 after a restart.
    pub concurrency: u16,
    /// Only this namespace, or all.
    pub namespace: Option<String>,
    /// Namespaces to leave alone (served by another instance, say).
    pub ignore_namespaces: Vec<String>,
}

impl Config {
    /// Watches skip the ignored namespaces on the server side.
    pub fn watch_config(&self) -> kube::runtime::watcher::Config {
        let selector: Vec<String> =
            self.ignore_namespaces.iter().map(|ns| format!("metadata.namespace!={ns}")).collect();
        let config = kube::runtime::watcher::Config::default();
        if selector.is_empty() { config } else { config.fields(&selector.join(",")) }
    }
}

pub struct Context {
    pub client: kube::Client,
    pub platform: crate::platform::Client,
    /// This replica's name, for events' reportingInstance.
    instance: String,
    /// Export report ids not yet written to status (see `export`).
    pub unrecorded: export::Unrecorded,
    pub config: Config,
    /// Consecutive failures per object uid, for backoff. In memory on purpose: after a
    /// restart the status's lastValidatedTime still spaces out the first retry.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: kube::Client,
        platform: crate::platform::Client,
        config: Config,
        instance: Option<String>,
    ) -> Self {
        Context {
            instance: instance.unwrap_or_else(|| "s3connect".into()),
            unrecorded: export::Unrecorded::default(),
            client,
            platform,
            config,
            failures: Mutex::default(),
        }
    }

    /// Publishes an events.k8s.io Event about `regarding`. Events are only sent on
    /// transitions, so each is created as it is: no client-side aggregation, and no cache
    /// of past events held in memory (kube's Recorder keeps every event for six minutes,
    /// which at thousands of objects was most of the operator's memory).
    pub async fn event(&self, regarding: ObjectReference, warning: bool, reason: &str, action: &str, note: &str) {
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".into());
        let mut note = note.to_owned();
        if note.len() > 1000 {
            let mut end = 1000;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
        }
        let event = K8sEvent {
            metadata: ObjectMeta {
                // `<object>.<unique>`, as kubectl names events (a generateName may not end
                // in a dot).
                name: Some(format!("{}.{:016x}", regarding.name.as_deref().unwrap_or("s3connect"), fastrand::u64(..))),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            reporting_controller: Some("s3connect.io/operator".into()),
            reporting_instance: Some(self.instance.clone()),
            action: Some(action.to_owned()),
            reason: Some(reason.to_owned()),
            note: Some(note),
            type_: Some(if warning { "Warning" } else { "Normal" }.to_owned()),
            regarding: Some(regarding),
            ..Default::default()
        };
        if let Err(e) =
            Api::<K8sEvent>::namespaced(self.client.clone(), &namespace).create(&PostParams::default(), &event).await
        {
            tracing::warn!(reason, error = %e, "could not publish an event");
        }
    }

    pub fn failures(&self, uid: &str) -> u32 {
        self.failures.lock().expect("not poisoned").get(uid).copied().unwrap_or(0)
    }

    /// Counts one more failure and returns the new count.
    pub fn record_failure(&self, uid: &str) -> u32 {
        let mut map = self.failures.lock().expect("not poisoned");
        let n = map.entry(uid.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    pub fn record_success(&self, uid: &str) {
        self.failures.lock().expect("not poisoned").remove(uid);
    }
}

/// Runs one controller until a termination signal: reconciles of `api`'s objects when
/// `trigger_hash` changes (so not on the controller's own status writes), and of the
/// objects `related` changes map to through the store.
#[allow(clippy::too_many_arguments)]
pub async fn run_controller<K, O, I, Fut, E>(
    ctx: Arc<Context>,
    name: &'static str,
    api: Api<K>,
    trigger_hash: fn(&K) -> Option<u64>,
    related: impl Stream<Item = Result<O, watcher::Error>> + Send + 'static,
    mapper: fn(&Store<K>, &O) -> I,
    reconcile: fn(Arc<K>, Arc<Context>) -> Fut,
    error_policy: fn(Arc<K>, &E, Arc<Context>) -> Action,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    O: Clone + Resource + DeserializeOwned + Debug + Send + 'static,
    O::DynamicType: Default + Debug + Clone,
    I: IntoIterator<Item = ObjectRef<K>> + 'static,
    I::IntoIter: Send,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
    E: std::error::Error + Send + 'static,
{
    let (reader, writer) = reflector::store();
    let trigger = watcher(api, ctx.config.watch_config())
        .default_backoff()
        // The cache never needs managedFields, which are a large part of each object.
        .modify(|o| o.meta_mut().managed_fields = None)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(trigger_hash, Default::default());
    let controller = Controller::for_stream(trigger, reader);
    let store = controller.store();
    controller
        .with_config(kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency))
        .watches_stream(related, move |o| mapper(&store, &o))
        .shutdown_on_signal()
        .run(
            move |object, ctx| async move {
                let (result, busy) = crate::telemetry::busy(reconcile(object, ctx)).await;
                crate::telemetry::metrics::METRICS.reconcile_busy(name, busy);
                result
            },
            error_policy,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::warn!(controller = name, error = %e, "reconcile");
            }
        })
        .await;
}

/// The API for `K` in the configured namespace, or in all.
pub fn api<K>(ctx: &Context) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match &ctx.config.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    }
}
