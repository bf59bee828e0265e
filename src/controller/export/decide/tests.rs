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
    assert_eq!(step(&mut s, &annotations(&[]), None, None, at(0)), Step::Submit);
    let problem = NamedCond::new(CONNECTION_READY, Status::False, "PutObjectDenied", "cannot write");
    assert_eq!(step(&mut s, &annotations(&[]), Some(problem.clone()), None, at(0)), Step::Blocked(problem.clone()));
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
    let o = after_submit(in_flight(), ready(), Ok("rep-1".into()), &names(), None, at(5));
    assert_eq!(o.status.report_id.as_deref(), Some("rep-1"));
    assert_eq!((o.status.submission_started_time.clone(), o.status.submission_tracking_id.clone()), (None, None));
    assert_eq!(o.status.phase, Some(ExportPhase::Submitted));
    assert_cond(&o, SUBMITTED, Status::True, R::Submitted, &["rep-1"]);
    assert!(o.retrying);
}

#[test]
fn an_unknown_outcome_keeps_the_intent_and_waits_for_a_person() {
    let e = PlatformError::Unknown { detail: "HTTP 500".into(), tracking_id: "track-1".into() };
    let o = after_submit(in_flight(), ready(), Err(e), &names(), None, at(5));
    assert!(o.status.submission_started_time.is_some(), "the intent stays");
    assert_cond(
        &o,
        SUBMITTED,
        Status::False,
        R::SubmissionUnconfirmed,
        &["HTTP 500", "tracking id track-1", "s3connect.io/report-id", "s3connect.io/resubmit", "\"weekly\""],
    );
    assert_eq!(get(&o, READY).reason, "SubmissionUnconfirmed");
    // The platform's own tracking id, where its answer gave one, is quoted beside ours.
    let trace = crate::platform::Trace { request: "track-1".into(), server: Some("9f3a".into()) };
    let e = PlatformError::Unknown { detail: "HTTP 500".into(), tracking_id: trace };
    let with_server = after_submit(in_flight(), ready(), Err(e), &names(), None, at(5));
    assert_cond(
        &with_server,
        SUBMITTED,
        Status::False,
        R::SubmissionUnconfirmed,
        &["track-1, server tracking id 9f3a"],
    );
    assert!(!o.retrying, "a person decides: Stalled");
    assert_eq!(o.next, Next::AwaitChange);
    // And the next reconcile does not submit.
    let mut s = o.status;
    assert_eq!(step(&mut s, &annotations(&[]), None, None, at(0)), Step::Unconfirmed);
}

#[test]
fn no_files_with_the_status_clears_the_intent_and_is_never_unconfirmed() {
    let e = PlatformError::NoFilesWithStatus { message: "No files found with the given status".into() };
    let o = after_submit(in_flight(), ready(), Err(e), &names(), None, at(5));
    assert_eq!(o.status.submission_started_time, None, "nothing was created");
    assert_cond(&o, COMPLETE, Status::False, R::NoFilesWithStatus, &["review, accepted", "move files"]);
    assert_eq!(get(&o, READY).reason, "NoFilesWithStatus");
    assert!(matches!(o.next, Next::Retry { .. }));
    // The next try submits again (a new intent), it is not an unconfirmed one.
    let mut s = o.status;
    assert_eq!(step(&mut s, &annotations(&[]), None, None, at(0)), Step::Submit);
}

#[test]
fn a_refusal_fails_the_export_and_a_failure_before_acting_retries() {
    let e = PlatformError::Rejected { status: 400, message: "bad statuses".into(), tracking_id: "t-r".into() };
    let o = after_submit(in_flight(), ready(), Err(e), &names(), None, at(5));
    assert_eq!(o.status.phase, Some(ExportPhase::Failed));
    assert_cond(&o, SUBMITTED, Status::False, R::PlatformRejected, &["bad statuses", "Re-create"]);

    for e in [
        PlatformError::Internal { status: 429, tracking_id: "t-2".into() },
        PlatformError::Unreachable { detail: "connection refused".into(), tracking_id: "t-3".into() },
    ] {
        let o = after_submit(in_flight(), ready(), Err(e), &names(), None, at(5));
        assert_eq!(o.status.submission_started_time, None, "it never reached the platform");
        assert!(o.retrying && matches!(o.next, Next::Retry { .. }));
        assert_ne!(get(&o, SUBMITTED).status, Status::True);
    }
}

