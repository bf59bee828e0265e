//! Every annotation and finalizer the operator reads or sets, in one place: what a person
//! (or Flux) writes on an object to ask for something, and what the operator puts on what
//! it owns.

use std::collections::BTreeMap;

/// Annotating an object with a new value of this validates (or re-checks) it at once.
pub const REQUESTED_AT_ANNOTATION: &str = "s3connect.io/requested-at";
/// Flux's annotation for the same (`flux reconcile`), honoured alike.
pub const FLUX_REQUESTED_AT_ANNOTATION: &str = "reconcile.fluxcd.io/requestedAt";
/// Annotating a managed S3Connection with a new value of this rotates its key at once.
pub const ROTATE_ANNOTATION: &str = "s3connect.io/rotate-keys-at";
/// `"true"` on an S3Connection or Dataset releases its finalizer without deleting what it
/// holds on the platform (for when the platform is gone for good, or the object was
/// removed there by hand).
pub const SKIP_CLEANUP: &str = "s3connect.io/skip-platform-cleanup";
/// Annotating a Dataset with a new value of this syncs it now.
pub const SYNC_NOW_ANNOTATION: &str = "s3connect.io/sync-now";
/// On a DatasetExport whose submission is unconfirmed: the report id found on the
/// platform, to follow it.
pub const REPORT_ID_ANNOTATION: &str = "s3connect.io/report-id";
/// On a DatasetExport whose submission is unconfirmed: a new value submits it once more.
pub const RESUBMIT_ANNOTATION: &str = "s3connect.io/resubmit";
/// On a DatasetExport with a schedule: a new value starts one run now (one given during a
/// run starts the next right after it).
pub const RUN_NOW_ANNOTATION: &str = "s3connect.io/run-now";
/// In debug builds (the tests), an object annotated with this panics in its reconcile:
/// the one way to prove, through the real stack, that a panic stays the object's own.
#[cfg(debug_assertions)]
pub const DEBUG_PANIC_ANNOTATION: &str = "s3connect.io/debug-panic";
/// In debug builds, a DatasetExport annotated with this panics right after the platform
/// answered its submission, before the answer is recorded anywhere: the moment a panic
/// could make a second submission.
#[cfg(debug_assertions)]
pub const DEBUG_PANIC_AFTER_SUBMIT_ANNOTATION: &str = "s3connect.io/debug-panic-after-submit";

/// On a managed key Secret: the rotation request its key answers. (Whether IAM holds the
/// current policy and how old a key is are read from IAM, never from the Secret, which a
/// tenant can write.)
pub const ROTATED_FOR_ANNOTATION: &str = "s3connect.io/rotated-for";

/// Held while the platform has a connection for an S3Connection.
pub const PLATFORM_CONNECTION_FINALIZER: &str = "s3connect.io/platform-connection";
/// Held while IAM resources of an S3Connection with managed credentials may exist.
pub const IAM_USER_FINALIZER: &str = "s3connect.io/iam-user";
/// Held while deleting a Dataset must delete the platform's dataset (deletionPolicy Delete).
pub const DATASET_FINALIZER: &str = "s3connect.io/dataset";
/// Held while deleting an AnnotationProject must archive or delete the platform's project.
pub const PROJECT_FINALIZER: &str = "s3connect.io/annotation-project";

/// The reconcile request an object's annotations make, if any: both annotations' values,
/// so that a new value of either is a new request.
pub fn requested_at(annotations: &BTreeMap<String, String>) -> Option<String> {
    let ours = annotations.get(REQUESTED_AT_ANNOTATION);
    let flux = annotations.get(FLUX_REQUESTED_AT_ANNOTATION);
    match (ours, flux) {
        (None, None) => None,
        (Some(a), None) | (None, Some(a)) => Some(a.clone()),
        (Some(a), Some(b)) => Some(format!("{a}|{b}")),
    }
}

/// Annotations the controllers read, and so the only ones their caches keep: the ones
/// defined here (never any other `s3connect.io/` key a tenant invents), each with a value of
/// at most `MAX_KEPT_VALUE` bytes (a request's token is short; a larger one is ignored).
pub fn kept_annotation(key: &str, value: &str) -> bool {
    const KEPT: &[&str] = &[
        REQUESTED_AT_ANNOTATION,
        FLUX_REQUESTED_AT_ANNOTATION,
        ROTATE_ANNOTATION,
        SKIP_CLEANUP,
        SYNC_NOW_ANNOTATION,
        REPORT_ID_ANNOTATION,
        RESUBMIT_ANNOTATION,
        RUN_NOW_ANNOTATION,
        #[cfg(debug_assertions)]
        DEBUG_PANIC_ANNOTATION,
        #[cfg(debug_assertions)]
        DEBUG_PANIC_AFTER_SUBMIT_ANNOTATION,
    ];
    value.len() <= MAX_KEPT_VALUE && KEPT.contains(&key)
}

/// The longest annotation value the caches keep.
pub const MAX_KEPT_VALUE: usize = 1024;
