//! What every controller does with a status beyond deciding it: report a panic on the
//! object it happened to, and make a status write the API server refused visible
//! (event, metric, log) instead of leaving the object silently without status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::{Context, FIELD_MANAGER, RECONCILE_PANICKED};
use crate::api::conditions::{READY, RECONCILING, STALLED, printable};

/// Sets Ready=False and Reconciling=True with `message` on the object's status, keeping
/// everything else it has: the whole status is applied again under the operator's field
/// manager, so no field changes hands and the next successful reconcile replaces both.
pub async fn report_panic<K>(ctx: &Context, object: &K, message: &str)
where
    K: Resource<DynamicType = ()> + serde::Serialize,
{
    let (Some(namespace), Some(name)) = (object.meta().namespace.clone(), object.meta().name.clone()) else {
        return;
    };
    let mut status = serde_json::to_value(object).ok().and_then(|v| v.get("status").cloned()).unwrap_or(json!({}));
    let old: Vec<Value> = status.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let generation = object.meta().generation;
    let now = Time(Timestamp::now());
    let condition = |type_: &str, state: &str| {
        let kept =
            old.iter().find(|c| c["type"] == type_ && c["status"] == state).map(|c| c["lastTransitionTime"].clone());
        json!({"type": type_, "status": state, "reason": RECONCILE_PANICKED, "message": message,
               "observedGeneration": generation, "lastTransitionTime": kept.unwrap_or_else(|| json!(now))})
    };
    let mut conditions: Vec<Value> =
        old.iter().filter(|c| ![READY, RECONCILING, STALLED].iter().any(|t| c["type"] == *t)).cloned().collect();
    conditions.push(condition(READY, "False"));
    conditions.push(condition(RECONCILING, "True"));
    status["conditions"] = Value::Array(conditions);
    let patch = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    let api = Api::<kube::api::DynamicObject>::namespaced_with(
        ctx.client.clone(),
        &namespace,
        &kube::api::ApiResource::erase::<K>(&()),
    );
    if let Err(e) = api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await {
        refused(ctx, object, &e).await;
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
    ctx.event(object.object_ref(&()), true, "StatusWriteRefused", "WriteStatus", &note).await;
}
