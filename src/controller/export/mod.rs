//! The DatasetExport controller: wait for an Export connection that is Ready and
//! registered, submit the export once, follow it to the end.
//!
//! Submitting exactly once: the platform has no idempotency key and no way to list
//! exports, so a submission whose answer was lost cannot be found again. The driver
//! therefore writes its intent (`submissionStartedTime` and the call's tracking id) before
//! calling the platform and the report id right after. When the outcome is unknown (a
//! timeout, a lost connection, a 5xx: the platform may fail after acting) or a restart
//! finds the intent without a report id, it does not submit again: it says so
//! (SubmissionUnconfirmed, with the tracking id) and waits for a person to name the report
//! id (`s3connect.io/report-id`) or ask for one more submission (`s3connect.io/resubmit`).
//! Duplicates are impossible; nothing is forgotten.
//!
//! The driver reads the facts, asks `decide` for the step, does the one platform call it
//! needs, and writes the outcome once.

pub mod decide;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use self::decide::{ExportNames, Step};
use super::Context;
use super::driver::{self, Error, PlatformObject, Written};
use crate::api::conditions::{CONNECTION_READY, ConnectionReadyReason, NamedCond, SUBMITTED, Status};
use crate::api::connection::{S3Connection, Usage};
use crate::api::export::{
    DatasetExport, DatasetExportStatus, ExportFormat, ExportPhase, ExportReason as R, FileStatus,
};
use crate::controller::decide::cond;
use crate::platform::ExportRequest;

/// Report ids the platform gave whose status write failed, by export uid, so that a retry
/// in the same process records them instead of submitting again. Export-only state: it
/// lives here, not in the shared Context.
static UNRECORDED: LazyLock<Mutex<HashMap<String, String>>> = LazyLock::new(Mutex::default);

fn unrecorded() -> std::sync::MutexGuard<'static, HashMap<String, String>> {
    UNRECORDED.lock().unwrap_or_else(|e| e.into_inner())
}

fn format_str(f: ExportFormat) -> &'static str {
    match f {
        ExportFormat::Json => "json",
        ExportFormat::CocoJson => "coco_json",
        ExportFormat::Csv => "csv",
        ExportFormat::Png => "png",
    }
}

fn status_str(s: FileStatus) -> &'static str {
    match s {
        FileStatus::Review => "review",
        FileStatus::RAssigned => "r_assigned",
        FileStatus::ClientReview => "client_review",
        FileStatus::CrAssigned => "cr_assigned",
        FileStatus::Accepted => "accepted",
        FileStatus::Assigned => "assigned",
        FileStatus::Rejected => "rejected",
        FileStatus::ClientRejected => "client_rejected",
        FileStatus::Skipped => "skipped",
        FileStatus::RSkipped => "r_skipped",
        FileStatus::CrSkipped => "cr_skipped",
        FileStatus::Critical => "critical",
        FileStatus::RCritical => "r_critical",
        FileStatus::CrCritical => "cr_critical",
    }
}

/// Why an export cannot go ahead yet, from its S3Connection as it is; None when it can.
pub fn connection_problem(conn: Option<&S3Connection>, name: &str) -> Option<NamedCond> {
    super::platform::connection_problem(conn, name, &FOR_EXPORT)
}

const FOR_EXPORT: super::platform::Need = super::platform::Need {
    usage: Usage::Export,
    wrong_usage: ConnectionReadyReason::ConnectionNotForExport,
    why_usage: "so that its write permissions are checked",
    for_what: "exports",
    withheld: "nothing is submitted",
};

type Acted = driver::Acted<DatasetExportStatus>;

impl driver::Hooks for DatasetExport {
    /// A one-off export that ended is never looked at again (a new export is a new object).
    fn settled(&self) -> bool {
        decide::Schedule::of(&self.spec).is_none()
            && matches!(self.status.as_ref().and_then(|s| s.phase), Some(ExportPhase::Succeeded | ExportPhase::Failed))
    }

