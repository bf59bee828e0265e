//! AnnotationProjects through the real stack: Datasets made from a registered connection's
//! folders by the operator, then the template and the project on the platform stand-in,
//! which validates as the platform does. Each test asserts the platform's own state.

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams, PostParams};
use s3connect::api::AnnotationProject;
use s3connect::api::connection::{CorsMode, Usage};
use s3connect::s3::policy::policy;
use s3connect::s3::uri::Location;
use s3connect::validation::required;
use serde_json::{Value, json};

use crate::support::operator::{operator_pid, private_namespace, shared, spawn};
use crate::support::{self, iam, platform, s3};

/// A namespace with a registered Import connection over `images/` (three files under
/// `cats/`, one under `dogs/`, none under `none/`).
struct Case {
    client: kube::Client,
    ns: String,
    bucket: String,
}

impl Case {
    async fn new(hint: &str) -> Case {
        shared();
        let client = support::client().await;
        let ns = support::namespace(&client, hint).await;
        Self::in_namespace(client, ns, hint).await
    }

    async fn in_namespace(client: kube::Client, ns: String, hint: &str) -> Case {
        let bucket = s3::bucket(hint, "us-east-1").await;
        for f in ["a.jpg", "b.jpg", "c.jpg"] {
            s3::put(&bucket, &format!("images/cats/{f}"), b"a cat").await;
        }
        s3::put(&bucket, "images/dogs/d.jpg", b"a dog").await;
        let location = Location::parse(&format!("{bucket}/images/")).unwrap();
        // Import for the datasets, Export for the project's exports.
        let usage = [Usage::Import, Usage::Export];
        let keys = iam::user_with_policy(hint, &policy(&location, None, &required(&usage, CorsMode::Apply))).await;
        support::keys_secret(&client, &ns, "keys", &keys).await;
        support::platform_secret(&client, &ns).await;
        support::s3_connection(
            &client,
            &ns,
            "images",
            &bucket,
            "keys",
            json!({"usage": ["Import", "Export"], "platform": {"secretRef": {"name": "labellerr"}}}),
        )
        .await;
        Case { client, ns, bucket }
    }

    async fn apply(&self, doc: Value) {
        let kind = doc["kind"].as_str().unwrap().to_owned();
        let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
        let plural = match kind.as_str() {
            "Dataset" => "datasets",
            "AnnotationProject" => "annotationprojects",
            "DatasetExport" => "datasetexports",
            other => panic!("{other}"),
        };
        let ar = kube::api::ApiResource {
            group: "s3connect.io".into(),
            version: "v1alpha1".into(),
            api_version: "s3connect.io/v1alpha1".into(),
            kind,
            plural: plural.into(),
        };
        let api = Api::<kube::api::DynamicObject>::namespaced_with(self.client.clone(), &self.ns, &ar);
        let mut doc = doc;
        doc["apiVersion"] = json!("s3connect.io/v1alpha1");
        api.patch(&name, &PatchParams::apply("test").force(), &Patch::Apply(&doc)).await.unwrap();
    }

    async fn dataset(&self, name: &str, path: &str) {
        self.apply(json!({"kind": "Dataset", "metadata": {"name": name},
            "spec": {"connectionRef": {"name": "images"}, "path": path, "displayName": format!("{}-{name}", self.ns)}}))
            .await;
    }

    async fn project(&self, name: &str, spec: Value) {
        self.apply(json!({"kind": "AnnotationProject", "metadata": {"name": name}, "spec": spec})).await;
    }

    /// The platform id of the Dataset `name`, once it has one.
    async fn dataset_id(&self, name: &str) -> String {
        let api = Api::<s3connect::api::dataset::Dataset>::namespaced(self.client.clone(), &self.ns);
        let what = format!("Dataset {name} having a platform id");
        support::wait_for(what, Duration::from_secs(60), Duration::from_millis(200), || async {
            api.get(name).await.unwrap().status.and_then(|s| s.dataset_id).ok_or("no id yet")
        })
        .await
    }

    fn api(&self) -> Api<AnnotationProject> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Waits until `done` holds for the project's status.
    async fn wait(&self, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let what = format!("AnnotationProject {name}: {what}");
        support::wait_for(what, Duration::from_secs(60), Duration::from_millis(200), || async {
            match self.api().get_opt(name).await.unwrap() {
                Some(p) => {
                    let status = serde_json::to_value(&p.status).unwrap();
                    if done(&status) { Ok(status) } else { Err(format!("{status:#}")) }
                }
                None => Err("no such AnnotationProject".to_owned()),
            }
        })
        .await
    }
}

