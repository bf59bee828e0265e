//! DatasetExport and platform registration through the real stack: the operator, the API
//! server, the S3 server with IAM enforced, and the platform stand-in, which really
//! probes S3 and really writes the export file. Tests check objects in S3 and what the
//! platform holds, not calls on a fake.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use s3connect::api::connection::{CorsMode, Usage};
use s3connect::api::{DatasetExport, S3Connection};
use s3connect::s3::client::Keys;
use s3connect::s3::policy::{Action, policy};
use s3connect::s3::uri::Location;
use s3connect::validation::required;
use serde_json::{Value, json};

use crate::support::operator::{
    condition, everything_shown, log_path, operator_pid, private_namespace, spawn, wait_for,
};
use crate::support::{self, iam, platform, s3, unique};

struct ExportCase {
    client: kube::Client,
    ns: String,
    bucket: String,
    keys: Keys,
    project: String,
}

impl ExportCase {
    /// A namespace with an Import+Export S3Connection "exports" registered with the
    /// platform, whose keys lack `denied`, and a project with files in review, accepted
    /// and an unreviewed one.
    async fn new(hint: &str, denied: &[Action], ns: Option<String>) -> ExportCase {
        let client = support::client().await;
        let ns = match ns {
            Some(ns) => {
                let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
                    .create(&PostParams::default(), &serde_json::from_value(obj).unwrap())
                    .await
                    .unwrap();
                ns
            }
            None => support::namespace(&client, hint).await,
        };
        let bucket = s3::bucket(hint, "us-east-1").await;
        s3::put(&bucket, "data/images/a.jpg", b"a").await;
        Self::with(client, ns, bucket, hint, denied).await
    }

    /// The same, in a namespace and bucket that already exist.
    async fn new_in(client: &kube::Client, ns: &str, bucket: &str) -> ExportCase {
        Self::with(client.clone(), ns.to_owned(), bucket.to_owned(), "refused", &[]).await
    }

    async fn prepare(client: kube::Client, ns: String, bucket: String, hint: &str, denied: &[Action]) -> ExportCase {
        let location = Location::parse(&format!("{bucket}/data/")).unwrap();
        let usage = [Usage::Import, Usage::Export];
        let actions: Vec<Action> =
            required(&usage, CorsMode::Apply).into_iter().filter(|a| !denied.contains(a)).collect();
        let keys = iam::user_with_policy(hint, &policy(&location, None, &actions)).await;
        support::keys_secret(&client, &ns, "keys", &keys).await;
        support::platform_secret(&client, &ns).await;
        let project = unique("proj");
        platform::project(
            &project,
            &[
                ("cat.jpg", "review"),
                ("dog.jpg", "accepted"),
                ("bird.jpg", "client_review"),
                ("fish.jpg", "r_assigned"),
            ],
        )
        .await;
        ExportCase { client, ns, bucket, keys, project }
    }

    /// Creates the S3Connection "exports".
    async fn start(&self) {
        let (client, ns, bucket) = (&self.client, &self.ns, &self.bucket);
        let conn = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "S3Connection", "metadata": {"name": "exports"}, "spec": {
            "uri": format!("s3://{bucket}/data/"), "usage": ["Import", "Export"],
            "credentials": {"secretRef": {"name": "keys"}}, "platform": {"secretRef": {"name": "labellerr"}},
            "endpoint": support::env().s3_endpoint, "forcePathStyle": true}});
        Api::<S3Connection>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &serde_json::from_value(conn).unwrap())
            .await
            .unwrap();
    }

    async fn with(client: kube::Client, ns: String, bucket: String, hint: &str, denied: &[Action]) -> ExportCase {
        let case = Self::prepare(client, ns, bucket, hint, denied).await;
        case.start().await;
        case
    }

    /// Everything but the S3Connection, in a new namespace (see `start`).
    async fn unstarted(hint: &str) -> ExportCase {
        let client = support::client().await;
        let ns = support::namespace(&client, hint).await;
        Self::unstarted_with(client, ns, hint).await
    }

    /// The same in the namespace `ns`, created here.
    async fn unstarted_in(hint: &str, ns: String) -> ExportCase {
        let client = support::client().await;
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .create(&PostParams::default(), &serde_json::from_value(obj).unwrap())
            .await
            .unwrap();
        Self::unstarted_with(client, ns, hint).await
    }

    async fn unstarted_with(client: kube::Client, ns: String, hint: &str) -> ExportCase {
        let bucket = s3::bucket(hint, "us-east-1").await;
        s3::put(&bucket, "data/images/a.jpg", b"a").await;
        Self::prepare(client, ns, bucket, hint, &[]).await
    }

    async fn export(&self, name: &str, statuses: &[&str]) {
        let obj = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "DatasetExport", "metadata": {"name": name}, "spec": {
            "connectionRef": {"name": "exports"}, "projectId": self.project, "format": "json",
            "statuses": statuses, "folder": format!("exports/{name}/")}});
        Api::<DatasetExport>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &serde_json::from_value(obj).unwrap())
            .await
            .unwrap();
    }

    async fn wait_export(&self, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let api = Api::<DatasetExport>::namespaced(self.client.clone(), &self.ns);
        let what = format!("{}/{name}: {what}", self.ns);
        support::wait_for(what, Duration::from_secs(60), Duration::from_millis(200), || async {
            let status = serde_json::to_value(&api.get(name).await.unwrap().status).unwrap();
            if done(&status) { Ok(status) } else { Err(format!("{status:#}")) }
        })
        .await
    }

    async fn assert_no_secrets(&self) {
        let mut shown = everything_shown(&self.client, &self.ns).await;
        let exports =
            Api::<DatasetExport>::namespaced(self.client.clone(), &self.ns).list(&Default::default()).await.unwrap();
        shown.push_str(&serde_json::to_string(&exports.items).unwrap());
        let p = &support::env().platform;
        for secret in [&self.keys.access_key_id, &self.keys.secret_access_key, &p.api_key, &p.api_secret] {
            assert!(!shown.contains(secret.as_str()), "key material was shown");
        }
    }
}