    /// The export's decision and its platform calls.
    async fn act(
        &self,
        ctx: &Context,
        namespace: &str,
        written: &mut Written<DatasetExportStatus>,
    ) -> Result<Acted, Error> {
        let export = self;
        let name = export.name_any();
        let uid = export.uid().unwrap_or_default();
        let mut status = export.status.clone().unwrap_or_default();
        let schedule = decide::Schedule::of(&export.spec);
        let now = Timestamp::now();
        let conn_name = export.spec.connection_ref.name.to_string();
        let connection = driver::read::<S3Connection>(ctx, namespace, &conn_name).await?;
        refresh(&mut status, export, schedule.as_ref(), connection.as_ref(), &uid);
        // The project: given, or an AnnotationProject's once it is Ready.
        let project = super::platform::project_id_of(
            ctx,
            namespace,
            export.spec.project_id.as_deref(),
            export.spec.project_ref.as_ref(),
            CONNECTION_READY,
            (R::ProjectNotFound.as_str(), R::ProjectNotReady.as_str()),
        )
        .await
        .map_err(|(what, source)| Error::Read { what, source })?;
        let (project_id, project_problem) = match project {
            Ok(id) => (id, None),
            Err(c) => (String::new(), Some(c)),
        };
        let names = ExportNames {
            name: export.spec.name.as_deref().unwrap_or(&name),
            project_id: &project_id,
            statuses: export.spec.statuses.iter().map(|s| status_str(*s)).collect(),
        };
        let waits_for_project = project_problem.is_some();
        let problem = connection_problem(connection.as_ref(), &conn_name).or(project_problem);
        let run = Run {
            ctx,
            export,
            namespace,
            uid: &uid,
            names: &names,
            schedule: schedule.as_ref(),
            project_id: &project_id,
            now,
        };
        let outcome = match decide::step(&mut status, export.annotations(), problem, schedule.as_ref(), now) {
            Step::Finished => return Ok(Acted::Idle(Action::await_change())),
            Step::Wait(_) => match &schedule {
                Some(s) => decide::between_runs(status, s, &names, now),
                None => return Ok(Acted::Idle(Action::await_change())),
            },
            // A project being made is looked at again soon (no watch brings the export back).
            Step::Blocked(problem) if waits_for_project => {
                let mut outcome = decide::blocked(status, problem);
                outcome.next = super::status::Next::After(std::time::Duration::from_secs(5));
                outcome.retrying = true;
                outcome
            }
            Step::Blocked(problem) => decide::blocked(status, problem),
            Step::Unconfirmed => decide::unconfirmed(status, &names, schedule.as_ref(), now),
            Step::Follow(report_id) => follow(&run, connection.as_ref(), status, &report_id).await?,
            Step::Submit => {
                let conn = connection.as_ref().expect("a connection without problems exists");
                submit(&run, conn, status, written).await?
            }
        };
        Ok(Acted::Outcome(outcome))
    }
}

/// The status before this reconcile decides anything: the generation and request seen,
/// the destination once the connection names its bucket, and a report id given in this
/// process whose status write failed.
fn refresh(
    status: &mut DatasetExportStatus,
    export: &DatasetExport,
    schedule: Option<&decide::Schedule>,
    connection: Option<&S3Connection>,
    uid: &str,
) {
    status.observed_generation = export.metadata.generation;
    status.last_handled_reconcile_at = crate::api::annotations::requested_at(export.annotations());
    // A scheduled run's destination is its own folder, set when it is submitted.
    if status.destination.is_none()
        && schedule.is_none()
        && let Some((Some(b), Some(p))) =
            connection.and_then(|c| c.status.as_ref()).map(|s| (s.bucket.clone(), s.prefix.clone()))
    {
        status.destination = Some(format!("s3://{b}/{p}{}", folder(&export.spec.folder)));
    }
    // A report id the platform gave in this process whose status write failed.
    if status.report_id.is_none()
        && let Some(id) = unrecorded().get(uid).cloned()
    {
        status.report_id = Some(id);
        status.submission_started_time = None;
        status.submission_tracking_id = None;
    }
}

/// What the platform steps of one reconcile work from.
struct Run<'a> {
    ctx: &'a Context,
    export: &'a DatasetExport,
    namespace: &'a str,
    uid: &'a str,
    names: &'a ExportNames<'a>,
    schedule: Option<&'a decide::Schedule>,
    project_id: &'a str,
    now: Timestamp,
}

/// Follows a submitted export: its state as the platform reports it.
async fn follow(
    run: &Run<'_>,
    connection: Option<&S3Connection>,
    status: DatasetExportStatus,
    report_id: &str,
) -> Result<decide::Outcome, Error> {
    Ok(match connection {
        None => decide::connection_gone(status, report_id),
        Some(conn) => match platform_credentials(run.ctx, conn, run.namespace).await? {
            Err(c) => decide::no_credentials(status, Some(submitted_as(report_id)), c),
            Ok(creds) => {
                let state = run.ctx.platform.export_status(&creds, run.project_id, report_id).await;
                decide::after_check(status, report_id, state, run.names, run.schedule, Timestamp::now())
            }
        },
    })
}

