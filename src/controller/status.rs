//! What every controller does with a status beyond deciding it: the kstatus conditions,
//! the status write (a refusal made visible: event, metric, log), the next action with
//! its failure count, and a panic reported on the object it happened to.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::{Context, FIELD_MANAGER};
use crate::api::conditions::OperatorReason;
use crate::api::conditions::{NamedCond, READY, RECONCILING, STALLED, Status, printable};

/// Sets Ready=False with `message` and Reconciling=True on the object's status, keeping
/// everything else it has. The status is read fresh and written back preconditioned on
/// that read's resourceVersion, changing only those conditions: the panicked reconcile may
/// have recorded an intent (a submission about to be made) that the cached copy does not
/// show, and writing the cached status would erase it, so that the next reconcile would
/// call the platform a second time. A write that meets a newer version is given up: the
/// next reconcile writes the status anyway.
pub async fn report_panic<K>(ctx: &Context, object: &K, message: &str)
where
    K: Resource<DynamicType = ()> + serde::Serialize,
{
    let (Some(namespace), Some(name)) = (object.meta().namespace.clone(), object.meta().name.clone()) else {
        return;
    };
    let api = Api::<kube::api::DynamicObject>::namespaced_with(
        ctx.client.clone(),
        &namespace,
        &kube::api::ApiResource::erase::<K>(&()),
    );
    let fresh = match api.get_status(&name).await {
        Ok(fresh) => fresh,
        Err(e) => {
            tracing::warn!(object = %name, error = %e, "could not read the object to report a panic on it");
            return;
        }
    };
    // The same object, not a namesake made since.
    if fresh.metadata.uid != object.meta().uid {
        return;
    }
    let mut status = fresh.data.get("status").cloned().filter(Value::is_object).unwrap_or(json!({}));
    let old: Vec<Value> = status.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let generation = fresh.metadata.generation;
    let now = Time(Timestamp::now());
    let condition = |type_: &str, state: &str, message: &str| {
        let kept =
            old.iter().find(|c| c["type"] == type_ && c["status"] == state).map(|c| c["lastTransitionTime"].clone());
        json!({"type": type_, "status": state, "reason": OperatorReason::ReconcilePanicked.as_str(), "message": message,
               "observedGeneration": generation, "lastTransitionTime": kept.unwrap_or_else(|| json!(now))})
    };
    let mut conditions: Vec<Value> =
        old.iter().filter(|c| ![READY, RECONCILING, STALLED].iter().any(|t| c["type"] == *t)).cloned().collect();
    conditions.push(condition(READY, "False", message));
    conditions.push(condition(RECONCILING, "True", RETRYING_MESSAGE));
    status["conditions"] = Value::Array(conditions);
    crate::api::conditions::printable_json(&mut status);
    let patch = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()),
        "metadata": {"resourceVersion": fresh.metadata.resource_version}, "status": status});
    match api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await {
        Ok(_) => {}
        Err(e) if is_conflict(&e) => {
            tracing::debug!(object = %name, "the object changed since the panic: its next reconcile writes the status");
        }
        Err(e) => refused(ctx, object, &e).await,
    }
}

/// After a failed status write: when the API server refused the content (a 4xx other than
/// a conflict), say so where the object's owner looks (a Warning event) and count it. A
/// conflict or an unreachable API server is retried by the caller and not reported here.
pub async fn refused<K>(ctx: &Context, object: &K, error: &kube::Error)
where
    K: Resource<DynamicType = ()>,
{
    let kube::Error::Api(status) = error else { return };
    if !(400..500).contains(&status.code) || status.code == 409 || status.code == 429 {
        return;
    }
    crate::telemetry::metrics::METRICS.status_write_refused(K::kind(&()).as_ref());
    tracing::warn!(kind = %K::kind(&()), object = object.meta().name.as_deref().unwrap_or_default(), code = status.code, "the API server refused a status update");
    let note = format!(
        "The API server refused the operator's status update (HTTP {}: {}), so the status shown is out of date: fix the spec field it names.",
        status.code,
        printable(&status.message)
    );
    ctx.event(object.object_ref(&()), true, OperatorReason::StatusWriteRefused.as_str(), "WriteStatus", &note).await;
}