#[test]
fn a_person_resolves_an_unconfirmed_submission_once() {
    let mut s = in_flight();
    assert_eq!(
        step(&mut s, &annotations(&[(REPORT_ID_ANNOTATION, "rep-9")]), None, None, at(0)),
        Step::Follow("rep-9".into())
    );
    assert_eq!(s.submission_started_time, None);

    let mut s = in_flight();
    let asked = annotations(&[(RESUBMIT_ANNOTATION, "true")]);
    assert_eq!(step(&mut s, &asked, None, None, at(0)), Step::Submit);
    assert_eq!(s.last_handled_resubmit.as_deref(), Some("true"));
    // That submission's outcome is unknown again: the same annotation does not resubmit.
    s.submission_started_time = Some(Time(at(9)));
    assert_eq!(step(&mut s, &asked, None, None, at(0)), Step::Unconfirmed);
    assert_eq!(
        step(&mut s, &annotations(&[(RESUBMIT_ANNOTATION, "2")]), None, None, at(0)),
        Step::Submit,
        "a new value does"
    );
}

#[test]
fn following_a_report_to_each_end() {
    let mut s = DatasetExportStatus { report_id: Some("rep-1".into()), ..Default::default() };
    assert_eq!(step(&mut s, &annotations(&[]), None, None, at(0)), Step::Follow("rep-1".into()));
    let o = after_check(s.clone(), "rep-1", Ok(Some(ExportState::Running("Pending".into()))), &names(), None, at(1));
    assert_eq!((o.status.phase, o.next, o.retrying), (Some(ExportPhase::Running), Next::Poll, true));
    // The platform at work: Ready Unknown (with Reconciling), as for every kind.
    assert_cond(&o, READY, Status::Unknown, R::ExportRunning, &["Pending"]);
    let o = after_check(s.clone(), "rep-1", Ok(Some(ExportState::Succeeded)), &names(), None, at(2));
    assert_eq!(o.status.phase, Some(ExportPhase::Succeeded));
    assert_cond(&o, READY, Status::True, R::ExportSucceeded, &[]);
    let o = after_check(s.clone(), "rep-1", Ok(Some(ExportState::Failed("disk full".into()))), &names(), None, at(2));
    assert_cond(&o, COMPLETE, Status::False, R::ExportFailed, &["disk full", "write permissions"]);
    let o = after_check(s.clone(), "rep-1", Ok(None), &names(), None, at(2));
    assert_cond(&o, COMPLETE, Status::Unknown, R::ReportNotFound, &["rep-1"]);
    let e = PlatformError::Internal { status: 500, tracking_id: "t-7".into() };
    let o = after_check(s.clone(), "rep-1", Err(e), &names(), None, at(2));
    assert_cond(&o, COMPLETE, Status::False, R::PlatformInternalError, &["tracking id t-7"]);
    assert!(o.retrying);
    let mut done = o.status.clone();
    done.phase = Some(ExportPhase::Succeeded);
    assert_eq!(step(&mut done, &annotations(&[]), None, None, at(0)), Step::Finished);
}

#[test]
fn an_intent_found_after_a_restart_names_its_tracking_id() {
    let o = unconfirmed(in_flight(), &names(), None, at(0));
    assert_cond(
        &o,
        SUBMITTED,
        Status::False,
        R::SubmissionUnconfirmed,
        &["tracking id track-1", "outcome not recorded"],
    );
    assert!(!o.retrying);
}

fn daily(incremental: bool, keep: usize) -> Schedule {
    Schedule { every: "24h".into(), interval: std::time::Duration::from_secs(86_400), incremental, keep }
}