/// Submits the export (or a scheduled run of it): the intent written first, then the one
/// platform call, then what it answered.
async fn submit(
    run: &Run<'_>,
    conn: &S3Connection,
    mut status: DatasetExportStatus,
    written: &mut driver::Written<DatasetExportStatus>,
) -> Result<decide::Outcome, Error> {
    let (ctx, export, names, now) = (run.ctx, run.export, run.names, run.now);
    let creds = match platform_credentials(ctx, conn, run.namespace).await? {
        Err(c) => return Ok(decide::no_credentials(status, None, c)),
        Ok(creds) => creds,
    };
    let conn_name = export.spec.connection_ref.name.to_string();
    let conn_status = conn.status.clone().unwrap_or_default();
    let connection_id = conn_status.platform_connection_id.clone().unwrap_or_default();
    let ready = cond(
        CONNECTION_READY,
        Status::True,
        ConnectionReadyReason::ConnectionReady,
        format!("S3Connection {conn_name:?} is ready and registered (platform connection {connection_id})."),
    );
    // A scheduled run: its own folder and name, from its start.
    let (run_folder, run_name) = match run.schedule {
        Some(_) => (decide::run_folder(&export.spec.folder, now), Some(decide::run_name(names.name, now))),
        None => (folder(&export.spec.folder), None),
    };
    let bucket = conn_status.bucket.clone().unwrap_or_default();
    let prefix = conn_status.prefix.clone().unwrap_or_default();
    if run.schedule.is_some() {
        decide::start_run(&mut status, format!("s3://{bucket}/{prefix}{run_folder}"), now);
    }
    let updated_after = decide::updated_after(&status, run.schedule);
    // The intent, durably, before the platform hears of the export.
    let tracking_id = crate::platform::uuid4();
    let intent = decide::intent(status, &ready, &tracking_id, now);
    // Preconditioned on the version this decision was made from: if the cache was behind
    // (an intent or a report id it has not seen), the API server refuses it and the
    // platform is never called.
    driver::write(ctx, export, written, &intent).await?;
    let folder_path = format!("{bucket}/{prefix}{run_folder}");
    let request = ExportRequest {
        name: run_name.as_deref().unwrap_or(names.name),
        updated_after,
        description: export.spec.description.as_deref().unwrap_or("Exported by s3connect"),
        format: format_str(export.spec.format),
        statuses: names.statuses.clone(),
        connection_id: &connection_id,
        folder_path,
    };
    let result = ctx.platform.create_export(&creds, run.project_id, &request, &tracking_id).await;
    #[cfg(debug_assertions)]
    if export.annotations().contains_key(crate::api::annotations::DEBUG_PANIC_AFTER_SUBMIT_ANNOTATION) {
        panic!("{} is set", crate::api::annotations::DEBUG_PANIC_AFTER_SUBMIT_ANNOTATION);
    }
    if let Ok(id) = &result {
        unrecorded().insert(run.uid.to_owned(), id.clone());
    }
    Ok(decide::after_submit(intent.status, ready, result, names, run.schedule, Timestamp::now()))
}

fn submitted_as(report_id: &str) -> NamedCond {
    cond(SUBMITTED, Status::True, R::Submitted, format!("The platform accepted the export as report {report_id}."))
}

fn folder(f: &str) -> String {
    if f.ends_with('/') { f.to_owned() } else { format!("{f}/") }
}

async fn platform_credentials(
    ctx: &Context,
    conn: &S3Connection,
    namespace: &str,
) -> Result<Result<crate::platform::Credentials, NamedCond>, Error> {
    super::platform::credentials_of(ctx, conn, namespace, CONNECTION_READY)
        .await
        .map_err(|(what, source)| Error::Read { what, source })
}

impl PlatformObject for DatasetExport {
    type Status = DatasetExportStatus;
    type Related = S3Connection;
    const KIND: &'static str = "DatasetExport";
    const TRIGGERS: &'static [&'static str] = &[
        crate::api::annotations::REPORT_ID_ANNOTATION,
        crate::api::annotations::RESUBMIT_ANNOTATION,
        crate::api::annotations::RUN_NOW_ANNOTATION,
    ];

    fn status(&self) -> Option<&DatasetExportStatus> {
        self.status.as_ref()
    }

    /// Its connection, while it has runs to make.
    fn waits_for(&self, connection: &str) -> bool {
        *self.spec.connection_ref.name == *connection
            && (self.spec.schedule.is_some()
                || !matches!(
                    self.status.as_ref().and_then(|s| s.phase),
                    Some(ExportPhase::Succeeded | ExportPhase::Failed)
                ))
    }

    fn phase(status: &DatasetExportStatus) -> Option<String> {
        status.phase.map(|p| format!("{p:?}"))
    }

    fn platform_id(status: &DatasetExportStatus) -> Option<&str> {
        status.report_id.as_deref()
    }

    fn phase_event(status: &DatasetExportStatus, ready: &NamedCond) -> (bool, String) {
        let phase = Self::phase(status).unwrap_or_default();
        let note = match &status.report_id {
            Some(id) => format!("Export {phase} (report {id})."),
            None => format!("Export {phase}: {}", ready.message),
        };
        (status.phase == Some(ExportPhase::Failed), note)
    }

    /// A report id is forgotten from memory once it is recorded.
    fn written(&self, status: &DatasetExportStatus) {
        if status.report_id.is_some() {
            unrecorded().remove(&self.uid().unwrap_or_default());
        }
    }
}

pub async fn run(ctx: Arc<Context>) {
    driver::run::<DatasetExport>(ctx).await;
}

#[cfg(test)]
mod status_names {
    use super::*;

    /// The name sent to the platform is the one the CRD accepts, for every status.
    #[test]
    fn every_status_is_sent_as_the_crd_spells_it() {
        let all = [
            "assigned",
            "review",
            "r_assigned",
            "client_review",
            "cr_assigned",
            "accepted",
            "rejected",
            "client_rejected",
            "skipped",
            "r_skipped",
            "cr_skipped",
            "critical",
            "r_critical",
            "cr_critical",
        ];
        for name in all {
            let s: FileStatus = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(status_str(s), name);
        }
    }
}
