//! What ships besides the binary: the Dockerfile passes hadolint, and the Argo CD health
//! checks judge statuses the operator really wrote.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use kube::api::{Api, PostParams};
use s3connect::api::DatasetExport;
use s3connect::api::connection::Usage;
use s3connect::s3::policy::{Action, policy};
use s3connect::s3::uri::Location;
use s3connect::validation::required;
use serde_json::{Value, json};

use crate::support::operator::{condition, wait_for};
use crate::support::{self, iam, s3};

fn tools() -> PathBuf {
    std::env::var("S3CONNECT_TESTENV_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| support::repo_root().join(".testenv"))
        .join("tools/bin")
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let _timer = crate::timed!();
    let out = Command::new(tools().join("hadolint"))
        .arg(support::repo_root().join("Dockerfile"))
        .output()
        .expect("hadolint (testenv/setup installs it)");
    assert!(
        out.status.success(),
        "hadolint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dockerfile = std::fs::read_to_string(support::repo_root().join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("USER 65532:65532"), "the image runs as root");
}

/// Runs a health check from docs/argocd on `objects`; returns (status, message) each.
pub fn health(script: &str, objects: &[Value]) -> Vec<(String, String)> {
    let mut child = Command::new(tools().join("python"))
        .arg(support::repo_root().join("testenv/lua_health.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let request = json!({"script": support::repo_root().join("docs/argocd").join(script), "objects": objects});
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "lua: {}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    results
        .iter()
        .map(|r| (r["status"].as_str().unwrap().to_owned(), r["message"].as_str().unwrap().to_owned()))
        .collect()
}

async fn connection(
    client: &kube::Client,
    ns: &str,
    name: &str,
    bucket: &str,
    actions: &[Action],
    endpoint: Option<&str>,
) {
    let location = Location::parse(&format!("{bucket}/images/")).unwrap();
    let keys = iam::user_with_policy("health", &policy(&location, None, actions)).await;
    support::keys_secret(client, ns, name, &keys).await;
    let extra = endpoint.map_or_else(|| json!({}), |e| json!({"endpoint": e}));
    support::s3_connection(client, ns, name, bucket, name, extra).await;
}

#[tokio::test]
async fn argocd_health_checks_read_real_statuses() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let ns = support::namespace(&client, "health").await;
    let bucket = s3::bucket("health", "us-east-1").await;
    s3::put(&bucket, "images/a.jpg", b"a").await;
    let all = required(&[Usage::Import], Default::default());
    let no_get: Vec<Action> = all.iter().copied().filter(|a| *a != Action::GetObject).collect();
    connection(&client, &ns, "healthy", &bucket, &all, None).await;
    connection(&client, &ns, "denied", &bucket, &no_get, None).await;
    connection(&client, &ns, "unreachable", &bucket, &all, Some("http://127.0.0.1:1")).await;
    let healthy =
        wait_for(&client, &ns, "healthy", "Ready", |c| condition(c, "Ready").is_some_and(|r| r.status == "True")).await;
    let denied = wait_for(&client, &ns, "denied", "Stalled", |c| condition(c, "Stalled").is_some()).await;
    let retrying =
        wait_for(&client, &ns, "unreachable", "Reconciling", |c| condition(c, "Reconciling").is_some()).await;
    let mut fresh = serde_json::to_value(&healthy).unwrap();
    fresh.as_object_mut().unwrap().remove("status");

    let objects: Vec<Value> =
        [&healthy, &denied, &retrying].iter().map(|c| serde_json::to_value(c).unwrap()).chain([fresh]).collect();
    let results = health("s3connection.lua", &objects);
    let statuses: Vec<&str> = results.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(statuses, ["Healthy", "Degraded", "Progressing", "Progressing"], "{results:?}");
    // Argo shows what failed and what to do (Ready's message), not kstatus' next step.
    assert!(results[1].1.starts_with("GetObjectDenied: ") && results[1].1.contains("s3:GetObject"), "{}", results[1].1);
    assert!(
        results[2].1.starts_with("EndpointUnreachable: ") && results[2].1.contains("127.0.0.1:1"),
        "{}",
        results[2].1
    );

    // An export whose connection does not exist is stalled on a person.
    let dsx = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "DatasetExport", "metadata": {"name": "orphan"}, "spec": {
        "connectionRef": {"name": "nowhere"}, "projectId": "p", "format": "json", "statuses": ["review"], "folder": "x/"}});
    let exports = Api::<DatasetExport>::namespaced(client.clone(), &ns);
    exports.create(&PostParams::default(), &serde_json::from_value(dsx).unwrap()).await.unwrap();
    let every = std::time::Duration::from_millis(200);
    let orphan = support::wait_for("the orphan export Pending", std::time::Duration::from_secs(30), every, || async {
        let orphan = serde_json::to_value(exports.get("orphan").await.unwrap()).unwrap();
        if orphan["status"]["phase"] == "Pending" { Ok(orphan) } else { Err(orphan["status"].to_string()) }
    })
    .await;
    let mut done = orphan.clone();
    done["status"] = json!({"phase": "Succeeded", "destination": "s3://b/p/x/", "conditions": []});
    let mut running = orphan.clone();
    running["status"] = json!({"phase": "Running", "conditions": []});
    let results = health("datasetexport.lua", &[orphan, done, running]);
    let statuses: Vec<&str> = results.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(statuses, ["Degraded", "Healthy", "Progressing"], "{results:?}");
    assert!(results[0].1.starts_with("ConnectionNotFound: ") && results[0].1.contains("nowhere"), "{}", results[0].1);
}
