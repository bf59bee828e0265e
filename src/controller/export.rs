//! The DatasetExport controller: wait for an Export connection that is Ready and
//! registered, submit the export once, follow it to the end.
//!
//! Submitting exactly once: the platform has no idempotency key and no way to list
//! exports, so a submission whose answer was lost cannot be found again. The controller
//! therefore writes its intent (`submissionStartedTime`) before calling the platform and
//! the report id right after. A restart that finds the intent without a report id does
//! not submit again: it says so (SubmissionUnconfirmed) and waits for a person to either
//! name the report id (`s3connect.io/report-id`) or ask for a new submission
//! (`s3connect.io/resubmit: "true"`). Duplicates are impossible; nothing is forgotten.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::connection::register;
use super::{Context, FIELD_MANAGER};
use crate::api::conditions::{self, NamedCond, READY, RECONCILING, STALLED, Status};
use crate::api::connection::{S3Connection, Usage};
use crate::api::export::{DatasetExport, DatasetExportStatus, ExportFormat, ExportPhase, FileStatus};
use crate::platform::{ExportRequest, ExportState, PlatformError};

pub const REPORT_ID_ANNOTATION: &str = "s3connect.io/report-id";
pub const RESUBMIT_ANNOTATION: &str = "s3connect.io/resubmit";

pub const CONNECTION_READY: &str = "ConnectionReady";
pub const SUBMITTED: &str = "Submitted";
pub const COMPLETE: &str = "Complete";

/// Reasons of the export's own conditions (its ConnectionReady passes on the connection's).
pub mod reasons {
    pub const CONNECTION_NOT_FOUND: &str = "ConnectionNotFound";
    pub const CONNECTION_NOT_FOR_EXPORT: &str = "ConnectionNotForExport";
    pub const CONNECTION_NOT_REGISTERED: &str = "ConnectionNotRegistered";
    pub const CONNECTION_READY: &str = "ConnectionReady";
    pub const SUBMITTING: &str = "Submitting";
    pub const SUBMITTED: &str = "Submitted";
    pub const SUBMISSION_UNCONFIRMED: &str = "SubmissionUnconfirmed";
    pub const NO_FILES_WITH_STATUS: &str = "NoFilesWithStatus";
    pub const RUNNING: &str = "ExportRunning";
    pub const SUCCEEDED: &str = "ExportSucceeded";
    pub const FAILED: &str = "ExportFailed";
    pub const REPORT_NOT_FOUND: &str = "ReportNotFound";
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("DatasetExport {0} has no namespace")]
    NoNamespace(String),
    #[error("reading {what} failed: {source}")]
    Read { what: String, source: kube::Error },
    #[error("writing the status of DatasetExport {name} failed: {source}")]
    WriteStatus { name: String, source: kube::Error },
}

/// Report ids the platform gave but whose status write failed, so that a retry in the
/// same process records them instead of submitting again.
#[derive(Default)]
pub struct Unrecorded(Mutex<HashMap<String, String>>);

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
    }
}

fn cond(type_: &'static str, status: Status, reason: &str, message: impl Into<String>) -> NamedCond {
    NamedCond::new(type_, status, reason, message)
}

/// A platform failure as a condition of `type_`.
fn platform_failure(type_: &'static str, doing: &str, e: &PlatformError) -> NamedCond {
    NamedCond { type_, ..register::failure(doing, e).into() }
}

