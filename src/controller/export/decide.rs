//! The DatasetExport decision: facts in (its status, annotations, its connection, what
//! the platform answered), the next step, the new status and conditions out. Pure, so
//! that every path of "exactly once" is a table test.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::annotations::{REPORT_ID_ANNOTATION, RESUBMIT_ANNOTATION, RUN_NOW_ANNOTATION};
use crate::api::conditions::{COMPLETE, CONNECTION_READY, ConnectionReadyReason, NamedCond, READY, SUBMITTED, Status};
use crate::api::export::{
    DatasetExportSpec, DatasetExportStatus, ExportPhase, ExportReason as R, ExportRun, RunResult,
};
use crate::controller::decide::{RETRY_CAP, cond, platform_failure};
use crate::controller::status::Next;
use crate::platform::{ExportState, PlatformError};

/// What the driver does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The export has finished: nothing to do.
    Finished,
    /// Its connection cannot be used yet: show why.
    Blocked(NamedCond),
    /// Submit it: record the intent, call the platform once, record the outcome.
    Submit,
    /// Follow the report.
    Follow(String),
    /// An earlier submission's outcome is unknown and no one has said what to do.
    Unconfirmed,
    /// A scheduled export between runs: the next one is due after this long.
    Wait(std::time::Duration),
}

/// A recurring export's schedule, as `decide` needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// As the spec gives it (`24h`), for messages.
    pub every: String,
    pub interval: std::time::Duration,
    pub incremental: bool,
    /// How many runs the status lists.
    pub keep: usize,
}

impl Schedule {
    pub fn of(spec: &DatasetExportSpec) -> Option<Schedule> {
        let every = spec.schedule.clone()?;
        Some(Schedule {
            interval: crate::timing::parse_interval(&every),
            every,
            incremental: spec.incremental,
            keep: spec.runs_history_limit.unwrap_or(10).clamp(1, 50) as usize,
        })
    }
}

/// The folder a run writes to, under the export's: `<folder>/<run start, UTC>/`, for
/// example `exports/20261204T060000Z/`.
pub fn run_folder(folder: &str, start: Timestamp) -> String {
    let folder = folder.trim_end_matches('/');
    format!("{folder}/{}/", start.strftime("%Y%m%dT%H%M%SZ"))
}

/// A run's name on the platform: the export's, with the run's start.
pub fn run_name(name: &str, start: Timestamp) -> String {
    format!("{name}-{}", start.strftime("%Y%m%dT%H%M%SZ"))
}

/// A scheduled run about to be submitted: its start (to the microsecond, for the
/// watermark) and its folder, recorded with the intent.
pub fn start_run(status: &mut DatasetExportStatus, destination: String, now: Timestamp) {
    status.run_started_time = Some(MicroTime(now));
    status.destination = Some(destination);
}

/// When the next run is due: an interval after the last run's start (so that a new
/// interval in the spec counts at once); None before the first run.
pub fn next_run(status: &DatasetExportStatus, s: &Schedule) -> Option<Timestamp> {
    status.runs.first().map(|r| r.start_time.0.checked_add(s.interval).unwrap_or(r.start_time.0))
}

/// With `incremental`: the files updated after this time (Unix milliseconds) are exported.
pub fn updated_after(status: &DatasetExportStatus, schedule: Option<&Schedule>) -> Option<i64> {
    schedule.filter(|s| s.incremental)?;
    status.last_successful_run_time.as_ref().map(|t| t.0.as_millisecond())
}

