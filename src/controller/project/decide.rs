//! The AnnotationProject decision: facts in (its datasets as they are, what the platform
//! answered), the new status and conditions out. Pure, so that each gate and each answer
//! is a table test.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::conditions::{CREATED, DATASETS_READY, NamedCond, READY, Status, TEMPLATE_READY};
use crate::api::project::{
    AnnotationProjectSpec, AnnotationProjectStatus, DatasetChange, ProjectPhase, ProjectReason as R,
};
use crate::controller::decide::{self, RETRY_CAP, platform_failure};
use crate::controller::status::Next;
use crate::platform::{PlatformError, ProjectInfo};

/// What a step ends with.
pub type Outcome = crate::controller::driver::Outcome<AnnotationProjectStatus>;

fn cond(type_: &'static str, status: Status, reason: R, message: impl Into<String>) -> NamedCond {
    decide::cond(type_, status, reason.as_str(), message)
}

/// Ready by the driver's rule (the first failing condition's, Unknown while the platform
/// works), True once the project is ready.
fn outcome(status: AnnotationProjectStatus, conds: Vec<NamedCond>, retrying: bool, next: Next) -> Outcome {
    let id = status.project_id.clone().unwrap_or_default();
    let done = cond(READY, Status::True, R::ProjectReady, format!("Project {id} is ready for annotation."));
    Outcome::derived(status, conds, done, retrying, next)
}

/// `conds` with `c` in place of any condition of its type.
fn set(mut conds: Vec<NamedCond>, c: NamedCond) -> Vec<NamedCond> {
    conds.retain(|x| x.type_ != c.type_);
    conds.push(c);
    conds
}

/// A Dataset the project refers to, as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatasetState {
    Missing,
    /// Not Ready yet: its Ready condition's reason and message.
    NotReady {
        reason: String,
        message: String,
    },
    Ready {
        id: String,
        data_type: String,
        files: i64,
    },
}

/// The datasets, once every one is Ready with files and of one data type: their ids and
/// that type. Else the DatasetsReady condition that names the first that is not, and
/// whether it clears by itself (a dataset still processing) or needs a person.
pub fn datasets(
    spec: &AnnotationProjectSpec,
    found: &[(String, DatasetState)],
) -> Result<(Vec<String>, String), (NamedCond, bool)> {
    let mut ids = Vec::new();
    let mut types: Vec<(String, String)> = Vec::new();
    for (name, state) in found {
        match state {
            DatasetState::Missing => {
                let message = format!(
                    "Dataset {name:?} was not found in this namespace: create it, or fix spec.datasetRefs; nothing is created until it is Ready."
                );
                return Err((cond(DATASETS_READY, Status::False, R::DatasetNotFound, message), false));
            }
            DatasetState::NotReady { reason, message } => {
                let message =
                    format!("Dataset {name:?} is not Ready ({reason}: {message}); the project is created once it is.");
                return Err((cond(DATASETS_READY, Status::False, R::DatasetNotReady, message), true));
            }
            DatasetState::Ready { files: 0, .. } => {
                let message = format!(
                    "Dataset {name:?} has no files, and the platform makes no project over an empty dataset: upload files to its folder and sync it (s3connect.io/sync-now), or remove it from spec.datasetRefs."
                );
                return Err((cond(DATASETS_READY, Status::False, R::DatasetEmpty, message), false));
            }
            DatasetState::Ready { id, data_type, .. } => {
                ids.push(id.clone());
                types.push((name.clone(), data_type.clone()));
            }
        }
    }
    let wanted = spec.data_type.map(|t| t.as_str().to_owned()).or_else(|| types.first().map(|(_, t)| t.clone()));
    let wanted = wanted.unwrap_or_default();
    if let Some((name, t)) = types.iter().find(|(_, t)| *t != wanted) {
        let from = if spec.data_type.is_some() { "spec.dataType" } else { "the first dataset" };
        let message = format!(
            "Dataset {name:?} holds {t} files but the project is for {wanted} ({from}): a project, its template and every dataset share one data type; fix spec.datasetRefs or spec.dataType. Nothing was created."
        );
        return Err((cond(DATASETS_READY, Status::False, R::DataTypeMismatch, message), false));
    }
    Ok((ids, wanted))
}

/// The datasets are not ready: nothing is created, the dataset watch brings it back.
pub fn blocked(mut status: AnnotationProjectStatus, problem: NamedCond, retrying: bool) -> Outcome {
    if status.project_id.is_none() {
        status.phase = Some(ProjectPhase::Pending);
    }
    outcome(status, vec![problem], retrying, Next::After(Duration::from_secs(300)))
}

