use super::*;
use crate::api::conditions::Status;

fn spec(data_type: Option<&str>) -> AnnotationProjectSpec {
    let mut v = serde_json::json!({
        "datasetRefs": [{"name": "cats"}],
        "template": {"questions": [{"question": "Where?", "type": "BoundingBox", "color": "#FF0000"}]},
    });
    if let Some(t) = data_type {
        v["dataType"] = serde_json::json!(t);
    }
    serde_json::from_value(v).unwrap()
}

fn ready_ds(id: &str, data_type: &str, files: i64) -> DatasetState {
    DatasetState::Ready { id: id.into(), data_type: data_type.into(), files }
}

#[test]
fn every_dataset_must_be_ready_with_files_and_of_one_type_before_any_call() {
    let s = spec(None);
    let gate = |found: Vec<(&str, DatasetState)>| {
        datasets(&s, &found.into_iter().map(|(n, d)| (n.to_owned(), d)).collect::<Vec<_>>())
    };
    let (c, retrying) = gate(vec![("cats", DatasetState::Missing)]).unwrap_err();
    assert_eq!(
        (c.type_, c.status, c.reason.as_str(), retrying),
        (DATASETS_READY, Status::False, "DatasetNotFound", false)
    );
    assert!(c.message.contains("\"cats\""));
    let not_ready = DatasetState::NotReady { reason: "Processing".into(), message: "processing".into() };
    let (c, retrying) = gate(vec![("a", ready_ds("1", "image", 3)), ("cats", not_ready)]).unwrap_err();
    assert_eq!((c.reason.as_str(), retrying), ("DatasetNotReady", true), "a dataset still processing clears by itself");
    assert!(c.message.contains("\"cats\"") && c.message.contains("Processing"));
    let (c, _) = gate(vec![("cats", ready_ds("1", "image", 0))]).unwrap_err();
    assert_eq!(c.reason, "DatasetEmpty");
    assert!(c.message.contains("no files") && c.message.contains("\"cats\""));
    let (c, retrying) = gate(vec![("a", ready_ds("1", "image", 3)), ("dogs", ready_ds("2", "video", 3))]).unwrap_err();
    assert_eq!((c.reason.as_str(), retrying), ("DataTypeMismatch", false));
    assert!(c.message.contains("\"dogs\"") && c.message.contains("video") && c.message.contains("image"));
    assert_eq!(
        gate(vec![("a", ready_ds("1", "image", 3)), ("b", ready_ds("2", "image", 1))]).unwrap(),
        (vec!["1".to_owned(), "2".to_owned()], "image".to_owned())
    );
    // The spec's dataType rules over the datasets'.
    let s = spec(Some("video"));
    let (c, _) = datasets(&s, &[("cats".into(), ready_ds("1", "image", 3))]).unwrap_err();
    assert!(c.reason == "DataTypeMismatch" && c.message.contains("spec.dataType"), "{c:?}");
}

#[test]
fn question_ids_are_stable_per_object_and_distinct_per_question() {
    let uid = "8f0c1c9e-1b6a-4f39-9a55-0e0d3b9b2c11";
    assert_eq!(question_id(uid, 1), question_id(uid, 1));
    assert_ne!(question_id(uid, 1), question_id(uid, 2));
    assert_ne!(question_id(uid, 1), question_id("another-uid", 1));
    assert!(template_name("ns/p", uid).ends_with(&format!("[s3connect uid={uid}]")));
}

