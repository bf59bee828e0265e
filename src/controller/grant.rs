//! The S3AccessGrant controller: each grant's status says whether it is in force (Ready)
//! and how many managed S3Connections it serves. A grant is reconciled when it changes and
//! counted again every few seconds; the counts come from the connection controller's cache
//! or, on an instance whose cache holds only its own shard, from a paged list once a
//! minute. Only an instance that sees every namespace a grant may serve writes its count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};

use crate::api::S3Connection;
use crate::api::conditions::{self, NamedCond, Reason, Status};
use crate::api::grant::{GrantReason, S3AccessGrant, S3AccessGrantStatus};
use crate::controller::{Context, FIELD_MANAGER};

/// How often every grant is counted again.
const STATUS_EVERY: Duration = Duration::from_secs(10);
/// With shards, the counts are listed at most once a minute.
const LIST_EVERY: Duration = Duration::from_secs(60);
/// Counts are reused for the grants of one round (one count, not one per grant).
const COUNTS_FRESH: Duration = Duration::from_secs(1);

/// Connections served per grant, and when they were counted.
type Counted = (Instant, Arc<HashMap<String, i64>>);

/// What the reconciles share: the operator's context, the connection controller's cache,
/// and the last counts.
struct Grants {
    ctx: Arc<Context>,
    connections: Store<S3Connection>,
    counted: Mutex<Option<Counted>>,
}

impl Grants {
    /// How many connections each grant serves: counted again once the last count is older
    /// than a round (or, from a list, than LIST_EVERY).
    async fn served(&self) -> Result<Arc<HashMap<String, i64>>, kube::Error> {
        let listed = !self.ctx.config.sees_all_labels();
        let fresh = if listed { LIST_EVERY } else { COUNTS_FRESH };
        if let Some((at, counts)) = self.counted.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
            && at.elapsed() < fresh
        {
            return Ok(counts.clone());
        }
        let counts = Arc::new(if listed {
            // A shard's cache holds its own connections only.
            served_listed(&self.ctx).await?
        } else {
            served_by(self.connections.state().iter().map(|c| c.as_ref()))
        });
        *self.counted.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), counts.clone()));
        Ok(counts)
    }
}

/// Runs until the operator stops, with the connection controller's cache of connections.
pub async fn run(ctx: Arc<Context>, connections: Store<S3Connection>) {
    let api = Api::<S3AccessGrant>::all(ctx.client.clone());
    let rounds = futures::stream::unfold(tokio::time::interval(STATUS_EVERY), |mut tick| async move {
        tick.tick().await;
        Some(((), tick))
    });
    let grants = Arc::new(Grants { ctx: ctx.clone(), connections, counted: Mutex::new(None) });
    Controller::new(api, kube::runtime::watcher::Config::default())
        .reconcile_all_on(rounds)
        .shutdown_on_signal()
        .run(reconcile, error_policy, grants)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "S3AccessGrant status");
            }
        })
        .await;
}

async fn reconcile(grant: Arc<S3AccessGrant>, grants: Arc<Grants>) -> Result<Action, kube::Error> {
    if !counts_all(&grants.ctx.config, &grant) {
        return Ok(Action::await_change());
    }
    let served = grants.served().await?;
    let name = grant.name_any();
    let status = status_of(&grant, served.get(&name).copied().unwrap_or(0));
    if grant.status.as_ref().is_some_and(|s| same(s, &status)) {
        return Ok(Action::await_change());
    }
    let patch = serde_json::json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "S3AccessGrant", "status": status});
    Api::<S3AccessGrant>::all(grants.ctx.client.clone())
        .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    Ok(Action::await_change())
}

/// A failed count or write is logged and tried again at the next round.
fn error_policy(grant: Arc<S3AccessGrant>, error: &kube::Error, _grants: Arc<Grants>) -> Action {
    tracing::warn!(grant = %grant.name_any(), error = %error, "could not write the S3AccessGrant's status");
    Action::await_change()
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
