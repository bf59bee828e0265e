//! The Dataset decision: facts in (its spec and status, annotations, its connection,
//! what the platform answered), the next step and the new status out. Pure, so that each
//! state of the manual's "Creating Dataset" step is a table test.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::annotations::SYNC_NOW_ANNOTATION;
use crate::api::conditions::{CONNECTION_READY, ConnectionReadyReason, NamedCond, READY, Status};
use crate::api::dataset::{DatasetPhase, DatasetReason as R, DatasetSpec, DatasetStatus};
use crate::controller::decide::{self, RETRY_CAP, cond};
use crate::controller::status::Next;
use crate::platform::{DatasetInfo, PlatformError};
use crate::timing::parse_interval;

/// What the driver does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Its connection cannot be used yet: show why.
    Blocked(NamedCond),
    /// No dataset yet: record the intent, create it once.
    Create,
    /// A create's outcome is unknown (a lost answer, a restart): look for it by name
    /// before anything else.
    Lookup,
    /// Ask the platform how the dataset is (and sync it first when `sync`).
    Check { sync: bool },
    /// Nothing to do until then (None: until something changes).
    Idle(Option<Duration>),
}

/// The sync the annotation asks for, if it is new.
fn sync_requested(status: &DatasetStatus, annotations: &BTreeMap<String, String>) -> Option<String> {
    annotations.get(SYNC_NOW_ANNOTATION).filter(|v| status.last_handled_sync.as_ref() != Some(*v)).cloned()
}

/// When the next scheduled sync is due, from now (None: no sync configured).
fn sync_due_in(spec: &DatasetSpec, status: &DatasetStatus, now: Timestamp) -> Option<Duration> {
    let interval = parse_interval(&spec.sync.as_ref()?.interval);
    let Some(last) = status.last_sync_time.as_ref() else { return Some(Duration::ZERO) };
    let since = Duration::try_from(now.duration_since(last.0)).unwrap_or(Duration::ZERO);
    Some(interval.saturating_sub(since))
}

pub fn step(
    spec: &DatasetSpec,
    status: &DatasetStatus,
    annotations: &BTreeMap<String, String>,
    problem: Option<NamedCond>,
    now: Timestamp,
) -> Step {
    if status.dataset_id.is_none() {
        if status.creation_started_time.is_some() {
            return Step::Lookup;
        }
        return match problem {
            Some(cond) => Step::Blocked(cond),
            None => Step::Create,
        };
    }
    let settled = matches!(status.phase, Some(DatasetPhase::Ready | DatasetPhase::Failed));
    if !settled {
        return Step::Check { sync: false };
    }
    let asked = sync_requested(status, annotations).is_some();
    // A new reconcile request: a settled dataset is looked at now, not when its sync is due.
    let look = crate::api::annotations::requested_at(annotations)
        .is_some_and(|r| status.last_handled_reconcile_at.as_deref() != Some(r.as_str()));
    match sync_due_in(spec, status, now) {
        Some(_) if asked => Step::Check { sync: true },
        Some(d) if d.is_zero() && problem.is_none() => Step::Check { sync: true },
        _ if look => Step::Check { sync: false },
        Some(d) => Step::Idle(Some(d.max(Duration::from_secs(1)))),
        None => Step::Idle(None),
    }
}

/// What a step ends with.
pub type Outcome = crate::controller::driver::Outcome<DatasetStatus>;

fn not_yet(reason: R, message: impl Into<String>) -> NamedCond {
    cond(READY, Status::Unknown, reason, message)
}

/// Polling a dataset the platform is processing: 2 s doubling to a minute.
pub fn poll_after(attempt: u32) -> Duration {
    Duration::from_secs(2u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(60))
}

pub fn blocked(mut status: DatasetStatus, problem: NamedCond) -> Outcome {
    status.phase = Some(DatasetPhase::Pending);
    // Ready carries the connection's own reason; the S3Connection watch brings the dataset
    // back when the connection changes.
    Outcome::stalled_on(status, Vec::new(), problem, Next::After(Duration::from_secs(300)))
}

/// The intent, as written before the platform hears of the dataset.
pub fn intent(mut status: DatasetStatus, ready: &NamedCond, name: &str, tracking_id: &str, now: Timestamp) -> Outcome {
    status.phase = Some(DatasetPhase::Creating);
    status.creation_started_time = Some(Time(now));
    status.creation_tracking_id = Some(tracking_id.to_owned());
    status.platform_name = Some(name.to_owned());
    let creating = not_yet(R::Creating, format!("Creating dataset {name:?} on the platform."));
    Outcome::derived(status, vec![ready.clone()], creating, true, Next::AwaitChange)
}