/// One run of `s` submitted at `start` and accepted as `report`.
fn submitted_run(status: DatasetExportStatus, s: &Schedule, start: i64, report: &str) -> DatasetExportStatus {
    let mut status = status;
    start_run(&mut status, format!("s3://b/p/{}", run_folder("exports", at(start))), at(start));
    let o = intent(status, &ready(), &format!("track-{start}"), at(start));
    after_submit(o.status, ready(), Ok(report.into()), &names(), Some(s), at(start)).status
}

#[test]
fn a_scheduled_run_goes_to_the_history_and_the_next_is_due_an_interval_after_its_start() {
    let s = daily(true, 10);
    let mut status = DatasetExportStatus::default();
    assert_eq!(step(&mut status, &annotations(&[]), None, Some(&s), at(0)), Step::Submit, "the first run at once");
    assert_eq!(updated_after(&status, Some(&s)), None, "the first run exports everything");
    let status = submitted_run(status, &s, 0, "rep-1");
    let o = after_check(status, "rep-1", Ok(Some(ExportState::Succeeded)), &names(), Some(&s), at(60));
    let st = &o.status;
    assert_eq!((st.report_id.clone(), st.phase), (None, Some(ExportPhase::Succeeded)));
    assert_eq!(st.runs.len(), 1);
    let run = &st.runs[0];
    assert_eq!((run.result, run.report_id.as_deref()), (RunResult::Succeeded, Some("rep-1")));
    assert_eq!(run.destination.as_deref(), Some("s3://b/p/exports/20270115T080000Z/"));
    assert_eq!(st.last_successful_run_time, Some(MicroTime(at(0))), "the watermark is the run's start");
    assert_eq!(st.next_run_time, Some(Time(at(86_400))));
    assert_eq!(o.next, Next::After(std::time::Duration::from_secs(86_400 - 60)));
    assert_cond(&o, READY, Status::True, R::ExportSucceeded, &["s3://b/p/exports/20270115T080000Z/", "every 24h"]);
    assert_eq!(updated_after(st, Some(&s)), Some(at(0).as_millisecond()));

    // Not due: wait; due: the next run; a new run-now value: a run at once, taken once.
    let mut st = o.status;
    assert_eq!(
        step(&mut st, &annotations(&[]), None, Some(&s), at(3_600)),
        Step::Wait(std::time::Duration::from_secs(86_400 - 3_600))
    );
    assert_eq!(step(&mut st, &annotations(&[]), None, Some(&s), at(86_400)), Step::Submit);
    let now = annotations(&[(RUN_NOW_ANNOTATION, "1")]);
    let blocked_by = NamedCond::new(CONNECTION_READY, Status::False, "PutObjectDenied", "cannot write");
    assert_eq!(step(&mut st, &now, Some(blocked_by.clone()), Some(&s), at(3_600)), Step::Blocked(blocked_by));
    assert_eq!(st.last_handled_run_now, None, "not taken while the run cannot start");
    assert_eq!(step(&mut st, &now, None, Some(&s), at(3_600)), Step::Submit);
    assert_eq!(st.last_handled_run_now.as_deref(), Some("1"));
    assert!(matches!(step(&mut st, &now, None, Some(&s), at(3_601)), Step::Wait(_)), "the same value: no second run");
    // A new interval counts from the last run's start at once.
    let hourly = Schedule { every: "1h".into(), interval: std::time::Duration::from_secs(3_600), ..s.clone() };
    let mut st = between_runs(st, &hourly, &names(), at(1_000)).status;
    assert_eq!(st.next_run_time, Some(Time(at(3_600))));
    assert_eq!(step(&mut st, &annotations(&[]), None, Some(&hourly), at(3_600)), Step::Submit);
    // A one-shot export that finished is finished; a scheduled one is not.
    let mut done = DatasetExportStatus { phase: Some(ExportPhase::Succeeded), ..Default::default() };
    assert_eq!(step(&mut done, &annotations(&[]), None, None, at(0)), Step::Finished);
}