/// The step for an export with `status` and `annotations`; `problem` is why its
/// connection cannot be used (None: it can). Resolutions a person asked for (a report id
/// to follow, a new resubmit value) are applied to `status`.
///
/// With a schedule, a finished run is not the end: the next is submitted when it is due
/// or when `s3connect.io/run-now` has a new value (taken only when the run can start).
pub fn step(
    status: &mut DatasetExportStatus,
    annotations: &BTreeMap<String, String>,
    problem: Option<NamedCond>,
    schedule: Option<&Schedule>,
    now: Timestamp,
) -> Step {
    if schedule.is_none() && matches!(status.phase, Some(ExportPhase::Succeeded | ExportPhase::Failed)) {
        return Step::Finished;
    }
    if status.report_id.is_none() && status.submission_started_time.is_some() {
        if let Some(id) = annotations.get(REPORT_ID_ANNOTATION).filter(|v| !v.is_empty()) {
            status.report_id = Some(id.clone());
            clear_intent(status);
            status.phase = Some(ExportPhase::Submitted);
        } else if let Some(value) = annotations.get(RESUBMIT_ANNOTATION).filter(|v| !v.is_empty())
            && status.last_handled_resubmit.as_ref() != Some(value)
        {
            // One more submission per new value: an unknown outcome again does not loop.
            status.last_handled_resubmit = Some(value.clone());
            clear_intent(status);
        } else {
            return Step::Unconfirmed;
        }
    }
    if let Some(id) = &status.report_id {
        return Step::Follow(id.clone());
    }
    if let Some(s) = schedule {
        let asked = annotations
            .get(RUN_NOW_ANNOTATION)
            .filter(|v| !v.is_empty() && status.last_handled_run_now.as_ref() != Some(*v))
            .cloned();
        let next = next_run(status, s);
        match (asked, next) {
            (None, Some(next)) if next > now => {
                let wait = now.duration_until(next).unsigned_abs();
                return Step::Wait(wait);
            }
            (Some(value), _) if problem.is_none() => status.last_handled_run_now = Some(value),
            _ => {}
        }
    }
    match problem {
        Some(cond) => Step::Blocked(cond),
        None => Step::Submit,
    }
}

fn clear_intent(status: &mut DatasetExportStatus) {
    status.submission_started_time = None;
    status.submission_tracking_id = None;
}

/// What a step ends with.
pub type Outcome = crate::controller::driver::Outcome<DatasetExportStatus>;

/// The outcome with Ready by the driver's rule: True once complete, else the first failing
/// condition's (Unknown while the platform is working on it).
fn outcome(status: DatasetExportStatus, conds: Vec<NamedCond>, retrying: bool, next: Next) -> Outcome {
    let done = cond(READY, Status::True, R::ExportSucceeded, "The export has completed.");
    Outcome::derived(status, conds, done, retrying, next)
}

/// The connection cannot be used: nothing is submitted.
pub fn blocked(mut status: DatasetExportStatus, problem: NamedCond) -> Outcome {
    status.phase = Some(ExportPhase::Pending);
    // The S3Connection watch brings the export back when the connection changes; the
    // requeue is only a safety net.
    outcome(status, vec![problem], false, Next::After(std::time::Duration::from_secs(300)))
}

/// The intent, as written before the platform hears of the export.
pub fn intent(mut status: DatasetExportStatus, ready: &NamedCond, tracking_id: &str, now: Timestamp) -> Outcome {
    status.phase = Some(ExportPhase::Pending);
    status.submission_started_time = Some(Time(now));
    status.submission_tracking_id = Some(tracking_id.to_owned());
    let submitting = cond(SUBMITTED, Status::Unknown, R::Submitting, "Submitting the export.");
    outcome(status, vec![ready.clone(), submitting], true, Next::AwaitChange)
}

/// After the one submission call.
pub fn after_submit(
    mut status: DatasetExportStatus,
    ready: NamedCond,
    result: Result<String, PlatformError>,
    export: &ExportNames<'_>,
    schedule: Option<&Schedule>,
    now: Timestamp,
) -> Outcome {
    let tracking_id = status.submission_tracking_id.clone().unwrap_or_default();
    // A run of a schedule that ends at the submission: into the history, and on to the next.
    if let Some(s) = schedule
        && let Some((result, message)) = run_ended(&result)
    {
        return between_runs(roll(status, result, Some(message), s, now), s, export, now);
    }
    match result {
        Ok(report_id) => {
            clear_intent(&mut status);
            status.report_id = Some(report_id.clone());
            status.phase = Some(ExportPhase::Submitted);
            status.start_time = Some(Time(now));
            let accepted = submitted(&report_id);
            let running = cond(COMPLETE, Status::Unknown, R::ExportRunning, "The export is running.");
            outcome(status, vec![ready, accepted, running], true, Next::After(std::time::Duration::from_secs(1)))
        }
        // The platform may have acted: never submitted again without a person.
        Err(PlatformError::Unknown { detail, tracking_id: trace }) => {
            status.phase = Some(ExportPhase::Pending);
            let ids = trace.or_recorded(tracking_id);
            let c = unconfirmed_cond(export, &ids, &format!("the platform's answer was lost ({detail})"));
            outcome(status, vec![ready, c], false, Next::AwaitChange)
        }
        Err(PlatformError::NoFilesWithStatus { message }) => {
            // Refused: nothing was created, so the intent goes and a later try is no duplicate.
            clear_intent(&mut status);
            status.phase = Some(ExportPhase::Pending);
            let message = format!(
                "No files of project {} are in the statuses {} (\"{message}\"): move files to review, client_review or accepted on the platform (they must be annotated and reviewed first), or re-create this DatasetExport with other statuses. Checking again with backoff.",
                export.project_id,
                export.statuses.join(", ")
            );
            let none = cond(COMPLETE, Status::False, R::NoFilesWithStatus, message);
            let nothing =
                cond(SUBMITTED, Status::Unknown, R::NoFilesWithStatus, "The platform created no export: see Complete.");
            outcome(status, vec![ready, nothing, none], false, Next::Retry { cap: RETRY_CAP })
        }
        Err(PlatformError::Rejected { message, tracking_id: trace, .. }) => {
            clear_intent(&mut status);
            status.phase = Some(ExportPhase::Failed);
            let message = format!(
                "The platform refused the export: {message} (tracking id {trace}). Re-create the DatasetExport with what it asks for."
            );
            let refused = cond(SUBMITTED, Status::False, R::PlatformRejected, message);
            outcome(status, vec![ready, refused], false, Next::AwaitChange)
        }
        // Never reached the platform, or refused before acting (429): nothing was created.
        Err(e) => {
            clear_intent(&mut status);
            status.phase = Some(ExportPhase::Pending);
            let failed = platform_failure(SUBMITTED, "submitting the export", &e);
            outcome(status, vec![ready, failed], true, Next::Retry { cap: RETRY_CAP })
        }
    }
}