/// A condition saying the datasets are ready.
pub fn datasets_ready(ids: &[String], data_type: &str) -> NamedCond {
    let message = format!("{} dataset(s) of {data_type} files are Ready with files: {}.", ids.len(), ids.join(", "));
    cond(DATASETS_READY, Status::True, R::DatasetsReady, message)
}

/// A question's stable id: derived from the object's uid and its number, so the same
/// questions always carry the same ids.
pub fn question_id(uid: &str, number: usize) -> String {
    let hex = crate::text::short_hash(&format!("{uid}/{number}"));
    let uid_part: String = uid.chars().filter(|c| c.is_ascii_hexdigit()).take(8).collect();
    format!("{uid_part:0>8}-{}-4{}-8{}-{:0>12}", &hex[..4], &hex[..3], &hex[1..4], number)
}

/// The template's name on the platform, with this object's identity: a template is
/// adopted after a lost answer only if it carries it.
pub fn template_name(base: &str, uid: &str) -> String {
    format!("{base} {}", crate::platform::identity(uid))
}

pub fn template_intent(
    mut status: AnnotationProjectStatus,
    ready: &NamedCond,
    tracking_id: &str,
    now: Timestamp,
) -> Outcome {
    status.phase = Some(ProjectPhase::Creating);
    status.template_creation_started_time = Some(Time(now));
    status.template_tracking_id = Some(tracking_id.to_owned());
    let creating = cond(TEMPLATE_READY, Status::Unknown, R::TemplateCreating, "Creating the template.");
    outcome(status, vec![ready.clone(), creating], true, Next::AwaitChange)
}

fn clear_template_intent(status: &mut AnnotationProjectStatus) {
    status.template_creation_started_time = None;
    status.template_tracking_id = None;
}

/// After the template's create call (or the lookup after an unknown outcome): the id, or
/// the outcome that stops here.
pub fn after_template(
    mut status: AnnotationProjectStatus,
    ready: NamedCond,
    result: Result<String, PlatformError>,
) -> Result<(AnnotationProjectStatus, NamedCond), Box<Outcome>> {
    let tracking = status.template_tracking_id.clone().unwrap_or_default();
    match result {
        Ok(id) => {
            clear_template_intent(&mut status);
            let c = template_exists(&id);
            status.template_id = Some(id);
            Ok((status, c))
        }
        Err(PlatformError::Unknown { detail, tracking_id: trace }) => {
            let tracking = trace.or_recorded(tracking);
            let message = format!(
                "The platform did not say whether it created the template ({detail}, tracking id {tracking}); the operator looks for it by its name before creating anything again."
            );
            let c = cond(TEMPLATE_READY, Status::Unknown, R::TemplateUnconfirmed, message);
            Err(Box::new(outcome(status, vec![ready, c], true, Next::Retry { cap: Duration::from_secs(60) })))
        }
        Err(e @ PlatformError::Rejected { .. }) => {
            clear_template_intent(&mut status);
            status.phase = Some(ProjectPhase::Failed);
            let message = format!(
                "The platform refused the template ({e}): fix spec.template.questions (delete and re-create the AnnotationProject, as questions are fixed once created)."
            );
            let c = cond(TEMPLATE_READY, Status::False, R::TemplateRejected, message);
            Err(Box::new(outcome(status, vec![ready, c], false, Next::AwaitChange)))
        }
        Err(e) => {
            clear_template_intent(&mut status);
            Err(Box::new(outcome(
                status,
                vec![ready, platform_failure(TEMPLATE_READY, "creating the template", &e)],
                true,
                Next::Retry { cap: RETRY_CAP },
            )))
        }
    }
}

pub fn template_given(id: &str) -> NamedCond {
    cond(TEMPLATE_READY, Status::True, R::TemplateGiven, format!("Uses template {id} (spec.template.templateId)."))
}

/// The template of a project taken over by spec.adopt (None: not adopted yet); False when
/// the spec has neither a template nor adopt (the CRD's rule refuses that at admission).
pub fn template_adopted(id: Option<&str>, adopting: bool) -> NamedCond {
    match (id, adopting) {
        (_, false) => cond(
            TEMPLATE_READY,
            Status::False,
            R::TemplateRejected,
            "spec.template is missing: give templateId or questions, or adopt a project (spec.adopt).",
        ),
        (Some(id), true) => {
            cond(TEMPLATE_READY, Status::True, R::Adopted, format!("Uses template {id}, the adopted project's own."))
        }
        (None, true) => cond(
            TEMPLATE_READY,
            Status::Unknown,
            R::Adopted,
            "Uses the adopted project's own template, once the project is adopted.",
        ),
    }
}