fn ready(s: &Value, status: &str, reason: &str) -> bool {
    s["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == status && c["reason"] == reason)
}

fn cond<'a>(s: &'a Value, type_: &str) -> &'a Value {
    s["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == type_)).unwrap_or(&Value::Null)
}

/// The platform's projects and templates named for `ns`.
async fn on_platform(ns: &str) -> (Vec<Value>, Vec<Value>) {
    let state = platform::state().await;
    let mine = |v: &Value, key: &str| v[key].as_str().is_some_and(|n| n.contains(ns));
    let projects =
        state["annotation_projects"].as_array().unwrap().iter().filter(|p| mine(p, "project_name")).cloned().collect();
    let templates =
        state["templates"].as_array().unwrap().iter().filter(|t| mine(t, "template_name")).cloned().collect();
    (projects, templates)
}

fn questions() -> Value {
    json!({"questions": [
        {"question": "Where is the cat?", "type": "BoundingBox", "color": "#FF0000", "required": true},
        {"question": "Which breed?", "type": "radio", "options": ["tabby", "siamese"]},
    ]})
}

#[tokio::test]
async fn the_pipeline_applied_at_once_converges_to_one_template_and_one_project() {
    let _timer = crate::timed!();
    let case = Case::new("pipeline").await;
    // All at once, the project first: it waits for its datasets.
    case.project("labels", json!({"datasetRefs": [{"name": "cats"}, {"name": "dogs"}], "template": questions()})).await;
    case.dataset("cats", "cats/").await;
    case.dataset("dogs", "dogs/").await;
    let status = case.wait("labels", "Ready", |s| ready(s, "True", "ProjectReady")).await;
    assert_eq!(status["phase"], "Ready");
    assert_eq!(cond(&status, "TemplateReady")["status"], "True");
    let (projects, templates) = on_platform(&case.ns).await;
    assert_eq!((projects.len(), templates.len()), (1, 1), "{projects:#?} {templates:#?}");
    let project = &projects[0];
    assert_eq!(status["projectId"], project["project_id"]);
    assert_eq!(project["annotation_template_id"], templates[0]["template_id"]);
    assert_eq!(project["attached_datasets"].as_array().unwrap().len(), 2);
    // The questions were numbered, with stable ids, in order.
    let q = templates[0]["questions"].as_array().unwrap();
    assert_eq!((q[0]["question_number"].as_u64(), q[1]["question_number"].as_u64()), (Some(1), Some(2)));
    assert_eq!(
        (q[0]["option_type"].as_str(), q[1]["options"][0]["option_name"].as_str()),
        (Some("BoundingBox"), Some("tabby"))
    );
    assert!(
        q[0]["question_id"].as_str().is_some_and(|id| id.len() >= 32) && q[0]["question_id"] != q[1]["question_id"]
    );
    // The bounding box as the SDK sends one: its colour also as its one option.
    assert_eq!((&q[0]["color"], &q[0]["options"]), (&json!("#FF0000"), &json!([{"option_name": "#FF0000"}])));
    // Every call the platform saw carried the SDK's origin (the stand-in records even the
    // ones it refuses).
    let requests = platform::requests().await;
    let template_call = requests
        .iter()
        .find(|r| {
            r["path"] == "/annotations/create_template" && r["body"]["templateName"] == templates[0]["template_name"]
        })
        .expect("the template's create was recorded");
    assert_eq!(template_call["body"]["questions"], templates[0]["questions"]);
    let without: Vec<&Value> =
        requests.iter().filter(|r| r["headers"]["origin"] != "https://pro.labellerr.com").collect();
    assert!(without.is_empty(), "calls without origin: {without:#?}");

    // Rotations changed -> the platform's rotations change, nothing is created again.
    let patch = json!({"spec": {"rotations": {"annotation": 2, "review": 1, "clientReview": 1}}});
    case.api().patch("labels", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    case.wait("labels", "the rotations applied", |s| {
        s["rotations"]["annotation"] == 2 && ready(s, "True", "ProjectReady")
    })
    .await;
    let (projects, templates) = on_platform(&case.ns).await;
    assert_eq!((projects.len(), templates.len()), (1, 1));
    assert_eq!(projects[0]["rotations"]["annotation_rotation_count"], 2);

    // A dataset removed -> detached once; added back -> attached once.
    let patch = json!({"spec": {"datasetRefs": [{"name": "cats"}]}});
    case.api().patch("labels", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    case.wait("labels", "one dataset attached", |s| {
        s["attachedDatasets"].as_array().is_some_and(|a| a.len() == 1) && ready(s, "True", "ProjectReady")
    })
    .await;
    let patch = json!({"spec": {"datasetRefs": [{"name": "cats"}, {"name": "dogs"}]}});
    case.api().patch("labels", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    case.wait("labels", "two datasets attached", |s| {
        s["attachedDatasets"].as_array().is_some_and(|a| a.len() == 2) && ready(s, "True", "ProjectReady")
    })
    .await;
    let (projects, _) = on_platform(&case.ns).await;
    let jobs = projects[0]["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "one platform job per change: {jobs:#?}");
    assert_eq!(projects[0]["attached_datasets"].as_array().unwrap().len(), 2);
}

/// A real project is processing for a few seconds after its create; deleted in the UI, the
/// platform answers its id with a 200 whose response is null. The AnnotationProject waits
/// through the first, and says the project is gone after the second (never Creating).
#[tokio::test]
async fn a_project_deleted_in_the_ui_answered_as_null_is_not_found_not_creating() {
    let _timer = crate::timed!();
    let case = Case::new("nullgone").await;
    case.dataset("cats", "cats/").await;
    let name = format!("{}/labels", case.ns);
    platform::modes(json!({"processing_seconds": 3, "processing_name": name})).await;
    case.project("labels", json!({"datasetRefs": [{"name": "cats"}], "template": questions()})).await;
    let creating = case.wait("labels", "Creating", |s| s["phase"] == "Creating" && s["projectId"].is_string()).await;
    assert_eq!(cond(&creating, "Created")["status"], "Unknown", "{creating:#}");
    let status = case.wait("labels", "Ready", |s| ready(s, "True", "ProjectReady")).await;
    let id = status["projectId"].as_str().unwrap().to_owned();

    platform::modes(json!({"unknown_as_null": true})).await;
    platform::delete_ui(&id).await;
    let patch = json!({"metadata": {"annotations": {"s3connect.io/requested-at": "gone"}}});
    case.api().patch("labels", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let status = case.wait("labels", "ProjectNotFound", |s| ready(s, "False", "ProjectNotFound")).await;
    platform::modes(json!({"unknown_as_null": false})).await;
    assert_eq!(status["phase"], "Failed", "{status:#}");
    assert!(cond(&status, "Ready")["message"].as_str().unwrap().contains(&id));
    let (projects, _) = on_platform(&case.ns).await;
    assert!(projects.is_empty(), "no project was made again: {projects:#?}");
}

#[tokio::test]
async fn an_empty_dataset_keeps_the_project_pending_naming_it_and_nothing_is_created() {
    let _timer = crate::timed!();
    let case = Case::new("emptyds").await;
    case.dataset("cats", "cats/").await;
    case.dataset("nothing", "none/").await;
    case.project("labels", json!({"datasetRefs": [{"name": "cats"}, {"name": "nothing"}], "template": questions()}))
        .await;
    let status = case
        .wait("labels", "waiting on the empty dataset", |s| {
            let c = cond(s, "DatasetsReady");
            c["status"] == "False" && c["message"].as_str().is_some_and(|m| m.contains("\"nothing\""))
        })
        .await;
    assert_eq!(status["phase"], "Pending");
    assert!(
        ["DatasetNotReady", "DatasetEmpty"].contains(&cond(&status, "Ready")["reason"].as_str().unwrap()),
        "{status:#}"
    );
    let (projects, templates) = on_platform(&case.ns).await;
    assert_eq!((projects.len(), templates.len()), (0, 0), "nothing is created while a dataset is not ready");
}

#[tokio::test]
async fn mismatched_data_types_are_refused_before_any_call() {
    let _timer = crate::timed!();
    let case = Case::new("mismatch").await;
    case.dataset("cats", "cats/").await;
    case.project("labels", json!({"datasetRefs": [{"name": "cats"}], "dataType": "video", "template": questions()}))
        .await;
    let status = case.wait("labels", "DataTypeMismatch", |s| ready(s, "False", "DataTypeMismatch")).await;
    let message = cond(&status, "Ready")["message"].as_str().unwrap();
    assert!(message.contains("\"cats\"") && message.contains("image") && message.contains("video"), "{message}");
    assert_eq!(cond(&status, "Stalled")["status"], "True", "a person must fix it");
    let (projects, templates) = on_platform(&case.ns).await;
    assert_eq!((projects.len(), templates.len()), (0, 0), "nothing was created");
}

#[tokio::test]
async fn a_500_after_the_create_is_adopted_once_never_anothers_project() {
    let _timer = crate::timed!();
    let case = Case::new("adopt500").await;
    case.dataset("cats", "cats/").await;
    // Someone made a project of the very same name in the UI.
    let name = format!("{}/labels", case.ns);
    let dataset = case.dataset_id("cats").await;
    let theirs = platform::ui_project(&name, "image", &[&dataset]).await;
    // The platform creates the project, then answers 500 (this project's name only).
    platform::fault("projects/create", json!({"after_status": 500, "after_count": 1, "project_name": name})).await;
    case.project("labels", json!({"datasetRefs": [{"name": "cats"}], "template": questions()})).await;
    let status = case.wait("labels", "Ready after the lost answer", |s| ready(s, "True", "ProjectReady")).await;
    let (projects, templates) = on_platform(&case.ns).await;
    let ours: Vec<&Value> = projects.iter().filter(|p| p["project_id"] != theirs.as_str()).collect();
    let made: Vec<&Value> =
        templates.iter().filter(|t| t["template_name"].as_str().unwrap().contains("[s3connect uid=")).collect();
    assert_eq!((ours.len(), made.len()), (1, 1), "created exactly once: {projects:#?}");
    assert_eq!(status["projectId"], ours[0]["project_id"], "its own, never the same-named one: {status:#}");
    assert_eq!(ours[0]["annotation_template_id"], made[0]["template_id"]);
    let faults = platform::state().await["faults"]["projects/create"].clone();
    let ours = faults.as_array().unwrap().iter().find(|f| f["project_name"] == name.as_str()).unwrap().clone();
    assert_eq!(ours["after_count"], 0, "the 500 was answered: {ours}");
}

#[tokio::test]
async fn a_question_without_its_color_or_options_is_refused_at_admission() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let ns = support::namespace(&client, "projcel").await;
    let api = Api::<AnnotationProject>::namespaced(client.clone(), &ns);
    for (question, words) in [
        (json!({"question": "Where?", "type": "BoundingBox"}), "needs a color"),
        (json!({"question": "Which?", "type": "radio"}), "needs options"),
    ] {
        let doc = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "AnnotationProject", "metadata": {"name": "bad"},
            "spec": {"datasetRefs": [{"name": "cats"}], "template": {"questions": [question]}}});
        let err = api.create(&PostParams::default(), &serde_json::from_value(doc).unwrap()).await.unwrap_err();
        assert!(err.to_string().contains(words), "{err}");
    }
    let both = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "AnnotationProject", "metadata": {"name": "bad"},
        "spec": {"datasetRefs": [{"name": "cats"}], "template": {"templateId": "t1", "questions": [{"question": "q", "type": "input"}]}}});
    let err = api.create(&PostParams::default(), &serde_json::from_value(both).unwrap()).await.unwrap_err();
    assert!(err.to_string().contains("exactly one of templateId"), "{err}");
    // Exactly one of template and adopt: an adopted project keeps its own template.
    for spec in [
        json!({"datasetRefs": [{"name": "cats"}]}),
        json!({"datasetRefs": [{"name": "cats"}], "adopt": {"projectId": "p1"}, "template": {"templateId": "t1"}}),
    ] {
        let doc = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "AnnotationProject", "metadata": {"name": "bad"}, "spec": spec});
        let err = api.create(&PostParams::default(), &serde_json::from_value(doc).unwrap()).await.unwrap_err();
        assert!(
            err.to_string().contains("exactly one of template (for a project the operator creates) and adopt"),
            "{err}"
        );
    }
    // Questions are fixed once created: an edit is refused at admission, saying why.
    let good = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "AnnotationProject", "metadata": {"name": "good"},
        "spec": {"datasetRefs": [{"name": "cats"}], "template": {"questions": [{"question": "q", "type": "input"}]}}});
    api.create(&PostParams::default(), &serde_json::from_value(good).unwrap()).await.unwrap();
    let patch = json!({"spec": {"template": {"questions": [{"question": "another", "type": "input"}]}}});
    let err = api.patch("good", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap_err();
    assert!(err.to_string().contains("questions are fixed once created"), "{err}");
}

