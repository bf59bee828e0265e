//! The AnnotationProject controller: wait until every referenced Dataset is Ready with files
//! and of one data type; create the template (from inline questions) once, then the
//! project once; then keep its rotations and attached datasets as the spec says, one
//! platform call per change.
//!
//! Exactly once: each create writes its intent (and tracking id) before the call. After an
//! unknown outcome the template is looked up by its name, which carries this object's uid;
//! the project by its name and this object's template. A project over a template given by
//! id cannot be proven this object's after a lost answer: a person names it (spec.adopt).
//! A dataset change is recorded before its call and checked against the project's own list
//! of datasets before it is ever sent again.

pub mod decide;

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use tracing::info;

use self::decide::DatasetState;
use super::Context;
use super::driver::{self, Error, PlatformObject, Written};
use super::finalizer;
use crate::api::annotations::PROJECT_FINALIZER;
use crate::api::conditions::{self, NamedCond, READY};
use crate::api::dataset::Dataset;
use crate::api::project::{
    AnnotationProject, AnnotationProjectStatus, ProjectDeletionPolicy, ProjectPhase, ProjectReason,
};
use crate::api::{S3Connection, annotations};
use crate::platform::{Credentials, ProjectRequest, TemplateQuestion};

impl PlatformObject for AnnotationProject {
    type Status = AnnotationProjectStatus;
    type Related = Dataset;
    const KIND: &'static str = "AnnotationProject";
    const TRIGGERS: &'static [&'static str] = &[annotations::SKIP_CLEANUP];

    fn status(&self) -> Option<&AnnotationProjectStatus> {
        self.status.as_ref()
    }

    /// Projects work through their Datasets' connections; Dataset changes bring them back.
    /// The Datasets it names.
    fn waits_for(&self, dataset: &str) -> bool {
        self.spec.dataset_refs.iter().any(|r| *r.name == *dataset)
    }

    fn phase(status: &AnnotationProjectStatus) -> Option<String> {
        status.phase.map(|p| format!("{p:?}"))
    }

    fn platform_id(status: &AnnotationProjectStatus) -> Option<&str> {
        status.project_id.as_deref()
    }

    fn phase_event(status: &AnnotationProjectStatus, ready: &NamedCond) -> (bool, String) {
        (status.phase == Some(ProjectPhase::Failed), ready.message.clone())
    }
}