pub fn template_exists(id: &str) -> NamedCond {
    let message = format!("Template {id} was created from spec.template.questions.");
    cond(TEMPLATE_READY, Status::True, R::TemplateCreated, message)
}

pub fn project_intent(
    mut status: AnnotationProjectStatus,
    conds: &[NamedCond],
    name: &str,
    tracking_id: &str,
    now: Timestamp,
) -> Outcome {
    status.phase = Some(ProjectPhase::Creating);
    status.platform_name = Some(name.to_owned());
    status.creation_started_time = Some(Time(now));
    status.creation_tracking_id = Some(tracking_id.to_owned());
    let creating = cond(CREATED, Status::Unknown, R::Creating, format!("Creating project {name:?} on the platform."));
    outcome(status, set(conds.to_vec(), creating), true, Next::AwaitChange)
}

/// A project made (or found): its id, its datasets, and the rotations it was made with
/// (None: unknown, so they are set).
pub type Made = (String, Vec<String>, Option<[u32; 3]>);

/// After the project's create call, or the lookup or adoption that stands for it.
pub fn after_create(
    mut status: AnnotationProjectStatus,
    conds: Vec<NamedCond>,
    result: Result<Made, PlatformError>,
    adopted: bool,
) -> Outcome {
    let tracking = status.creation_tracking_id.clone().unwrap_or_default();
    let name = status.platform_name.clone().unwrap_or_default();
    match result {
        Ok((id, attached, rotations)) => {
            status.creation_started_time = None;
            status.creation_tracking_id = None;
            status.phase = Some(ProjectPhase::Creating);
            status.attached_datasets = attached;
            status.rotations = rotations.map(|[a, r, c]| crate::api::project::Rotations {
                annotation: a,
                review: r,
                client_review: c,
            });
            let (reason, how) = if adopted { (R::Adopted, "adopted") } else { (R::Processing, "created") };
            let c = cond(CREATED, Status::True, reason, format!("Project {id} was {how}."));
            status.project_id = Some(id);
            let conds = set(conds, c);
            outcome(status, conds, true, Next::After(Duration::from_secs(1)))
        }
        Err(PlatformError::Unknown { detail, tracking_id: trace }) => {
            let tracking = trace.or_recorded(tracking);
            let message = format!(
                "The platform did not say whether it created project {name:?} ({detail}, tracking id {tracking}); the operator looks for it (by its name and this object's template) before creating anything again."
            );
            let c = cond(CREATED, Status::False, R::CreationUnconfirmed, message);
            let conds = set(conds, c);
            outcome(status, conds, true, Next::Retry { cap: Duration::from_secs(60) })
        }
        Err(e) => {
            status.creation_started_time = None;
            status.creation_tracking_id = None;
            let rejected = matches!(e, PlatformError::Rejected { .. });
            if rejected {
                status.phase = Some(ProjectPhase::Failed);
            }
            let c = platform_failure(CREATED, &format!("creating project {name:?}"), &e);
            let conds = set(conds, c);
            let next = if rejected { Next::AwaitChange } else { Next::Retry { cap: RETRY_CAP } };
            outcome(status, conds, !rejected, next)
        }
    }
}

/// A create whose answer was lost, with a template given by id: nothing proves which
/// project is this object's, so a person says (spec.adopt) or the operator would risk a
/// second one.
pub fn unconfirmed_with_shared_template(status: AnnotationProjectStatus, conds: Vec<NamedCond>) -> Outcome {
    let tracking = status.creation_tracking_id.clone().unwrap_or_default();
    let name = status.platform_name.clone().unwrap_or_default();
    let message = format!(
        "The create of project {name:?} may or may not have reached the platform (tracking id {tracking}), and its template is shared, so no project provably is this object's: find it in the platform's UI and set spec.adopt.projectId (re-create the object with it), so that no second project is made."
    );
    let c = cond(CREATED, Status::False, R::CreationUnconfirmed, message);
    let conds = set(conds, c);
    outcome(status, conds, false, Next::AwaitChange)
}

/// spec.adopt's project, free to take: recorded with its own template and datasets (its
/// rotations unknown, so they are set).
pub fn adopted(mut status: AnnotationProjectStatus, conds: Vec<NamedCond>, id: String, info: ProjectInfo) -> Outcome {
    let template = template_adopted(Some(&info.template_id), true);
    status.template_id = Some(info.template_id);
    after_create(status, set(conds, template), Ok((id, info.datasets, None)), true)
}

