//! The Dataset controller: wait for an Import connection that is Ready and registered,
//! create the platform's dataset exactly once, follow its processing with backoff, sync
//! it on schedule, and delete it with the object when asked to.
//!
//! Exactly once: the intent (the dataset's name and the call's tracking id) is written
//! before the create call. A create whose outcome is unknown (a timeout, a lost
//! connection, a 5xx, a restart) is looked up by that name in the platform's dataset list
//! and adopted; only a dataset that provably is not there is created again.
//!
//! The driver reads the facts, asks `decide` for the step, does the platform calls it
//! needs, and writes the outcome once.

pub mod decide;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use tracing::{info, warn};

use self::decide::{Outcome, Recheck, Step};
use super::Context;
use super::driver::{self, Error, PlatformObject, Written};
use super::finalizer;
use super::status::Next;
use crate::api::annotations::SYNC_NOW_ANNOTATION;
use crate::api::conditions::{
    self, BUCKET_REACHABLE, CONNECTION_READY, CREDENTIALS_VALID, ConnectionReadyReason, NamedCond, READ_PERMITTED,
    READY,
};
use crate::api::connection::{CorsMode, S3Connection, Usage};
use crate::api::dataset::{Dataset, DatasetPhase, DatasetReason, DatasetStatus, DeletionPolicy};
use crate::platform::{Credentials, DatasetInfo, DatasetRequest, PlatformError};
use crate::s3::probe::{self, Probe};
use crate::s3::uri::Location;

const FOR_DATASET: super::platform::Need = super::platform::Need {
    usage: Usage::Import,
    wrong_usage: ConnectionReadyReason::ConnectionNotForImport,
    why_usage: "so that its read permissions are checked",
    for_what: "datasets",
    withheld: "no dataset is created",
};

/// The dataset's name on the platform: `<namespace>/<name>` unless given (a `/` is in no
/// namespace or name, so no two Datasets share a default name).
fn platform_name(ds: &Dataset) -> String {
    ds.spec.display_name.clone().unwrap_or_else(|| format!("{}/{}", ds.namespace().unwrap_or_default(), ds.name_any()))
}

/// What marks a platform dataset as this Dataset's: its uid, in the description (the one
/// field besides the name that the platform keeps).
fn identity(ds: &Dataset) -> String {
    crate::platform::identity(&ds.uid().unwrap_or_default())
}

/// The platform datasets named `name`, split into this Dataset's (by the identity in their
/// description) and everyone else's.
async fn by_name(
    ctx: &Context,
    creds: &Credentials,
    ds: &Dataset,
    data_type: &str,
    name: &str,
) -> Result<(Vec<String>, Vec<String>), crate::platform::PlatformError> {
    let mark = identity(ds);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for id in ctx.platform.find_datasets(creds, data_type, name).await? {
        match ctx.platform.get_dataset(creds, &id).await? {
            Some(info) if info.description.contains(&mark) => ours.push(id),
            Some(_) => theirs.push(id),
            None => {}
        }
    }
    Ok((ours, theirs))
}

/// The dataset's folder: the connection's bucket and prefix, and the dataset's path.
fn folder(ds: &Dataset, conn: &S3Connection) -> Option<Location> {
    let status = conn.status.as_ref()?;
    let mut prefix =
        format!("{}{}", status.prefix.clone().unwrap_or_default(), ds.spec.path.clone().unwrap_or_default());
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    Some(Location { bucket: status.bucket.clone()?, prefix })
}

impl driver::Hooks for Dataset {
    fn finalizer(&self) -> Option<(bool, &'static str)> {
        Some((self.spec.deletion_policy == DeletionPolicy::Delete, crate::api::annotations::DATASET_FINALIZER))
    }

    async fn clean_up(&self, ctx: &Context, namespace: &str) -> Result<Action, Error> {
        let connection = driver::read::<S3Connection>(ctx, namespace, &self.spec.connection_ref.name).await?;
        clean_up(ctx, self, connection.as_ref()).await
    }