/// The project's name on the platform: `<namespace>/<name>` unless given.
fn platform_name(p: &AnnotationProject) -> String {
    p.spec.display_name.clone().unwrap_or_else(|| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
}

/// Each referenced Dataset as it is now (read fresh), and the platform credentials of the
/// first one's connection.
async fn read_datasets(
    ctx: &Context,
    p: &AnnotationProject,
    namespace: &str,
) -> Result<(Vec<(String, DatasetState)>, Option<S3Connection>), Error> {
    let mut found = Vec::new();
    let mut seen: Vec<S3Connection> = Vec::new();
    for r in &p.spec.dataset_refs {
        let name = r.name.to_string();
        let ds = driver::read::<Dataset>(ctx, namespace, &name).await?;
        // The dataset's connection: its platform credentials, and its dataType when the
        // Dataset names none.
        let mut conn = None;
        if let Some(d) = &ds {
            let conn_name = d.spec.connection_ref.name.to_string();
            conn = match seen.iter().find(|c| c.name_any() == conn_name) {
                Some(c) => Some(c.clone()),
                None => driver::read::<S3Connection>(ctx, namespace, &conn_name).await?,
            };
            if let Some(c) = &conn
                && !seen.iter().any(|s| s.name_any() == c.name_any())
            {
                seen.push(c.clone());
            }
        }
        let state = match &ds {
            None => DatasetState::Missing,
            Some(d) => {
                let status = d.status.clone().unwrap_or_default();
                let ready = status.conditions.iter().find(|c| c.type_ == READY);
                let data_type =
                    d.spec.data_type.or_else(|| conn.as_ref().map(|c| c.spec.data_type)).unwrap_or_default();
                match (ready, status.dataset_id.clone()) {
                    (Some(c), Some(id)) if c.status == "True" => DatasetState::Ready {
                        id,
                        data_type: data_type.as_str().to_owned(),
                        files: status.files_count.unwrap_or(0),
                    },
                    (Some(c), _) => DatasetState::NotReady { reason: c.reason.clone(), message: c.message.clone() },
                    (None, _) => DatasetState::NotReady {
                        reason: "NotObserved".into(),
                        message: "the operator has not looked at it yet".into(),
                    },
                }
            }
        };
        found.push((name, state));
    }
    let connection = seen.into_iter().next();
    Ok((found, connection))
}

type Acted = driver::Acted<AnnotationProjectStatus>;

impl driver::Hooks for AnnotationProject {
    fn finalizer(&self) -> Option<(bool, &'static str)> {
        Some((self.spec.deletion_policy != ProjectDeletionPolicy::Retain, PROJECT_FINALIZER))
    }

    async fn clean_up(&self, ctx: &Context, namespace: &str) -> Result<Action, Error> {
        clean_up(ctx, self, namespace).await
    }

    /// The project's decision and its platform calls: the datasets first (with the platform
    /// credentials of their connection), then the template, the project and its changes.
    async fn act(
        &self,
        ctx: &Context,
        namespace: &str,
        written: &mut Written<AnnotationProjectStatus>,
    ) -> Result<Acted, Error> {
        let p = self;
        let mut status = p.status.clone().unwrap_or_default();
        status.observed_generation = p.metadata.generation;
        status.last_handled_reconcile_at = annotations::requested_at(p.annotations());

        let (found, connection) = read_datasets(ctx, p, namespace).await?;
        let mut gate = decide::datasets(&p.spec, &found);
        let creds = match (&gate, connection.as_ref()) {
            (Ok(_), Some(conn)) => {
                match super::platform::credentials_of(ctx, conn, namespace, conditions::DATASETS_READY)
                    .await
                    .map_err(|(what, source)| Error::Read { what, source })?
                {
                    Ok(c) => Some(c),
                    Err(c) => {
                        gate = Err((c, false));
                        None
                    }
                }
            }
            _ => None,
        };
        // Datasets made elsewhere: as the platform has them.
        let extra = match (&mut gate, &creds) {
            (Ok((ids, data_type)), Some(creds)) => extra_datasets(ctx, p, namespace, creds, ids, data_type).await?,
            _ => Ok(()),
        };
        if let Err(problem) = extra {
            gate = Err(problem);
        }
        let (ids, data_type, creds) = match (gate, creds) {
            (Ok((ids, t)), Some(c)) => (ids, t, c),
            (Err((problem, retrying)), _) => {
                let outcome = decide::blocked(status, problem, retrying);
                return Ok(Acted::Outcome(outcome));
            }
            (Ok(_), None) => {
                let problem = NamedCond::new(
                    conditions::DATASETS_READY,
                    conditions::Status::False,
                    ProjectReason::DatasetNotReady.as_str(),
                    "The datasets' S3Connection was not found: the project needs its platform credentials.",
                );
                let outcome = decide::blocked(status, problem, false);
                return Ok(Acted::Outcome(outcome));
            }
        };
        let run = Run { ctx, p, creds: &creds, data_type: &data_type };
        Ok(Acted::Outcome(run.step(status, ids, written).await?))
    }
}

/// The datasets of `spec.datasetIds` (made elsewhere), as the platform has them, added to
/// `ids`; or the first that stops the project (made for a Dataset of another namespace, of
/// another data type, unknown, or unread: then retried).
async fn extra_datasets(
    ctx: &Context,
    p: &AnnotationProject,
    namespace: &str,
    creds: &Credentials,
    ids: &mut Vec<String>,
    data_type: &str,
) -> Result<Result<(), (NamedCond, bool)>, Error> {
    // This namespace's Datasets, read once a dataset by id carries an s3connect identity.
    let mut local: Option<Vec<String>> = None;
    for extra in &p.spec.dataset_ids {
        let found = ctx.platform.get_dataset(creds, &extra.0).await;
        let owner = match &found {
            Ok(Some(info)) => crate::platform::identity_in(&info.description).map(str::to_owned),
            _ => None,
        };
        if let Some(owner) = owner {
            if local.is_none() {
                let list = Api::<Dataset>::namespaced(ctx.client.clone(), namespace)
                    .list_metadata(&Default::default())
                    .await
                    .map_err(Error::read(format!("Datasets in {namespace}")))?;
                local = Some(list.items.iter().filter_map(|d| d.uid()).collect());
            }
            if !local.iter().flatten().any(|u| *u == owner) {
                return Ok(Err((decide::dataset_owned_elsewhere(&extra.0, &owner), false)));
            }
        }
        match found {
            Ok(Some(info)) if info.data_type == data_type || info.data_type.is_empty() => ids.push(extra.0.clone()),
            Ok(Some(info)) => {
                let message = format!(
                    "Platform dataset {} (spec.datasetIds) holds {} files but the project is for {data_type}: remove it or fix spec.dataType. Nothing was created.",
                    extra.0, info.data_type
                );
                let c = NamedCond::new(
                    conditions::DATASETS_READY,
                    conditions::Status::False,
                    ProjectReason::DataTypeMismatch.as_str(),
                    message,
                );
                return Ok(Err((c, false)));
            }
            Ok(None) => {
                let message =
                    format!("The platform does not know dataset {} (spec.datasetIds): fix or remove it.", extra.0);
                let c = NamedCond::new(
                    conditions::DATASETS_READY,
                    conditions::Status::False,
                    ProjectReason::DatasetNotFound.as_str(),
                    message,
                );
                return Ok(Err((c, false)));
            }
            Err(e) => {
                let c: NamedCond =
                    super::platform::failure(conditions::DATASETS_READY, &format!("reading dataset {}", extra.0), &e)
                        .into();
                return Ok(Err((c, true)));
            }
        }
    }
    Ok(Ok(()))
}

/// One reconcile's platform work for a project whose datasets are ready.
struct Run<'a> {
    ctx: &'a Context,
    p: &'a AnnotationProject,
    creds: &'a Credentials,
    data_type: &'a str,
}