/// How a scheduled run ends at its submission, if it does: an unknown outcome, no files,
/// or a refusal. Any other answer leaves the run going (or retried).
fn run_ended(result: &Result<String, PlatformError>) -> Option<(RunResult, String)> {
    match result {
        Err(PlatformError::Unknown { detail, .. }) => Some((RunResult::Unconfirmed, detail.clone())),
        Err(PlatformError::NoFilesWithStatus { message }) => Some((RunResult::NoFiles, message.clone())),
        Err(PlatformError::Rejected { message, .. }) => Some((RunResult::Failed, message.clone())),
        _ => None,
    }
}

/// Names in an export's messages.
pub struct ExportNames<'a> {
    pub name: &'a str,
    pub project_id: &'a str,
    pub statuses: Vec<&'a str>,
}

fn unconfirmed_cond(export: &ExportNames<'_>, tracking_id: &str, why: &str) -> NamedCond {
    let message = format!(
        "The submission of this export may or may not have reached the platform ({why}; tracking id {tracking_id}), so to never export twice it was not submitted again. Look for export {:?} of project {} on the platform (Labellerr support can find it by the tracking id): annotate this object {REPORT_ID_ANNOTATION}=<its report id> to follow it, or {RESUBMIT_ANNOTATION}=<any new value> if it is not there.",
        export.name, export.project_id
    );
    cond(SUBMITTED, Status::False, R::SubmissionUnconfirmed, message)
}

/// An intent without a report id, found at the start of a reconcile: the operator stopped
/// mid-submission, or an earlier answer was lost.
pub fn unconfirmed(
    mut status: DatasetExportStatus,
    export: &ExportNames<'_>,
    schedule: Option<&Schedule>,
    now: Timestamp,
) -> Outcome {
    if let Some(s) = schedule {
        // Never resubmitted; the schedule goes on.
        let why = "the operator stopped before recording the outcome".to_owned();
        return between_runs(roll(status, RunResult::Unconfirmed, Some(why), s, now), s, export, now);
    }
    status.phase = Some(ExportPhase::Pending);
    let started = status.submission_started_time.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
    let tracking_id = status.submission_tracking_id.clone().unwrap_or_else(|| "not recorded".into());
    let c = unconfirmed_cond(export, &tracking_id, &format!("submitted at {started}, outcome not recorded"));
    outcome(status, vec![c], false, Next::AwaitChange)
}