/// Why the export cannot go ahead yet, from its S3Connection as it is; None when it can.
pub fn connection_problem(conn: Option<&S3Connection>, name: &str) -> Option<NamedCond> {
    let not = |reason: &str, message: String| Some(cond(CONNECTION_READY, Status::False, reason, message));
    let Some(conn) = conn else {
        return not(
            reasons::CONNECTION_NOT_FOUND,
            format!(
                "S3Connection {name:?} was not found in this namespace: create it, or fix spec.connectionRef.name."
            ),
        );
    };
    if !conn.spec.usage.contains(&Usage::Export) {
        return not(
            reasons::CONNECTION_NOT_FOR_EXPORT,
            format!(
                "S3Connection {name:?} does not have Export usage: add Export to its spec.usage so that its write permissions are checked."
            ),
        );
    }
    if conn.spec.platform.is_none() {
        return not(
            reasons::CONNECTION_NOT_REGISTERED,
            format!(
                "S3Connection {name:?} has no spec.platform: set it so that the connection is registered with the platform, which exports need."
            ),
        );
    }
    let status = conn.status.as_ref();
    match status.and_then(|s| s.conditions.iter().find(|c| c.type_ == READY)) {
        Some(r) if r.status == "True" && status.is_some_and(|s| s.platform_connection_id.is_some()) => None,
        Some(r) if r.status == "True" => not(
            reasons::CONNECTION_NOT_REGISTERED,
            format!("S3Connection {name:?} is not registered with the platform yet."),
        ),
        // The connection's own reason: the export names what to fix there.
        Some(r) => {
            not(&r.reason, format!("S3Connection {name:?} is not ready, so nothing is submitted: {}", r.message))
        }
        None => not(reasons::CONNECTION_NOT_FOUND, format!("S3Connection {name:?} has not been validated yet.")),
    }
}

struct Outcome {
    status: DatasetExportStatus,
    conds: Vec<NamedCond>,
    action: Action,
}

pub async fn reconcile(export: Arc<DatasetExport>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = export.name_any();
    let namespace = export.namespace().ok_or_else(|| Error::NoNamespace(name.clone()))?;
    let uid = export.uid().unwrap_or_default();
    let old = export.status.clone().unwrap_or_default();
    if matches!(old.phase, Some(ExportPhase::Succeeded | ExportPhase::Failed)) {
        return Ok(Action::await_change());
    }
    let conn_name = export.spec.connection_ref.name.to_string();
    let connection = Api::<S3Connection>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&conn_name)
        .await
        .map_err(|source| Error::Read { what: format!("S3Connection {namespace}/{conn_name}"), source })?;
    let mut status = old.clone();
    status.observed_generation = export.metadata.generation;
    if status.destination.is_none()
        && let Some((Some(b), Some(p))) =
            connection.as_ref().and_then(|c| c.status.as_ref()).map(|s| (s.bucket.clone(), s.prefix.clone()))
    {
        status.destination = Some(format!("s3://{b}/{p}{}", folder(&export.spec.folder)));
    }
    // A report id the platform gave in this process whose status write failed.
    if status.report_id.is_none()
        && let Some(id) = ctx.unrecorded.0.lock().expect("not poisoned").get(&uid).cloned()
    {
        status.report_id = Some(id);
        status.submission_started_time = None;
    }

    let started = std::time::Instant::now();
    // Platform calls take a slot like validations do, so that a hung platform in one
    // namespace cannot hold the others' exports or connections back.
    let Some(_slot) = ctx.slots.enter(&namespace) else {
        return Ok(Action::requeue(super::slots::Slots::retry_delay()));
    };
    let outcome = ctx
        .slots
        .run(async {
            if status.report_id.is_some() {
                follow(&ctx, &export, connection.as_ref(), status).await
            } else if status.submission_started_time.is_some() {
                Ok(unconfirmed(&export, status))
            } else {
                submit(&ctx, &export, connection.as_ref(), &conn_name, status).await
            }
        })
        .await?;
    let ready = outcome.conds.last().cloned().expect("Ready is last");
    write(&ctx, &export, &old, outcome.status, outcome.conds).await?;
    let metrics = &crate::telemetry::metrics::METRICS;
    metrics.reconciled("DatasetExport", &ready.reason, started.elapsed());
    metrics.set_ready(&uid, "DatasetExport", ready.is_true());
    Ok(outcome.action)
}

fn folder(f: &str) -> String {
    if f.ends_with('/') { f.to_owned() } else { format!("{f}/") }
}

