//! The driver every controller whose object lives on the platform shares (Dataset,
//! DatasetExport, AnnotationProject). It owns the order of a reconcile (`reconcile`):
//! deletion, the finalizer, a settled object, spacing of requests, the view decided from,
//! the kind's decision and calls, the one preconditioned write, counting it, when to look
//! again; and the controller around it (`run`), with the watch of the related kind.
//!
//! A kind supplies what differs: through `PlatformObject` its name, its related kind and
//! which of them it waits for, the annotations that trigger it, how a phase reads in an
//! event; through `Hooks` its finalizer, its clean-up, and its decision with the platform
//! calls it leads to. Its module keeps only its facts, its pure decision and its calls.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use kube::api::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tracing::info;

use super::Context;
use super::status::{self as shared, Next, WithConditions};
use crate::api::conditions::{NamedCond, READY, Status};

/// What a decision ends with: the new status, the conditions before Ready, Ready itself,
/// whether the operator keeps working on it by itself (Reconciling) or waits for a person
/// (Stalled) while Ready is not True, and when to look again.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome<S> {
    pub status: S,
    pub conds: Vec<NamedCond>,
    /// Derived, never set: `Outcome::derived` is the only way to make one.
    ready: NamedCond,
    pub retrying: bool,
    pub next: Next,
}

impl<S> Outcome<S> {
    /// Ready from `conds`, by the one rule every kind follows: a False condition makes
    /// Ready False with its reason and message; otherwise one that is Unknown (the platform
    /// is working on it) makes Ready Unknown with its; otherwise Ready is the kind's own
    /// `verdict` (done, or where its platform object stands: being made, in conflict).
    pub fn derived(status: S, conds: Vec<NamedCond>, verdict: NamedCond, retrying: bool, next: Next) -> Self {
        let ready = ready_of(&conds).unwrap_or(verdict);
        Outcome { status, conds, ready, retrying, next }
    }

    /// Stalled on `cause`, written after `conds`: Ready False with its reason and message,
    /// whatever its own status (a connection gone reads Unknown on the condition it stops,
    /// but only a person can bring it back), and nothing retried by itself.
    pub fn stalled_on(status: S, mut conds: Vec<NamedCond>, cause: NamedCond, next: Next) -> Self {
        let ready = NamedCond { type_: READY, status: Status::False, ..cause.clone() };
        conds.push(cause);
        Outcome { status, conds, ready, retrying: false, next }
    }

    /// Ready, as derived.
    pub fn ready(&self) -> &NamedCond {
        &self.ready
    }

    /// The condition `type_` of this outcome, Ready included.
    pub fn get(&self, type_: &str) -> Option<&NamedCond> {
        if type_ == READY { Some(&self.ready) } else { self.conds.iter().find(|c| c.type_ == type_) }
    }

    /// Every condition as written: the kind's, then Ready.
    pub fn conditions(&self) -> Vec<NamedCond> {
        self.conds.iter().cloned().chain([self.ready.clone()]).collect()
    }
}

/// Ready as `conds` decide it (None when every one is True): the first False one's, else
/// the first Unknown one's.
pub fn ready_of(conds: &[NamedCond]) -> Option<NamedCond> {
    let first = conds.iter().find(|c| c.status == Status::False).or_else(|| conds.iter().find(|c| !c.is_true()))?;
    Some(NamedCond { type_: READY, ..first.clone() })
}

/// What differs between the kinds the driver runs.
pub trait PlatformObject:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + serde::Serialize
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    type Status: WithConditions + Default + Clone + Send + Sync;
    /// The kind, as metrics, logs and events name it.
    const KIND: &'static str;
    /// Annotations whose change is a reason to reconcile, besides a spec change, deletion
    /// and a reconcile request (status writes are not).
    const TRIGGERS: &'static [&'static str];

    /// The kind it works through (an S3Connection, Datasets), in its own namespace: a
    /// change of one it waits for brings it back.
    type Related: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static;

    fn status(&self) -> Option<&Self::Status>;
    /// Whether a change of the related object `name` may let it go ahead.
    fn waits_for(&self, name: &str) -> bool;
    fn phase(status: &Self::Status) -> Option<String>;
    /// The platform's id for it, once known (for the log line of a phase change).
    fn platform_id(status: &Self::Status) -> Option<&str>;
    /// The event for a phase change: whether it is a warning, and its note.
    fn phase_event(status: &Self::Status, ready: &NamedCond) -> (bool, String);
    /// After `status` was written.
    fn written(&self, _status: &Self::Status) {}
    /// The fraction of a retry's delay that is jittered.
    fn jitter(&self) -> f64 {
        0.5
    }
}