/// After asking the platform how report `report_id` is doing.
pub fn after_check(
    mut status: DatasetExportStatus,
    report_id: &str,
    state: Result<Option<ExportState>, PlatformError>,
    export: &ExportNames<'_>,
    schedule: Option<&Schedule>,
    now: Timestamp,
) -> Outcome {
    if let Some(s) = schedule {
        let ended = match &state {
            Ok(Some(ExportState::Succeeded)) => Some((RunResult::Succeeded, None)),
            Ok(Some(ExportState::Failed(message))) => Some((RunResult::Failed, Some(message.clone()))),
            _ => None,
        };
        if let Some((result, message)) = ended {
            return between_runs(roll(status, result, message, s, now), s, export, now);
        }
    }
    let accepted = submitted(report_id);
    let (complete, retrying, next) = match state {
        Ok(Some(ExportState::Succeeded)) => {
            status.phase = Some(ExportPhase::Succeeded);
            status.completion_time = Some(Time(now));
            let where_ = status.destination.clone().unwrap_or_else(|| "its destination".into());
            (
                cond(COMPLETE, Status::True, R::ExportSucceeded, format!("The export is in {where_}.")),
                false,
                Next::Success(None),
            )
        }
        Ok(Some(ExportState::Failed(message))) => {
            status.phase = Some(ExportPhase::Failed);
            status.completion_time = Some(Time(now));
            let message = format!(
                "The platform reports report {report_id} failed: {message}. Check the S3Connection's write permissions, then re-create the DatasetExport."
            );
            let failed = cond(COMPLETE, Status::False, R::ExportFailed, message);
            (failed, false, Next::AwaitChange)
        }
        Ok(Some(ExportState::Running(state))) => {
            status.phase = Some(ExportPhase::Running);
            let message = format!("The platform is running the export ({state}).");
            let running = cond(COMPLETE, Status::Unknown, R::ExportRunning, message);
            (running, true, Next::Poll)
        }
        Ok(None) => {
            let message = format!("The platform does not know report {report_id} (yet); checking again with backoff.");
            let unknown = cond(COMPLETE, Status::Unknown, R::ReportNotFound, message);
            (unknown, true, Next::Poll)
        }
        Err(e) => (platform_failure(COMPLETE, "reading the export's status", &e), true, Next::Poll),
    };
    outcome(status, vec![accepted, complete], retrying, next)
}

/// The run in progress ends with `result`: it goes to the front of the history (the
/// oldest beyond `keep` drop off), the watermark moves if it provably covered everything
/// up to its start, and the next run is due an interval after its start (at once if that
/// has passed). The destination stays the last run's.
pub fn roll(
    mut status: DatasetExportStatus,
    result: RunResult,
    message: Option<String>,
    s: &Schedule,
    now: Timestamp,
) -> DatasetExportStatus {
    let start = status
        .run_started_time
        .take()
        .or_else(|| status.submission_started_time.clone().map(|t| MicroTime(t.0)))
        .unwrap_or(MicroTime(now));
    status.start_time = None;
    let run = ExportRun {
        start_time: start.clone(),
        completion_time: (result != RunResult::Unconfirmed).then_some(Time(now)),
        result,
        report_id: status.report_id.take(),
        tracking_id: status.submission_tracking_id.take(),
        destination: status.destination.clone(),
        updated_after: status.last_successful_run_time.clone().filter(|_| s.incremental),
        message,
    };
    // An incremental run that found nothing changed covered everything up to its start too.
    if result == RunResult::Succeeded || (result == RunResult::NoFiles && s.incremental) {
        status.last_successful_run_time = Some(start.clone());
    }
    status.runs.insert(0, run);
    status.runs.truncate(s.keep);
    status.submission_started_time = None;
    status.completion_time = None;
    status.phase = Some(match result {
        RunResult::Succeeded => ExportPhase::Succeeded,
        RunResult::NoFiles if s.incremental => ExportPhase::Succeeded,
        _ => ExportPhase::Failed,
    });
    status
}

/// A scheduled export between runs: its conditions tell the last run's result, and when
/// the next one starts.
pub fn between_runs(
    mut status: DatasetExportStatus,
    s: &Schedule,
    export: &ExportNames<'_>,
    now: Timestamp,
) -> Outcome {
    // Due an interval after the last run's start, or at once if that has passed.
    let next_at = next_run(&status, s).map_or(now, |t| if t > now { t } else { now });
    status.next_run_time = Some(Time(next_at));
    let wait = if next_at > now { now.duration_until(next_at).unsigned_abs() } else { std::time::Duration::ZERO };
    let next = format!("the next run starts at {next_at} (every {})", s.every);
    let Some(run) = status.runs.first().cloned() else {
        let c = cond(SUBMITTED, Status::Unknown, R::Scheduled, format!("Scheduled: {next}."));
        return outcome(status, vec![c], true, Next::After(wait));
    };
    let (conds, retrying) = last_run(&run, s, export, &next);
    let done = NamedCond { type_: READY, ..conds.last().cloned().unwrap_or_else(|| run_accepted(&run)) };
    Outcome::derived(status, conds, done, retrying, Next::After(wait))
}