/// What Stalled says: the next step, not the failure again (Ready and the failing
/// condition carry that; `kubectl describe` shows every condition).
pub const STALLED_MESSAGE: &str = "Not retried by itself: fix what Ready says, then change the spec or set the s3connect.io/requested-at annotation to check again.";
/// What Reconciling says while a failure is retried.
pub const RETRYING_MESSAGE: &str =
    "The operator retries or waits by itself (with backoff): nothing to do while this is True; Ready says on what.";
/// What Reconciling says while Ready is Unknown (work in progress).
pub const IN_PROGRESS_MESSAGE: &str = "In progress: Ready says what the operator is doing.";

/// kstatus: a Ready that is not True gets Reconciling (the operator retries by itself) or
/// Stalled (someone must change something), with Ready's reason. Their message says what
/// happens next rather than repeating Ready's, so `kubectl describe` shows the failure once
/// in the failing condition and once in Ready (what every generic tool reads). Appended after
/// Ready, as the controllers write them.
pub fn with_kstatus(mut conds: Vec<NamedCond>, retrying: bool) -> Vec<NamedCond> {
    if let Some(ready) = conds.iter().find(|c| c.type_ == READY).cloned()
        && !ready.is_true()
    {
        let (type_, message) = match (retrying, ready.status) {
            (false, _) => (STALLED, STALLED_MESSAGE),
            (true, Status::Unknown) => (RECONCILING, IN_PROGRESS_MESSAGE),
            (true, _) => (RECONCILING, RETRYING_MESSAGE),
        };
        conds.push(NamedCond { type_, status: Status::True, message: message.into(), ..ready });
    }
    conds
}

/// Writes `status` (the whole status, with server-side apply under the operator's field
/// manager); a refusal is made visible (see `refused`).
///
/// The write is preconditioned on `version`, the resourceVersion of the view the status was
/// decided from (the object as the reconcile read it, then as each write left it): a write
/// decided from a stale cache is refused with 409 instead of erasing what a newer write
/// recorded (an intent, a report id), and the caller decides again. `version` becomes the
/// written object's.
pub async fn apply<K>(
    ctx: &Context,
    object: &K,
    status: &impl serde::Serialize,
    version: &mut Option<String>,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let (namespace, name) =
        (object.meta().namespace.clone().unwrap_or_default(), object.meta().name.clone().unwrap_or_default());
    let result = apply_at(&Api::<K>::namespaced(ctx.client.clone(), &namespace), &name, status, version).await;
    if let Err(e) = &result {
        refused(ctx, object, e).await;
    }
    result
}

/// The write of `apply`, without the event: the whole status under the operator's field
/// manager, preconditioned on `version`, which becomes the written object's.
pub async fn apply_at<K>(
    api: &Api<K>,
    name: &str,
    status: &impl serde::Serialize,
    version: &mut Option<String>,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut patch = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    crate::api::conditions::printable_json(&mut patch["status"]);
    if let Some(v) = version.as_deref() {
        patch["metadata"] = json!({"resourceVersion": v});
    }
    let written = api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    *version = written.meta().resource_version.clone();
    Ok(())
}

/// Whether the API server refused a write because the object changed since it was read:
/// decide again from a fresh view, soon, without counting a failure.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// How soon a reconcile whose write met a newer object runs again (the watch has usually
/// caught up by then).
pub const AFTER_CONFLICT: std::time::Duration = std::time::Duration::from_millis(500);

/// A status with conditions, for the write every controller ends with.
pub trait WithConditions: Clone + PartialEq + serde::Serialize {
    fn conditions(&self) -> &Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>;
    fn conditions_mut(&mut self) -> &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>;
}

macro_rules! with_conditions {
    ($($t:ty),*) => {$(
        impl WithConditions for $t {
            fn conditions(&self) -> &Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
                &self.conditions
            }
            fn conditions_mut(&mut self) -> &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
                &mut self.conditions
            }
        }
    )*};
}
with_conditions!(
    crate::api::export::DatasetExportStatus,
    crate::api::dataset::DatasetStatus,
    crate::api::project::AnnotationProjectStatus
);

