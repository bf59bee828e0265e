//! Each state of a dataset: facts in, the step, the status and Ready (status, reason, the
//! remedy's key words) out.

use super::*;

fn spec(extra: serde_json::Value) -> DatasetSpec {
    let mut v = serde_json::json!({"connectionRef": {"name": "images"}});
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    serde_json::from_value(v).unwrap()
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn none() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn ready() -> NamedCond {
    connection_ready("images", "conn-1")
}

fn with_id(phase: DatasetPhase) -> DatasetStatus {
    DatasetStatus { dataset_id: Some("ds-1".into()), phase: Some(phase), ..Default::default() }
}

fn info(code: i64, files: i64) -> DatasetInfo {
    DatasetInfo {
        name: "team-cats".into(),
        description: String::new(),
        data_type: "image".into(),
        files_count: files,
        status_code: code,
    }
}

fn ready_of(o: &Outcome) -> &NamedCond {
    o.ready()
}

fn assert_ready(o: &Outcome, status: Status, reason: R, words: &[&str]) {
    let r = ready_of(o);
    assert_eq!((r.status, r.reason.as_str()), (status, reason.as_str()), "{r:?}");
    for w in words {
        assert!(r.message.contains(w), "{reason}: {w:?} missing from {:?}", r.message);
    }
}

const FOLDER: &str = "s3://data/images/cats/";

#[test]
fn a_new_dataset_waits_for_its_connection_then_is_created() {
    let problem = NamedCond::new(CONNECTION_READY, Status::False, "ListBucketDenied", "cannot list");
    let s = DatasetStatus::default();
    assert_eq!(
        step(&spec(serde_json::json!({})), &s, &none(), Some(problem.clone()), at(0)),
        Step::Blocked(problem.clone())
    );
    let o = blocked(s.clone(), problem);
    let r = ready_of(&o);
    assert_eq!(
        (r.status, r.reason.as_str()),
        (Status::False, "ListBucketDenied"),
        "Ready carries the connection's reason"
    );
    assert_eq!(o.status.phase, Some(DatasetPhase::Pending));
    assert!(!o.retrying);
}

#[test]
fn created_once_an_unknown_outcome_is_looked_up_never_created_blindly() {
    let s = spec(serde_json::json!({}));
    assert_eq!(step(&s, &DatasetStatus::default(), &none(), None, at(0)), Step::Create);
    let o = intent(DatasetStatus::default(), &ready(), "team-cats", "track-1", at(0));
    assert_eq!(o.status.creation_tracking_id.as_deref(), Some("track-1"));
    assert_eq!(o.status.platform_name.as_deref(), Some("team-cats"));
    // After a restart (or a lost answer) the intent means: look it up first.
    assert_eq!(step(&s, &o.status, &none(), None, at(1)), Step::Lookup);
    // Even while the connection has a problem: what may exist is looked for first.
    let problem = NamedCond::new(CONNECTION_READY, Status::False, "S3Error", "x");
    assert_eq!(step(&s, &o.status, &none(), Some(problem), at(1)), Step::Lookup);

    let unknown = after_create(
        o.status.clone(),
        ready(),
        Err(PlatformError::Unknown { detail: "HTTP 500".into(), tracking_id: "track-1".into() }),
    );
    assert!(unknown.status.creation_started_time.is_some(), "the intent stays");
    assert_ready(&unknown, Status::False, R::CreationUnconfirmed, &["tracking id track-1", "by name"]);
    assert!(unknown.retrying);

    let made = after_create(o.status, ready(), Ok("ds-1".into()));
    assert_eq!((made.status.dataset_id.as_deref(), made.status.creation_started_time.clone()), (Some("ds-1"), None));
    assert_eq!(made.status.phase, Some(DatasetPhase::Creating));
}

#[test]
fn a_refused_create_fails_and_a_create_that_never_arrived_is_retried() {
    let o = intent(DatasetStatus::default(), &ready(), "team-cats", "t", at(0));
    let refused = after_create(
        o.status.clone(),
        ready(),
        Err(PlatformError::Rejected { status: 400, message: "bad path".into(), tracking_id: "t-r".into() }),
    );
    assert_eq!(refused.status.phase, Some(DatasetPhase::Failed));
    assert_ready(&refused, Status::False, R::PlatformRejected, &["bad path"]);
    assert!(!refused.retrying && refused.status.creation_started_time.is_none());
    let down = after_create(o.status, ready(), Err(PlatformError::Internal { status: 429, tracking_id: "t-4".into() }));
    assert!(down.retrying && down.status.creation_started_time.is_none(), "429: nothing was created");
    assert_ready(&down, Status::False, R::PlatformInternalError, &["tracking id t-4", "Labellerr support"]);
}

#[test]
fn processing_is_polled_with_backoff_and_ends_ready_with_the_files_count() {
    let s = spec(serde_json::json!({}));
    let creating = with_id(DatasetPhase::Creating);
    assert_eq!(step(&s, &creating, &none(), None, at(0)), Step::Check { sync: false });
    let o = after_check(creating.clone(), ready(), FOLDER, &s, Ok(Some(info(200, 0))), None, None, at(1), 0);
    assert_ready(&o, Status::Unknown, R::Processing, &["ds-1"]);
    assert!(o.retrying);
    assert_eq!(o.next, Next::After(Duration::from_secs(2)));
    assert_eq!(poll_after(3), Duration::from_secs(16));
    assert_eq!(poll_after(30), Duration::from_secs(60), "never more than a minute apart");

    let o = after_check(creating, ready(), FOLDER, &s, Ok(Some(info(300, 12))), None, None, at(2), 3);
    assert_ready(&o, Status::True, R::DatasetReady, &["12 files", FOLDER]);
    assert_eq!(
        (o.status.phase, o.status.files_count, o.status.status_code),
        (Some(DatasetPhase::Ready), Some(12), Some(300))
    );
    assert_eq!(o.next, Next::Success(None), "a Ready dataset without sync costs nothing");
    assert_eq!(step(&s, &o.status, &none(), None, at(3)), Step::Idle(None));
}

#[test]
fn no_files_names_the_folder_and_what_the_connection_can_read() {
    let s = spec(serde_json::json!({}));
    let empty = Recheck {
        problem: Some(format!("There are no objects under {FOLDER}: upload the files to label there.")),
        missing_policy: None,
        sample: None,
    };
    let o = after_check(
        with_id(DatasetPhase::Creating),
        ready(),
        FOLDER,
        &s,
        Ok(Some(info(300, 0))),
        Some(&empty),
        None,
        at(1),
        0,
    );
    assert_ready(&o, Status::False, R::NoFiles, &["Dataset has no files", FOLDER, "no objects under", "re-create"]);
    assert!(!o.retrying, "someone must upload files: Stalled");

    let denied = Recheck {
        problem: Some("The credentials may list but not read objects (s3:GetObject denied): allow s3:GetObject on arn:aws:s3:::data/images/cats/*. Note the /*".into()),
        missing_policy: Some("{\n  \"Statement\": [ {\"Action\": \"s3:GetObject\"} ]\n}".into()),
        sample: None,
    };
    let o = after_check(
        with_id(DatasetPhase::Creating),
        ready(),
        FOLDER,
        &s,
        Ok(Some(info(300, 0))),
        Some(&denied),
        None,
        at(1),
        0,
    );
    assert_ready(&o, Status::False, R::NoFiles, &["s3:GetObject", "/*", "statement to add"]);
}

#[test]
fn a_failed_dataset_re_checks_the_read_permissions_and_names_the_statement() {
    let s = spec(serde_json::json!({}));
    let denied = Recheck {
        problem: Some("The credentials may list but not read objects in s3://data/images/cats/ (s3:GetObject denied on \"a.jpg\"): allow s3:GetObject on arn:aws:s3:::data/images/cats/*. Note the /*: a statement on the bucket ARN alone does not cover its objects".into()),
        missing_policy: Some("{\"Statement\": [{\"Effect\": \"Allow\", \"Action\": [\"s3:GetObject\"], \"Resource\": [\"arn:aws:s3:::data/images/cats/*\"]}]}".into()),
        sample: None,
    };
    let o = after_check(
        with_id(DatasetPhase::Creating),
        ready(),
        FOLDER,
        &s,
        Ok(Some(info(500, 0))),
        Some(&denied),
        None,
        at(1),
        0,
    );
    assert_ready(
        &o,
        Status::False,
        R::DatasetFailed,
        &["status 500", "s3:GetObject", "/*", "arn:aws:s3:::data/images/cats/*", "re-create"],
    );
    assert_eq!(o.status.phase, Some(DatasetPhase::Failed));
    assert_eq!(o.next, Next::AwaitChange);
    assert_eq!(step(&s, &o.status, &none(), None, at(2)), Step::Idle(None));

    let fine = Recheck { problem: None, missing_policy: None, sample: Some("images/cats/a.jpg".into()) };
    let o = after_check(
        with_id(DatasetPhase::Creating),
        ready(),
        FOLDER,
        &s,
        Ok(Some(info(500, 0))),
        Some(&fine),
        None,
        at(1),
        0,
    );
    assert_ready(&o, Status::False, R::DatasetFailed, &["can list and read", "images/cats/a.jpg"]);
}

#[test]
fn platform_errors_while_following_carry_the_tracking_id_and_retry() {
    let s = spec(serde_json::json!({}));
    let e = PlatformError::Internal { status: 500, tracking_id: "t-7".into() };
    let o = after_check(with_id(DatasetPhase::Creating), ready(), FOLDER, &s, Err(e), None, None, at(1), 0);
    assert_ready(&o, Status::False, R::PlatformInternalError, &["tracking id t-7"]);
    assert!(o.retrying && matches!(o.next, Next::Retry { .. }));
    let o = after_check(with_id(DatasetPhase::Creating), ready(), FOLDER, &s, Ok(None), None, None, at(1), 0);
    assert_ready(&o, Status::False, R::DatasetFailed, &["no longer knows dataset ds-1"]);
}

#[test]
fn sync_runs_when_due_or_asked_and_only_then() {
    let s = spec(serde_json::json!({"sync": {"projectId": "p-1", "interval": "1h"}}));
    let mut done = with_id(DatasetPhase::Ready);
    assert_eq!(step(&s, &done, &none(), None, at(0)), Step::Check { sync: true }, "never synced: now");
    done.last_sync_time = Some(Time(at(0)));
    assert_eq!(step(&s, &done, &none(), None, at(600)), Step::Idle(Some(Duration::from_secs(3000))));
    assert_eq!(step(&s, &done, &none(), None, at(3600)), Step::Check { sync: true });
    let asked: BTreeMap<String, String> = [(SYNC_NOW_ANNOTATION.to_owned(), "1".to_owned())].into();
    assert_eq!(step(&s, &done, &asked, None, at(600)), Step::Check { sync: true });
    let o = after_check(done.clone(), ready(), FOLDER, &s, Ok(Some(info(300, 15))), None, Some("1".into()), at(600), 0);
    assert_eq!(
        (o.status.last_handled_sync.as_deref(), o.status.last_sync_time.clone()),
        (Some("1"), Some(Time(at(600))))
    );
    assert_eq!(o.next, Next::Success(Some(Duration::from_secs(3600))), "back when the next sync is due");
    assert_eq!(
        step(&s, &o.status, &asked, None, at(601)),
        Step::Idle(Some(Duration::from_secs(3599))),
        "asked once, synced once"
    );
}

#[test]
fn a_new_reconcile_request_looks_at_a_settled_dataset_now_and_a_handled_one_does_not() {
    let s = spec(serde_json::json!({}));
    let mut done = with_id(DatasetPhase::Ready);
    let asked: BTreeMap<String, String> = [("s3connect.io/requested-at".to_owned(), "1".to_owned())].into();
    assert_eq!(step(&s, &done, &none(), None, at(0)), Step::Idle(None));
    assert_eq!(step(&s, &done, &asked, None, at(0)), Step::Check { sync: false });
    done.last_handled_reconcile_at = Some("1".into());
    assert_eq!(step(&s, &done, &asked, None, at(0)), Step::Idle(None), "handled once");
    let flux: BTreeMap<String, String> = [("reconcile.fluxcd.io/requestedAt".to_owned(), "t2".to_owned())].into();
    assert_eq!(step(&s, &with_id(DatasetPhase::Failed), &flux, None, at(0)), Step::Check { sync: false });
}

#[test]
fn a_namesake_is_shown_never_adopted_and_the_next_step_creates_after_a_rename() {
    let looking = intent(DatasetStatus::default(), &ready(), "shared", "t-1", at(0)).status;
    let out = name_in_use(looking, ready(), "shared");
    let r = out.ready();
    assert_eq!((r.status, r.reason.as_str()), (Status::False, "NameInUse"));
    assert!(r.message.contains("\"shared\"") && r.message.contains("spec.displayName"), "{}", r.message);
    assert!(!out.retrying, "someone must choose a name: Stalled");
    assert_eq!(out.next, Next::AwaitChange);
    assert_eq!(out.status.dataset_id, None);
    // The intent is cleared: after a rename, the next step is a create (checked again).
    assert_eq!(step(&spec(serde_json::json!({})), &out.status, &none(), None, at(1)), Step::Create);
}