/// The steps of a reconcile that differ between the kinds; the order is the driver's.
pub trait Hooks: PlatformObject {
    /// The finalizer the object carries while its spec asks for one (a deletion policy
    /// that deletes on the platform), set before anything is made there. None: the kind
    /// has none.
    fn finalizer(&self) -> Option<(bool, &'static str)> {
        None
    }

    /// The object is being deleted: what it made on the platform goes, then its finalizer.
    fn clean_up(&self, _ctx: &Context, _namespace: &str) -> impl Future<Output = Result<Action, Error>> + Send {
        async { Ok(Action::await_change()) }
    }

    /// Nothing is left to do whatever the view (a one-off export that ended).
    fn settled(&self) -> bool {
        false
    }

    /// The decision from the object as read (`written`), and the platform calls it leads
    /// to; an intent is written through `written` (preconditioned) before its call.
    fn act(
        &self,
        ctx: &Context,
        namespace: &str,
        written: &mut Written<Self::Status>,
    ) -> impl Future<Output = Result<Acted<Self::Status>, Error>> + Send;
}

/// What a kind's `act` ends with: an outcome to write, or nothing to do until `Action`.
pub enum Acted<S> {
    Outcome(Outcome<S>),
    Idle(Action),
}

/// One reconcile of a platform kind, in the driver's order.
pub async fn reconcile<K: Hooks>(object: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = namespace(object.as_ref())?;
    if object.meta().deletion_timestamp.is_some() {
        crate::telemetry::metrics::METRICS.forget(&object.uid().unwrap_or_default());
        return object.clean_up(&ctx, &namespace).await;
    }
    // Before anything is created, so that nothing it makes outlives the object.
    if let Some(wanted) = object.finalizer()
        && let Some(finalizers) = super::finalizer::wanted(object.as_ref(), &[wanted])
    {
        set_finalizers(&ctx, object.as_ref(), finalizers).await?;
        return Ok(Action::requeue(std::time::Duration::ZERO));
    }
    if object.settled() {
        return Ok(Action::await_change());
    }
    if let Some(wait) = spaced(&ctx, object.as_ref()) {
        return Ok(wait);
    }
    let started = std::time::Instant::now();
    let mut written = Written::of(object.as_ref());
    match object.act(&ctx, &namespace, &mut written).await? {
        Acted::Idle(action) => Ok(action),
        Acted::Outcome(outcome) => finish(&ctx, object.as_ref(), &mut written, outcome, started).await,
    }
}

/// The object `name` of kind `R` in `namespace`, read fresh from the API server (never a
/// cache): what a decision with effects on the platform is made from.
pub async fn read<R>(ctx: &Context, namespace: &str, name: &str) -> Result<Option<R>, Error>
where
    R: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    kube::Api::<R>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(Error::read(format!("{} {namespace}/{name}", R::kind(&()))))
}

/// Sets the object's finalizers, preconditioned on the version it was read at.
pub async fn set_finalizers<K: PlatformObject>(
    ctx: &Context,
    object: &K,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    super::finalizer::set(&ctx.client, object, finalizers)
        .await
        .map(drop)
        .map_err(|source| Error::Write { name: object.name_any(), source })
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} has no namespace")]
    NoNamespace(String),
    #[error("reading {what} failed: {source}")]
    Read { what: String, source: kube::Error },
    #[error("writing {name} failed: {source}")]
    Write { name: String, source: kube::Error },
}

impl Error {
    pub fn read(what: String) -> impl FnOnce(kube::Error) -> Self {
        move |source| Error::Read { what, source }
    }
}

fn label<K: PlatformObject>(object: &K) -> String {
    format!("{} {}/{}", K::KIND, object.namespace().unwrap_or_default(), object.name_any())
}

