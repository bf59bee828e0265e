//! Shards, as Flux shards its controllers: instances started with `--watch-label-selector`
//! serve only the objects carrying their label, and an object relabelled from one shard
//! to another is taken over from the intents in its status, with no second platform call.

use std::path::Path;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use s3connect::api::S3Connection;
use s3connect::api::connection::{CorsMode, Usage};
use s3connect::s3::policy::policy;
use s3connect::s3::uri::Location;
use s3connect::validation::required;
use serde_json::json;

use crate::support::operator::{condition, log_path, private_namespace, spawn_with_env, wait_for};
use crate::support::{self, iam, platform, s3};

/// Log lines of the operator logging to `log` that name `object` (`namespace/name`).
fn naming(log: &Path, object: &str) -> usize {
    let quoted = format!("\"{object}\"");
    std::fs::read_to_string(log).unwrap_or_default().lines().filter(|l| l.contains(&quoted)).count()
}

#[tokio::test]
async fn each_shard_serves_its_label_and_a_relabelled_object_is_taken_over_once() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let ns = private_namespace("shard");
    support::named_namespace(&client, &ns).await;
    let bucket = s3::bucket("shard", "us-east-1").await;
    s3::put(&bucket, "images/cat.jpg", b"cat").await;
    let location = Location::parse(&format!("{bucket}/images/")).unwrap();
    let keys =
        iam::user_with_policy("shard", &policy(&location, None, &required(&[Usage::Import], CorsMode::Ignore))).await;
    support::keys_secret(&client, &ns, "keys", &keys).await;
    support::platform_secret(&client, &ns).await;

    let (log_a, log_b) = (log_path("shard-a"), log_path("shard-b"));
    let shard = |log: &std::path::PathBuf, name: &str| {
        let selector = format!("s3connect.io/shard={name}");
        spawn_with_env(
            log,
            &["--namespace", &ns, "--watch-label-selector", &selector, "--cluster-wide=false"],
            &[("POD_NAME", &format!("shard-{name}"))],
        )
    };
    let (mut a, mut b) = (shard(&log_a, "a"), shard(&log_b, "b"));

    let spec = json!({"platform": {"secretRef": {"name": "labellerr"}}, "cors": {"mode": "Ignore"}});
    let api = Api::<S3Connection>::namespaced(client.clone(), &ns);
    for (name, label) in [("ca", "a"), ("cb", "b")] {
        support::s3_connection(&client, &ns, name, &bucket, "keys", spec.clone()).await;
        let patch = json!({"metadata": {"labels": {"s3connect.io/shard": label}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }
    for name in ["ca", "cb"] {
        wait_for(&client, &ns, name, "Ready and registered", |c| {
            condition(c, "Ready").is_some_and(|r| r.status == "True")
                && c.status.as_ref().is_some_and(|s| s.platform_connection_id.is_some())
        })
        .await;
    }
    let (ca, cb) = (format!("{ns}/ca"), format!("{ns}/cb"));
    // Each object by its own shard only. The log line of a reconcile is written as it
    // ends, a moment after its status.
    let every = std::time::Duration::from_millis(100);
    support::wait_for("each shard's log naming its object", std::time::Duration::from_secs(10), every, || {
        let served = naming(&log_a, &ca) > 0 && naming(&log_b, &cb) > 0;
        async move { if served { Ok(()) } else { Err("a shard did not serve its object") } }
    })
    .await;
    assert_eq!(naming(&log_a, &cb), 0, "shard a acted on shard b's object");
    assert_eq!(naming(&log_b, &ca), 0, "shard b acted on shard a's object");
    assert_eq!((platform::registration_creates(&ca).await, platform::registration_creates(&cb).await), (1, 1));
    // The events say which instance acted.
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    for e in &events {
        let regarding = e.regarding.as_ref().and_then(|r| r.name.clone()).unwrap_or_default();
        let by = e.reporting_instance.clone().unwrap_or_default();
        let wanted = match regarding.as_str() {
            "ca" => "shard-a",
            "cb" => "shard-b",
            _ => continue,
        };
        assert_eq!(by, wanted, "an event on {regarding} came from {by}");
    }

    // To shard b and straight back, nothing else changed: a serves it again (it is new to
    // a's watch, not a repeat of what a saw before it left).
    let before_a = naming(&log_a, &ca);
    for shard in ["b", "a"] {
        let patch = json!({"metadata": {"labels": {"s3connect.io/shard": shard}}});
        api.patch("ca", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }
    support::wait_for("shard a serves ca again", Duration::from_secs(30), Duration::from_millis(200), || async {
        if naming(&log_a, &ca) > before_a { Ok(()) } else { Err("shard a has not looked at it") }
    })
    .await;
    assert_eq!(platform::registration_creates(&ca).await, 1);

    // Moved to shard b: b takes it over from its status; nothing is registered again,
    // and a request to reconcile now reaches shard b alone.
    let (before_a, before_b) = (naming(&log_a, &ca), naming(&log_b, &ca));
    let patch = json!({"metadata": {"labels": {"s3connect.io/shard": "b"}}});
    api.patch("ca", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let patch = json!({"metadata": {"annotations": {"s3connect.io/requested-at": "moved"}}});
    api.patch("ca", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let c = wait_for(&client, &ns, "ca", "the request handled", |c| {
        c.status.as_ref().and_then(|s| s.last_handled_reconcile_at.as_deref()) == Some("moved")
    })
    .await;
    assert!(condition(&c, "Ready").is_some_and(|r| r.status == "True"), "{:?}", c.status);
    // Its log line follows the status by a moment.
    support::wait_for("shard b's log naming ca", Duration::from_secs(10), Duration::from_millis(100), || async {
        if naming(&log_b, &ca) > before_b { Ok(()) } else { Err("shard b has not logged it") }
    })
    .await;
    assert_eq!(naming(&log_a, &ca), before_a, "shard a still acts on an object it no longer serves");
    assert_eq!(platform::registration_creates(&ca).await, 1, "the move registered the connection again");
    assert_eq!(platform::registrations(&ca).await.len(), 1);

    for operator in [&mut a, &mut b] {
        drop(operator.stdin.take());
        assert!(operator.wait().unwrap().success());
    }
}
