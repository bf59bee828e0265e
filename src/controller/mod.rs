//! The controllers and what they share: the Kubernetes client, event publishing and the
//! operator's configuration.

pub mod connection;
pub mod dataset;
pub mod decide;
pub mod driver;
pub mod export;
pub mod finalizer;
pub mod grant;
pub mod platform;
pub mod project;
pub mod slots;
pub mod status;

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

/// How long a validation keeps its start permit while waiting on the network (see `slots`).
const SLOT_HOLD: std::time::Duration = std::time::Duration::from_secs(2);

/// Objects per LIST page of every watch (see `Config::watch_config`).
const OBJECT_PAGE: u32 = 25;

/// The field manager for everything the operator writes with server-side apply.
pub const FIELD_MANAGER: &str = "s3connect";

#[derive(Clone, Debug)]
pub struct Config {
    pub allowed_endpoints: AllowList,
    /// Validations (and platform calls) that start at once; bounds the probe load on S3
    /// after a restart. See `slots`.
    pub concurrency: u16,
    /// The most one validation may take, retries included.
    pub validation_timeout: std::time::Duration,
    /// How long a Ready connection stays Ready while its validations fail only for reasons
    /// that clear by themselves (S3 5xx, throttling, an unreachable store).
    pub transient_grace: std::time::Duration,
    /// The same, when the store answered nothing at all in a validation (down, not flaky).
    pub unreachable_grace: std::time::Duration,
    /// The least time between two validations of one object that no spec change asked
    /// for (a Secret's new keys, a requested-at annotation, a retry).
    pub min_validation_spacing: std::time::Duration,
    /// How long after a connection is created a missing Secret is waited for (Reconciling)
    /// before it is a problem someone must fix (Stalled).
    pub secret_grace: std::time::Duration,
    /// Only this namespace, or all.
    pub namespace: Option<String>,
    /// Namespaces to leave alone (served by another instance, say).
    pub ignore_namespaces: Vec<String>,
    /// Serve only the objects whose labels match (`--watch-label-selector`): shards.
    pub label_selector: Option<String>,
    /// Whether this instance does the installation's cluster-wide work (S3AccessGrant
    /// status, the IAM sweep); with shards exactly one does.
    pub cluster_wide: bool,
    /// Managed credentials: the operator's IAM and installation; None when switched off
    /// (the default). S3AccessGrants decide what each namespace may obtain.
    pub managed: Option<connection::managed::Managed>,
}

impl Config {
    /// Watches skip the ignored namespaces on the server side, and list in small pages: a
    /// tenant's object may be close to etcd's 1.5 MiB (annotations, labels), and a page of
    /// kube's default 500 of them would be hundreds of MB at once.
    pub fn watch_config(&self) -> kube::runtime::watcher::Config {
        let config = kube::runtime::watcher::Config::default().page_size(OBJECT_PAGE);
        match self.skipped_namespaces() {
            Some(fields) => config.fields(&fields),
            None => config,
        }
    }

    /// The field selector that leaves out the ignored namespaces, if any are.
    pub fn skipped_namespaces(&self) -> Option<String> {
        let selector: Vec<String> =
            self.ignore_namespaces.iter().map(|ns| format!("metadata.namespace!={ns}")).collect();
        (!selector.is_empty()).then(|| selector.join(","))
    }

    /// The watch of the objects this instance serves: `watch_config` and this shard's
    /// label selector. What they refer to (Secrets, connections, datasets) is watched and
    /// read whatever its labels: a shard's Dataset may use a connection of another shard.
    pub fn served_watch_config(&self) -> kube::runtime::watcher::Config {
        let config = self.watch_config();
        match &self.label_selector {
            Some(selector) => config.labels(selector),
            None => config,
        }
    }

    /// Whether this instance sees every object of the namespaces it serves (no label
    /// selector): then counts from its own cache are whole.
    pub fn sees_all_labels(&self) -> bool {
        self.label_selector.is_none()
    }
}

pub struct Context {
    pub client: kube::Client,
    pub platform: crate::platform::Client,
    /// This replica's name, for events' reportingInstance.
    instance: String,
    pub config: Config,
    pub slots: slots::Slots,
    /// Consecutive failures per object uid, for backoff. In memory on purpose: after a
    /// restart the status's lastValidatedTime still spaces out the first retry.
    failures: Mutex<HashMap<String, u32>>,
    /// When each object's last validation started, to space them.
    validated: Mutex<HashMap<String, std::time::Instant>>,
    /// Per platform object (by uid): the requests by annotation last acted on, and when.
    asked: Mutex<HashMap<String, Asked>>,
}