/// An AnnotationProject as adoption sees it: `namespace/name`, its uid, the project it
/// records.
pub type Claim = (String, String, Option<String>);

/// Who other than the object with `uid` (in `namespace`) provably owns project `id`: an
/// AnnotationProject that records it, or the one whose identity its template's name
/// carries (a project the operator made, kept after its object went, or another
/// installation's). A project made in the UI carries no identity and is free to adopt.
/// An owner in another namespace is not named: a tenant learns only that it exists.
pub fn project_owner(
    uid: &str,
    namespace: &str,
    id: &str,
    claims: &[Claim],
    template_name: Option<&str>,
) -> Option<String> {
    let shown = |name: &str| match name.split_once('/') {
        Some((ns, _)) if ns == namespace => format!("AnnotationProject {name}"),
        _ => "an AnnotationProject in another namespace".to_owned(),
    };
    let named = |owner: &str| claims.iter().find(|(_, u, _)| u == owner).map(|(n, _, _)| shown(n));
    if let Some((name, _, _)) = claims.iter().find(|(_, u, p)| u != uid && p.as_deref() == Some(id)) {
        return Some(format!("{}, which records it", shown(name)));
    }
    match template_name.and_then(crate::platform::identity_in) {
        Some(owner) if owner != uid => Some(match named(owner) {
            Some(name) => format!("{name}, which made it"),
            None => format!(
                "the AnnotationProject with uid {owner}, which made it (its template carries that identity; that object is gone or in another cluster)"
            ),
        }),
        _ => None,
    }
}

/// spec.adopt names a project that provably is another object's: nothing is recorded, so
/// nothing of it is changed or deleted through this object.
pub fn adoption_refused(mut status: AnnotationProjectStatus, conds: Vec<NamedCond>, id: &str, owner: &str) -> Outcome {
    status.phase = Some(ProjectPhase::Failed);
    let message = format!(
        "Project {id} (spec.adopt.projectId) belongs to {owner}, so this object does not adopt, change or delete it: name a project made in the platform's UI, or remove spec.adopt to create one."
    );
    let c = cond(CREATED, Status::False, R::ProjectOwnedElsewhere, message);
    outcome(status, set(conds, c), false, Next::AwaitChange)
}

/// A platform dataset named in spec.datasetIds that was made for a Dataset outside this
/// namespace (its description carries that Dataset's identity).
pub fn dataset_owned_elsewhere(id: &str, owner: &str) -> NamedCond {
    let message = format!(
        "Platform dataset {id} (spec.datasetIds) was made for a Dataset that is not in this namespace (uid {owner}): a project takes by id only datasets made in the UI or by this namespace's Datasets; remove it, or ask its owners to share it from their namespace. Nothing was created."
    );
    cond(DATASETS_READY, Status::False, R::DatasetOwnedElsewhere, message)
}

/// The platform no longer knows the adopted or created project.
pub fn project_gone(mut status: AnnotationProjectStatus, conds: Vec<NamedCond>, id: &str) -> Outcome {
    status.phase = Some(ProjectPhase::Failed);
    let message = format!(
        "The platform no longer knows project {id} (deleted outside Git?): delete this AnnotationProject, and re-create it to make a new project."
    );
    let c = cond(CREATED, Status::False, R::ProjectNotFound, message);
    let conds = set(conds, c);
    outcome(status, conds, false, Next::AwaitChange)
}

/// What to change on a project that exists: the datasets to attach and detach, and
/// whether the rotations differ.
pub fn changes(
    spec: &AnnotationProjectSpec,
    status: &AnnotationProjectStatus,
    wanted: &[String],
) -> (Vec<String>, Vec<String>, bool) {
    let attach: Vec<String> = wanted.iter().filter(|d| !status.attached_datasets.contains(d)).cloned().collect();
    let detach: Vec<String> = status.attached_datasets.iter().filter(|d| !wanted.contains(d)).cloned().collect();
    (attach, detach, status.rotations != Some(spec.rotations))
}

/// Whether a recorded dataset change shows in the project's datasets.
pub fn applied(change: &DatasetChange, datasets: &[String]) -> bool {
    change.attach.iter().all(|d| datasets.contains(d)) && change.detach.iter().all(|d| !datasets.contains(d))
}