    async fn act(&self, ctx: &Context, namespace: &str, written: &mut Written<DatasetStatus>) -> Result<Acted, Error> {
        let conn_name = self.spec.connection_ref.name.to_string();
        let connection = driver::read::<S3Connection>(ctx, namespace, &conn_name).await?;
        let mut status = self.status.clone().unwrap_or_default();
        status.observed_generation = self.metadata.generation;
        let problem = super::platform::connection_problem(connection.as_ref(), &conn_name, &FOR_DATASET);
        let step = decide::step(&self.spec, &status, self.annotations(), problem.clone(), Timestamp::now());
        status.last_handled_reconcile_at = crate::api::annotations::requested_at(self.annotations());
        let outcome = match (step, connection.as_ref()) {
            (Step::Idle(after), _) => return Ok(Acted::Idle(after.map_or_else(Action::await_change, Action::requeue))),
            (Step::Blocked(p), _) => decide::blocked(status, p),
            (_, None) => decide::blocked(status, problem.unwrap_or_else(|| conn_missing(&conn_name))),
            (step, Some(conn)) => match super::platform::credentials_of(ctx, conn, namespace, CONNECTION_READY).await {
                Ok(Ok(creds)) => {
                    let run = Run { ctx, ds: self, conn, creds: &creds, namespace };
                    run.step(step, status, written).await?
                }
                Ok(Err(c)) => decide::blocked(status, c),
                Err((what, source)) => return Err(Error::Read { what, source }),
            },
        };
        Ok(Acted::Outcome(outcome))
    }
}

type Acted = driver::Acted<DatasetStatus>;

fn conn_missing(name: &str) -> NamedCond {
    NamedCond::new(
        CONNECTION_READY,
        conditions::Status::False,
        ConnectionReadyReason::ConnectionNotFound.as_str(),
        format!("S3Connection {name:?} was not found in this namespace."),
    )
}

/// One reconcile's platform work for a dataset whose connection can be used.
struct Run<'a> {
    ctx: &'a Context,
    ds: &'a Dataset,
    conn: &'a S3Connection,
    creds: &'a Credentials,
    namespace: &'a str,
}