#[test]
fn a_lost_answer_is_unconfirmed_never_a_second_create_and_a_refusal_is_shown() {
    let s = template_intent(
        AnnotationProjectStatus::default(),
        &datasets_ready(&["1".into()], "image"),
        "t-1",
        Timestamp::now(),
    );
    assert!(s.status.template_creation_started_time.is_some());
    assert_eq!(s.ready().status, Status::Unknown, "the platform at work: Ready Unknown");
    let lost = PlatformError::Unknown { detail: "timeout".into(), tracking_id: "t-1".into() };
    let o = after_template(s.status.clone(), datasets_ready(&[], "image"), Err(lost)).unwrap_err();
    assert_eq!(o.ready().reason, "TemplateUnconfirmed");
    assert!(o.status.template_creation_started_time.is_some(), "the intent stays, so the next reconcile looks it up");
    assert!(o.ready().message.contains("t-1"));
    let refused = PlatformError::Rejected { status: 400, message: "color required".into(), tracking_id: "t-r".into() };
    let o = after_template(s.status.clone(), datasets_ready(&[], "image"), Err(refused)).unwrap_err();
    assert_eq!(
        (o.ready().reason.as_str(), o.retrying, o.status.phase),
        ("TemplateRejected", false, Some(ProjectPhase::Failed))
    );
    let (status, c) = after_template(s.status, datasets_ready(&[], "image"), Ok("tpl-1".into())).unwrap();
    assert_eq!((status.template_id.as_deref(), c.status), (Some("tpl-1"), Status::True));
    assert!(status.template_creation_started_time.is_none());
}

#[test]
fn the_project_answers_map_to_created_and_ready() {
    let mut s = AnnotationProjectStatus { project_id: Some("p-1".into()), ..Default::default() };
    s.attached_datasets = vec!["1".into()];
    let info = |code: Option<i64>| ProjectInfo {
        name: "n".into(),
        status_code: code,
        template_id: "t".into(),
        data_type: "image".into(),
        datasets: vec!["1".into()],
    };
    let o = after_get(s.clone(), vec![], Ok(None), 0).unwrap_err();
    assert_eq!(
        (o.ready().reason.as_str(), o.retrying, o.status.phase),
        ("ProjectNotFound", false, Some(ProjectPhase::Failed))
    );
    let o = after_get(s.clone(), vec![], Ok(Some(info(Some(500)))), 0).unwrap_err();
    assert_eq!((o.ready().reason.as_str(), o.ready().status), ("ProjectFailed", Status::False));
    let o = after_get(s.clone(), vec![], Ok(Some(info(None))), 0).unwrap_err();
    assert_eq!((o.ready().reason.as_str(), o.ready().status, o.retrying), ("Processing", Status::Unknown, true));
    let (s2, conds, _) = after_get(s.clone(), vec![], Ok(Some(info(Some(300)))), 0).unwrap();
    let done = super::ready(s2, conds);
    assert_eq!(
        (done.ready().status, done.ready().reason.as_str(), done.status.phase),
        (Status::True, "ProjectReady", Some(ProjectPhase::Ready))
    );
}

#[test]
fn changes_are_the_difference_and_a_recorded_change_is_checked_against_the_project() {
    let mut sp = spec(None);
    let status = AnnotationProjectStatus {
        attached_datasets: vec!["1".into(), "2".into()],
        rotations: Some(sp.rotations),
        ..Default::default()
    };
    let (attach, detach, rotations) = changes(&sp, &status, &["2".into(), "3".into()]);
    assert_eq!((attach, detach, rotations), (vec!["3".to_owned()], vec!["1".to_owned()], false));
    sp.rotations.review = 2;
    assert!(changes(&sp, &status, &["1".into(), "2".into()]).2, "new rotations are a change");
    let change = DatasetChange {
        attach: vec!["3".into()],
        detach: vec!["1".into()],
        tracking_id: "t".into(),
        started_time: Time(Timestamp::now()),
    };
    assert!(applied(&change, &["2".into(), "3".into()]));
    assert!(!applied(&change, &["1".into(), "2".into(), "3".into()]));
    assert!(!applied(&change, &["2".into()]));
}

#[test]
fn each_condition_type_is_written_once_whatever_the_steps_said_before() {
    let created = NamedCond::new(CREATED, Status::True, "ProjectReady", "exists");
    let conds = vec![datasets_ready(&["1".into()], "image"), created];
    let o = change_intent(AnnotationProjectStatus::default(), &conds, vec!["2".into()], vec![], "t", Timestamp::now());
    let e = PlatformError::Rejected { status: 400, message: "no".into(), tracking_id: "t-r".into() };
    let o2 = change_failed(o.status.clone(), o.conds.clone(), "attaching datasets", &e);
    for out in [o, o2] {
        let mut types: Vec<&str> = out.conditions().iter().map(|c| c.type_).collect();
        let n = types.len();
        types.sort();
        types.dedup();
        assert_eq!(types.len(), n, "{:?}", out.conditions());
    }
}