impl Run<'_> {
    async fn step(
        &self,
        status: AnnotationProjectStatus,
        ids: Vec<String>,
        written: &mut driver::Written<AnnotationProjectStatus>,
    ) -> Result<decide::Outcome, Error> {
        let datasets_ready = decide::datasets_ready(&ids, self.data_type);
        // The template.
        let (status, template) = match self.template(status, &datasets_ready, written).await? {
            Ok(t) => t,
            Err(outcome) => return Ok(*outcome),
        };
        let conds = vec![datasets_ready, template];
        // The project.
        let (status, conds) = if status.project_id.is_none() {
            let outcome = self.create(status, conds, &ids, written).await?;
            if outcome.status.project_id.is_none() {
                return Ok(outcome);
            }
            // Created or adopted (an adopted project's template is known only now).
            (outcome.status, outcome.conds)
        } else {
            (status, conds)
        };
        // How it is, then what to change.
        let id = status.project_id.clone().unwrap_or_default();
        let attempt = self.ctx.failures(&self.p.uid().unwrap_or_default());
        let info = self.ctx.platform.get_project(self.creds, &id).await;
        let (mut status, conds, info) = match decide::after_get(status, conds, info, attempt) {
            Ok(x) => x,
            Err(outcome) => {
                if outcome.status.phase == Some(ProjectPhase::Creating) {
                    self.ctx.record_failure(&self.p.uid().unwrap_or_default());
                }
                return Ok(*outcome);
            }
        };
        // A recorded change: done if the project shows it, else provably not applied.
        if let Some(change) = status.dataset_change.take()
            && !decide::applied(&change, &info.datasets)
        {
            info!(project = %id, tracking_id = %change.tracking_id, "a recorded dataset change does not show on the platform: sending it again");
        }
        status.attached_datasets = info.datasets.clone();
        let (attach, detach, rotations) = decide::changes(&self.p.spec, &status, &ids);
        if rotations {
            let r = self.p.spec.rotations;
            if let Err(e) =
                self.ctx.platform.set_rotations(self.creds, &id, [r.annotation, r.review, r.client_review]).await
            {
                return Ok(decide::change_failed(status, conds, "setting the rotations", &e));
            }
            status.rotations = Some(r);
        }
        self.change_datasets(status, conds, &id, [(attach, false), (detach, true)], written).await
    }

    /// Attaches, then detaches, datasets: each change's intent written before the platform
    /// hears of it, so that an unknown outcome is read back from the project next time.
    async fn change_datasets(
        &self,
        mut status: AnnotationProjectStatus,
        conds: Vec<NamedCond>,
        id: &str,
        changes: [(Vec<String>, bool); 2],
        written: &mut driver::Written<AnnotationProjectStatus>,
    ) -> Result<decide::Outcome, Error> {
        for (datasets, detach) in changes {
            if datasets.is_empty() {
                continue;
            }
            let tracking_id = crate::platform::uuid4();
            let (a, d) = if detach { (vec![], datasets.clone()) } else { (datasets.clone(), vec![]) };
            let intent = decide::change_intent(status, &conds, a, d, &tracking_id, Timestamp::now());
            driver::write(self.ctx, self.p, written, &intent).await?;
            status = intent.status;
            let what = if detach { "detaching datasets" } else { "attaching datasets" };
            match self.ctx.platform.change_datasets(self.creds, id, &datasets, detach, &tracking_id).await {
                Ok(()) => {
                    status.dataset_change = None;
                    if detach {
                        status.attached_datasets.retain(|x| !datasets.contains(x));
                    } else {
                        status.attached_datasets.extend(datasets);
                    }
                }
                Err(crate::platform::PlatformError::Unknown { .. }) => {
                    // Kept: the next reconcile reads the project's datasets before anything else.
                    return Ok(decide::change_failed(
                        status,
                        conds,
                        what,
                        &crate::platform::PlatformError::Unknown {
                            detail: "no answer".into(),
                            tracking_id: tracking_id.into(),
                        },
                    ));
                }
                Err(e) => return Ok(decide::change_failed(status, conds, what, &e)),
            }
        }
        Ok(decide::ready(status, conds))
    }

    /// The template: given by id, recorded, found after a lost answer, or created once.
    async fn template(
        &self,
        mut status: AnnotationProjectStatus,
        ready: &NamedCond,
        written: &mut driver::Written<AnnotationProjectStatus>,
    ) -> Result<Result<(AnnotationProjectStatus, NamedCond), Box<decide::Outcome>>, Error> {
        let Some(spec) = &self.p.spec.template else {
            // An adopted project keeps its own template (recorded when it is adopted).
            let c = decide::template_adopted(status.template_id.as_deref(), self.p.spec.adopt.is_some());
            if c.status == conditions::Status::False {
                return Ok(Err(Box::new(decide::blocked(status, c, false))));
            }
            return Ok(Ok((status, c)));
        };
        if let Some(id) = &spec.template_id {
            status.template_id = Some(id.0.clone());
            return Ok(Ok((status, decide::template_given(&id.0))));
        }
        if let Some(id) = status.template_id.clone() {
            return Ok(Ok((status, decide::template_exists(&id))));
        }
        let uid = self.p.uid().unwrap_or_default();
        let name = decide::template_name(spec.name.as_deref().unwrap_or(&platform_name(self.p)), &uid);
        if status.template_creation_started_time.is_some() {
            // A create whose answer was lost: found by its name (which carries this uid), or
            // provably not made.
            match self.ctx.platform.list_templates(self.creds, self.data_type).await {
                Ok(list) => {
                    if let Some(t) = list.iter().find(|t| t.name == name) {
                        return Ok(decide::after_template(status, ready.clone(), Ok(t.id.clone())));
                    }
                }
                // Not proven absent: the intent stays, and nothing is created this time.
                Err(e) => return Ok(Err(decide::template_lookup_failed(status, ready.clone(), &e))),
            }
        }
        let tracking_id = crate::platform::uuid4();
        let intent = decide::template_intent(status, ready, &tracking_id, Timestamp::now());
        driver::write(self.ctx, self.p, written, &intent).await?;
        let questions: Vec<TemplateQuestion> = spec
            .questions
            .iter()
            .enumerate()
            .map(|(i, q)| TemplateQuestion {
                number: i + 1,
                id: decide::question_id(&uid, i + 1),
                question: &q.question,
                option_type: q.type_.as_str(),
                required: q.required,
                options: q.options.iter().map(|o| o.0.as_str()).collect(),
                color: q.color.as_deref(),
            })
            .collect();
        let result =
            self.ctx.platform.create_template(self.creds, self.data_type, &name, &questions, &tracking_id).await;
        Ok(decide::after_template(intent.status, ready.clone(), result))
    }

    /// Who else provably owns project `id` (read fresh: every AnnotationProject the
    /// operator serves, and the name of the project's template).
    async fn owner_of(
        &self,
        id: &str,
        info: &crate::platform::ProjectInfo,
    ) -> Result<Result<Option<String>, crate::platform::PlatformError>, Error> {
        let all = super::api::<AnnotationProject>(self.ctx)
            .list(&Default::default())
            .await
            .map_err(Error::read("AnnotationProjects".into()))?;
        let claims: Vec<decide::Claim> = all
            .items
            .iter()
            .map(|o| {
                let name = format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
                (name, o.uid().unwrap_or_default(), o.status.as_ref().and_then(|s| s.project_id.clone()))
            })
            .collect();
        let template = match self.ctx.platform.get_template(self.creds, &info.template_id).await {
            Ok(t) => t.map(|t| t.name),
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(decide::project_owner(
            &self.p.uid().unwrap_or_default(),
            &self.p.namespace().unwrap_or_default(),
            id,
            &claims,
            template.as_deref(),
        )))
    }

    /// The project: adopted, found after a lost answer, or created once.
    async fn create(
        &self,
        status: AnnotationProjectStatus,
        conds: Vec<NamedCond>,
        ids: &[String],
        written: &mut driver::Written<AnnotationProjectStatus>,
    ) -> Result<decide::Outcome, Error> {
        let platform = &self.ctx.platform;
        let template_id = status.template_id.clone().unwrap_or_default();
        if let Some(adopt) = &self.p.spec.adopt {
            let id = adopt.project_id.0.clone();
            return Ok(match platform.get_project(self.creds, &id).await {
                Ok(Some(info)) => match self.owner_of(&id, &info).await? {
                    Ok(Some(owner)) => decide::adoption_refused(status, conds, &id, &owner),
                    Ok(None) => decide::adopted(status, conds, id, info),
                    Err(e) => decide::after_create(status, conds, Err(e), true),
                },
                Ok(None) => decide::project_gone(status, conds, &id),
                Err(e) => decide::after_create(status, conds, Err(e), true),
            });
        }
        let name = platform_name(self.p);
        if status.creation_started_time.is_some() {
            if self.p.spec.template.as_ref().is_some_and(|t| t.template_id.is_some()) {
                return Ok(decide::unconfirmed_with_shared_template(status, conds));
            }
            // Ours if it has our name and our template (whose name carries this uid).
            let list = match platform.list_projects(self.creds).await {
                Ok(l) => l,
                // Not proven absent (a failed or unfinished list): the intent stays.
                Err(e) => return Ok(decide::lookup_failed(status, conds, &e)),
            };
            for id in list {
                match platform.get_project(self.creds, &id).await {
                    Ok(Some(info)) if info.name == name && info.template_id == template_id => {
                        info!(project = %id, "adopted the project an earlier create made");
                        return Ok(decide::after_create(status, conds, Ok((id, info.datasets, None)), false));
                    }
                    Ok(_) => {}
                    Err(e) => return Ok(decide::lookup_failed(status, conds, &e)),
                }
            }
        }
        let tracking_id = crate::platform::uuid4();
        let intent = decide::project_intent(status, &conds, &name, &tracking_id, Timestamp::now());
        driver::write(self.ctx, self.p, written, &intent).await?;
        let r = self.p.spec.rotations;
        let rotations = [r.annotation, r.review, r.client_review];
        let request = ProjectRequest {
            name: &name,
            datasets: ids,
            data_type: self.data_type,
            template_id: &template_id,
            rotations,
            use_ai: self.p.spec.use_ai,
            created_by: self.p.spec.created_by.as_deref(),
        };
        let result = platform.create_project(self.creds, &request, &tracking_id).await;
        Ok(decide::after_create(intent.status, conds, result.map(|id| (id, ids.to_vec(), Some(rotations))), false))
    }
}