/// `conds` plus Ready: True once complete, else the first failing condition's reason.
fn with_ready(mut conds: Vec<NamedCond>) -> Vec<NamedCond> {
    let first =
        conds.iter().find(|c| c.status == Status::False).or_else(|| conds.iter().find(|c| !c.is_true())).cloned();
    conds.push(match first {
        Some(c) => NamedCond { type_: READY, status: Status::False, ..c },
        None => cond(READY, Status::True, reasons::SUCCEEDED, "The export has completed."),
    });
    conds
}

async fn platform_credentials(
    ctx: &Context,
    conn: &S3Connection,
    namespace: &str,
) -> Result<Result<crate::platform::Credentials, NamedCond>, Error> {
    let Some(p) = &conn.spec.platform else {
        return Ok(Err(cond(
            CONNECTION_READY,
            Status::False,
            reasons::CONNECTION_NOT_REGISTERED,
            "The S3Connection has no spec.platform.",
        )));
    };
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(&p.secret_ref.name)
        .await
        .map_err(|source| Error::Read { what: format!("Secret {namespace}/{}", &*p.secret_ref.name), source })?;
    Ok(register::credentials(secret.as_ref(), &p.secret_ref, namespace)
        .map_err(|c| NamedCond { type_: CONNECTION_READY, ..c.into() }))
}

fn retry_after(failures: u32) -> Action {
    Action::requeue(super::connection::schedule::backoff(failures, Duration::from_secs(600), 0.5))
}

async fn submit(
    ctx: &Context,
    export: &DatasetExport,
    connection: Option<&S3Connection>,
    conn_name: &str,
    mut status: DatasetExportStatus,
) -> Result<Outcome, Error> {
    let namespace = export.namespace().unwrap_or_default();
    let uid = export.uid().unwrap_or_default();
    status.phase = Some(ExportPhase::Pending);
    if let Some(problem) = connection_problem(connection, conn_name) {
        // The S3Connection watch brings the export back when the connection changes; the
        // requeue is only a safety net.
        return Ok(Outcome {
            status,
            conds: with_ready(vec![problem]),
            action: Action::requeue(Duration::from_secs(300)),
        });
    }
    let conn = connection.expect("checked above");
    let creds = match platform_credentials(ctx, conn, &namespace).await? {
        Ok(c) => c,
        Err(c) => return Ok(Outcome { status, conds: with_ready(vec![c]), action: Action::await_change() }),
    };
    let conn_status = conn.status.clone().unwrap_or_default();
    let connection_id = conn_status.platform_connection_id.clone().unwrap_or_default();
    let ready = cond(
        CONNECTION_READY,
        Status::True,
        reasons::CONNECTION_READY,
        format!("S3Connection {conn_name:?} is ready and registered (platform connection {connection_id})."),
    );

    // The intent, durably, before the platform hears of it.
    status.submission_started_time = Some(Time(Timestamp::now()));
    let submitting = cond(SUBMITTED, Status::Unknown, reasons::SUBMITTING, "Submitting the export.");
    let old = export.status.clone().unwrap_or_default();
    write(ctx, export, &old, status.clone(), vec![ready.clone(), submitting.clone()]).await?;

    let folder_path = format!(
        "{}/{}{}",
        conn_status.bucket.unwrap_or_default(),
        conn_status.prefix.unwrap_or_default(),
        folder(&export.spec.folder)
    );
    let export_name = export.spec.name.clone().unwrap_or_else(|| export.name_any());
    let request = ExportRequest {
        name: &export_name,
        description: export.spec.description.as_deref().unwrap_or("Exported by s3connect"),
        format: format_str(export.spec.format),
        statuses: export.spec.statuses.iter().map(|s| status_str(*s)).collect(),
        connection_id: &connection_id,
        folder_path,
    };
    let result = ctx.platform.create_export(&creds, &export.spec.project_id, &request).await;
    let (conds, action) = match result {
        Ok(report_id) => {
            ctx.unrecorded.0.lock().expect("not poisoned").insert(uid.clone(), report_id.clone());
            status.report_id = Some(report_id.clone());
            status.submission_started_time = None;
            status.phase = Some(ExportPhase::Submitted);
            status.start_time = Some(Time(Timestamp::now()));
            let accepted = cond(
                SUBMITTED,
                Status::True,
                reasons::SUBMITTED,
                format!("The platform accepted the export as report {report_id}."),
            );
            let running = cond(COMPLETE, Status::Unknown, reasons::RUNNING, "The export is running.");
            (vec![ready, accepted, running], Action::requeue(Duration::from_secs(1)))
        }
        Err(e) => {
            // The platform did not create it (a 4xx refuses, a 5xx is what the SDK retries
            // too), so the intent is cleared and a later try is not a duplicate.
            status.submission_started_time = None;
            match &e {
                PlatformError::Rejected { message, .. } if message.to_ascii_lowercase().contains("no files found") => {
                    let statuses: Vec<_> = export.spec.statuses.iter().map(|s| status_str(*s)).collect();
                    let none = cond(
                        COMPLETE,
                        Status::False,
                        reasons::NO_FILES_WITH_STATUS,
                        format!(
                            "No files of project {} are in the statuses {} (\"{message}\"): move files to review, client_review or accepted on the platform (they must be annotated and reviewed first), or re-create this DatasetExport with other statuses. Checking again with backoff.",
                            export.spec.project_id,
                            statuses.join(", ")
                        ),
                    );
                    (vec![ready, submitting_cleared(), none], retry_after(ctx.record_failure(&uid)))
                }
                PlatformError::Rejected { message, .. } => {
                    status.phase = Some(ExportPhase::Failed);
                    let refused = cond(
                        SUBMITTED,
                        Status::False,
                        "PlatformRejected",
                        format!(
                            "The platform refused the export: {message}. Re-create the DatasetExport with what it asks for."
                        ),
                    );
                    (vec![ready, refused], Action::await_change())
                }
                other => (
                    vec![ready, platform_failure(SUBMITTED, "submitting the export", other)],
                    retry_after(ctx.record_failure(&uid)),
                ),
            }
        }
    };
    Ok(Outcome { status, conds: with_ready(conds), action })
}