/// The object's namespace (a namespaced kind always has one; an object without is an error).
pub fn namespace<K: PlatformObject>(object: &K) -> Result<String, Error> {
    object.namespace().ok_or_else(|| Error::NoNamespace(format!("{} {}", K::KIND, object.name_any())))
}

/// The status as last written and the resourceVersion it was written at: what every
/// later write of the reconcile compares against and is preconditioned on.
#[derive(Clone, Debug)]
pub struct Written<S> {
    pub status: S,
    pub version: Option<String>,
}

impl<S: Clone + Default> Written<S> {
    /// As the object was read: the decision is made from this view.
    pub fn of<K: PlatformObject<Status = S>>(object: &K) -> Self {
        Written { status: object.status().cloned().unwrap_or_default(), version: object.resource_version() }
    }
}

/// Writes `outcome` unless it says nothing new against `written` (which it becomes),
/// preconditioned on its version; an event and a log line when the phase changed.
pub async fn write<K: PlatformObject>(
    ctx: &Context,
    object: &K,
    written: &mut Written<K::Status>,
    outcome: &Outcome<K::Status>,
) -> Result<(), Error> {
    let Written { status: written, version } = written;
    let Some(status) = shared::write_changed(
        ctx,
        object,
        written,
        outcome.status.clone(),
        outcome.conditions(),
        outcome.retrying,
        version,
    )
    .await
    .map_err(|source| Error::Write { name: label(object), source })?
    else {
        return Ok(());
    };
    object.written(&status);
    let (phase, before) = (K::phase(&status), K::phase(written));
    if phase != before {
        let phase = phase.unwrap_or_default();
        let (warning, note) = K::phase_event(&status, &outcome.ready);
        ctx.event(object.object_ref(&()), warning, &phase, K::KIND, &note).await;
        let id = K::platform_id(&status).unwrap_or("");
        info!(kind = K::KIND, object = %format!("{}/{}", object.namespace().unwrap_or_default(), object.name_any()), phase = %phase, id, "phase");
    }
    *written = status;
    Ok(())
}

/// Writes the outcome, counts it, and returns the next action.
pub async fn finish<K: PlatformObject>(
    ctx: &Context,
    object: &K,
    written: &mut Written<K::Status>,
    outcome: Outcome<K::Status>,
    started: std::time::Instant,
) -> Result<Action, Error> {
    write(ctx, object, written, &outcome).await?;
    let (uid, ready) = (object.uid().unwrap_or_default(), &outcome.ready);
    let metrics = &crate::telemetry::metrics::METRICS;
    metrics.reconciled(K::KIND, &ready.reason, started.elapsed());
    let (namespace, name) = (object.namespace().unwrap_or_default(), object.name_any());
    metrics.set_ready(&uid, K::KIND, &namespace, &name, ready.is_true(), &ready.reason);
    Ok(shared::action(ctx, &uid, outcome.next, object.jitter()))
}

/// Deletion waits on the platform: Ready=False with `reason` and `message` (under the
/// clean-up field manager, best effort: the object is going away), and a retry with
/// backoff up to five minutes.
pub async fn deletion_blocked<K: PlatformObject>(ctx: &Context, object: &K, reason: &str, message: String) -> Action {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::{Api, Patch, PatchParams};
    let cond = NamedCond::new(READY, Status::False, reason.to_owned(), message);
    let old = object.status().map(|s| s.conditions().clone()).unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let patch = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::KIND, "status": {
        "conditions": crate::api::conditions::merge_named(&old, &[cond], object.meta().generation, &now),
    }});
    let api = Api::<K>::namespaced(ctx.client.clone(), &object.namespace().unwrap_or_default());
    let _ = api
        .patch_status(&object.name_any(), &PatchParams::apply("s3connect-cleanup").force(), &Patch::Apply(&patch))
        .await;
    let next = Next::Retry { cap: std::time::Duration::from_secs(300) };
    shared::action(ctx, &object.uid().unwrap_or_default(), next, 0.5)
}

pub fn error_policy<K: PlatformObject>(object: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    if let Error::Write { source, .. } = err
        && shared::is_conflict(source)
    {
        return shared::after_conflict(K::KIND, &object.name_any());
    }
    let kind = match err {
        Error::NoNamespace(_) => "NoNamespace",
        Error::Read { .. } => "Read",
        Error::Write { .. } => "Write",
    };
    shared::after_error(&ctx, K::KIND, &object.name_any(), &object.uid().unwrap_or_default(), kind, err)
}