pub fn change_intent(
    mut status: AnnotationProjectStatus,
    conds: &[NamedCond],
    attach: Vec<String>,
    detach: Vec<String>,
    tracking_id: &str,
    now: Timestamp,
) -> Outcome {
    let what = format!("attaching [{}], detaching [{}]", attach.join(", "), detach.join(", "));
    status.dataset_change =
        Some(DatasetChange { attach, detach, tracking_id: tracking_id.to_owned(), started_time: Time(now) });
    let c = cond(CREATED, Status::Unknown, R::DatasetsChanging, format!("Changing the project's datasets: {what}."));
    outcome(status, set(conds.to_vec(), c), true, Next::AwaitChange)
}

/// After asking the platform how the project is: the created condition and, when it is
/// ready, nothing more to say (the caller then applies rotations and dataset changes).
pub fn after_get(
    mut status: AnnotationProjectStatus,
    conds: Vec<NamedCond>,
    info: Result<Option<ProjectInfo>, PlatformError>,
    attempt: u32,
) -> Result<(AnnotationProjectStatus, Vec<NamedCond>, ProjectInfo), Box<Outcome>> {
    let id = status.project_id.clone().unwrap_or_default();
    match info {
        Err(e) => {
            let conds = set(conds, platform_failure(CREATED, &format!("reading project {id}"), &e));
            Err(Box::new(outcome(status, conds, true, Next::Retry { cap: RETRY_CAP })))
        }
        Ok(None) => Err(Box::new(project_gone(status, conds, &id))),
        Ok(Some(info)) => {
            status.status_code = info.status_code;
            match info.status_code {
                Some(code) if code >= 400 => {
                    status.phase = Some(ProjectPhase::Failed);
                    let message = format!(
                        "The platform reports project {id} failed (status {code}): check its datasets and template on the platform, then delete and re-create this AnnotationProject."
                    );
                    let c = cond(CREATED, Status::False, R::ProjectFailed, message);
                    let conds = set(conds, c);
                    Err(Box::new(outcome(status, conds, false, Next::AwaitChange)))
                }
                Some(300) => {
                    let conds = set(
                        conds,
                        cond(CREATED, Status::True, R::ProjectReady, format!("Project {id} exists on the platform.")),
                    );
                    Ok((status, conds, info))
                }
                _ => {
                    status.phase = Some(ProjectPhase::Creating);
                    let message = format!("The platform is setting up project {id}.");
                    let c = cond(CREATED, Status::Unknown, R::Processing, message);
                    let conds = set(conds, c);
                    let after =
                        Duration::from_secs(2u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(60));
                    Err(Box::new(outcome(status, conds, true, Next::After(after))))
                }
            }
        }
    }
}

/// A change call (rotations, datasets) that failed.
pub fn change_failed(
    mut status: AnnotationProjectStatus,
    conds: Vec<NamedCond>,
    doing: &str,
    e: &PlatformError,
) -> Outcome {
    let rejected = matches!(e, PlatformError::Rejected { .. });
    let c = if rejected && doing.starts_with("setting the rotations") {
        let message = format!("The platform refused {doing} ({e}): your plan may allow only 1/1/1 (spec.rotations).");
        cond(CREATED, Status::False, R::RotationsRejected, message)
    } else {
        platform_failure(CREATED, doing, e)
    };
    if rejected {
        status.dataset_change = None;
    }
    let conds = set(conds, c);
    let next = if rejected { Next::AwaitChange } else { Next::Retry { cap: RETRY_CAP } };
    outcome(status, conds, !rejected, next)
}

/// The look for what a lost answer may have made failed, or its list could not be read to
/// the end: nothing proves it absent, so the intent stays and the next try looks again
/// before anything is created.
pub fn lookup_failed(status: AnnotationProjectStatus, conds: Vec<NamedCond>, e: &PlatformError) -> Outcome {
    let name = status.platform_name.clone().unwrap_or_default();
    let c = platform_failure(CREATED, &format!("looking for project {name:?} after a lost answer"), e);
    outcome(status, set(conds, c), true, Next::Retry { cap: RETRY_CAP })
}

/// The same for the template: its intent stays.
pub fn template_lookup_failed(status: AnnotationProjectStatus, ready: NamedCond, e: &PlatformError) -> Box<Outcome> {
    let c = platform_failure(TEMPLATE_READY, "looking for the template after a lost answer", e);
    Box::new(outcome(status, vec![ready, c], true, Next::Retry { cap: RETRY_CAP }))
}

/// Everything is as the spec says.
pub fn ready(mut status: AnnotationProjectStatus, conds: Vec<NamedCond>) -> Outcome {
    status.phase = Some(ProjectPhase::Ready);
    outcome(status, conds, false, Next::Success(Some(Duration::from_secs(600))))
}

#[cfg(test)]
mod tests;