#[test]
fn a_failed_or_unconfirmed_run_keeps_the_watermark_and_the_schedule_goes_on() {
    let s = daily(true, 10);
    let first = submitted_run(DatasetExportStatus::default(), &s, 0, "rep-1");
    let first = after_check(first, "rep-1", Ok(Some(ExportState::Succeeded)), &names(), Some(&s), at(60)).status;

    // Failed on the platform.
    let second = submitted_run(first.clone(), &s, 86_400, "rep-2");
    let failed = ExportState::Failed("AccessDenied".into());
    let o = after_check(second, "rep-2", Ok(Some(failed)), &names(), Some(&s), at(86_460));
    assert_eq!(o.status.runs[0].result, RunResult::Failed);
    assert_eq!(o.status.runs[0].updated_after, Some(MicroTime(at(0))));
    assert_eq!(o.status.last_successful_run_time, Some(MicroTime(at(0))), "a failed run does not move the watermark");
    assert_eq!(o.status.next_run_time, Some(Time(at(172_800))), "the next run is still due");
    assert_cond(&o, READY, Status::False, R::ExportFailed, &["AccessDenied", "rep-2", "next run"]);
    assert!(o.retrying, "the schedule retries by itself: Reconciling, not Stalled");

    // The platform's answer lost: never resubmitted, recorded, and the next run covers it.
    let mut third = first.clone();
    start_run(&mut third, "s3://b/p/exports/x/".into(), at(86_400));
    let o = intent(third, &ready(), "track-3", at(86_400));
    let e = PlatformError::Unknown { detail: "HTTP 502".into(), tracking_id: "track-3".into() };
    let o = after_submit(o.status, ready(), Err(e), &names(), Some(&s), at(86_410));
    let st = &o.status;
    assert_eq!((st.submission_started_time.clone(), st.report_id.clone()), (None, None), "no intent left to resubmit");
    assert_eq!((st.runs[0].result, st.runs[0].tracking_id.as_deref()), (RunResult::Unconfirmed, Some("track-3")));
    assert_eq!(st.last_successful_run_time, Some(MicroTime(at(0))));
    assert_cond(
        &o,
        READY,
        Status::False,
        R::RunUnconfirmed,
        &["track-3", "not submitted again", "this run's included"],
    );
    let mut st = o.status;
    assert!(matches!(step(&mut st, &annotations(&[]), None, Some(&s), at(86_420)), Step::Wait(_)));
    // The same after a restart that finds the intent without a report id.
    let o = intent(first.clone(), &ready(), "track-4", at(86_400));
    let mut st = o.status;
    assert_eq!(step(&mut st, &annotations(&[]), None, Some(&s), at(86_500)), Step::Unconfirmed);
    let o = unconfirmed(st, &names(), Some(&s), at(86_500));
    assert_eq!(o.status.runs[0].result, RunResult::Unconfirmed);
    assert_eq!(o.status.submission_started_time, None);

    // Nothing changed since the last run: a success that moves the watermark.
    let o = intent(first, &ready(), "track-5", at(86_400));
    let none = PlatformError::NoFilesWithStatus { message: "No files found with the given status".into() };
    let o = after_submit(o.status, ready(), Err(none), &names(), Some(&s), at(86_401));
    assert_eq!(o.status.runs[0].result, RunResult::NoFiles);
    assert_eq!(o.status.last_successful_run_time, Some(MicroTime(at(86_400))));
    assert_cond(&o, READY, Status::True, R::NoNewFiles, &["nothing to export"]);
}

#[test]
fn the_history_keeps_the_last_runs_newest_first() {
    let s = daily(false, 2);
    let mut status = DatasetExportStatus::default();
    for (i, start) in [0, 86_400, 172_800].into_iter().enumerate() {
        let report = format!("rep-{i}");
        status = submitted_run(status, &s, start, &report);
        status =
            after_check(status, &report, Ok(Some(ExportState::Succeeded)), &names(), Some(&s), at(start + 5)).status;
    }
    let reports: Vec<_> = status.runs.iter().map(|r| r.report_id.clone().unwrap()).collect();
    assert_eq!(reports, ["rep-2", "rep-1"]);
    assert_eq!(updated_after(&status, Some(&s)), None, "not incremental: every run exports everything");
    assert_eq!(run_folder("out/", at(0)), "out/20270115T080000Z/");
    assert_eq!(run_name("weekly", at(0)), "weekly-20270115T080000Z");
}
