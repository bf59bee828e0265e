//! Exactly once when the operator's watch cache lags: a proxy in front of the API server
//! holds every watch event back by 2 s (reads stay fresh), and the API server restarts right
//! after an intent is recorded. Every platform create is decided from a fresh view (writes
//! preconditioned on the resourceVersion the decision was made from), so 20 exports and 20
//! datasets are made exactly once each, and no recorded id is ever lost.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, PostParams};
use s3connect::api::connection::{CorsMode, Usage};
use s3connect::api::{Dataset, DatasetExport};
use s3connect::s3::policy::policy;
use s3connect::s3::uri::Location;
use s3connect::validation::required;
use serde_json::{Value, json};

use crate::support::operator::{condition, spawn_with};
use crate::support::{self, iam, platform, s3};

const N: usize = 20;

#[tokio::test]
async fn a_lagging_watch_and_an_api_server_restart_never_create_twice_or_lose_an_id() {
    let _timer = crate::timed!();
    // A private control plane: restarting the shared one would disturb every other test.
    let support::Private { mut launcher, kubeconfig, run_dir, client } = support::private(&[]).await;
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&kubeconfig).unwrap()).unwrap();
    let server = config["clusters"][0]["cluster"]["server"].as_str().unwrap().to_owned();

    // The operator reaches the API server through the proxy; the test directly.
    let mut proxy = Command::new("python3")
        .arg(support::repo_root().join("testenv/watch_delay_proxy.py"))
        .args(["--upstream", &server, "--cert-dir"])
        .arg(run_dir.join("pki"))
        .args(["--delay", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the watch-delay proxy");
    let port = BufReader::new(proxy.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    config["clusters"][0]["cluster"]["server"] = json!(format!("https://127.0.0.1:{}", port.trim()));
    let lagging = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kubeconfig-lagging-{}", std::process::id()));
    std::fs::write(&lagging, serde_json::to_string(&config).unwrap()).unwrap();

    let ns = support::namespace(&client, "once").await;
    let bucket = s3::bucket("once", "us-east-1").await;
    for f in ["a.jpg", "b.jpg"] {
        s3::put(&bucket, &format!("images/cats/{f}"), b"a cat").await;
    }
    let location = Location::parse(&format!("{bucket}/images/")).unwrap();
    let usage = [Usage::Import, Usage::Export];
    let keys = iam::user_with_policy("once", &policy(&location, None, &required(&usage, CorsMode::Apply))).await;
    support::keys_secret(&client, &ns, "keys", &keys).await;
    support::platform_secret(&client, &ns).await;
    support::s3_connection(
        &client,
        &ns,
        "c",
        &bucket,
        "keys",
        json!({"usage": ["Import", "Export"], "platform": {"secretRef": {"name": "labellerr"}}}),
    )
    .await;
    let project = support::unique("proj-once");
    platform::project(&project, &[("cat.jpg", "review"), ("dog.jpg", "accepted")]).await;

    let log =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("operator-once-{}.log", std::process::id()));
    let mut operator = spawn_with(&log, &lagging, &[]);
    let conns = Api::<s3connect::api::S3Connection>::namespaced(client.clone(), &ns);
    support::wait_for("the connection's registration", Duration::from_secs(60), Duration::from_millis(200), || async {
        let registered =
            conns.get("c").await.is_ok_and(|c| condition(&c, "Registered").is_some_and(|r| r.status == "True"));
        if registered { Ok(()) } else { Err("not registered") }
    })
    .await;

    let exports = Api::<DatasetExport>::namespaced(client.clone(), &ns);
    let datasets = Api::<Dataset>::namespaced(client.clone(), &ns);
    let names: Vec<String> = (0..N).map(|i| format!("{}-{i}", support::unique("once-ds"))).collect();
    for (i, name) in names.iter().enumerate() {
        let e = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "DatasetExport", "metadata": {"name": format!("e{i}")},
            "spec": {"connectionRef": {"name": "c"}, "projectId": project, "format": "json", "statuses": ["review"], "folder": format!("exports/e{i}/")}});
        exports.create(&PostParams::default(), &serde_json::from_value(e).unwrap()).await.unwrap();
        let d = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "Dataset", "metadata": {"name": format!("d{i}")},
            "spec": {"connectionRef": {"name": "c"}, "path": "cats/", "displayName": name}});
        datasets.create(&PostParams::default(), &serde_json::from_value(d).unwrap()).await.unwrap();
    }

    // Every id, once recorded, stays recorded and the same: sampled throughout.
    let lost: Arc<Mutex<Vec<String>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (exports, datasets, lost, done) = (exports.clone(), datasets.clone(), lost.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen: BTreeMap<String, String> = BTreeMap::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let mut now: Vec<(String, Option<String>)> = Vec::new();
                if let (Ok(e), Ok(d)) =
                    (exports.list(&Default::default()).await, datasets.list(&Default::default()).await)
                {
                    now.extend(e.items.iter().map(|x| {
                        (
                            format!("export {}", x.metadata.name.clone().unwrap()),
                            x.status.as_ref().and_then(|s| s.report_id.clone()),
                        )
                    }));
                    now.extend(d.items.iter().map(|x| {
                        (
                            format!("dataset {}", x.metadata.name.clone().unwrap()),
                            x.status.as_ref().and_then(|s| s.dataset_id.clone()),
                        )
                    }));
                }
                for (name, id) in now {
                    match (seen.get(&name), id) {
                        (Some(before), Some(id)) if *before != id => {
                            lost.lock().unwrap().push(format!("{name}: {before} became {id}"))
                        }
                        (Some(before), None) => lost.lock().unwrap().push(format!("{name}: {before} was erased")),
                        (None, Some(id)) => {
                            seen.insert(name, id);
                        }
                        _ => {}
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // The API server restarts right after the first intent is recorded.
    support::wait_for("an intent recorded", Duration::from_secs(15), Duration::from_millis(50), || async {
        let e = exports.list(&Default::default()).await.unwrap();
        let d = datasets.list(&Default::default()).await.unwrap();
        if e.items.iter().any(|x| x.status.as_ref().is_some_and(|s| s.submission_started_time.is_some()))
            || d.items.iter().any(|x| x.status.as_ref().is_some_and(|s| s.creation_started_time.is_some()))
        {
            Ok(())
        } else {
            Err("no intent in any status")
        }
    })
    .await;
    support::restart_apiserver(&run_dir, &client).await;

    // Everything settles: each export succeeded, each dataset is Ready.
    let settled = |e: &[DatasetExport], d: &[Dataset]| {
        e.len() == N
            && d.len() == N
            && e.iter()
                .all(|x| x.status.as_ref().and_then(|s| s.phase).is_some_and(|p| format!("{p:?}") == "Succeeded"))
            && d.iter().all(|x| {
                x.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
    };
    let every = Duration::from_millis(200);
    support::wait_for("every export and dataset settled", Duration::from_secs(180), every, || async {
        match (exports.list(&Default::default()).await, datasets.list(&Default::default()).await) {
            (Ok(e), Ok(d)) if settled(&e.items, &d.items) => Ok(()),
            (Ok(e), _) => Err(format!(
                "{:?}",
                e.items.iter().map(|x| x.status.as_ref().map(|s| (s.phase, s.report_id.clone()))).collect::<Vec<_>>()
            )),
            (Err(e), _) => Err(e.to_string()),
        }
    })
    .await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.await.unwrap();

    // The platform's own state: exactly one of each.
    let on_platform = platform::exports(&project).await;
    assert_eq!(on_platform.len(), N, "exports on the platform: {on_platform:#?}");
    let state = platform::state().await;
    for name in &names {
        let count = state["datasets"].as_array().unwrap().iter().filter(|d| d["name"] == name.as_str()).count();
        assert_eq!(count, 1, "dataset {name} exists {count} times on the platform");
    }
    let lost = lost.lock().unwrap().clone();
    assert!(lost.is_empty(), "recorded ids were lost or changed: {lost:#?}");
    // The lag was real: the operator met objects newer than its cache, had its write refused
    // and decided again (otherwise this test proved nothing).
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("deciding again"), "no write was ever refused as stale: the cache did not lag");

    drop(operator.stdin.take());
    let _ = operator.wait();
    drop(proxy.stdin.take());
    let _ = proxy.wait();
    drop(launcher.stdin.take());
    let _ = launcher.wait();
}