fn clear_intent(status: &mut DatasetStatus) {
    status.creation_started_time = None;
    status.creation_tracking_id = None;
}

/// A dataset found (or made) under the intent: it is the one, from now on.
pub fn adopted(mut status: DatasetStatus, ready: NamedCond, id: String) -> Outcome {
    clear_intent(&mut status);
    status.phase = Some(DatasetPhase::Creating);
    let processing = not_yet(R::Processing, format!("The platform is processing dataset {id}."));
    status.dataset_id = Some(id);
    Outcome::derived(status, vec![ready], processing, true, Next::After(Duration::from_secs(2)))
}

/// A dataset of this name exists on the platform and is someone else's (another namespace's,
/// another cluster's, a person's): shown, never adopted, and nothing is created until the
/// name changes.
pub fn name_in_use(mut status: DatasetStatus, ready: NamedCond, name: &str) -> Outcome {
    clear_intent(&mut status);
    status.phase = Some(DatasetPhase::Pending);
    let message = format!(
        "A dataset named {name:?} already exists on the platform and is not this Dataset's (it lacks this Dataset's s3connect identity): set spec.displayName to a name of its own."
    );
    let conflict = cond(READY, Status::False, R::NameInUse, message);
    Outcome::derived(status, vec![ready], conflict, false, Next::AwaitChange)
}

/// After the one create call.
pub fn after_create(status: DatasetStatus, ready: NamedCond, result: Result<String, PlatformError>) -> Outcome {
    let tracking_id = status.creation_tracking_id.clone().unwrap_or_default();
    let name = status.platform_name.clone().unwrap_or_default();
    match result {
        Ok(id) => adopted(status, ready, id),
        // The platform may have made it: look for it by name next, never create blindly.
        Err(PlatformError::Unknown { detail, tracking_id: trace }) => {
            let ids = trace.or_recorded(tracking_id);
            let message = format!(
                "The platform did not say whether it created dataset {name:?} ({detail}, tracking id {ids}); the operator looks for it by name before creating anything again."
            );
            let c = cond(READY, Status::False, R::CreationUnconfirmed, message);
            Outcome::derived(status, vec![ready], c, true, Next::Retry { cap: Duration::from_secs(60) })
        }
        Err(e) => {
            let mut status = status;
            clear_intent(&mut status);
            let rejected = matches!(e, PlatformError::Rejected { .. } | PlatformError::NoFilesWithStatus { .. });
            if rejected {
                status.phase = Some(DatasetPhase::Failed);
            }
            let failed = platform_failure(&format!("creating dataset {name:?}"), &e);
            let next = if rejected { Next::AwaitChange } else { Next::Retry { cap: RETRY_CAP } };
            Outcome::derived(status, vec![ready], failed, !rejected, next)
        }
    }
}

/// What the connection's probes say about reading the dataset's folder now: the first
/// failing message among credentials, bucket and read, and the statement that would fix
/// it; None when it reads fine (then `sample` is a file it read).
pub struct Recheck {
    pub problem: Option<String>,
    pub missing_policy: Option<String>,
    pub sample: Option<String>,
}