/// Deletion with deletionPolicy Archive or Delete: the platform's project first, then the
/// finalizer.
async fn clean_up(ctx: &Context, p: &AnnotationProject, namespace: &str) -> Result<Action, Error> {
    if !finalizer::has(p, PROJECT_FINALIZER) {
        return Ok(Action::await_change());
    }
    let status = p.status.clone().unwrap_or_default();
    let skip = p.annotations().get(annotations::SKIP_CLEANUP).is_some_and(|v| v == "true");
    let failed = match (&status.project_id, skip) {
        (Some(id), false) => {
            let (_, connection) = read_datasets(ctx, p, namespace).await?;
            match connection {
                None => Some("Its Datasets' S3Connection is gone, and with it the platform credentials.".to_owned()),
                Some(conn) => match super::platform::credentials_of(ctx, &conn, namespace, READY)
                    .await
                    .map_err(|(what, source)| Error::Read { what, source })?
                {
                    Err(c) => Some(c.message),
                    Ok(creds) => {
                        let done = match p.spec.deletion_policy {
                            ProjectDeletionPolicy::Archive => ctx.platform.archive_project(&creds, id).await,
                            _ => ctx.platform.delete_project(&creds, id).await,
                        };
                        done.err().map(|e| format!("Removing project {id} on the platform failed: {e}."))
                    }
                },
            }
        }
        _ => None,
    };
    if let Some(why) = failed {
        let message = format!(
            "{why} The AnnotationProject is deleted once its project is archived or deleted (deletionPolicy); to let it go without that, annotate it {}=true.",
            annotations::SKIP_CLEANUP
        );
        return Ok(driver::deletion_blocked(ctx, p, ProjectReason::DeletionBlocked.as_str(), message).await);
    }
    driver::set_finalizers(ctx, p, finalizer::without(p, PROJECT_FINALIZER)).await?;
    info!(project = %format!("{namespace}/{}", p.name_any()), skipped = skip, "platform project released");
    Ok(Action::await_change())
}

pub async fn run(ctx: Arc<Context>) {
    driver::run::<AnnotationProject>(ctx).await;
}