impl Run<'_> {
    fn data_type(&self) -> &'static str {
        self.ds.spec.data_type.unwrap_or(self.conn.spec.data_type).as_str()
    }

    /// The connection's Import registration: datasets read through it (a connection
    /// with both usages has one registration each, and exports use the other).
    fn connection_id(&self) -> String {
        let status = self.conn.status.as_ref();
        status
            .and_then(|s| s.platform_connections.iter().find(|c| c.connection_type == "import"))
            .map(|c| c.id.clone())
            .or_else(|| status.and_then(|s| s.platform_connection_id.clone()))
            .unwrap_or_default()
    }

    async fn step(
        &self,
        step: Step,
        mut status: DatasetStatus,
        written: &mut driver::Written<DatasetStatus>,
    ) -> Result<Outcome, Error> {
        let ready = decide::connection_ready(&self.ds.spec.connection_ref.name, &self.connection_id());
        let name = platform_name(self.ds);
        match step {
            Step::Lookup => {
                let found = by_name(self.ctx, self.creds, self.ds, self.data_type(), &name).await;
                match found {
                    Ok((ours, _)) if let Some(id) = ours.first().cloned() => {
                        if ours.len() > 1 {
                            warn!(dataset = %name, ids = ?ours, "several platform datasets carry this Dataset's identity; adopting the first");
                        }
                        info!(dataset = %name, dataset_id = %id, "adopted the dataset an earlier create made");
                        Ok(decide::adopted(status, ready, id))
                    }
                    // Provably not there: the earlier create did not happen; create it now.
                    Ok(_) => {
                        status.creation_started_time = None;
                        status.creation_tracking_id = None;
                        self.create(status, ready, written).await
                    }
                    Err(e) => Ok(decide::after_create(status, ready, Err(e))),
                }
            }
            Step::Create => self.create(status, ready, written).await,
            Step::Check { sync } => self.check(status, ready, sync).await,
            Step::Blocked(_) | Step::Idle(_) => unreachable!("handled by the caller"),
        }
    }

    async fn create(
        &self,
        status: DatasetStatus,
        ready: NamedCond,
        written: &mut driver::Written<DatasetStatus>,
    ) -> Result<Outcome, Error> {
        let Some(location) = folder(self.ds, self.conn) else {
            return Ok(decide::blocked(status, conn_missing(&self.ds.spec.connection_ref.name)));
        };
        let name = platform_name(self.ds);
        // Someone else's dataset under this name is shown, not duplicated or adopted later.
        match by_name(self.ctx, self.creds, self.ds, self.data_type(), &name).await {
            Ok((ours, _)) if let Some(id) = ours.first().cloned() => return Ok(decide::adopted(status, ready, id)),
            Ok((_, theirs)) if !theirs.is_empty() => return Ok(decide::name_in_use(status, ready, &name)),
            Ok(_) => {}
            Err(e) => return Ok(decide::after_create(status, ready, Err(e))),
        }
        let tracking_id = crate::platform::uuid4();
        let intent = decide::intent(status, &ready, &name, &tracking_id, Timestamp::now());
        // Preconditioned on the version this decision was made from: a stale cache gets a
        // 409 here, and the platform is never called.
        driver::write(self.ctx, self.ds, written, &intent).await?;
        let owner = format!("{}/{}", self.namespace, self.ds.name_any());
        let description = format!(
            "{} {}",
            self.ds.spec.description.clone().unwrap_or_else(|| format!("Managed by s3connect (Dataset {owner})")),
            identity(self.ds)
        );
        let connection_id = self.connection_id();
        let request = DatasetRequest {
            name: &name,
            description: &description,
            data_type: self.data_type(),
            connection_id: &connection_id,
            path: crate::platform::folder_path(&location),
            multimodal_indexing: self.ds.spec.multimodal_indexing,
        };
        let result = self.ctx.platform.create_dataset(self.creds, &request, &tracking_id).await;
        Ok(decide::after_create(intent.status, ready, result))
    }

    async fn check(&self, status: DatasetStatus, ready: NamedCond, sync: bool) -> Result<Outcome, Error> {
        let id = status.dataset_id.clone().unwrap_or_default();
        let location = folder(self.ds, self.conn);
        let where_ = location.as_ref().map_or_else(|| "its folder".to_owned(), |l| l.to_string());
        let platform = &self.ctx.platform;
        // How the platform has the dataset, against the spec, at the time it is asked.
        let after_check = |status: DatasetStatus,
                           ready: NamedCond,
                           info: Result<Option<DatasetInfo>, PlatformError>,
                           recheck: Option<&Recheck>,
                           synced: Option<String>,
                           attempt: u32| {
            decide::after_check(status, ready, &where_, &self.ds.spec, info, recheck, synced, Timestamp::now(), attempt)
        };
        let mut synced = None;
        if sync && let (Some(s), Some(l)) = (&self.ds.spec.sync, &location) {
            let (path, connection_id) = (crate::platform::folder_path(l), self.connection_id());
            let reasons = (DatasetReason::ProjectNotFound.as_str(), DatasetReason::ProjectNotReady.as_str());
            let project = super::platform::project_id_of(
                self.ctx,
                self.namespace,
                s.project_id.as_deref(),
                s.project_ref.as_ref(),
                READY,
                reasons,
            )
            .await
            .map_err(|(what, source)| Error::Read { what, source })?;
            let project_id = match project {
                Ok(id) => id,
                // The dataset stays as it is; the sync runs once the project is Ready.
                Err(c) => {
                    info!(dataset = %self.ds.name_any(), why = %c.message, "sync waits for its project");
                    let info = platform.get_dataset(self.creds, &id).await;
                    let mut outcome = after_check(status, ready, info, None, None, 0);
                    if matches!(outcome.next, Next::Success(_)) {
                        outcome.next = Next::Success(Some(Duration::from_secs(10)));
                    }
                    return Ok(outcome);
                }
            };
            let call = platform.sync_dataset(self.creds, &project_id, &id, &connection_id, &path, self.data_type());
            if let Err(e) = call.await {
                return Ok(after_check(status, ready, Err(e), None, None, 0));
            }
            synced = Some(self.ds.annotations().get(SYNC_NOW_ANNOTATION).cloned().unwrap_or_default());
        }
        let info = platform.get_dataset(self.creds, &id).await;
        // A failed or empty dataset: look again with the connection's own keys, so that the
        // message names what is wrong now (a denied action and its statement, no objects).
        let needs_recheck =
            matches!(&info, Ok(Some(i)) if i.status_code >= 400 || (i.status_code == 300 && i.files_count == 0));
        let recheck = match (&location, needs_recheck) {
            (Some(l), true) => self.recheck(l).await,
            _ => None,
        };
        let attempt = self.ctx.failures(&self.ds.uid().unwrap_or_default());
        let outcome = after_check(status, ready, info, recheck.as_ref(), synced, attempt);
        if outcome.status.phase == Some(DatasetPhase::Creating) {
            self.ctx.record_failure(&self.ds.uid().unwrap_or_default());
        }
        Ok(outcome)
    }

    /// The connection's read probes on the dataset's folder, with the connection's keys.
    async fn recheck(&self, location: &Location) -> Option<Recheck> {
        use crate::validation::{KeysFrom, Subject, decide};
        let spec = &self.conn.spec;
        if let Some(endpoint) = &spec.endpoint {
            let contacted =
                crate::s3::client::contacted_url(Some(endpoint), spec.force_path_style, &location.bucket, "");
            if !self.ctx.config.allowed_endpoints.allows(&contacted) {
                return None;
            }
        }
        let conn_name = self.conn.name_any();
        let refs = spec.credentials.secret(&conn_name);
        let secret =
            Api::<Secret>::namespaced(self.ctx.client.clone(), self.namespace).get_opt(&refs.name).await.ok()??;
        let keys = crate::validation::keys_from(&secret, &refs).ok()?;
        let owner = format!("{}/{}", self.namespace, self.ds.name_any());
        let probe = Probe {
            location,
            access: crate::s3::Access { read: true, write: false },
            cors: crate::s3::Cors::Ignore,
            origins: &[],
            region: spec.region.as_deref(),
            endpoint: spec.endpoint.as_deref(),
            force_path_style: spec.force_path_style,
            owner: &owner,
            deadline: self.ctx.config.validation_timeout,
        };
        let report = probe::run(&probe, &keys).await;
        let mut read_spec = spec.clone();
        read_spec.usage = vec![Usage::Import];
        read_spec.cors.mode = CorsMode::Ignore;
        read_spec.uri = location.to_string();
        let verdict = decide(
            &Subject { spec: &read_spec, name: &conn_name, namespace: self.namespace, keys_from: KeysFrom::Secret },
            Ok((location, &report)),
        );
        let problem = verdict
            .conditions
            .iter()
            .filter(|c| [CREDENTIALS_VALID, BUCKET_REACHABLE, READ_PERMITTED].contains(&c.type_))
            .find(|c| !c.is_true())
            .map(|c| c.message.clone());
        Some(Recheck { problem, missing_policy: verdict.missing_policy, sample: report.sample_object })
    }
}