/// The conditions that tell how the last run of a scheduled export ended (`next` says when
/// the next one starts), and whether it is retrying.
fn last_run(run: &ExportRun, s: &Schedule, export: &ExportNames<'_>, next: &str) -> (Vec<NamedCond>, bool) {
    let started = run.start_time.0;
    let report = run.report_id.as_deref().map(|r| format!(" (report {r})")).unwrap_or_default();
    let said = run.message.clone().unwrap_or_default();
    let accepted = || run_accepted(run);
    match run.result {
        RunResult::Succeeded => {
            let where_ = run.destination.clone().unwrap_or_else(|| "its destination".into());
            let message = format!("The run of {started} is in {where_}; {next}.");
            let c = cond(COMPLETE, Status::True, R::ExportSucceeded, message);
            (vec![accepted(), c], false)
        }
        RunResult::NoFiles if s.incremental => {
            let since = run.updated_after.as_ref().map(|t| t.0.to_string()).unwrap_or_else(|| "the start".into());
            let message = format!(
                "No file in the statuses {} changed since {since}: the run of {started} had nothing to export; {next}.",
                export.statuses.join(", ")
            );
            let c = cond(COMPLETE, Status::True, R::NoNewFiles, message);
            (vec![c], false)
        }
        RunResult::NoFiles => {
            let message = format!(
                "No files of project {} were in the statuses {} for the run of {started} (\"{said}\"): move files to review, client_review or accepted on the platform, or re-create this DatasetExport with other statuses; {next}.",
                export.project_id,
                export.statuses.join(", ")
            );
            let c = cond(COMPLETE, Status::False, R::NoFilesWithStatus, message);
            (vec![c], true)
        }
        RunResult::Failed => {
            let message = format!(
                "The run of {started}{report} failed: {said}. Check the S3Connection's write permissions and the export's settings; {next} and tries again."
            );
            let c = cond(COMPLETE, Status::False, R::ExportFailed, message);
            (vec![c], true)
        }
        RunResult::Unconfirmed => {
            let tracking = run.tracking_id.clone().unwrap_or_else(|| "not recorded".into());
            let covered = if s.incremental {
                ", and exports every file updated since the last successful run, this run's included"
            } else {
                ""
            };
            let message = format!(
                "The run of {started} may or may not have reached the platform ({said}; tracking id {tracking}), so to never export twice it was not submitted again: look for export {:?} of project {} on the platform; {next}{covered}.",
                run_name(export.name, started),
                export.project_id
            );
            let c = cond(SUBMITTED, Status::False, R::RunUnconfirmed, message);
            (vec![c], true)
        }
    }
}

/// The platform took the run as a report.
fn run_accepted(run: &ExportRun) -> NamedCond {
    let started = run.start_time.0;
    let message =
        format!("The platform accepted the run of {started} as report {}.", run.report_id.clone().unwrap_or_default());
    cond(SUBMITTED, Status::True, R::Submitted, message)
}

/// Submitted: the platform took the export as `report_id`.
fn submitted(report_id: &str) -> NamedCond {
    let message = format!("The platform accepted the export as report {report_id}.");
    cond(SUBMITTED, Status::True, R::Submitted, message)
}

/// The export's connection is gone while a report is being followed.
pub fn connection_gone(status: DatasetExportStatus, report_id: &str) -> Outcome {
    let accepted = submitted(report_id);
    let message = "Its S3Connection is gone, and with it the platform credentials: re-create the S3Connection to follow the export.";
    let c = cond(COMPLETE, Status::Unknown, ConnectionReadyReason::ConnectionNotFound, message);
    // Not the platform at work: a person must bring the connection back (Ready False).
    Outcome::stalled_on(status, vec![accepted], c, Next::After(std::time::Duration::from_secs(60)))
}

/// The platform credentials cannot be read (a missing Secret or key): `c` says which.
pub fn no_credentials(status: DatasetExportStatus, before: Option<NamedCond>, c: NamedCond) -> Outcome {
    let conds = before.into_iter().chain([NamedCond { type_: CONNECTION_READY, ..c }]).collect();
    outcome(status, conds, false, Next::AwaitChange)
}

/// A platform failure as a condition of `type_`.
#[cfg(test)]
mod tests;
