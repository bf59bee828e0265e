//! Datasets through the real stack: the operator, the API server, the S3/IAM server, and
//! the platform stand-in, which reads the folder with the connection's own keys, so that
//! the files count and the failures follow IAM. Each test asserts the platform's state.

use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams, PostParams};
use s3connect::api::Dataset;
use s3connect::api::connection::{CorsMode, Usage};
use s3connect::s3::client::Keys;
use s3connect::s3::policy::{Action, policy};
use s3connect::s3::uri::Location;
use s3connect::validation::required;
use serde_json::{Value, json};

use crate::support::operator::{condition, everything_shown, operator_pid, private_namespace, spawn, wait_for};
use crate::support::{self, iam, platform, s3};

/// A namespace with a registered Import S3Connection "images" on a bucket that has three
/// files under `images/cats/` and none under `images/empty/`.
struct DatasetCase {
    client: kube::Client,
    ns: String,
    bucket: String,
    keys: Keys,
    user: String,
}

impl DatasetCase {
    async fn new(hint: &str) -> DatasetCase {
        let client = support::client().await;
        let ns = support::namespace(&client, hint).await;
        Self::in_namespace(client, ns, hint, true).await
    }

    async fn in_namespace(client: kube::Client, ns: String, hint: &str, wait: bool) -> DatasetCase {
        let bucket = s3::bucket(hint, "us-east-1").await;
        for f in ["a.jpg", "b.jpg", "c.jpg"] {
            s3::put(&bucket, &format!("images/cats/{f}"), b"a cat").await;
        }
        s3::put(&bucket, "images/dogs/d.jpg", b"a dog").await;
        let location = Location::parse(&format!("{bucket}/images/")).unwrap();
        let (keys, user) =
            iam::user_with_policy_named(hint, &policy(&location, None, &required(&[Usage::Import], CorsMode::Apply)))
                .await;
        support::keys_secret(&client, &ns, "keys", &keys).await;
        support::platform_secret(&client, &ns).await;
        support::s3_connection(
            &client,
            &ns,
            "images",
            &bucket,
            "keys",
            json!({"platform": {"secretRef": {"name": "labellerr"}}}),
        )
        .await;
        let case = DatasetCase { client, ns, bucket, keys, user };
        if wait {
            case.registered().await;
        }
        case
    }

    async fn registered(&self) -> String {
        let c = wait_for(&self.client, &self.ns, "images", "Registered", |c| {
            condition(c, "Registered").is_some_and(|r| r.status == "True")
        })
        .await;
        c.status.unwrap().platform_connection_id.unwrap()
    }

    fn api(&self) -> Api<Dataset> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn dataset(&self, name: &str, extra: Value) {
        let mut spec = json!({"connectionRef": {"name": "images"}});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let obj =
            json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "Dataset", "metadata": {"name": name}, "spec": spec});
        self.api().create(&PostParams::default(), &serde_json::from_value(obj).unwrap()).await.unwrap();
    }

    async fn wait(&self, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let what = format!("{}/{name}: {what}", self.ns);
        support::wait_for(what, Duration::from_secs(60), Duration::from_millis(200), || async {
            let status = serde_json::to_value(&self.api().get(name).await.unwrap().status).unwrap();
            if done(&status) { Ok(status) } else { Err(format!("{status:#}")) }
        })
        .await
    }

    async fn assert_no_secrets(&self) {
        let mut shown = everything_shown(&self.client, &self.ns).await;
        shown.push_str(&serde_json::to_string(&self.api().list(&Default::default()).await.unwrap().items).unwrap());
        let p = &support::env().platform;
        for secret in [&self.keys.access_key_id, &self.keys.secret_access_key, &p.api_key, &p.api_secret] {
            assert!(!shown.contains(secret.as_str()), "key material was shown");
        }
    }
}