fn submitting_cleared() -> NamedCond {
    cond(SUBMITTED, Status::Unknown, reasons::NO_FILES_WITH_STATUS, "The platform created no export: see Complete.")
}

fn unconfirmed(export: &DatasetExport, mut status: DatasetExportStatus) -> Outcome {
    let annotations = export.annotations();
    if let Some(id) = annotations.get(REPORT_ID_ANNOTATION).filter(|v| !v.is_empty()) {
        status.report_id = Some(id.clone());
        status.submission_started_time = None;
        status.phase = Some(ExportPhase::Submitted);
        let c = cond(
            SUBMITTED,
            Status::True,
            reasons::SUBMITTED,
            format!("Following report {id}, named by the {REPORT_ID_ANNOTATION} annotation."),
        );
        return Outcome { status, conds: with_ready(vec![c]), action: Action::requeue(Duration::from_secs(1)) };
    }
    if annotations.get(RESUBMIT_ANNOTATION).is_some_and(|v| v == "true") {
        status.submission_started_time = None;
        let c = cond(SUBMITTED, Status::Unknown, reasons::SUBMITTING, "Submitting again, as asked.");
        return Outcome { status, conds: with_ready(vec![c]), action: Action::requeue(Duration::ZERO) };
    }
    let started = status.submission_started_time.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
    let c = cond(
        SUBMITTED,
        Status::False,
        reasons::SUBMISSION_UNCONFIRMED,
        format!(
            "The operator stopped while submitting this export (at {started}), so the platform may or may not have it; to never export twice it was not submitted again. Look for export {:?} of project {} on the platform: annotate this object {REPORT_ID_ANNOTATION}=<its report id> to follow it, or {RESUBMIT_ANNOTATION}=true if it is not there.",
            export.spec.name.clone().unwrap_or_else(|| export.name_any()),
            export.spec.project_id
        ),
    );
    Outcome { status, conds: with_ready(vec![c]), action: Action::await_change() }
}