#[tokio::test]
async fn killed_between_the_create_and_its_status_write_leaves_exactly_one_project() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let ns = private_namespace("projkill");
    support::named_namespace(&client, &ns).await;
    let log = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("operator-projkill-{}.log", std::process::id()));
    let mut first = spawn(&log, &["--namespace", &ns]);
    let case = Case::in_namespace(client, ns.clone(), "projkill").await;
    case.dataset("cats", "cats/").await;
    // The platform makes the project, then holds its answer: the operator dies in between.
    let name = format!("{ns}/labels");
    platform::fault("projects/create", json!({"count": 1, "delay_after": 8, "project_name": name})).await;
    case.project("labels", json!({"datasetRefs": [{"name": "cats"}], "template": questions()})).await;
    support::wait_for("the project on the platform", Duration::from_secs(30), Duration::from_millis(100), || async {
        if on_platform(&ns).await.0.is_empty() { Err("none on the platform") } else { Ok(()) }
    })
    .await;
    assert_eq!(on_platform(&ns).await.0.len(), 1, "the platform made the project");
    let pid = operator_pid(&log);
    assert!(std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
    drop(first.stdin.take());
    let _ = first.wait();
    let before = serde_json::to_value(case.api().get("labels").await.unwrap().status).unwrap();
    assert!(
        before["creationStartedTime"].is_string() && before["projectId"].is_null(),
        "the intent was recorded: {before:#}"
    );

    let log2 = log.with_file_name(format!("operator-projkill2-{}.log", std::process::id()));
    let mut second = spawn(&log2, &["--namespace", &ns]);
    let status = case.wait("labels", "Ready after the restart", |s| ready(s, "True", "ProjectReady")).await;
    platform::until_answered("projects/create", "project_name", &name).await;
    let (projects, templates) = on_platform(&ns).await;
    assert_eq!((projects.len(), templates.len()), (1, 1), "created again after the restart: {projects:#?}");
    assert_eq!(status["projectId"], projects[0]["project_id"], "the restarted operator adopted it");
    drop(second.stdin.take());
    assert!(second.wait().unwrap().success());
}