fn ready(status: &Value) -> &Value {
    status["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "Ready")).unwrap_or(&Value::Null)
}

fn has_ready(status: &Value, state: &str, reason: &str) -> bool {
    ready(status)["status"] == state && ready(status)["reason"] == reason
}

fn kstatus(status: &Value, type_: &str) -> bool {
    status["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == type_ && c["status"] == "True"))
}

/// The platform's datasets named `name`.
async fn on_platform(name: &str) -> Vec<Value> {
    platform::state().await["datasets"].as_array().unwrap().iter().filter(|d| d["name"] == name).cloned().collect()
}

#[tokio::test]
async fn a_dataset_reaches_ready_with_the_folders_files_count() {
    let _timer = crate::timed!();
    let case = DatasetCase::new("ds-ready").await;
    case.dataset("cats", json!({"path": "cats/", "description": "three cats"})).await;
    let status = case.wait("cats", "Ready", |s| has_ready(s, "True", "DatasetReady")).await;
    assert_eq!((status["filesCount"].as_i64(), status["statusCode"].as_i64()), (Some(3), Some(300)));
    assert_eq!(status["phase"], "Ready");
    assert!(
        ready(&status)["message"]
            .as_str()
            .unwrap()
            .contains(&format!("3 files from s3://{}/images/cats/", case.bucket))
    );
    let name = format!("{}/cats", case.ns);
    let found = on_platform(&name).await;
    assert_eq!(found.len(), 1, "{found:#?}");
    // The one path form real use backs (docs/platform.md, "Folder paths are s3://bucket/prefix/").
    assert_eq!(found[0]["path"], format!("s3://{}/images/cats/", case.bucket));
    // The description carries the Dataset's identity: what lookups and deletion match.
    let uid = case.api().get("cats").await.unwrap().metadata.uid.unwrap();
    assert_eq!(found[0]["description"], format!("three cats [s3connect uid={uid}]"));
    assert_eq!(status["datasetId"], found[0]["dataset_id"]);
    let (ok, out) = support::kubectl(&["get", "datasets", "-n", &case.ns]);
    assert!(ok && out.contains("FILES") && out.contains("DatasetReady"), "{out}");

    // A file arrives and someone asks for a look: the platform is asked again at once.
    let patch = json!({"metadata": {"annotations": {"s3connect.io/requested-at": "1"}}});
    case.api().patch("cats", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let looked = case.wait("cats", "the requested look", |s| s["lastHandledReconcileAt"] == "1").await;
    assert!(has_ready(&looked, "True", "DatasetReady"), "{looked:#}");
    case.assert_no_secrets().await;
}

#[tokio::test]
async fn an_empty_folder_is_no_files_with_the_remedy() {
    let _timer = crate::timed!();
    let case = DatasetCase::new("ds-empty").await;
    case.dataset("empty", json!({"path": "empty/"})).await;
    let status = case.wait("empty", "NoFiles", |s| has_ready(s, "False", "NoFiles")).await;
    let message = ready(&status)["message"].as_str().unwrap();
    let folder = format!("s3://{}/images/empty/", case.bucket);
    for words in ["Dataset has no files", &folder, "no objects under", "Upload the files"] {
        assert!(message.contains(words), "{words:?} missing from {message}");
    }
    assert!(kstatus(&status, "Stalled"), "someone must upload files: {status:#}");
    assert_eq!(on_platform(&format!("{}/empty", case.ns)).await[0]["files_count"], 0);

    // Argo CD's view of it, and of a Ready one and one not seen yet, from real objects.
    case.dataset("cats", json!({"path": "cats/"})).await;
    case.wait("cats", "Ready", |s| has_ready(s, "True", "DatasetReady")).await;
    let empty = serde_json::to_value(case.api().get("empty").await.unwrap()).unwrap();
    let cats = serde_json::to_value(case.api().get("cats").await.unwrap()).unwrap();
    let mut fresh = cats.clone();
    fresh.as_object_mut().unwrap().remove("status");
    let results = crate::packaging::health("dataset.lua", &[cats, empty, fresh]);
    let verdicts: Vec<&str> = results.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(verdicts, ["Healthy", "Degraded", "Progressing"], "{results:?}");
    assert!(results[1].1.starts_with("NoFiles: "), "{}", results[1].1);
}

#[tokio::test]
async fn keys_that_lose_get_object_make_the_dataset_failed_naming_the_statement() {
    let _timer = crate::timed!();
    let case = DatasetCase::new("ds-failed").await;
    // The connection was validated with read access; then GetObject goes from its policy.
    let location = Location::parse(&format!("{}/images/", case.bucket)).unwrap();
    let without: Vec<Action> =
        required(&[Usage::Import], CorsMode::Apply).into_iter().filter(|a| *a != Action::GetObject).collect();
    iam::put_user_policy(&case.user, &policy(&location, None, &without)).await;
    case.dataset("cats", json!({"path": "cats/"})).await;
    let status = case.wait("cats", "DatasetFailed", |s| has_ready(s, "False", "DatasetFailed")).await;
    let message = ready(&status)["message"].as_str().unwrap();
    for words in
        ["status 500", "s3:GetObject", "/*", &format!("arn:aws:s3:::{}/images/cats/*", case.bucket), "re-create"]
    {
        assert!(message.contains(words), "{words:?} missing from {message}");
    }
    assert_eq!(status["phase"], "Failed");
    assert!(kstatus(&status, "Stalled"));
    case.assert_no_secrets().await;
}

#[tokio::test]
async fn a_platform_500_on_create_names_the_tracking_id_and_creates_once() {
    let _timer = crate::timed!();
    let case = DatasetCase::new("ds-500").await;
    let connection_id = case.registered().await;
    platform::fault("datasets/create", json!({"status": 500, "count": 1, "connection_id": connection_id})).await;
    case.dataset("cats", json!({"path": "cats/"})).await;
    let status = case.wait("cats", "CreationUnconfirmed", |s| has_ready(s, "False", "CreationUnconfirmed")).await;
    let tracking = status["creationTrackingId"].as_str().expect("the intent's tracking id");
    assert!(ready(&status)["message"].as_str().unwrap().contains(&format!("tracking id {tracking}")));
    assert!(kstatus(&status, "Reconciling"), "looked up again by itself: {status:#}");
    // Looked up by name, not there (the 500 came before the platform acted), created once.
    case.wait("cats", "Ready", |s| has_ready(s, "True", "DatasetReady")).await;
    assert_eq!(on_platform(&format!("{}/cats", case.ns)).await.len(), 1);
}

/// The platform creates the dataset, then the answer is lost (a 500), and the list the
/// operator reads to find it comes a page at a time with the dataset on a later page: it
/// is adopted, never created again.
#[tokio::test]
async fn a_lost_create_answer_is_found_on_the_lists_second_page_and_adopted_once() {
    let _timer = crate::timed!();
    let case = DatasetCase::new("ds-pages").await;
    let connection_id = case.registered().await;
    // Another dataset of the same type first, so that the list has a page before this one's.
    case.dataset("first", json!({"path": "cats/"})).await;
    case.wait("first", "Ready", |s| has_ready(s, "True", "DatasetReady")).await;
    platform::modes(json!({"page_size": 1})).await;
    platform::fault("datasets/create", json!({"after_status": 500, "after_count": 1, "connection_id": connection_id}))
        .await;
    case.dataset("cats", json!({"path": "cats/"})).await;
    let status = case.wait("cats", "Ready", |s| has_ready(s, "True", "DatasetReady")).await;
    let requests = platform::requests().await;
    platform::modes(json!({"page_size": 0})).await;
    let found = on_platform(&format!("{}/cats", case.ns)).await;
    assert_eq!(found.len(), 1, "created once: {found:#?}");
    assert_eq!(status["datasetId"], found[0]["dataset_id"], "the one the lost answer made: {status:#}");
    let faults = platform::state().await["faults"]["datasets/create"].clone();
    let ours =
        faults.as_array().unwrap().iter().find(|f| f["connection_id"] == connection_id.as_str()).unwrap().clone();
    assert_eq!(ours["after_count"], 0, "the answer was lost: {ours}");
    let later_page = |r: &Value| r["path"] == "/datasets/list" && r["query"]["last_dataset_id"].is_string();
    assert!(requests.iter().any(later_page), "the list was read past its first page");
}

#[tokio::test]
async fn killed_between_create_and_status_write_leaves_exactly_one_dataset() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let ns = private_namespace("dskill");
    support::named_namespace(&client, &ns).await;
    let log = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("operator-dskill-{}.log", std::process::id()));
    let mut first = spawn(&log, &["--namespace", &ns]);
    let case = DatasetCase::in_namespace(client, ns.clone(), "dskill", true).await;
    let connection_id = case.registered().await;
    platform::fault("datasets/create", json!({"count": 1, "delay_after": 8, "connection_id": connection_id})).await;
    case.dataset("cats", json!({"path": "cats/", "displayName": format!("{ns}-once")})).await;
    let name = format!("{ns}-once");
    support::wait_for("the dataset on the platform", Duration::from_secs(15), Duration::from_millis(100), || async {
        if on_platform(&name).await.is_empty() { Err("none on the platform") } else { Ok(()) }
    })
    .await;
    let found = on_platform(&name).await;
    assert_eq!(found.len(), 1, "the platform created it once: {found:#?}\n{:#}", platform::state().await["calls"]);
    let pid = operator_pid(&log);
    assert!(std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
    drop(first.stdin.take());
    let _ = first.wait();
    let before = serde_json::to_value(case.api().get("cats").await.unwrap().status).unwrap();
    assert!(before["creationStartedTime"].is_string() && before["datasetId"].is_null(), "{before:#}");

    let log2 = log.with_file_name(format!("operator-dskill2-{}.log", std::process::id()));
    let mut second = spawn(&log2, &["--namespace", &ns]);
    let status = case.wait("cats", "Ready", |s| has_ready(s, "True", "DatasetReady")).await;
    platform::until_answered("datasets/create", "connection_id", &connection_id).await;
    let found = on_platform(&name).await;
    assert_eq!(found.len(), 1, "created again after the restart: {found:#?}");
    assert_eq!(status["datasetId"], found[0]["dataset_id"], "the restarted operator adopted it");
    drop(second.stdin.take());
    assert!(second.wait().unwrap().success());
}

#[tokio::test]
async fn delete_removes_the_platforms_dataset_and_retain_keeps_it() {
    let _timer = crate::timed!();
    let case = DatasetCase::new("ds-policy").await;
    case.dataset("gone", json!({"path": "cats/", "deletionPolicy": "Delete"})).await;
    case.dataset("kept", json!({"path": "dogs/"})).await;
    case.wait("gone", "Ready", |s| has_ready(s, "True", "DatasetReady")).await;
    let kept = case.wait("kept", "Ready", |s| has_ready(s, "True", "DatasetReady")).await;
    assert_eq!(kept["filesCount"], 1);
    for name in ["gone", "kept"] {
        case.api().delete(name, &Default::default()).await.unwrap();
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if case.api().get_opt("gone").await.unwrap().is_none() && case.api().get_opt("kept").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(case.api().get_opt("gone").await.unwrap().is_none(), "the Delete dataset is still there");
    assert!(on_platform(&format!("{}/gone", case.ns)).await.is_empty(), "Delete: the platform still has it");
    assert_eq!(on_platform(&format!("{}/kept", case.ns)).await.len(), 1, "Retain: the platform lost it");
}

#[tokio::test]
async fn a_sync_adds_new_files_to_the_count() {
    let _timer = crate::timed!();
    let case = DatasetCase::new("ds-sync").await;
    case.dataset("cats", json!({"path": "cats/", "sync": {"projectId": "proj-7", "interval": "1h"}})).await;
    let first =
        case.wait("cats", "Ready", |s| has_ready(s, "True", "DatasetReady") && s["lastSyncTime"].is_string()).await;
    assert_eq!(first["filesCount"], 3);
    for f in ["d.jpg", "e.jpg"] {
        s3::put(&case.bucket, &format!("images/cats/{f}"), b"another cat").await;
    }
    let patch = json!({"metadata": {"annotations": {"s3connect.io/sync-now": "1"}}});
    case.api().patch("cats", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let synced = case.wait("cats", "the sync", |s| s["filesCount"] == 5).await;
    // Only a sync makes the platform count the folder again.
    assert_eq!(synced["lastHandledSync"], "1");
    assert!(synced["lastSyncTime"].as_str() >= first["lastSyncTime"].as_str());
    let found = on_platform(&format!("{}/cats", case.ns)).await;
    assert_eq!((found.len(), &found[0]["synced_project"]), (1, &json!("proj-7")));
}

/// `sync-now` rewritten in a loop: the platform is asked to sync at most once per
/// --min-validation-spacing, and the newest value is the one acted on.
#[tokio::test]
async fn sync_now_in_a_loop_is_spaced() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let ns = private_namespace("dsspace");
    support::named_namespace(&client, &ns).await;
    let log = support::operator::log_path("dsspace");
    let mut operator = spawn(&log, &["--namespace", &ns, "--min-validation-spacing", "3"]);
    let case = DatasetCase::in_namespace(client, ns, "dsspace", true).await;
    case.dataset("cats", json!({"path": "cats/", "sync": {"projectId": "proj-7", "interval": "1h"}})).await;
    let first =
        case.wait("cats", "Ready", |s| has_ready(s, "True", "DatasetReady") && s["lastSyncTime"].is_string()).await;
    let id = first["datasetId"].as_str().unwrap().to_owned();
    let syncs = || async {
        platform::requests()
            .await
            .iter()
            .filter(|r| r["path"] == "/connectors/datasets/sync" && r["body"]["dataset_id"] == id.as_str())
            .count()
    };
    let before = syncs().await;
    let mut last = String::new();
    for n in 0..6 {
        last = format!("loop-{n}");
        let patch = json!({"metadata": {"annotations": {"s3connect.io/sync-now": last}}});
        case.api().patch("cats", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = case.wait("cats", "the last sync-now handled", |s| s["lastHandledSync"] == last.as_str()).await;
    assert!(has_ready(&done, "True", "DatasetReady"), "{done:#}");
    // Six requests within 0.6 s: one sync when the spacing allows, one for the newest.
    let made = syncs().await - before;
    assert!((1..=2).contains(&made), "{made} syncs for six requests");
    drop(operator.stdin.take());
    assert!(operator.wait().unwrap().success());
}

/// Two namespaces choose the same display name: the second is shown NameInUse and never
/// adopts, and deleting it (with deletionPolicy Delete) leaves the first's dataset alone.
/// A create whose answer is a 500 after the platform acted is found again by this
/// Dataset's identity, never by its name alone.
#[tokio::test]
async fn a_namesake_in_another_namespace_is_never_adopted_or_deleted() {
    let _timer = crate::timed!();
    let (a, b) = (DatasetCase::new("ds-own").await, DatasetCase::new("ds-other").await);
    let shared_name = support::unique("shared-name");
    a.dataset("cats", json!({"path": "cats/", "displayName": shared_name})).await;
    a.wait("cats", "Ready", |s| has_ready(s, "True", "DatasetReady")).await;
    let theirs = on_platform(&shared_name).await;
    assert_eq!(theirs.len(), 1);

    b.dataset("cats", json!({"path": "cats/", "displayName": shared_name, "deletionPolicy": "Delete"})).await;
    let status = b.wait("cats", "NameInUse", |s| has_ready(s, "False", "NameInUse")).await;
    let message = ready(&status)["message"].as_str().unwrap();
    assert!(message.contains(&shared_name) && message.contains("spec.displayName"), "{message}");
    assert!(kstatus(&status, "Stalled"), "someone must choose another name: {status:#}");
    assert!(status["datasetId"].is_null(), "adopted someone else's dataset: {status:#}");
    assert_eq!(on_platform(&shared_name).await.len(), 1, "a second dataset of that name was made");

    b.api().delete("cats", &Default::default()).await.unwrap();
    support::wait_for("B's Dataset's deletion", Duration::from_secs(30), Duration::from_millis(200), || async {
        b.api().get_opt("cats").await.unwrap().map_or(Ok(()), |_| Err("it is still there"))
    })
    .await;
    assert!(b.api().get_opt("cats").await.unwrap().is_none(), "B's Dataset was not deleted");
    assert_eq!(on_platform(&shared_name).await, theirs, "deleting B's Dataset touched A's");
    let a_now = serde_json::to_value(a.api().get("cats").await.unwrap().status).unwrap();
    assert!(has_ready(&a_now, "True", "DatasetReady"), "A's Dataset was affected: {a_now:#}");

    // A 500 after the platform made the dataset: found by this Dataset's identity, adopted,
    // exactly one on the platform.
    let connection_id = b.registered().await;
    platform::fault("datasets/create", json!({"after_status": 500, "after_count": 1, "connection_id": connection_id}))
        .await;
    let own_name = support::unique("own-name");
    b.dataset("dogs", json!({"path": "dogs/", "displayName": own_name})).await;
    b.wait("dogs", "Ready", |s| has_ready(s, "True", "DatasetReady")).await;
    assert_eq!(on_platform(&own_name).await.len(), 1, "the create whose answer was a 500 was repeated");
    let faults = platform::state().await["faults"]["datasets/create"].clone();
    let fired = faults
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["connection_id"] == connection_id.as_str() && f["after_count"] == 0);
    assert!(fired, "the 500 after acting was never sent: the test proves nothing ({faults})");
}