async fn follow(
    ctx: &Context,
    export: &DatasetExport,
    connection: Option<&S3Connection>,
    mut status: DatasetExportStatus,
) -> Result<Outcome, Error> {
    let namespace = export.namespace().unwrap_or_default();
    let uid = export.uid().unwrap_or_default();
    let report_id = status.report_id.clone().expect("following a report");
    let submitted = cond(
        SUBMITTED,
        Status::True,
        reasons::SUBMITTED,
        format!("The platform accepted the export as report {report_id}."),
    );
    let poll = |n: u32| Action::requeue(Duration::from_secs((1u64 << n.min(5)).min(30)));
    let Some(conn) = connection else {
        let c = cond(
            COMPLETE,
            Status::Unknown,
            reasons::CONNECTION_NOT_FOUND,
            "Its S3Connection is gone, and with it the platform credentials: re-create the S3Connection to follow the export.",
        );
        return Ok(Outcome {
            status,
            conds: with_ready(vec![submitted, c]),
            action: Action::requeue(Duration::from_secs(60)),
        });
    };
    let creds = match platform_credentials(ctx, conn, &namespace).await? {
        Ok(c) => c,
        Err(c) => return Ok(Outcome { status, conds: with_ready(vec![submitted, c]), action: Action::await_change() }),
    };
    let state = ctx.platform.export_status(&creds, &export.spec.project_id, &report_id).await;
    let (conds, action) = match state {
        Ok(Some(ExportState::Succeeded)) => {
            status.phase = Some(ExportPhase::Succeeded);
            status.completion_time = Some(Time(Timestamp::now()));
            ctx.record_success(&uid);
            let where_ = status.destination.clone().unwrap_or_else(|| "its destination".into());
            (
                vec![
                    submitted,
                    cond(COMPLETE, Status::True, reasons::SUCCEEDED, format!("The export is in {where_}.")),
                ],
                Action::await_change(),
            )
        }
        Ok(Some(ExportState::Failed(message))) => {
            status.phase = Some(ExportPhase::Failed);
            status.completion_time = Some(Time(Timestamp::now()));
            let failed = cond(
                COMPLETE,
                Status::False,
                reasons::FAILED,
                format!(
                    "The platform reports report {report_id} failed: {message}. Check the S3Connection's write permissions, then re-create the DatasetExport."
                ),
            );
            (vec![submitted, failed], Action::await_change())
        }
        Ok(Some(ExportState::Running(state))) => {
            status.phase = Some(ExportPhase::Running);
            let running = cond(
                COMPLETE,
                Status::Unknown,
                reasons::RUNNING,
                format!("The platform is running the export ({state})."),
            );
            (vec![submitted, running], poll(ctx.record_failure(&uid)))
        }
        Ok(None) => {
            let unknown = cond(
                COMPLETE,
                Status::Unknown,
                reasons::REPORT_NOT_FOUND,
                format!("The platform does not know report {report_id} (yet); checking again with backoff."),
            );
            (vec![submitted, unknown], poll(ctx.record_failure(&uid)))
        }
        Err(e) => (
            vec![submitted, platform_failure(COMPLETE, "reading the export's status", &e)],
            poll(ctx.record_failure(&uid)),
        ),
    };
    Ok(Outcome { status, conds: with_ready(conds), action })
}