fn cond<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == type_)).unwrap_or(&Value::Null)
}

fn has(status: &Value, type_: &str, state: &str, reason: &str) -> bool {
    let c = cond(status, type_);
    c["status"] == state && c["reason"] == reason
}

async fn registered_id(case: &ExportCase) -> String {
    let c = wait_for(&case.client, &case.ns, "exports", "Registered", |c| {
        condition(c, "Registered").is_some_and(|r| r.status == "True")
            && condition(c, "Ready").is_some_and(|r| r.status == "True")
    })
    .await;
    c.status.unwrap().platform_connection_id.expect("a platform connection id")
}

#[tokio::test]
async fn an_export_lands_at_its_destination_with_exactly_the_requested_statuses() {
    let _timer = crate::timed!();
    let case = ExportCase::new("land", &[], None).await;
    let connection_id = registered_id(&case).await;
    let held = platform::state().await;
    let conn = held["connections"].as_array().unwrap().iter().find(|c| c["connection_id"] == connection_id.as_str());
    assert_eq!(conn.expect("the platform holds the registered connection")["connection_type"], "export");

    case.export("review-and-accepted", &["review", "accepted"]).await;
    let status = case.wait_export("review-and-accepted", "Succeeded", |s| s["phase"] == "Succeeded").await;
    assert!(has(&status, "Complete", "True", "ExportSucceeded"), "{status:#}");
    assert!(has(&status, "Ready", "True", "ExportSucceeded"), "{status:#}");
    assert_eq!(status["destination"], format!("s3://{}/data/exports/review-and-accepted/", case.bucket));
    assert!(status["startTime"].is_string() && status["completionTime"].is_string() && status["reportId"].is_string());

    let key = "data/exports/review-and-accepted/review-and-accepted.json";
    let body =
        s3::admin("us-east-1").get_object().bucket(&case.bucket).key(key).send().await.expect("the export file in S3");
    let bytes = body.body.collect().await.unwrap().into_bytes();
    let files: Value = serde_json::from_slice(&bytes).unwrap();
    let mut names: Vec<&str> = files.as_array().unwrap().iter().map(|f| f["file_name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["cat.jpg", "dog.jpg"], "exactly the files in review and accepted");
    assert_eq!(platform::exports(&case.project).await.len(), 1);

    // Phase events are posted after the status write: they may land a moment after it.
    let events_api = Api::<k8s_openapi::api::events::v1::Event>::namespaced(case.client.clone(), &case.ns);
    let both = |r: &[String]| r.iter().any(|x| x == "Submitted") && r.iter().any(|x| x == "Succeeded");
    let reasons =
        support::wait_for("the phase events", Duration::from_secs(10), Duration::from_millis(100), || async {
            let events = events_api.list(&Default::default()).await.unwrap();
            let reasons: Vec<String> = events.items.iter().filter_map(|e| e.reason.clone()).collect();
            if both(&reasons) { Ok(reasons) } else { Err(format!("phase events: {reasons:?}")) }
        })
        .await;
    assert!(both(&reasons), "phase events: {reasons:?}");
    case.assert_no_secrets().await;
}

#[tokio::test]
async fn no_file_in_the_requested_statuses_is_no_files_with_status() {
    let _timer = crate::timed!();
    let case = ExportCase::new("nofiles", &[], None).await;
    registered_id(&case).await;
    case.export("cr-only", &["cr_assigned"]).await;
    let status =
        case.wait_export("cr-only", "NoFilesWithStatus", |s| has(s, "Complete", "False", "NoFilesWithStatus")).await;
    let message = cond(&status, "Complete")["message"].as_str().unwrap();
    for word in ["cr_assigned", "review, client_review or accepted", "re-create"] {
        assert!(message.contains(word), "{word:?} missing from {message:?}");
    }
    assert!(has(&status, "Ready", "False", "NoFilesWithStatus"));
    assert_eq!(cond(&status, "Stalled")["status"], "True");
    assert!(platform::exports(&case.project).await.is_empty());
    case.assert_no_secrets().await;
}

/// Real refusals often carry a status line in `message` and the reason in `error`: the
/// documented "No files found" is recognised there too.
#[tokio::test]
async fn no_files_found_in_the_error_field_alone_is_no_files_with_status() {
    let _timer = crate::timed!();
    let case = ExportCase::new("nofiles-error", &[], None).await;
    registered_id(&case).await;
    let refusal = json!({"count": 1, "status": 400, "message": "400: Bad Request",
        "error": "No files found with the given status", "project_id": case.project});
    platform::fault("export/create", refusal).await;
    case.export("review", &["review"]).await;
    let status =
        case.wait_export("review", "NoFilesWithStatus", |s| has(s, "Complete", "False", "NoFilesWithStatus")).await;
    assert!(has(&status, "Ready", "False", "NoFilesWithStatus"), "{status:#}");
    assert!(platform::exports(&case.project).await.is_empty(), "nothing was exported");
}

#[tokio::test]
async fn a_connection_without_put_object_never_submits() {
    let _timer = crate::timed!();
    let case = ExportCase::new("noput", &[Action::PutObject], None).await;
    case.export("blocked", &["review"]).await;
    let status = case
        .wait_export("blocked", "ConnectionReady=False", |s| has(s, "ConnectionReady", "False", "PutObjectDenied"))
        .await;
    let message = cond(&status, "ConnectionReady")["message"].as_str().unwrap();
    assert!(message.contains("s3:PutObject") && message.contains("nothing is submitted"), "{message}");
    assert_eq!(status["phase"], "Pending");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(platform::exports(&case.project).await.is_empty(), "an export was submitted");
    case.assert_no_secrets().await;
}

#[tokio::test]
async fn a_platform_429_carries_the_tracking_id_and_the_export_completes_after_recovery() {
    let _timer = crate::timed!();
    // 429 is the platform refusing before it acts: safe to submit again by itself. (A 5xx
    // is not: see the next test.)
    let case = ExportCase::new("p429", &[], None).await;
    registered_id(&case).await;
    platform::fault("export/create", json!({"status": 429, "count": 1000, "project_id": case.project})).await;
    case.export("flaky", &["accepted"]).await;
    let status = case
        .wait_export("flaky", "PlatformInternalError", |s| has(s, "Submitted", "False", "PlatformInternalError"))
        .await;
    let message = cond(&status, "Submitted")["message"].as_str().unwrap().to_owned();
    let calls = platform::state().await["calls"].clone();
    let tracked = calls
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c[0] == "export/create")
        .filter_map(|c| c[1].as_str())
        .any(|uuid| message.contains(&format!("tracking id {uuid}")));
    assert!(tracked, "the message names no tracking id the platform saw: {message}");
    assert!(message.contains("Labellerr support"), "{message}");
    assert_eq!(cond(&status, "Reconciling")["status"], "True", "a platform error is retried: {status:#}");

    platform::fault("export/create", json!({"status": 0, "count": 0, "project_id": case.project})).await;
    case.wait_export("flaky", "Succeeded", |s| s["phase"] == "Succeeded").await;
    assert_eq!(platform::exports(&case.project).await.len(), 1);
    case.assert_no_secrets().await;
}

#[tokio::test]
async fn a_platform_500_on_submission_is_unconfirmed_and_never_submitted_twice() {
    let _timer = crate::timed!();
    // The platform creates the export and then answers 500: from outside, a 500 says
    // nothing about whether it acted. Decided: a 5xx on a create is an unknown outcome.
    let case = ExportCase::new("p500", &[], None).await;
    registered_id(&case).await;
    platform::fault("export/create", json!({"after_status": 500, "after_count": 1, "project_id": case.project})).await;
    case.export("flaky", &["accepted"]).await;
    let status = case
        .wait_export("flaky", "SubmissionUnconfirmed", |s| has(s, "Submitted", "False", "SubmissionUnconfirmed"))
        .await;
    let message = cond(&status, "Submitted")["message"].as_str().unwrap().to_owned();
    assert!(message.contains("HTTP 500"), "{message}");
    let tracking = status["submissionTrackingId"].as_str().expect("the intent's tracking id").to_owned();
    assert!(message.contains(&format!("tracking id {tracking}")), "{message}");
    let seen = platform::state().await["calls"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c[0] == "export/create" && c[1] == tracking.as_str());
    assert!(seen, "the platform never saw tracking id {tracking}");
    assert_eq!(cond(&status, "Stalled")["status"], "True", "a person decides: {status:#}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let exports = platform::exports(&case.project).await;
    assert_eq!(exports.len(), 1, "submitted again after a 500");

    // The person finds it and names it: followed to the end, still once.
    let report_id = exports[0]["report_id"].as_str().unwrap();
    let patch = json!({"metadata": {"annotations": {"s3connect.io/report-id": report_id}}});
    Api::<DatasetExport>::namespaced(case.client.clone(), &case.ns)
        .patch("flaky", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    case.wait_export("flaky", "Succeeded", |s| s["phase"] == "Succeeded").await;
    assert_eq!(platform::exports(&case.project).await.len(), 1);
    case.assert_no_secrets().await;
}

/// The reconcile panics right after the platform accepted the export and before the
/// answer is recorded anywhere: the panic's report must not erase the intent written
/// before the call (it once wrote the cached, older status back), or the next reconcile
/// would submit a second export.
#[tokio::test]
async fn a_panic_right_after_the_platform_accepted_never_exports_twice() {
    let _timer = crate::timed!();
    let case = ExportCase::new("panic", &[], None).await;
    registered_id(&case).await;
    let obj = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "DatasetExport", "metadata": {"name": "boom",
        "annotations": {"s3connect.io/debug-panic-after-submit": "true"}}, "spec": {
        "connectionRef": {"name": "exports"}, "projectId": case.project, "format": "json",
        "statuses": ["review"], "folder": "exports/boom/"}});
    let api = Api::<DatasetExport>::namespaced(case.client.clone(), &case.ns);
    api.create(&PostParams::default(), &serde_json::from_value(obj).unwrap()).await.unwrap();
    let status =
        case.wait_export("boom", "the panic reported", |s| has(s, "Ready", "False", "ReconcilePanicked")).await;
    assert!(status["submissionTrackingId"].is_string(), "the panic's report erased the intent: {status:#}");
    assert_eq!(platform::exports(&case.project).await.len(), 1, "the platform accepted the export");
    // Without the panic, looked at again now: unconfirmed, never submitted again.
    let calm = json!({"metadata": {"annotations": {"s3connect.io/debug-panic-after-submit": null,
        "s3connect.io/requested-at": "after-panic"}}});
    api.patch("boom", &PatchParams::default(), &Patch::Merge(&calm)).await.unwrap();
    case.wait_export("boom", "SubmissionUnconfirmed", |s| has(s, "Submitted", "False", "SubmissionUnconfirmed")).await;
    assert_eq!(platform::exports(&case.project).await.len(), 1, "a panic made a second export");
}

#[tokio::test]
async fn a_platform_slow_to_answer_a_submission_gets_it_once() {
    let _timer = crate::timed!();
    // Answers 4 s and 8 s after acting, against a 3 s create timeout (this test's own
    // operator, so that the hold scales down; 120 s by default): the platform acted at once
    // both times, and nothing is submitted again while or after it holds the answer.
    let ns = private_namespace("slow");
    let log = log_path("slow");
    let mut operator = spawn(&log, &["--namespace", &ns, "--platform-create-timeout", "3"]);
    let case = ExportCase::new("slow", &[], Some(ns)).await;
    registered_id(&case).await;
    for (name, hold) in [("slow", 4), ("slower", 8)] {
        platform::fault("export/create", json!({"count": 1, "delay_after": hold, "project_id": case.project})).await;
        case.export(name, &["review"]).await;
        let status = case
            .wait_export(name, "SubmissionUnconfirmed", |s| has(s, "Submitted", "False", "SubmissionUnconfirmed"))
            .await;
        assert!(cond(&status, "Submitted")["message"].as_str().unwrap().contains("no answer within 3 s"), "{status:#}");
        // Past the held answer: nothing was submitted again.
        platform::until_answered("export/create", "project_id", &case.project).await;
        let made = platform::exports(&case.project).await;
        assert_eq!(made.iter().filter(|e| e["export_name"] == name).count(), 1, "{hold} s: {made:#?}");
    }
    assert_eq!(platform::exports(&case.project).await.len(), 2);
    drop(operator.stdin.take());
    assert!(operator.wait().unwrap().success());
}

#[tokio::test]
async fn no_files_with_the_status_is_retried_without_ever_looking_unconfirmed() {
    let _timer = crate::timed!();
    // This test's own operator retries after 1 s, then 2 s (10 s and 20 s by default).
    let ns = private_namespace("nofiles");
    let mut operator = spawn(&log_path("nofiles"), &["--namespace", &ns, "--retry-base", "1"]);
    let case = ExportCase::new("nofiles-again", &[], Some(ns)).await;
    registered_id(&case).await;
    case.export("none", &["cr_assigned"]).await;
    case.wait_export("none", "NoFilesWithStatus", |s| has(s, "Complete", "False", "NoFilesWithStatus")).await;
    let api = Api::<DatasetExport>::namespaced(case.client.clone(), &case.ns);
    let attempts = || async {
        platform::state().await["calls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c[0] == "export/create" && c[2] == case.project.as_str())
            .count()
    };
    // Through two backoffs (1 s, 2 s), watched every 100 ms; the deadline is generous.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while std::time::Instant::now() < deadline && attempts().await < 3 {
        let e = api.get("none").await.unwrap();
        let status = serde_json::to_value(&e.status).unwrap();
        assert!(
            !has(&status, "Submitted", "False", "SubmissionUnconfirmed"),
            "a false SubmissionUnconfirmed: {status:#}"
        );
        assert!(cond(&status, "Stalled")["status"] != "True" || has(&status, "Stalled", "True", "NoFilesWithStatus"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(attempts().await >= 3, "fewer than three attempts in 40 s");
    // The third answer may not be written yet when the platform has recorded the call.
    let status = case
        .wait_export("none", "NoFilesWithStatus after the third attempt", |s| {
            has(s, "Complete", "False", "NoFilesWithStatus")
        })
        .await;
    assert!(status["submissionStartedTime"].is_null(), "an intent was left behind: {status:#}");
    assert!(platform::exports(&case.project).await.is_empty());
    drop(operator.stdin.take());
    assert!(operator.wait().unwrap().success());
}

use platform::registrations;

async fn wait_gone(case: &ExportCase) {
    let api = Api::<s3connect::api::S3Connection>::namespaced(case.client.clone(), &case.ns);
    api.delete("exports", &Default::default()).await.unwrap();
    support::wait_for("the S3Connection's deletion", Duration::from_secs(60), Duration::from_millis(200), || async {
        match api.get_opt("exports").await.unwrap() {
            None => Ok(()),
            Some(_) => Err("it is still there"),
        }
    })
    .await
}

#[tokio::test]
async fn a_registration_answered_late_or_with_a_500_is_adopted_never_duplicated() {
    let _timer = crate::timed!();
    for (hint, fault) in [
        ("reg-slow", json!({"count": 1, "delay_after": 35})),
        ("reg-500", json!({"after_status": 500, "after_count": 1})),
    ] {
        let case = ExportCase::unstarted(hint).await;
        let owner = format!("{}/exports", case.ns);
        let mut fault = fault;
        fault["name"] = json!(format!("s3connect {owner} "));
        platform::fault("connections/create", fault).await;
        case.start().await;
        registered_id(&case).await;
        let found = registrations(&owner).await;
        assert_eq!(found.len(), 2, "{hint}: one per usage (Import, Export), no duplicate: {found:#?}");
        let c = Api::<s3connect::api::S3Connection>::namespaced(case.client.clone(), &case.ns)
            .get("exports")
            .await
            .unwrap();
        let status = c.status.unwrap();
        assert!(
            status.platform_registration_intents.is_empty(),
            "{hint}: intents left: {:?}",
            status.platform_registration_intents
        );
        let ids: Vec<&str> = status.platform_connections.iter().map(|p| p.id.as_str()).collect();
        for r in &found {
            assert!(ids.contains(&r["connection_id"].as_str().unwrap()), "{hint}: {r} not recorded");
        }
        wait_gone(&case).await;
        assert!(registrations(&owner).await.is_empty(), "{hint}: registrations left after delete");
    }
}

#[tokio::test]
async fn the_finalizer_removes_registrations_it_never_recorded() {
    let _timer = crate::timed!();
    let case = ExportCase::new("stray", &[], None).await;
    registered_id(&case).await;
    let owner = format!("{}/exports", case.ns);
    // A registration under the connection's name that its status does not know of, as a
    // create whose answer was lost before any of this would leave.
    let client = s3connect::platform::Client::new(&support::env().platform_url).unwrap();
    let form = s3connect::platform::ConnectionForm {
        keys: &case.keys,
        path: format!("{}/data/", case.bucket),
        connection_type: "import",
        data_type: "image",
    };
    let uid = Api::<S3Connection>::namespaced(support::client().await, &case.ns)
        .get("exports")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    client
        .create_connection(&support::env().platform, &form, &format!("s3connect {owner} {uid} import keys-0"), "stray")
        .await
        .unwrap();
    // Another object's of the same namespace and name (another cluster sharing the
    // account, or one deleted and made again): never this connection's to delete.
    let namesake = format!("s3connect {owner} 00000000-0000-0000-0000-000000000000 import keys-0");
    client.create_connection(&support::env().platform, &form, &namesake, "another cluster's").await.unwrap();
    assert_eq!(registrations(&owner).await.len(), 4);
    wait_gone(&case).await;
    let left = registrations(&owner).await;
    assert_eq!(left.len(), 1, "registrations left after delete, or a namesake deleted: {left:#?}");
    assert_eq!(left[0]["name"], namesake);
}

#[tokio::test]
async fn killed_between_registration_create_and_status_write_registers_once() {
    let _timer = crate::timed!();
    let ns = private_namespace("regkill");
    let case = ExportCase::unstarted_in("regkill", ns.clone()).await;
    let owner = format!("{ns}/exports");
    let log = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("operator-regkill-{}.log", std::process::id()));
    let mut first = spawn(&log, &["--namespace", &ns]);
    platform::fault("connections/create", json!({"count": 1, "delay_after": 8, "name": format!("s3connect {owner} ")}))
        .await;
    case.start().await;
    support::wait_for("the first registration", Duration::from_secs(15), Duration::from_millis(100), || async {
        if registrations(&owner).await.is_empty() { Err("none on the platform") } else { Ok(()) }
    })
    .await;
    assert_eq!(registrations(&owner).await.len(), 1, "the platform created the first registration");
    let pid = operator_pid(&log);
    assert!(std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
    drop(first.stdin.take());
    let _ = first.wait();
    let c = Api::<s3connect::api::S3Connection>::namespaced(case.client.clone(), &ns).get("exports").await.unwrap();
    assert_eq!(c.status.unwrap().platform_registration_intents.len(), 1, "the intent was recorded before the create");

    let log2 = log.with_file_name(format!("operator-regkill2-{}.log", std::process::id()));
    let mut second = spawn(&log2, &["--namespace", &ns]);
    registered_id(&case).await;
    platform::until_answered("connections/create", "name", &format!("s3connect {owner} ")).await;
    assert_eq!(registrations(&owner).await.len(), 2, "one per usage after the restart, none twice");
    wait_gone(&case).await;
    assert!(registrations(&owner).await.is_empty());
    drop(second.stdin.take());
    assert!(second.wait().unwrap().success());
}

#[tokio::test]
async fn killed_between_the_platform_accepting_and_the_status_write_never_exports_twice() {
    let _timer = crate::timed!();
    let ns = private_namespace("restart");
    let case = ExportCase::new("restart", &[], Some(ns.clone())).await;
    let log = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("operator-restart-{}.log", std::process::id()));
    let mut first = spawn(&log, &["--namespace", &ns]);
    registered_id(&case).await;

    // The platform accepts the export, then holds its answer: the operator is killed in
    // exactly the window between the platform's accept and its status write.
    platform::fault("export/create", json!({"count": 1, "delay_after": 6, "project_id": case.project})).await;
    case.export("once", &["review"]).await;
    support::wait_for("the export on the platform", Duration::from_secs(10), Duration::from_millis(100), || async {
        if platform::exports(&case.project).await.is_empty() { Err("none on the platform") } else { Ok(()) }
    })
    .await;
    assert_eq!(platform::exports(&case.project).await.len(), 1, "the platform accepted the export");
    let pid = operator_pid(&log);
    assert!(std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
    drop(first.stdin.take());
    first.wait().unwrap();

    let log2 = log.with_file_name(format!("operator-restart2-{}.log", std::process::id()));
    let mut second = spawn(&log2, &["--namespace", &ns]);
    let status = case
        .wait_export("once", "SubmissionUnconfirmed", |s| has(s, "Submitted", "False", "SubmissionUnconfirmed"))
        .await;
    let message = cond(&status, "Submitted")["message"].as_str().unwrap();
    assert!(message.contains("s3connect.io/report-id") && message.contains("s3connect.io/resubmit"), "{message}");
    platform::until_answered("export/create", "project_id", &case.project).await;
    let exports = platform::exports(&case.project).await;
    assert_eq!(exports.len(), 1, "the restarted operator submitted again");

    // The person names the report id; the export is followed to the end, still once.
    let report_id = exports[0]["report_id"].as_str().unwrap();
    let patch = json!({"metadata": {"annotations": {"s3connect.io/report-id": report_id}}});
    Api::<DatasetExport>::namespaced(case.client.clone(), &ns)
        .patch("once", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let status = case.wait_export("once", "Succeeded", |s| s["phase"] == "Succeeded").await;
    assert_eq!(status["reportId"], report_id);
    assert_eq!(platform::exports(&case.project).await.len(), 1);
    drop(second.stdin.take());
    assert!(second.wait().unwrap().success());
}

#[tokio::test]
async fn deleting_a_registered_connection_removes_it_from_the_platform() {
    let _timer = crate::timed!();
    let case = ExportCase::new("unregister", &[], None).await;
    let id = registered_id(&case).await;
    let api = Api::<S3Connection>::namespaced(case.client.clone(), &case.ns);
    let conn = api.get("exports").await.unwrap();
    assert!(conn.metadata.finalizers.unwrap_or_default().contains(&"s3connect.io/platform-connection".to_owned()));
    let registrations = conn.status.unwrap().platform_connections;
    assert_eq!(registrations.iter().map(|c| c.connection_type.as_str()).collect::<Vec<_>>(), ["import", "export"]);
    let held =
        |state: &Value, id: &str| state["connections"].as_array().unwrap().iter().any(|c| c["connection_id"] == id);
    let state = platform::state().await;
    assert!(registrations.iter().all(|c| held(&state, &c.id)), "both registrations are on the platform");

    api.delete("exports", &DeleteParams::default()).await.unwrap();
    support::wait_for("the S3Connection's deletion", Duration::from_secs(30), Duration::from_millis(200), || async {
        api.get_opt("exports").await.unwrap().map_or(Ok(()), |_| Err("it is still there"))
    })
    .await;
    assert!(api.get_opt("exports").await.unwrap().is_none(), "the S3Connection was not deleted");
    let state = platform::state().await;
    assert!(
        !held(&state, &id) && registrations.iter().all(|c| !held(&state, &c.id)),
        "a platform connection outlived its S3Connection"
    );
    case.assert_no_secrets().await;
}

#[tokio::test]
async fn new_keys_replace_the_platform_connection() {
    let _timer = crate::timed!();
    let case = ExportCase::new("rekey", &[], None).await;
    let old_id = registered_id(&case).await;
    let location = Location::parse(&format!("{}/data/", case.bucket)).unwrap();
    let fresh = iam::user_with_policy(
        "rekey2",
        &policy(&location, None, &required(&[Usage::Import, Usage::Export], CorsMode::Apply)),
    )
    .await;
    let data = json!({"data": {
        "AWS_ACCESS_KEY_ID": k8s_openapi::ByteString(fresh.access_key_id.clone().into_bytes()),
        "AWS_SECRET_ACCESS_KEY": k8s_openapi::ByteString(fresh.secret_access_key.clone().into_bytes())}});
    Api::<Secret>::namespaced(case.client.clone(), &case.ns)
        .patch("keys", &PatchParams::default(), &Patch::Merge(&data))
        .await
        .unwrap();
    let c = wait_for(&case.client, &case.ns, "exports", "a new registration", |c| {
        c.status.as_ref().and_then(|s| s.platform_connection_id.clone()).is_some_and(|id| id != old_id)
            && condition(c, "Registered").is_some_and(|r| r.status == "True")
    })
    .await;
    let state = platform::state().await;
    let ids: Vec<&str> =
        state["connections"].as_array().unwrap().iter().filter_map(|c| c["connection_id"].as_str()).collect();
    assert!(!ids.contains(&old_id.as_str()), "the registration with the old keys is still on the platform");
    assert!(ids.contains(&c.status.unwrap().platform_connection_id.unwrap().as_str()));
}

#[tokio::test]
async fn deletion_waits_for_the_platform_and_the_annotation_lets_it_go() {
    let _timer = crate::timed!();
    let case = ExportCase::new("stuck", &[], None).await;
    let id = registered_id(&case).await;
    let api = Api::<S3Connection>::namespaced(case.client.clone(), &case.ns);
    platform::fault("connections/delete", json!({"status": 503, "count": 1000, "connection_id": id})).await;
    api.delete("exports", &DeleteParams::default()).await.unwrap();
    let c = wait_for(&case.client, &case.ns, "exports", "a cleanup failure", |c| {
        condition(c, "Registered").is_some_and(|r| r.reason == "PlatformInternalError")
    })
    .await;
    let message = &condition(&c, "Registered").unwrap().message;
    assert!(
        message.contains("tracking id") && message.contains("s3connect.io/skip-platform-cleanup=true"),
        "{message}"
    );
    assert!(api.get_opt("exports").await.unwrap().is_some(), "deleted while its platform connection remains");

    let patch = json!({"metadata": {"annotations": {"s3connect.io/skip-platform-cleanup": "true"}}});
    api.patch("exports", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    support::wait_for("the S3Connection's deletion", Duration::from_secs(30), Duration::from_millis(200), || async {
        api.get_opt("exports").await.unwrap().map_or(Ok(()), |_| Err("it is still there"))
    })
    .await;
    assert!(api.get_opt("exports").await.unwrap().is_none(), "the annotation did not release the finalizer");
    platform::fault("connections/delete", json!({"status": 0, "count": 0, "connection_id": id})).await;
    let held =
        platform::state().await["connections"].as_array().unwrap().iter().any(|c| c["connection_id"] == id.as_str());
    assert!(held, "skipping cleanup leaves the platform connection as it is");
}

#[tokio::test]
async fn a_connection_the_platform_test_refuses_is_never_created() {
    let _timer = crate::timed!();
    let refusal = json!({"status": 400, "message": "Connection test failed: the platform cannot list this bucket"});
    refused_connection_test(refusal, "refused").await;
}

/// A test answered 200 whose body says it failed is a failure too.
#[tokio::test]
async fn a_connection_test_that_fails_in_a_200_body_is_never_created() {
    let _timer = crate::timed!();
    let refusal = json!({"status": 200, "message": "200: Success",
        "error": "Connection test failed: the platform cannot list this bucket"});
    refused_connection_test(refusal, "refused200").await;
}

/// The platform's connection test answers `refusal` for a new connection: Registered is
/// PlatformRejected with its text, and nothing is created on the platform.
async fn refused_connection_test(refusal: Value, hint: &str) {
    let client = support::client().await;
    let ns = support::namespace(&client, hint).await;
    let bucket = s3::bucket(hint, "us-east-1").await;
    s3::put(&bucket, "data/images/a.jpg", b"a").await;
    let path = format!("{bucket}/data/");
    let mut fault = refusal;
    fault["count"] = json!(1000);
    fault["path"] = json!(path);
    platform::fault("connections/test", fault).await;
    let case = ExportCase::new_in(&client, &ns, &bucket).await;
    let c = wait_for(&case.client, &case.ns, "exports", "PlatformRejected", |c| {
        condition(c, "Registered").is_some_and(|r| r.reason == "PlatformRejected")
    })
    .await;
    let message = &condition(&c, "Registered").unwrap().message;
    assert!(message.contains("the platform cannot list this bucket"), "the API's message is not passed on: {message}");
    assert_eq!(condition(&c, "Ready").unwrap().reason, "PlatformRejected");
    assert!(c.status.unwrap().platform_connections.is_empty());
    let created = platform::state().await["connections"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["description"].as_str().unwrap_or("").contains(&format!("S3Connection {ns}/exports")));
    assert!(!created, "a connection the platform's test refused was created");
    platform::fault("connections/test", json!({"status": 0, "count": 0, "path": path})).await;
}

#[tokio::test]
async fn asking_for_a_reconcile_re_checks_an_export_at_once() {
    let _timer = crate::timed!();
    // This test's own operator retries a failure only after 300 s: whatever succeeds
    // within the test's deadlines was the annotation's doing, not a retry.
    let ns = private_namespace("poke");
    let mut operator = spawn(&log_path("poke"), &["--namespace", &ns, "--retry-base", "300"]);
    let case = ExportCase::new("poke", &[], Some(ns)).await;
    registered_id(&case).await;
    case.export("later", &["cr_assigned"]).await;
    case.wait_export("later", "NoFilesWithStatus", |s| has(s, "Complete", "False", "NoFilesWithStatus")).await;
    // Files reach the status on the platform; the next try by itself is 300 s away.
    platform::project(&case.project, &[("late.jpg", "cr_assigned")]).await;
    let patch = json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": "2026-11-30T01:00:00Z"}}});
    Api::<DatasetExport>::namespaced(case.client.clone(), &case.ns)
        .patch("later", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let status = case.wait_export("later", "Succeeded", |s| s["phase"] == "Succeeded").await;
    assert_eq!(status["lastHandledReconcileAt"], "2026-11-30T01:00:00Z");
    assert_eq!(platform::exports(&case.project).await.len(), 1);
    drop(operator.stdin.take());
    assert!(operator.wait().unwrap().success());
}