/// After asking the platform how the dataset is (and syncing it, when asked).
#[allow(clippy::too_many_arguments)]
pub fn after_check(
    mut status: DatasetStatus,
    ready: NamedCond,
    folder: &str,
    spec: &DatasetSpec,
    info: Result<Option<DatasetInfo>, PlatformError>,
    recheck: Option<&Recheck>,
    synced: Option<String>,
    now: Timestamp,
    attempt: u32,
) -> Outcome {
    let id = status.dataset_id.clone().unwrap_or_default();
    let info = match info {
        Err(e) => return unread(status, ready, &id, &e),
        Ok(None) => return gone(status, ready, &id),
        Ok(Some(info)) => info,
    };
    if let Some(value) = synced {
        status.last_sync_time = Some(Time(now));
        status.last_handled_sync = Some(value).filter(|v| !v.is_empty()).or(status.last_handled_sync);
    }
    status.files_count = Some(info.files_count);
    status.status_code = Some(info.status_code);
    let recheck_says = |what: &str| with_recheck(what, recheck, folder);
    let (readiness, retrying, next) = if info.status_code >= 400 {
        status.phase = Some(DatasetPhase::Failed);
        let message = recheck_says(&format!(
            "The platform reports dataset {id} failed (status {}), the manual's \"status 500 or Failed\".",
            info.status_code
        ));
        let fix = " Fix the connection's read permissions, then delete and re-create this Dataset.";
        (cond(READY, Status::False, R::DatasetFailed, message + fix), false, Next::AwaitChange)
    } else if info.status_code != 300 {
        status.phase = Some(DatasetPhase::Creating);
        let processing =
            not_yet(R::Processing, format!("The platform is processing dataset {id} (status {}).", info.status_code));
        (processing, true, Next::After(poll_after(attempt)))
    } else if info.files_count == 0 {
        status.phase = Some(DatasetPhase::Failed);
        let message = recheck_says(&format!(
            "The platform finished dataset {id} with no files from {folder}, the manual's \"Dataset has no files\"."
        ));
        let fix = match &spec.sync {
            Some(_) => {
                " Upload the files there (or fix the permissions); the next sync, or annotating s3connect.io/sync-now, adds them."
            }
            None => {
                " Upload the files there (or fix the permissions), then delete and re-create this Dataset, or give it spec.sync."
            }
        };
        let next =
            sync_due_in(spec, &status, now).map_or(Next::AwaitChange, |d| Next::After(d.max(Duration::from_secs(1))));
        (cond(READY, Status::False, R::NoFiles, message + fix), false, next)
    } else {
        status.phase = Some(DatasetPhase::Ready);
        let message = format!("Dataset {id} ({:?}) has {} files from {folder}.", info.name, info.files_count);
        let done = cond(READY, Status::True, R::DatasetReady, message);
        // A Ready dataset costs nothing until its sync is due.
        let next = Next::Success(sync_due_in(spec, &status, now).map(|d| d.max(Duration::from_secs(1))));
        return Outcome::derived(status, vec![ready], done, false, next);
    };
    Outcome::derived(status, vec![ready], readiness, retrying, next)
}

/// The platform could not be asked how the dataset is: retried.
fn unread(status: DatasetStatus, ready: NamedCond, id: &str, e: &PlatformError) -> Outcome {
    let failed = platform_failure(&format!("reading dataset {id}"), e);
    Outcome::derived(status, vec![ready], failed, true, Next::Retry { cap: RETRY_CAP })
}

/// The platform no longer knows the dataset: only a person can help.
fn gone(mut status: DatasetStatus, ready: NamedCond, id: &str) -> Outcome {
    status.phase = Some(DatasetPhase::Failed);
    let message = format!(
        "The platform no longer knows dataset {id} (deleted there?): delete this Dataset, and re-create it to make a new one."
    );
    let gone = cond(READY, Status::False, R::DatasetFailed, message);
    Outcome::derived(status, vec![ready], gone, false, Next::AwaitChange)
}

/// `what`, followed by what a re-check of `folder` with the connection's keys found.
fn with_recheck(what: &str, recheck: Option<&Recheck>, folder: &str) -> String {
    match recheck {
        Some(Recheck { problem: Some(p), missing_policy, .. }) => format!(
            "{what} Re-checked with the connection's keys: {p}{}",
            missing_policy.as_deref().map_or(String::new(), |m| format!(
                " The statement to add: {}",
                m.split_whitespace().collect::<Vec<_>>().join(" ")
            ))
        ),
        Some(Recheck { problem: None, sample, .. }) => format!(
            "{what} The connection's keys can list and read {folder} now{}.",
            sample.as_deref().map_or(String::new(), |s| format!(" (read {s:?})"))
        ),
        None => what.to_owned(),
    }
}

/// Ready for a platform call that failed: False, whatever the failure (a dataset has no
/// condition of its own for the platform).
fn platform_failure(doing: &str, e: &PlatformError) -> NamedCond {
    NamedCond { status: Status::False, ..decide::platform_failure(READY, doing, e) }
}

/// Marks that the connection is ready (and so the dataset may go ahead).
pub fn connection_ready(name: &str, connection_id: &str) -> NamedCond {
    let message =
        format!("S3Connection {name:?} is ready and registered for Import (platform connection {connection_id}).");
    cond(CONNECTION_READY, Status::True, ConnectionReadyReason::ConnectionReady, message)
}

#[cfg(test)]
mod tests;