#[test]
fn a_project_is_adopted_only_if_no_other_object_provably_owns_it() {
    let me = "uid-me";
    let claims: Vec<Claim> = vec![
        ("team-a/labels".into(), "uid-a".into(), Some("p-a".into())),
        ("team-b/mine".into(), me.into(), None),
        ("team-c/gone-project".into(), "uid-c".into(), None),
        ("team-b/sibling".into(), "uid-s".into(), Some("p-s".into())),
    ];
    let owner_of = |id: &str, template: Option<&str>| project_owner(me, "team-b", id, &claims, template);
    // Made in the UI: no identity, no claim.
    assert_eq!(owner_of("p-ui", Some("Cats guideline")), None);
    assert_eq!(owner_of("p-ui", None), None);
    // Recorded by another AnnotationProject: named when it is in this namespace, never
    // when it is another team's.
    let owner = owner_of("p-s", Some("Cats guideline")).unwrap();
    assert!(owner.contains("team-b/sibling"), "{owner}");
    let owner = owner_of("p-a", Some("Cats guideline")).unwrap();
    assert!(owner.contains("another namespace") && !owner.contains("team-a") && !owner.contains("labels"), "{owner}");
    // Made by another object (its template carries that object's uid).
    let owner = owner_of("p-c", Some("x [s3connect uid=uid-c]")).unwrap();
    assert!(owner.contains("another namespace") && !owner.contains("gone-project"), "{owner}");
    let owner = owner_of("p-z", Some("x [s3connect uid=uid-elsewhere]")).unwrap();
    assert!(owner.contains("uid-elsewhere"), "{owner}");
    // Made for this object: its own.
    assert_eq!(owner_of("p-me", Some("x [s3connect uid=uid-me]")), None);

    let status = AnnotationProjectStatus::default();
    let out = adoption_refused(status, vec![], "p-a", &owner);
    let ready = out.ready().clone();
    assert_eq!((ready.status, ready.reason.as_str()), (Status::False, "ProjectOwnedElsewhere"));
    assert!(ready.message.contains("p-a") && ready.message.contains("spec.adopt"), "{}", ready.message);
    assert_eq!(out.status.project_id, None, "nothing of it is recorded, so nothing of it is ever deleted");
    assert_eq!(out.status.phase, Some(ProjectPhase::Failed));
    let c = dataset_owned_elsewhere("d-1", "uid-x");
    assert_eq!((c.type_, c.status, c.reason.as_str()), (DATASETS_READY, Status::False, "DatasetOwnedElsewhere"));
}

#[test]
fn a_look_after_a_lost_answer_that_proves_nothing_keeps_the_intent() {
    let status = AnnotationProjectStatus {
        platform_name: Some("team/labels".into()),
        creation_started_time: Some(Time(Timestamp::UNIX_EPOCH)),
        creation_tracking_id: Some("u-1".into()),
        template_creation_started_time: Some(Time(Timestamp::UNIX_EPOCH)),
        ..Default::default()
    };
    let short = PlatformError::Incomplete { detail: "more pages announced".into(), tracking_id: "u-2".into() };
    let o = lookup_failed(status.clone(), vec![], &short);
    assert!(o.status.creation_started_time.is_some() && o.status.creation_tracking_id.is_some(), "the intent stays");
    assert!(o.retrying);
    let c = o.conds.iter().find(|c| c.type_ == CREATED).unwrap();
    assert!(c.message.contains("cannot prove") && c.message.contains("creates nothing"), "{}", c.message);
    let down = PlatformError::Internal { status: 503, tracking_id: "u-3".into() };
    let o = template_lookup_failed(status, NamedCond::new(READY, Status::True, "x", "x"), &down);
    assert!(o.status.template_creation_started_time.is_some(), "the template's intent stays");
}
