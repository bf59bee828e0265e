//! Every path of an export's life: facts in, the step, the status and the conditions
//! (type, status, reason, the remedy's key words) out.

use super::*;
use crate::controller::status::Next;

fn names() -> ExportNames<'static> {
    ExportNames { name: "weekly", project_id: "proj-1", statuses: vec!["review", "accepted"] }
}

fn ready() -> NamedCond {
    cond(CONNECTION_READY, Status::True, ConnectionReadyReason::ConnectionReady, "ready")
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A status with the intent recorded and no report id.
fn in_flight() -> DatasetExportStatus {
    intent(DatasetExportStatus::default(), &ready(), "track-1", at(0)).status
}

fn get<'a>(o: &'a Outcome, type_: &str) -> &'a NamedCond {
    o.get(type_).unwrap_or_else(|| panic!("no {type_} in {:?}", o.conds))
}

fn assert_cond(o: &Outcome, type_: &str, status: Status, reason: R, words: &[&str]) {
    let c = get(o, type_);
    assert_eq!((c.status, c.reason.as_str()), (status, reason.as_str()), "{type_}: {c:?}");
    for w in words {
        assert!(c.message.contains(w), "{type_}/{reason}: {w:?} missing from {:?}", c.message);
    }
}

#[test]
fn a_new_export_with_a_usable_connection_is_submitted_and_one_without_waits() {
    let mut s = DatasetExportStatus::default();
    assert_eq!(step(&mut s, &annotations(&[]), None), Step::Submit);
    let problem = NamedCond::new(CONNECTION_READY, Status::False, "PutObjectDenied", "cannot write");
    assert_eq!(step(&mut s, &annotations(&[]), Some(problem.clone())), Step::Blocked(problem.clone()));
    let o = blocked(s, problem);
    assert_eq!(get(&o, READY).reason, "PutObjectDenied", "Ready carries the connection's own reason");
    assert!(!o.retrying);
}

#[test]
fn the_intent_is_written_with_its_tracking_id_before_the_call() {
    let o = intent(DatasetExportStatus::default(), &ready(), "track-1", at(0));
    assert_eq!(o.status.submission_tracking_id.as_deref(), Some("track-1"));
    assert!(o.status.submission_started_time.is_some() && o.status.report_id.is_none());
    assert_cond(&o, SUBMITTED, Status::Unknown, R::Submitting, &[]);
}

#[test]
fn an_accepted_submission_records_the_report_and_clears_the_intent() {
    let o = after_submit(in_flight(), ready(), Ok("rep-1".into()), &names(), at(5));
    assert_eq!(o.status.report_id.as_deref(), Some("rep-1"));
    assert_eq!((o.status.submission_started_time.clone(), o.status.submission_tracking_id.clone()), (None, None));
    assert_eq!(o.status.phase, Some(ExportPhase::Submitted));
    assert_cond(&o, SUBMITTED, Status::True, R::Submitted, &["rep-1"]);
    assert!(o.retrying);
}

#[test]
fn an_unknown_outcome_keeps_the_intent_and_waits_for_a_person() {
    let e = PlatformError::Unknown { detail: "HTTP 500".into(), tracking_id: "track-1".into() };
    let o = after_submit(in_flight(), ready(), Err(e), &names(), at(5));
    assert!(o.status.submission_started_time.is_some(), "the intent stays");
    assert_cond(
        &o,
        SUBMITTED,
        Status::False,
        R::SubmissionUnconfirmed,
        &["HTTP 500", "tracking id track-1", "s3connect.io/report-id", "s3connect.io/resubmit", "\"weekly\""],
    );
    assert_eq!(get(&o, READY).reason, "SubmissionUnconfirmed");
    assert!(!o.retrying, "a person decides: Stalled");
    assert_eq!(o.next, Next::AwaitChange);
    // And the next reconcile does not submit.
    let mut s = o.status;
    assert_eq!(step(&mut s, &annotations(&[]), None), Step::Unconfirmed);
}

#[test]
fn no_files_with_the_status_clears_the_intent_and_is_never_unconfirmed() {
    let e = PlatformError::NoFilesWithStatus { message: "No files found with the given status".into() };
    let o = after_submit(in_flight(), ready(), Err(e), &names(), at(5));
    assert_eq!(o.status.submission_started_time, None, "nothing was created");
    assert_cond(&o, COMPLETE, Status::False, R::NoFilesWithStatus, &["review, accepted", "move files"]);
    assert_eq!(get(&o, READY).reason, "NoFilesWithStatus");
    assert!(matches!(o.next, Next::Retry { .. }));
    // The next try submits again (a new intent), it is not an unconfirmed one.
    let mut s = o.status;
    assert_eq!(step(&mut s, &annotations(&[]), None), Step::Submit);
}