impl Context {
    pub fn new(
        client: kube::Client,
        platform: crate::platform::Client,
        config: Config,
        instance: Option<String>,
    ) -> Self {
        Context {
            slots: slots::Slots::new(usize::from(config.concurrency), SLOT_HOLD),
            instance: instance.unwrap_or_else(|| "s3connect".into()),
            client,
            platform,
            config,
            failures: Mutex::default(),
            validated: Mutex::default(),
            asked: Mutex::default(),
        }
    }

    /// Publishes an events.k8s.io Event about `regarding`. Events are only sent on
    /// transitions, so each is created as it is: no client-side aggregation, and no cache
    /// of past events held in memory (kube's Recorder keeps every event for six minutes,
    /// which at thousands of objects was most of the operator's memory).
    pub async fn event(&self, regarding: ObjectReference, warning: bool, reason: &str, action: &str, note: &str) {
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".into());
        // Bounded and printable, like status messages (and the API server's limit is 1 kB).
        let mut note = crate::api::conditions::printable(note).into_owned();
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
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).get(uid).copied().unwrap_or(0)
    }

    /// Counts one more failure and returns the new count.
    pub fn record_failure(&self, uid: &str) -> u32 {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(uid.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// How long until the object may be validated again (zero: now).
    pub fn spacing_left(&self, uid: &str) -> std::time::Duration {
        let validated = self.validated.lock().unwrap_or_else(|e| e.into_inner());
        validated
            .get(uid)
            .map_or(std::time::Duration::ZERO, |at| self.config.min_validation_spacing.saturating_sub(at.elapsed()))
    }

    pub fn validation_started(&self, uid: &str) {
        self.validated.lock().unwrap_or_else(|e| e.into_inner()).insert(uid.to_owned(), std::time::Instant::now());
    }

    /// How long until a new request by annotation (`asked`, a digest of the values) may be
    /// acted on: zero (None) when it is not new, when the spec changed with it, or when the
    /// last one acted on is `--min-validation-spacing` old. Counts it as acted on then.
    pub fn request_spacing(&self, uid: &str, asked: u64, generation: Option<i64>) -> Option<std::time::Duration> {
        let mut map = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let fresh = Asked { asked, generation, at: now };
        let Some(seen) = map.get_mut(uid) else {
            map.insert(uid.to_owned(), fresh);
            return None;
        };
        if seen.asked == asked {
            seen.generation = generation;
            return None;
        }
        let left = self.config.min_validation_spacing.saturating_sub(now.duration_since(seen.at));
        if seen.generation == generation && !left.is_zero() {
            return Some(left);
        }
        *seen = fresh;
        None
    }

    /// An object that is gone leaves nothing behind in memory.
    pub fn forget(&self, uid: &str) {
        self.slots.forget(uid);
        self.validated.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
        self.asked.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }

    pub fn record_success(&self, uid: &str) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }
}

/// A request by annotation acted on (see `Context::request_spacing`).
struct Asked {
    asked: u64,
    generation: Option<i64>,
    at: std::time::Instant,
}

/// What a reconcile ended with when it did not return an `Action`.
#[derive(Debug, thiserror::Error)]
pub enum Failure<E: std::error::Error + 'static> {
    #[error(transparent)]
    Reconcile(E),
    /// A bug: the reconcile panicked. It is this object's problem, never the process's.
    #[error("the reconcile panicked")]
    Panicked,
}

/// Runs `reconcile`, turning a panic into `Failure::Panicked`.
pub async fn guarded<F, E>(reconcile: F) -> Result<Action, Failure<E>>
where
    F: Future<Output = Result<Action, E>>,
    E: std::error::Error + 'static,
{
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(reconcile).catch_unwind().await {
        Ok(result) => result.map_err(Failure::Reconcile),
        Err(_) => Err(Failure::Panicked),
    }
}

/// After a panic: count it, tell the object's owner (status and event), back off.
fn panicked<K>(object: Arc<K>, ctx: Arc<Context>, kind: &'static str) -> Action
where
    K: Resource<DynamicType = ()> + Clone + serde::Serialize + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let uid = object.meta().uid.clone().unwrap_or_default();
    let delay = crate::timing::backoff(ctx.record_failure(&uid), std::time::Duration::from_secs(300), 0.5);
    crate::telemetry::metrics::METRICS.reconcile_panic(kind);
    let (namespace, name) = (object.meta().namespace.clone().unwrap_or_default(), object.meta().name.clone());
    tracing::error!(kind, object = %format!("{namespace}/{}", name.as_deref().unwrap_or_default()), retry_in_s = delay.as_secs(), "reconcile panicked: the object is retried with backoff, the other objects are unaffected");
    tokio::spawn(async move {
        let message = "The operator failed unexpectedly while reconciling this object (an internal error, logged as \"reconcile panicked\"); it retries with backoff and no other object is affected. If this persists, report it with the operator's log.";
        status::report_panic(&ctx, object.as_ref(), message).await;
        ctx.event(
            object.object_ref(&()),
            true,
            crate::api::conditions::OperatorReason::ReconcilePanicked.as_str(),
            "Reconcile",
            message,
        )
        .await;
    });
    Action::requeue(delay)
}