/// Spec changes, deletion, the kind's trigger annotations and a reconcile request
/// trigger; status writes do not.
pub fn trigger_hash<K: PlatformObject>(object: &K) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    object.meta().generation.hash(&mut h);
    object.meta().deletion_timestamp.is_some().hash(&mut h);
    asked(object).hash(&mut h);
    Some(h.finish())
}

/// What the object's annotations ask for (the kind's trigger annotations and a reconcile
/// request), as one number.
fn asked<K: PlatformObject>(object: &K) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for key in K::TRIGGERS {
        object.annotations().get(*key).hash(&mut h);
    }
    crate::api::annotations::requested_at(object.annotations()).hash(&mut h);
    h.finish()
}

/// A request by annotation (`s3connect.io/requested-at` or Flux's, and the kind's own
/// such as `sync-now`) is acted on at most once per `--min-validation-spacing` for each
/// object, so rewriting it in a loop makes one platform call per spacing, not one per
/// write; the newest value is acted on when the spacing has passed. A spec change is
/// never held back. Some(action): wait, nothing was done.
pub fn spaced<K: PlatformObject>(ctx: &Context, object: &K) -> Option<Action> {
    let uid = object.uid()?;
    let left = ctx.request_spacing(&uid, asked(object), object.meta().generation)?;
    tracing::debug!(kind = K::KIND, object = %label(object), wait = ?left, "request spaced");
    Some(Action::requeue(left))
}

/// The objects still waiting for the connection that changed.
fn referencing<K: PlatformObject>(store: &Store<K>, related: &PartialObjectMeta<K::Related>) -> Vec<ObjectRef<K>> {
    let name = related.name_any();
    store
        .state()
        .iter()
        .filter(|o| o.namespace() == related.namespace() && o.waits_for(&name))
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// Runs the controller for `K` until a termination signal, reconciling with `reconcile`.
pub async fn run<K: Hooks>(ctx: Arc<Context>) {
    use kube::runtime::{WatchStreamExt, watcher};
    // Metadata only: that one changed is all the mapping needs.
    let related = watcher(super::api::<PartialObjectMeta<K::Related>>(&ctx), ctx.config.watch_config())
        .backoff(super::watch_backoff())
        .applied_objects();
    super::run_controller(
        ctx.clone(),
        K::KIND,
        super::api(&ctx),
        trigger_hash::<K>,
        related,
        referencing::<K>,
        reconcile::<K>,
        error_policy::<K>,
        |c, _| c,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(type_: &'static str, status: Status, reason: &str) -> NamedCond {
        NamedCond::new(type_, status, reason, reason)
    }

    #[test]
    fn ready_is_the_first_failure_else_the_work_in_progress_else_done() {
        let done = c(READY, Status::True, "Done");
        let derived = |conds: Vec<NamedCond>| Outcome::derived((), conds, done.clone(), true, Next::AwaitChange).ready;
        let ok = c("A", Status::True, "Fine");
        let working = c("B", Status::Unknown, "Working");
        let failed = c("C", Status::False, "Broken");
        assert_eq!(derived(vec![ok.clone()]), done);
        let r = derived(vec![ok.clone(), working.clone()]);
        assert_eq!((r.type_, r.status, r.reason.as_str()), (READY, Status::Unknown, "Working"));
        let r = derived(vec![working, ok, failed]);
        assert_eq!((r.type_, r.status, r.reason.as_str()), (READY, Status::False, "Broken"));
    }

    #[test]
    fn the_outcome_writes_ready_last_and_finds_it_by_type() {
        let o = Outcome::derived(
            (),
            vec![c("A", Status::Unknown, "Working")],
            c(READY, Status::True, "Done"),
            true,
            Next::Poll,
        );
        let types: Vec<&str> = o.conditions().iter().map(|c| c.type_).collect();
        assert_eq!(types, ["A", READY]);
        assert_eq!(o.get(READY).map(|c| c.status), Some(Status::Unknown));
        assert_eq!(o.get("A").map(|c| c.reason.as_str()), Some("Working"));
        assert!(o.get("Z").is_none());
    }
}