/// Deletion with deletionPolicy Delete: the platform's dataset first (the recorded one,
/// and one an unconfirmed create may have made), then the finalizer.
async fn clean_up(ctx: &Context, ds: &Dataset, conn: Option<&S3Connection>) -> Result<Action, Error> {
    if !finalizer::has(ds, crate::api::annotations::DATASET_FINALIZER) {
        return Ok(Action::await_change());
    }
    let namespace = ds.namespace().unwrap_or_default();
    let status = ds.status.clone().unwrap_or_default();
    let skip = ds.annotations().get(crate::api::annotations::SKIP_CLEANUP).is_some_and(|v| v == "true");
    let failed: Option<String> = if skip || (status.dataset_id.is_none() && status.creation_started_time.is_none()) {
        None
    } else {
        match conn {
            None => Some(format!(
                "Its S3Connection {:?} is gone, and with it the platform credentials needed to delete the dataset.",
                &*ds.spec.connection_ref.name
            )),
            Some(conn) => match super::platform::credentials_of(ctx, conn, &namespace, READY).await {
                Err((what, source)) => return Err(Error::Read { what, source }),
                Ok(Err(c)) => Some(c.message),
                Ok(Ok(creds)) => {
                    let mut ids: Vec<String> = status.dataset_id.iter().cloned().collect();
                    // Unrecorded (a create whose answer was lost): only a dataset that
                    // carries this Dataset's identity is deleted, never a namesake.
                    if status.dataset_id.is_none() {
                        let data_type = ds.spec.data_type.unwrap_or(conn.spec.data_type).as_str();
                        match by_name(ctx, &creds, ds, data_type, &platform_name(ds)).await {
                            Ok((ours, _)) => ids.extend(ours),
                            Err(e) => ids.push(format!("(lookup failed: {e})")),
                        }
                    }
                    let mut failed = None;
                    for id in ids {
                        if id.starts_with('(') {
                            failed = Some(id);
                            break;
                        }
                        if let Err(e) = ctx.platform.delete_dataset(&creds, &id).await {
                            failed = Some(format!("Deleting dataset {id} on the platform failed: {e}."));
                            break;
                        }
                    }
                    failed
                }
            },
        }
    };
    if let Some(why) = failed {
        let message = format!(
            "{why} The Dataset is deleted once its platform dataset is (deletionPolicy: Delete); to let it go without that, annotate it {}=true.",
            crate::api::annotations::SKIP_CLEANUP
        );
        return Ok(driver::deletion_blocked(ctx, ds, DatasetReason::DeletionBlocked.as_str(), message).await);
    }
    driver::set_finalizers(ctx, ds, finalizer::without(ds, crate::api::annotations::DATASET_FINALIZER)).await?;
    info!(dataset = %format!("{namespace}/{}", ds.name_any()), skipped = skip, "platform dataset removed");
    Ok(Action::await_change())
}