#[test]
fn a_refusal_fails_the_export_and_a_failure_before_acting_retries() {
    let e = PlatformError::Rejected { status: 400, message: "bad statuses".into() };
    let o = after_submit(in_flight(), ready(), Err(e), &names(), at(5));
    assert_eq!(o.status.phase, Some(ExportPhase::Failed));
    assert_cond(&o, SUBMITTED, Status::False, R::PlatformRejected, &["bad statuses", "Re-create"]);

    for e in [
        PlatformError::Internal { status: 429, tracking_id: "t-2".into() },
        PlatformError::Unreachable { detail: "connection refused".into(), tracking_id: "t-3".into() },
    ] {
        let o = after_submit(in_flight(), ready(), Err(e), &names(), at(5));
        assert_eq!(o.status.submission_started_time, None, "it never reached the platform");
        assert!(o.retrying && matches!(o.next, Next::Retry { .. }));
        assert_ne!(get(&o, SUBMITTED).status, Status::True);
    }
}

#[test]
fn a_person_resolves_an_unconfirmed_submission_once() {
    let mut s = in_flight();
    assert_eq!(step(&mut s, &annotations(&[(REPORT_ID_ANNOTATION, "rep-9")]), None), Step::Follow("rep-9".into()));
    assert_eq!(s.submission_started_time, None);

    let mut s = in_flight();
    let asked = annotations(&[(RESUBMIT_ANNOTATION, "true")]);
    assert_eq!(step(&mut s, &asked, None), Step::Submit);
    assert_eq!(s.last_handled_resubmit.as_deref(), Some("true"));
    // That submission's outcome is unknown again: the same annotation does not resubmit.
    s.submission_started_time = Some(Time(at(9)));
    assert_eq!(step(&mut s, &asked, None), Step::Unconfirmed);
    assert_eq!(step(&mut s, &annotations(&[(RESUBMIT_ANNOTATION, "2")]), None), Step::Submit, "a new value does");
}

#[test]
fn following_a_report_to_each_end() {
    let mut s = DatasetExportStatus { report_id: Some("rep-1".into()), ..Default::default() };
    assert_eq!(step(&mut s, &annotations(&[]), None), Step::Follow("rep-1".into()));
    let o = after_check(s.clone(), "rep-1", Ok(Some(ExportState::Running("Pending".into()))), at(1));
    assert_eq!((o.status.phase, o.next, o.retrying), (Some(ExportPhase::Running), Next::Poll, true));
    // The platform at work: Ready Unknown (with Reconciling), as for every kind.
    assert_cond(&o, READY, Status::Unknown, R::ExportRunning, &["Pending"]);
    let o = after_check(s.clone(), "rep-1", Ok(Some(ExportState::Succeeded)), at(2));
    assert_eq!(o.status.phase, Some(ExportPhase::Succeeded));
    assert_cond(&o, READY, Status::True, R::ExportSucceeded, &[]);
    let o = after_check(s.clone(), "rep-1", Ok(Some(ExportState::Failed("disk full".into()))), at(2));
    assert_cond(&o, COMPLETE, Status::False, R::ExportFailed, &["disk full", "write permissions"]);
    let o = after_check(s.clone(), "rep-1", Ok(None), at(2));
    assert_cond(&o, COMPLETE, Status::Unknown, R::ReportNotFound, &["rep-1"]);
    let e = PlatformError::Internal { status: 500, tracking_id: "t-7".into() };
    let o = after_check(s.clone(), "rep-1", Err(e), at(2));
    assert_cond(&o, COMPLETE, Status::False, R::PlatformInternalError, &["tracking id t-7"]);
    assert!(o.retrying);
    let mut done = o.status.clone();
    done.phase = Some(ExportPhase::Succeeded);
    assert_eq!(step(&mut done, &annotations(&[]), None), Step::Finished);
}

#[test]
fn an_intent_found_after_a_restart_names_its_tracking_id() {
    let o = unconfirmed(in_flight(), &names());
    assert_cond(
        &o,
        SUBMITTED,
        Status::False,
        R::SubmissionUnconfirmed,
        &["tracking id track-1", "outcome not recorded"],
    );
    assert!(!o.retrying);
}