#[tokio::test]
async fn an_export_names_its_project_by_reference_and_waits_for_it() {
    let _timer = crate::timed!();
    let case = Case::new("projref").await;
    // Applied at once, the export first: it waits for the project, which waits for the dataset.
    case.apply(json!({"kind": "DatasetExport", "metadata": {"name": "labels-out"}, "spec": {
        "connectionRef": {"name": "images"}, "projectRef": {"name": "labels"}, "format": "json",
        "statuses": ["accepted"], "folder": "exports/"}}))
        .await;
    let exports = Api::<s3connect::api::DatasetExport>::namespaced(case.client.clone(), &case.ns);
    let export_status = || async {
        let status = serde_json::to_value(exports.get("labels-out").await.unwrap().status).unwrap();
        Ok::<_, String>(status)
    };
    let waiting = support::wait_for("ProjectNotFound", Duration::from_secs(30), Duration::from_millis(200), || async {
        let waiting = export_status().await?;
        if cond(&waiting, "Ready")["reason"] == "ProjectNotFound" { Ok(waiting) } else { Err(format!("{waiting:#}")) }
    })
    .await;
    assert_eq!(cond(&waiting, "Ready")["reason"], "ProjectNotFound", "{waiting:#}");
    assert!(cond(&waiting, "Ready")["message"].as_str().unwrap().contains("\"labels\""));
    case.project("labels", json!({"datasetRefs": [{"name": "cats"}], "template": questions()})).await;
    case.dataset("cats", "cats/").await;
    let project = case.wait("labels", "Ready", |s| ready(s, "True", "ProjectReady")).await;
    let done =
        support::wait_for("the export's success", Duration::from_secs(60), Duration::from_millis(200), || async {
            let done = export_status().await?;
            if done["phase"] == "Succeeded" { Ok(done) } else { Err(format!("{done:#}")) }
        })
        .await;
    assert_eq!(done["phase"], "Succeeded", "{done:#}");
    let id = project["projectId"].as_str().unwrap();
    assert_eq!(platform::exports(id).await.len(), 1, "one export, of the referenced project");
    let (projects, templates) = on_platform(&case.ns).await;
    assert_eq!((projects.len(), templates.len()), (1, 1), "applied in any order, each made once");
    // Exactly one of projectId and projectRef, at admission.
    let both = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "DatasetExport", "metadata": {"name": "both"}, "spec": {
        "connectionRef": {"name": "images"}, "projectRef": {"name": "labels"}, "projectId": "p", "format": "json",
        "statuses": ["accepted"], "folder": "x/"}});
    let err = exports.create(&PostParams::default(), &serde_json::from_value(both).unwrap()).await.unwrap_err();
    assert!(err.to_string().contains("exactly one of projectId"), "{err}");
}