/// Writes the status (with kstatus conditions) unless nothing changed, and an event when
/// the phase changed. Only the report id is forgotten from memory once it is recorded.
async fn write(
    ctx: &Context,
    export: &DatasetExport,
    old: &DatasetExportStatus,
    mut status: DatasetExportStatus,
    mut conds: Vec<NamedCond>,
) -> Result<(), Error> {
    let ready = conds.last().cloned().expect("Ready is last");
    if !ready.is_true() {
        let active = matches!(status.phase, Some(ExportPhase::Submitted | ExportPhase::Running))
            || ready.reason == "PlatformInternalError"
            || ready.reason == "PlatformUnreachable"
            || ready.reason == reasons::SUBMITTING;
        let type_ = if active { RECONCILING } else { STALLED };
        conds.push(NamedCond { type_, status: Status::True, ..ready.clone() });
    }
    status.conditions =
        conditions::merge_named(&old.conditions, &conds, export.metadata.generation, &Time(Timestamp::now()));
    let unchanged = status.phase == old.phase
        && status.report_id == old.report_id
        && status.submission_started_time == old.submission_started_time
        && status.destination == old.destination
        && status.observed_generation == old.observed_generation
        && conditions::same_ignoring_time(&status.conditions, &old.conditions);
    if unchanged {
        return Ok(());
    }
    let name = export.name_any();
    let namespace = export.namespace().unwrap_or_default();
    let patch = serde_json::json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "DatasetExport", "status": status});
    if let Err(source) = Api::<DatasetExport>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
    {
        super::status::refused(ctx, export, &source).await;
        return Err(Error::WriteStatus { name: name.clone(), source });
    }
    if status.report_id.is_some() {
        ctx.unrecorded.0.lock().expect("not poisoned").remove(&export.uid().unwrap_or_default());
    }
    if status.phase != old.phase {
        let phase = status.phase.map(|p| format!("{p:?}")).unwrap_or_default();
        let note = match &status.report_id {
            Some(id) => format!("Export {phase} (report {id})."),
            None => format!("Export {phase}: {}", ready.message),
        };
        ctx.event(export.object_ref(&()), status.phase == Some(ExportPhase::Failed), &phase, "Export", &note).await;
        info!(export = %format!("{namespace}/{name}"), phase = %phase, report_id = status.report_id.as_deref().unwrap_or(""), "phase");
    }
    Ok(())
}

fn error_policy(export: Arc<DatasetExport>, err: &Error, ctx: Arc<Context>) -> Action {
    let uid = export.uid().unwrap_or_default();
    let delay = super::connection::schedule::backoff(ctx.record_failure(&uid), Duration::from_secs(300), 0.5);
    let kind = match err {
        Error::NoNamespace(_) => "NoNamespace",
        Error::Read { .. } => "Read",
        Error::WriteStatus { .. } => "WriteStatus",
    };
    crate::telemetry::metrics::METRICS.reconcile_error("DatasetExport", kind);
    warn!(export = %export.name_any(), error = %err, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// Spec changes, deletion and the two resolution annotations trigger; status writes do not.
fn trigger_hash(export: &DatasetExport) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    export.metadata.generation.hash(&mut h);
    export.metadata.deletion_timestamp.is_some().hash(&mut h);
    export.annotations().get(REPORT_ID_ANNOTATION).hash(&mut h);
    export.annotations().get(RESUBMIT_ANNOTATION).hash(&mut h);
    Some(h.finish())
}

fn referencing(store: &Store<DatasetExport>, conn: &PartialObjectMeta<S3Connection>) -> Vec<ObjectRef<DatasetExport>> {
    store
        .state()
        .iter()
        .filter(|e| e.namespace() == conn.namespace() && *e.spec.connection_ref.name == *conn.name_any())
        .filter(|e| {
            !matches!(e.status.as_ref().and_then(|s| s.phase), Some(ExportPhase::Succeeded | ExportPhase::Failed))
        })
        .map(|e| ObjectRef::from_obj(e.as_ref()))
        .collect()
}

pub async fn run(ctx: Arc<Context>) {
    // Metadata only: a change is all the mapping needs, and every status write of every
    // connection passes through here.
    let connections = watcher(super::api::<PartialObjectMeta<S3Connection>>(&ctx), ctx.config.watch_config())
        .backoff(super::watch_backoff())
        .applied_objects();
    super::run_controller(
        ctx.clone(),
        "DatasetExport",
        super::api(&ctx),
        trigger_hash,
        connections,
        referencing,
        reconcile,
        error_policy,
    )
    .await;
}