/// Runs one controller until a termination signal: reconciles of `api`'s objects when
/// `trigger_hash` changes (so not on the controller's own status writes), and of the
/// objects `related` changes map to through the store. A panic in one reconcile becomes
/// that object's condition, an event and a metric; the process and every other object
/// carry on.
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
    extra: impl FnOnce(Controller<K>, Store<K>) -> Controller<K>,
) where
    K: Resource<DynamicType = ()> + Clone + serde::Serialize + DeserializeOwned + Debug + Send + Sync + 'static,
    O: Clone + Resource + DeserializeOwned + Debug + Send + 'static,
    O::DynamicType: Default + Debug + Clone,
    I: IntoIterator<Item = ObjectRef<K>> + 'static,
    I::IntoIter: Send,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
    E: std::error::Error + Send + 'static,
{
    let (reader, writer) = reflector::store();
    let trigger = watched(&ctx, api, writer, trigger_hash);
    let controller = Controller::for_stream(trigger, reader);
    let store = controller.store();
    // Objects whose turn came (see `slots`): reconciled again, and they take their permit.
    let (turns, turn_came) = futures::channel::mpsc::unbounded::<ObjectRef<K>>();
    let controller = extra(controller, store.clone()).reconcile_on(turn_came);
    let wake_store = store.clone();
    let reclaimer = reclaim_every_two_seconds(&ctx);
    controller
        // No bound here: `slots` bounds the work that starts at once, fairly between
        // namespaces, and a reconcile without a permit returns at once and waits there as
        // a key, so the controller holds only what runs. A bound here would be shared by
        // all namespaces, and one namespace with many objects could fill it (200 objects
        // on a hung endpoint once held every one of 64 places).
        .with_config(kube::runtime::controller::Config::default().concurrency(0))
        .trigger_backoff(watch_backoff())
        .watches_stream(related, move |o| mapper(&store, &o))
        .shutdown_on_signal()
        .run(
            move |object, ctx| with_permit(name, object, ctx, wake_store.clone(), turns.clone(), reconcile),
            move |object, failure, ctx| match failure {
                Failure::Reconcile(e) => error_policy(object, e, ctx),
                Failure::Panicked => panicked(object, ctx, name),
            },
            ctx,
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::warn!(controller = name, error = %e, "reconcile");
            }
        })
        .await;
    reclaimer.abort();
}

/// A permit set aside for an object that did not come for it goes on, even when every
/// other object waits (and so nothing else would look).
fn reclaim_every_two_seconds(ctx: &Arc<Context>) -> tokio::task::JoinHandle<()> {
    let ctx = Arc::downgrade(ctx);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tick.tick().await;
            let Some(ctx) = ctx.upgrade() else { return };
            ctx.slots.reclaim_expired();
        }
    })
}

/// One reconcile of `object` with a start permit, handed out fairly between namespaces
/// (see `slots`), or, without one, its key left to wait outside the controller: woken
/// for a permit, it is reconciled again (through `turns`), unless it is gone meanwhile
/// (deleted, or missed in a relist), when the permit goes to the next instead.
async fn with_permit<K, Fut, E>(
    name: &'static str,
    object: Arc<K>,
    ctx: Arc<Context>,
    store: Store<K>,
    turns: futures::channel::mpsc::UnboundedSender<ObjectRef<K>>,
    reconcile: fn(Arc<K>, Arc<Context>) -> Fut,
) -> Result<Action, Failure<E>>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
    E: std::error::Error + Send + 'static,
{
    let namespace = object.meta().namespace.clone().unwrap_or_default();
    let key = object.meta().uid.clone().unwrap_or_default();
    let me = ObjectRef::from_obj(object.as_ref());
    let (gone, weak) = (key.clone(), Arc::downgrade(&ctx));
    let wake = move || {
        if store.get(&me).is_some() {
            let _ = turns.unbounded_send(me);
        } else if let Some(ctx) = weak.upgrade() {
            ctx.slots.forget(&gone);
        }
    };
    #[cfg(debug_assertions)]
    let debug_panic = object
        .meta()
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(crate::api::annotations::DEBUG_PANIC_ANNOTATION));
    let slots_ctx = ctx.clone();
    let run = move || async move {
        #[cfg(debug_assertions)]
        if debug_panic {
            panic!("{} is set", crate::api::annotations::DEBUG_PANIC_ANNOTATION);
        }
        reconcile(object, ctx).await
    };
    let turn = async { slots_ctx.slots.run(&namespace, &key, wake, run).await.unwrap_or(Ok(Action::await_change())) };
    let (result, busy) = crate::telemetry::busy(guarded(turn)).await;
    crate::telemetry::metrics::METRICS.reconcile_busy(name, busy);
    result
}