/// Waits until the AnnotationProject `name` is gone (its finalizer released).
async fn gone(case: &Case, name: &str) {
    let what = format!("AnnotationProject {name}'s deletion");
    support::wait_for(what, Duration::from_secs(60), Duration::from_millis(200), || async {
        match case.api().get_opt(name).await.unwrap() {
            None => Ok(()),
            Some(p) => Err(format!("{:#?}", p.status)),
        }
    })
    .await
}

fn project_on_platform(state: &Value, id: &str) -> Option<Value> {
    state["annotation_projects"].as_array().unwrap().iter().find(|p| p["project_id"] == id).cloned()
}

#[tokio::test]
async fn adoption_takes_a_project_made_in_the_ui_never_another_namespaces() {
    let _timer = crate::timed!();
    // Team A's project, made by the operator; team B on the same platform account.
    let a = Case::new("own-a").await;
    a.dataset("cats", "cats/").await;
    a.project("labels", json!({"datasetRefs": [{"name": "cats"}], "template": questions()})).await;
    let theirs = a.wait("labels", "Ready", |s| ready(s, "True", "ProjectReady")).await;
    let theirs = theirs["projectId"].as_str().unwrap().to_owned();
    let datasets = Api::<s3connect::api::dataset::Dataset>::namespaced(a.client.clone(), &a.ns);
    let their_dataset = datasets.get("cats").await.unwrap().status.unwrap().dataset_id.unwrap();
    let b = Case::in_namespace(a.client.clone(), support::namespace(&a.client, "own-b").await, "own-b").await;
    b.dataset("cats", "cats/").await;

    // B names A's project (with deletionPolicy Delete): refused, nothing recorded.
    b.project(
        "steal",
        json!({"datasetRefs": [{"name": "cats"}], "deletionPolicy": "Delete", "adopt": {"projectId": theirs}}),
    )
    .await;
    let status = b.wait("steal", "refused", |s| ready(s, "False", "ProjectOwnedElsewhere")).await;
    let message = cond(&status, "Ready")["message"].as_str().unwrap();
    // Refused, without naming the other team's namespace or object.
    assert!(message.contains("another namespace") && message.contains("spec.adopt"), "{message}");
    assert!(!message.contains(&a.ns) && !message.contains("labels"), "another namespace's object named: {message}");
    assert_eq!(cond(&status, "Stalled")["status"], "True", "a person must fix it");
    assert!(status["projectId"].is_null(), "{status:#}");
    // B's project taking A's dataset by id: refused before any call.
    b.project(
        "borrow",
        json!({"datasetRefs": [{"name": "cats"}], "datasetIds": [their_dataset], "template": questions()}),
    )
    .await;
    let status = b.wait("borrow", "refused", |s| ready(s, "False", "DatasetOwnedElsewhere")).await;
    assert!(cond(&status, "Ready")["message"].as_str().unwrap().contains(&their_dataset), "{status:#}");
    b.api().delete("steal", &Default::default()).await.unwrap();
    gone(&b, "steal").await;
    let state = platform::state().await;
    let project = project_on_platform(&state, &theirs).expect("A's project survives B's deletion");
    assert_eq!(project["archived"], false);
    assert!(on_platform(&b.ns).await.0.is_empty(), "B made no project: {:#?}", on_platform(&b.ns).await.0);

    // A project made in B's name in the UI is adopted, and archived when its object goes.
    let own = b.dataset_id("cats").await;
    let ui = platform::ui_project("cats, made by hand", "image", &[&own]).await;
    b.project(
        "ui",
        json!({"datasetRefs": [{"name": "cats"}], "deletionPolicy": "Archive", "adopt": {"projectId": ui}}),
    )
    .await;
    let status = b.wait("ui", "Ready", |s| ready(s, "True", "ProjectReady")).await;
    assert_eq!(status["projectId"], ui.as_str());
    let ui_template = project_on_platform(&platform::state().await, &ui).unwrap()["annotation_template_id"].clone();
    assert_eq!(status["templateId"], ui_template, "an adopted project keeps its own template");
    assert_eq!(on_platform(&b.ns).await.1.len(), 0, "no template was made for B's projects");
    b.api().delete("ui", &Default::default()).await.unwrap();
    gone(&b, "ui").await;
    let archived = project_on_platform(&platform::state().await, &ui).expect("archived, not deleted");
    assert_eq!(archived["archived"], true);

    // A's own project, deletionPolicy Delete: deleted on the platform with its object.
    let patch = json!({"spec": {"deletionPolicy": "Delete"}});
    a.api().patch("labels", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    support::wait_for("the project's finalizer", Duration::from_secs(30), Duration::from_millis(100), || async {
        let p = a.api().get("labels").await.unwrap();
        if p.metadata.finalizers.as_ref().is_some_and(|f| !f.is_empty()) {
            Ok(())
        } else {
            Err(format!("{:?}", p.status))
        }
    })
    .await;
    a.api().delete("labels", &Default::default()).await.unwrap();
    gone(&a, "labels").await;
    assert!(project_on_platform(&platform::state().await, &theirs).is_none(), "deleted on the platform");
}

/// The file names in the one export file under `destination` (`s3://bucket/prefix/`).
async fn exported_names(destination: &str) -> Vec<String> {
    let (bucket, prefix) = destination.trim_start_matches("s3://").split_once('/').unwrap();
    let s3 = s3::admin("us-east-1");
    let listed = s3.list_objects_v2().bucket(bucket).prefix(prefix).send().await.unwrap();
    let keys: Vec<String> = listed.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect();
    assert_eq!(keys.len(), 1, "one export file per run folder: {keys:?}");
    let body = s3.get_object().bucket(bucket).key(&keys[0]).send().await.unwrap().body.collect().await.unwrap();
    let files: Vec<Value> = serde_json::from_slice(&body.into_bytes()).unwrap();
    let mut names: Vec<String> = files.iter().map(|f| f["file_name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_scheduled_incremental_export_exports_only_what_changed_each_run_exactly_once() {
    let _timer = crate::timed!();
    let case = Case::new("incremental").await;
    case.dataset("cats", "cats/").await;
    case.project("labels", json!({"datasetRefs": [{"name": "cats"}], "template": questions()})).await;
    let project = case.wait("labels", "Ready", |s| ready(s, "True", "ProjectReady")).await;
    let project = project["projectId"].as_str().unwrap().to_owned();
    case.apply(json!({"kind": "DatasetExport", "metadata": {"name": "daily"}, "spec": {
        "connectionRef": {"name": "images"}, "projectRef": {"name": "labels"}, "format": "json",
        "statuses": ["accepted"], "folder": "exports/", "schedule": "24h", "incremental": true}}))
        .await;
    let exports = Api::<s3connect::api::DatasetExport>::namespaced(case.client.clone(), &case.ns);
    let runs = |n: usize| {
        let exports = exports.clone();
        async move {
            let what = format!("DatasetExport daily: {n} runs");
            support::wait_for(what, Duration::from_secs(60), Duration::from_millis(200), || async {
                let last = serde_json::to_value(exports.get("daily").await.unwrap().status).unwrap();
                if last["runs"].as_array().is_some_and(|r| r.len() == n) { Ok(last) } else { Err(format!("{last:#}")) }
            })
            .await
        }
    };
    let run_now = |value: &'static str| {
        let exports = exports.clone();
        async move {
            let patch = json!({"metadata": {"annotations": {"s3connect.io/run-now": value}}});
            exports.patch("daily", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        }
    };

    // The first run exports everything, into its own folder; the next is a day later.
    let first = runs(1).await;
    assert_eq!(first["runs"][0]["result"], "Succeeded", "{first:#}");
    assert!(first["runs"][0]["updatedAfter"].is_null(), "the first run is not incremental");
    let everything = exported_names(first["runs"][0]["destination"].as_str().unwrap()).await;
    assert_eq!(everything.len(), 3, "{everything:?}");
    assert!(first["nextRunTime"].is_string() && ready(&first, "True", "ExportSucceeded"), "{first:#}");
    assert!(
        first["runs"][0]["destination"].as_str().unwrap().contains(&format!("s3://{}/images/exports/", case.bucket))
    );

    // Two files change (one reviewed again, one new): the next run exports exactly those.
    platform::update_files(&project, &[(everything[0].as_str(), "accepted"), ("new-1.jpg", "accepted")]).await;
    run_now("1").await;
    let second = runs(2).await;
    assert_eq!(second["runs"][0]["result"], "Succeeded", "{second:#}");
    assert_eq!(second["runs"][0]["updatedAfter"], first["runs"][0]["startTime"]);
    let mut changed = vec![everything[0].clone(), "new-1.jpg".to_owned()];
    changed.sort();
    assert_eq!(exported_names(second["runs"][0]["destination"].as_str().unwrap()).await, changed);

    // And again: only what changed since the second run.
    platform::update_files(&project, &[("new-2.jpg", "accepted")]).await;
    run_now("2").await;
    let third = runs(3).await;
    assert_eq!(exported_names(third["runs"][0]["destination"].as_str().unwrap()).await, ["new-2.jpg"]);

    // Nothing changed: a run with nothing to export is no failure.
    run_now("3").await;
    let fourth = runs(4).await;
    assert_eq!(fourth["runs"][0]["result"], "NoFiles", "{fourth:#}");
    assert!(ready(&fourth, "True", "NoNewFiles"), "{fourth:#}");

    // Exactly once each: three exports on the platform, each with its own folder, the
    // incremental ones from the start of the run before.
    let made = platform::exports(&project).await;
    assert_eq!(made.len(), 3, "{made:#?}");
    let folders: std::collections::BTreeSet<_> = made.iter().map(|e| e["export_folder_path"].to_string()).collect();
    assert_eq!(folders.len(), 3);
    assert_eq!(made.iter().filter(|e| e["updated_after_timestamp"].is_null()).count(), 1);
    // Each run-now value was taken once.
    assert_eq!(fourth["lastHandledRunNow"], "3");
}

#[tokio::test]
async fn the_platforms_refusals_show_with_their_remedy() {
    let _timer = crate::timed!();
    let case = Case::new("refusals").await;
    case.dataset("cats", "cats/").await;
    // The template refused: Failed, nothing more is created, the remedy names the questions.
    let refused = format!("{}/refused", case.ns);
    let fault = json!({"count": 1, "status": 400, "message": "question 1: color is not a valid hex color", "template_name": refused});
    platform::fault("templates/create", fault).await;
    case.project("refused", json!({"datasetRefs": [{"name": "cats"}], "template": questions()})).await;
    let status = case.wait("refused", "TemplateRejected", |s| ready(s, "False", "TemplateRejected")).await;
    let message = cond(&status, "Ready")["message"].as_str().unwrap();
    assert!(message.contains("not a valid hex color") && message.contains("spec.template.questions"), "{message}");
    assert_eq!((status["phase"].as_str(), cond(&status, "Stalled")["status"].as_str()), (Some("Failed"), Some("True")));

    // A project made, then rotations beyond the plan: refused with the plan named.
    case.project("labels", json!({"datasetRefs": [{"name": "cats"}], "template": questions()})).await;
    let status = case.wait("labels", "Ready", |s| ready(s, "True", "ProjectReady")).await;
    let id = status["projectId"].as_str().unwrap().to_owned();
    let plan = "Your plan allows only 1 annotation, 1 review and 1 client review rotation";
    platform::fault("projects/rotations", json!({"count": 1, "status": 400, "message": plan, "project_id": id})).await;
    let patch = json!({"spec": {"rotations": {"annotation": 3, "review": 1, "clientReview": 1}}});
    case.api().patch("labels", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let status = case.wait("labels", "RotationsRejected", |s| ready(s, "False", "RotationsRejected")).await;
    let message = cond(&status, "Ready")["message"].as_str().unwrap();
    assert!(message.contains("plan") && message.contains("spec.rotations"), "{message}");
    let on = project_on_platform(&platform::state().await, &id).unwrap();
    assert_eq!(on["rotations"]["annotation_rotation_count"], 1, "the platform kept its rotations");

    // Failed on the platform (status >= 400): ProjectFailed.
    let patch = json!({"spec": {"rotations": {"annotation": 1, "review": 1, "clientReview": 1}}});
    case.api().patch("labels", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    case.wait("labels", "Ready again", |s| ready(s, "True", "ProjectReady")).await;
    platform::set_project(&id, json!({"status_code": 500})).await;
    let patch = json!({"metadata": {"annotations": {"s3connect.io/requested-at": "failed"}}});
    case.api().patch("labels", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let status = case.wait("labels", "ProjectFailed", |s| ready(s, "False", "ProjectFailed")).await;
    let message = cond(&status, "Ready")["message"].as_str().unwrap();
    assert!(message.contains("status 500") && message.contains("re-create"), "{message}");

    // Deleted in the platform's UI: ProjectNotFound, and nothing is made again.
    platform::delete_ui(&id).await;
    let patch = json!({"metadata": {"annotations": {"s3connect.io/requested-at": "gone"}}});
    case.api().patch("labels", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let status = case.wait("labels", "ProjectNotFound", |s| ready(s, "False", "ProjectNotFound")).await;
    let message = cond(&status, "Ready")["message"].as_str().unwrap();
    assert!(message.contains(&id) && message.contains("re-create"), "{message}");
    assert_eq!(status["phase"], "Failed");
    let (projects, _) = on_platform(&case.ns).await;
    assert!(projects.is_empty(), "no project was made again: {projects:#?}");
}