/// Writes `status` with `conds` (and the kstatus conditions) merged against `written`,
/// the status as last written, unless only timestamps would change. Returns what was
/// written, if anything.
pub async fn write_changed<K, S>(
    ctx: &Context,
    object: &K,
    written: &S,
    mut status: S,
    conds: Vec<NamedCond>,
    retrying: bool,
    version: &mut Option<String>,
) -> Result<Option<S>, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: WithConditions,
{
    let conds = with_kstatus(conds, retrying);
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now());
    *status.conditions_mut() =
        crate::api::conditions::merge_named(written.conditions(), &conds, object.meta().generation, &now);
    let (mut a, mut b) = (status.clone(), written.clone());
    a.conditions_mut().clear();
    b.conditions_mut().clear();
    if a == b && crate::api::conditions::same_ignoring_time(status.conditions(), written.conditions()) {
        return Ok(None);
    }
    apply(ctx, object, &status, version).await?;
    Ok(Some(status))
}

/// What a reconcile asks for next, as far as its decision goes; `action` turns it into
/// the controller's Action and keeps the per-object failure count that spaces retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Done for now: the failure count starts over; come back after `Duration` (or only
    /// on a change when None).
    Success(Option<std::time::Duration>),
    /// Come back after this long, counting nothing.
    After(std::time::Duration),
    /// A failure: exponential backoff from 10 s, up to `cap`.
    Retry { cap: std::time::Duration },
    /// Something runs elsewhere (an export): look again at a growing interval, 1 s
    /// doubling to 30 s.
    Poll,
    /// Only a change of the object (or what it references) can help.
    AwaitChange,
}

/// After a reconcile of `kind` failed on the Kubernetes API (`error` labels the metric):
/// counted, logged, and retried with backoff up to five minutes.
/// After a write met a newer object (409): decide again soon from a fresh view; not a
/// failure of the object, so nothing is counted against its backoff.
pub fn after_conflict(kind: &'static str, object: &str) -> Action {
    crate::telemetry::metrics::METRICS.reconcile_error(kind, "Conflict");
    tracing::debug!(kind, object, "the object changed since it was read: deciding again");
    Action::requeue(AFTER_CONFLICT)
}

pub fn after_error(
    ctx: &Context,
    kind: &'static str,
    object: &str,
    uid: &str,
    error: &'static str,
    err: &dyn std::fmt::Display,
) -> Action {
    let delay = crate::timing::backoff(ctx.record_failure(uid), std::time::Duration::from_secs(300), 0.5);
    crate::telemetry::metrics::METRICS.reconcile_error(kind, error);
    tracing::warn!(kind, object, error = %err, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// The Action for `next`, updating `uid`'s failure count.
pub fn action(ctx: &Context, uid: &str, next: Next, jitter: f64) -> Action {
    use crate::timing::backoff;
    match next {
        Next::Success(after) => {
            ctx.record_success(uid);
            after.map_or_else(Action::await_change, Action::requeue)
        }
        Next::After(d) => Action::requeue(d),
        Next::Retry { cap } => Action::requeue(backoff(ctx.record_failure(uid), cap, jitter)),
        Next::Poll => {
            let n = ctx.record_failure(uid);
            Action::requeue(std::time::Duration::from_secs((1u64 << n.min(5)).min(30)))
        }
        Next::AwaitChange => Action::await_change(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_ready_gets_reconciling_or_stalled_and_a_true_one_neither() {
        let ready = |status| NamedCond::new(READY, status, "Why", "because");
        let conds = with_kstatus(vec![ready(Status::False)], true);
        assert_eq!((conds[1].type_, conds[1].status, conds[1].reason.as_str()), (RECONCILING, Status::True, "Why"));
        let conds = with_kstatus(vec![ready(Status::False)], false);
        assert_eq!(conds[1].type_, STALLED);
        assert_eq!(with_kstatus(vec![ready(Status::True)], true).len(), 1);
        let unknown = with_kstatus(vec![ready(Status::Unknown)], true);
        assert_eq!(unknown[1].type_, RECONCILING);
        // Each says what happens next, never Ready's message again.
        let messages: Vec<String> = [(Status::False, true), (Status::False, false), (Status::Unknown, true)]
            .into_iter()
            .map(|(s, r)| with_kstatus(vec![ready(s)], r)[1].message.to_string())
            .collect();
        assert!(messages.iter().all(|m| !m.contains("because")), "{messages:?}");
        assert_eq!(messages, [RETRYING_MESSAGE, STALLED_MESSAGE, IN_PROGRESS_MESSAGE]);
    }
}