impl PlatformObject for Dataset {
    type Status = DatasetStatus;
    type Related = S3Connection;
    const KIND: &'static str = "Dataset";
    const TRIGGERS: &'static [&'static str] = &[SYNC_NOW_ANNOTATION, crate::api::annotations::SKIP_CLEANUP];

    fn status(&self) -> Option<&DatasetStatus> {
        self.status.as_ref()
    }

    /// Its connection, until its platform dataset exists.
    fn waits_for(&self, connection: &str) -> bool {
        *self.spec.connection_ref.name == *connection && self.status.as_ref().is_none_or(|s| s.dataset_id.is_none())
    }

    fn phase(status: &DatasetStatus) -> Option<String> {
        status.phase.map(|p| format!("{p:?}"))
    }

    fn platform_id(status: &DatasetStatus) -> Option<&str> {
        status.dataset_id.as_deref()
    }

    fn phase_event(status: &DatasetStatus, ready: &NamedCond) -> (bool, String) {
        (!ready.is_true() && status.phase == Some(DatasetPhase::Failed), ready.message.clone())
    }

    fn jitter(&self) -> f64 {
        crate::timing::jitter_fraction(&self.uid().unwrap_or_default())
    }
}

pub async fn run(ctx: Arc<Context>) {
    driver::run::<Dataset>(ctx).await;
}