/// The objects of `api` whose `trigger_hash` changed, cached in `writer` as the
/// controllers read them.
fn watched<K>(
    ctx: &Arc<Context>,
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    trigger_hash: fn(&K) -> Option<u64>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    watcher(api, ctx.config.served_watch_config())
        .backoff(watch_backoff())
        // The cache keeps what the controllers read: never managedFields, nor annotations
        // other than the ones the operator and Flux define, each bounded (a tenant's object
        // may carry 256 KiB of them, and kubectl's last-applied-configuration is the whole
        // object again).
        .modify(|o| {
            let meta = o.meta_mut();
            meta.managed_fields = None;
            // Nor labels or ownerReferences, which no controller reads of its own kinds.
            meta.labels = None;
            meta.owner_references = None;
            if let Some(annotations) = meta.annotations.as_mut() {
                annotations.retain(|k, v| crate::api::annotations::kept_annotation(k, v));
            }
        })
        .reflect(writer)
        .filter_map({
            let ctx = ctx.clone();
            let mut changes = Changes::default();
            move |event| futures::future::ready(changes.seen(&ctx, event, trigger_hash))
        })
}

/// Which watch events are changes worth a reconcile (`trigger_hash` differs from the last
/// one seen of the object), and what is gone: an object deleted, or no longer in the watch
/// (relabelled off this shard, or deleted while the watch relisted) leaves its state and
/// gauges with it, and is new again if it comes back.
#[derive(Default)]
struct Changes {
    hashes: HashMap<String, u64>,
    /// The uids of a relist under way.
    relisted: Option<std::collections::HashSet<String>>,
}

impl Changes {
    fn seen<K: Resource>(
        &mut self,
        ctx: &Context,
        event: Result<watcher::Event<K>, watcher::Error>,
        trigger_hash: fn(&K) -> Option<u64>,
    ) -> Option<Result<K, watcher::Error>> {
        let gone = |uid: &str| {
            crate::telemetry::metrics::METRICS.forget(uid);
            ctx.forget(uid);
        };
        match event {
            Err(e) => Some(Err(e)),
            Ok(watcher::Event::Init) => {
                self.relisted = Some(Default::default());
                None
            }
            Ok(watcher::Event::InitDone) => {
                let listed = self.relisted.take().unwrap_or_default();
                self.hashes.retain(|uid, _| {
                    let keep = listed.contains(uid);
                    if !keep {
                        gone(uid);
                    }
                    keep
                });
                None
            }
            Ok(watcher::Event::Delete(o)) => {
                let uid = o.meta().uid.clone().unwrap_or_default();
                self.hashes.remove(&uid);
                gone(&uid);
                None
            }
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let uid = o.meta().uid.clone().unwrap_or_default();
                if let Some(relisted) = self.relisted.as_mut() {
                    relisted.insert(uid.clone());
                }
                let hash = trigger_hash(&o)?;
                (self.hashes.insert(uid, hash) != Some(hash)).then_some(Ok(o))
            }
        }
    }
}

/// How watches retry after an error: quickly, so that after an API server restart new
/// objects are seen within seconds (kube's default grows to 30 s and stays there for two
/// minutes after a success). 250 ms doubling to 4 s, with up to 50 % jitter.
#[derive(Clone, Debug)]
pub struct WatchBackoff {
    next: std::time::Duration,
}

pub fn watch_backoff() -> WatchBackoff {
    WatchBackoff { next: WATCH_BACKOFF_START }
}

const WATCH_BACKOFF_START: std::time::Duration = std::time::Duration::from_millis(250);
const WATCH_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(4);

impl Iterator for WatchBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<std::time::Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(WATCH_BACKOFF_MAX);
        Some(now.mul_f64(1.0 + 0.5 * fastrand::f64()))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = WATCH_BACKOFF_START;
    }
}

/// The API for `K` in the configured namespace, or in all.
pub fn api<K>(ctx: &Context) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    scoped_api(&ctx.client, ctx.config.namespace.as_deref())
}

/// The API for `K` in `namespace`, or in all.
pub fn scoped_api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}
