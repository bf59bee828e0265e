//! What GitOps tools conclude from the statuses the operator writes: kstatus (Flux's
//! default, built from sigs.k8s.io/cli-utils) and the Flux health check expressions in
//! docs/flux, both evaluated by testenv/go/kstatus on live objects of every kind.

use std::io::Write;
use std::process::{Command, Stdio};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use s3connect::api::conditions::{NamedCond, Status, merge_named};
use s3connect::api::connection::Usage;
use s3connect::api::dataset::DatasetStatus;
use s3connect::api::export::DatasetExportStatus;
use s3connect::api::{Dataset, DatasetExport};
use s3connect::controller::driver::Outcome;
use s3connect::controller::status::with_kstatus;
use s3connect::controller::{dataset, export};
use s3connect::platform::ExportState;
use s3connect::s3::policy::{Action, policy};
use s3connect::s3::uri::Location;
use s3connect::validation::required;
use serde_json::{Value, json};

use crate::support::operator::{condition, wait_for};
use crate::support::{self, iam, s3};

/// (kstatus verdict, verdict of the Flux expressions) for each object.
fn verdicts(objects: &[Value]) -> Vec<(String, String)> {
    let exprs: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(support::repo_root().join("docs/flux/healthcheckexprs.yaml")).unwrap(),
    )
    .expect("docs/flux/healthcheckexprs.yaml is YAML");
    let by_kind: serde_json::Map<String, Value> = exprs["healthCheckExprs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap().to_owned(), e.clone()))
        .collect();
    let cache = std::env::var("S3CONNECT_TESTENV_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| support::repo_root().join(".testenv"));
    let mut child = Command::new(cache.join("bin/kstatus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the kstatus tool (testenv/setup builds it)");
    let input = json!({"objects": objects, "exprs": by_kind});
    child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "kstatus: {}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    results
        .iter()
        .map(|r| (r["kstatus"].as_str().unwrap().to_owned(), r["cel"].as_str().unwrap_or("").to_owned()))
        .collect()
}

fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

/// `object` with the status the operator writes for `outcome` (its kstatus conditions
/// included).
fn with_outcome<S: serde::Serialize>(object: &Value, outcome: &Outcome<S>) -> Value {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let conds = with_kstatus(outcome.conditions(), outcome.retrying);
    let mut status = serde_json::to_value(&outcome.status).unwrap();
    status["observedGeneration"] = object["metadata"]["generation"].clone();
    status["conditions"] =
        serde_json::to_value(merge_named(&[], &conds, object["metadata"]["generation"].as_i64(), &now)).unwrap();
    let mut o = object.clone();
    o["status"] = status;
    o
}

/// `object` as it is before the operator has seen it: no status.
fn unobserved(object: &Value) -> Value {
    let mut o = object.clone();
    o.as_object_mut().unwrap().remove("status");
    o
}

#[tokio::test]
async fn kstatus_and_the_flux_expressions_read_every_kind_in_every_state() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let ns = support::namespace(&client, "gitops").await;
    let bucket = s3::bucket("gitops", "us-east-1").await;
    s3::put(&bucket, "images/a.jpg", b"a").await;
    let location = Location::parse(&format!("{bucket}/images/")).unwrap();
    let all = required(&[Usage::Import], Default::default());
    let no_get: Vec<Action> = all.iter().copied().filter(|a| *a != Action::GetObject).collect();
    for (name, actions, endpoint) in
        [("healthy", &all, None), ("denied", &no_get, None), ("unreachable", &all, Some("http://127.0.0.1:1"))]
    {
        let keys = iam::user_with_policy("gitops", &policy(&location, None, actions)).await;
        support::keys_secret(&client, &ns, name, &keys).await;
        let extra = endpoint.map_or_else(|| json!({}), |e| json!({"endpoint": e}));
        support::s3_connection(&client, &ns, name, &bucket, name, extra).await;
    }
    let healthy =
        wait_for(&client, &ns, "healthy", "Ready", |c| condition(c, "Ready").is_some_and(|r| r.status == "True")).await;
    let denied = wait_for(&client, &ns, "denied", "Stalled", |c| condition(c, "Stalled").is_some()).await;
    let retrying =
        wait_for(&client, &ns, "unreachable", "Reconciling", |c| condition(c, "Reconciling").is_some()).await;
    let conns: Vec<Value> = [&healthy, &denied, &retrying].iter().map(|c| serde_json::to_value(c).unwrap()).collect();

    // An export and a dataset whose connection does not exist: stalled on a person.
    let exports = Api::<DatasetExport>::namespaced(client.clone(), &ns);
    let dsx = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "DatasetExport", "metadata": {"name": "orphan"}, "spec": {
        "connectionRef": {"name": "nowhere"}, "projectId": "p", "format": "json", "statuses": ["review"], "folder": "x/"}});
    exports.create(&PostParams::default(), &serde_json::from_value(dsx).unwrap()).await.unwrap();
    let datasets = Api::<Dataset>::namespaced(client.clone(), &ns);
    let ds = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "Dataset", "metadata": {"name": "orphan"},
        "spec": {"connectionRef": {"name": "nowhere"}}});
    datasets.create(&PostParams::default(), &serde_json::from_value(ds).unwrap()).await.unwrap();
    let every = std::time::Duration::from_millis(200);
    let (export, dataset) = support::wait_for("both Pending", std::time::Duration::from_secs(30), every, || async {
        let export = serde_json::to_value(exports.get("orphan").await.unwrap()).unwrap();
        let dataset = serde_json::to_value(datasets.get("orphan").await.unwrap()).unwrap();
        if export["status"]["phase"] == "Pending" && dataset["status"]["phase"] == "Pending" {
            Ok((export, dataset))
        } else {
            Err(format!("{} / {}", export["status"], dataset["status"]))
        }
    })
    .await;
    // A finished export, as its status reads once it succeeded.
    let mut succeeded = export.clone();
    succeeded["status"] = json!({"observedGeneration": export["metadata"]["generation"], "phase": "Succeeded", "conditions": [
        {"type": "Ready", "status": "True", "reason": "ExportSucceeded", "message": "done", "lastTransitionTime": "2026-11-30T00:00:00Z"}]});

    // The platform at work, decided as the operator decides it: an export running, a
    // dataset processing. The one rule for every kind: Ready Unknown, Reconciling True.
    let report = DatasetExportStatus { report_id: Some("rep-1".into()), ..Default::default() };
    let names = export::decide::ExportNames { name: "daily", project_id: "p", statuses: vec!["accepted"] };
    let running = export::decide::after_check(
        report.clone(),
        "rep-1",
        Ok(Some(ExportState::Running("Pending".into()))),
        &names,
        None,
        now(),
    );
    // A scheduled export between runs: the last run succeeded (Current), or failed and the
    // next run retries by itself (InProgress, never Stalled).
    let daily = export::decide::Schedule {
        every: "24h".into(),
        interval: std::time::Duration::from_secs(86_400),
        incremental: true,
        keep: 10,
    };
    let run_ok = export::decide::after_check(
        report.clone(),
        "rep-1",
        Ok(Some(ExportState::Succeeded)),
        &names,
        Some(&daily),
        now(),
    );
    let failed = Ok(Some(ExportState::Failed("AccessDenied".into())));
    let run_failed = export::decide::after_check(report, "rep-1", failed, &names, Some(&daily), now());
    let (run_ok, run_failed) = (with_outcome(&export, &run_ok), with_outcome(&export, &run_failed));
    let connection_ready = NamedCond::new("ConnectionReady", Status::True, "ConnectionReady", "ready");
    let processing = dataset::decide::adopted(DatasetStatus::default(), connection_ready, "ds-1".into());
    for (kind, o) in [("export", running.ready()), ("dataset", processing.ready())] {
        assert_eq!(o.status, Status::Unknown, "{kind}: {o:?}");
    }
    let (running, processing) = (with_outcome(&export, &running), with_outcome(&dataset, &processing));

    let objects = vec![
        running,
        processing,
        conns[0].clone(),
        conns[1].clone(),
        conns[2].clone(),
        unobserved(&conns[0]),
        export.clone(),
        succeeded,
        unobserved(&export),
        dataset.clone(),
        unobserved(&dataset),
        run_ok,
        run_failed,
    ];
    let got = verdicts(&objects);
    let kstatus: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    let flux: Vec<&str> = got.iter().map(|(_, c)| c.as_str()).collect();
    // kstatus alone: right for every state the operator writes, but Current for an
    // object it has not seen yet (the gap the expressions close).
    assert_eq!(
        kstatus,
        [
            "InProgress",
            "InProgress",
            "Current",
            "Failed",
            "InProgress",
            "Current",
            "Failed",
            "Current",
            "Current",
            "Failed",
            "Current",
            "Current",
            "InProgress"
        ],
        "{got:?}"
    );
    assert_eq!(
        flux,
        [
            "InProgress",
            "InProgress",
            "Current",
            "Failed",
            "InProgress",
            "InProgress",
            "Failed",
            "Current",
            "InProgress",
            "Failed",
            "InProgress",
            "Current",
            "InProgress"
        ],
        "{got:?}"
    );
}
