//! The S3Connection controller: fetch facts (Secret, probes) -> decide (pure) -> write
//! status (server-side apply) -> schedule the next validation.

pub mod grants;
pub mod managed;
pub mod register;
pub mod schedule;

use std::hash::{Hash, Hasher};

use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use self::schedule::{Plan, plan};
use super::{Context, finalizer};
use crate::api::conditions::{self, Cond};
use crate::api::connection::{CorsState, CredentialsSecretRef, S3Connection, S3ConnectionStatus};
use crate::s3::client::Keys;
use crate::s3::probe::{self, Probe, Report};
use crate::s3::uri::Location;
use crate::timing::{jitter_fraction, parse_interval, revalidate_after};
use crate::validation::{self, Blocker, KeysFrom, Next, Subject, Verdict, decide, keys_from};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("S3Connection {0} has no namespace")]
    NoNamespace(String),
    #[error("reading Secret {namespace}/{name} failed ({}): {source}", read_hint(source))]
    ReadSecret { namespace: String, name: String, source: kube::Error },
    #[error("writing the status of S3Connection {namespace}/{name} failed: {source}")]
    WriteStatus { namespace: String, name: String, source: kube::Error },
    #[error("writing the managed credentials of S3Connection {namespace}/{name} failed: {source}")]
    WriteManaged { namespace: String, name: String, source: kube::Error },
}

/// What to look at when reading a Secret failed: RBAC only when the API server said so.
fn read_hint(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(s) if s.code == 403 => "check the operator's RBAC for secrets",
        kube::Error::Api(s) if s.code < 500 && s.code != 429 => "the API server refused the read",
        _ => "the API server did not answer; retrying",
    }
}

/// A digest of the key values the connection uses, salted with its uid (so that equal keys
/// of two connections do not show as equal): what decides whether the Secret changed, so
/// that a change of its labels or annotations changes nothing. None while a key is missing.
fn credentials_digest(uid: &str, secret: &Secret, refs: &CredentialsSecretRef) -> Option<String> {
    use sha2::Digest;
    let data = secret.data.as_ref()?;
    let mut hash = sha2::Sha256::new();
    hash.update(uid.as_bytes());
    for (i, key) in
        [&refs.access_key_id_key, &refs.secret_access_key_key, &refs.session_token_key].into_iter().enumerate()
    {
        let value = data.get(key.as_str()).map(|v| v.0.as_slice());
        if i < 2 && value.is_none() {
            return None;
        }
        hash.update([0xff]);
        hash.update(value.unwrap_or_default().trim_ascii());
    }
    Some(hash.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect())
}

async fn get_secret(ctx: &Context, namespace: &str, name: &str) -> Result<Option<Secret>, Error> {
    Api::<Secret>::namespaced(ctx.client.clone(), namespace).get_opt(name).await.map_err(|source| Error::ReadSecret {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source,
    })
}

fn has_finalizer(conn: &S3Connection) -> bool {
    finalizer::has(conn, crate::api::annotations::PLATFORM_CONNECTION_FINALIZER)
}

/// Sets the finalizers to `finalizers`, failing if the object changed meanwhile; returns
/// the object's new resourceVersion.
async fn set_finalizers(ctx: &Context, conn: &S3Connection, finalizers: Vec<String>) -> Result<Option<String>, Error> {
    finalizer::set(&ctx.client, conn, finalizers).await.map_err(|source| Error::WriteStatus {
        namespace: conn.namespace().unwrap_or_default(),
        name: conn.name_any(),
        source,
    })
}

/// The resourceVersion every status write of one reconcile is preconditioned on: the
/// object's as read, then as each write left it.
type Version = Arc<std::sync::Mutex<Option<String>>>;

fn current(version: &Version) -> Option<String> {
    version.lock().map(|v| v.clone()).unwrap_or_default()
}

/// Writes the registrations about to be created into the status, before the platform is
/// asked: the whole status as it is, so that nothing else changes, preconditioned on the
/// version the decision was made from (a stale view is refused, and nothing is created).
fn record_intents(
    ctx: &Context,
    conn: &S3Connection,
    intents: Vec<crate::api::connection::RegistrationIntent>,
    version: Version,
) -> futures::future::BoxFuture<'static, Result<(), String>> {
    let mut status = conn.status.clone().unwrap_or_default();
    status.platform_registration_intents = intents;
    let api = Api::<S3Connection>::namespaced(ctx.client.clone(), &conn.namespace().unwrap_or_default());
    let name = conn.name_any();
    Box::pin(async move {
        let mut at = current(&version);
        match super::status::apply_at(&api, &name, &status, &mut at).await {
            Ok(()) => {
                if let Ok(mut v) = version.lock() {
                    *v = at;
                }
                Ok(())
            }
            Err(kube::Error::Api(status)) => Err(status.message),
            Err(other) => Err(other.to_string()),
        }
    })
}

/// Deletion: remove the platform connections, then the finalizer.
async fn clean_up(conn: &S3Connection, ctx: &Context) -> Result<Action, Error> {
    if !has_finalizer(conn) {
        // Platform registrations first (they hold the keys), then the IAM user.
        return clean_up_managed(conn, ctx).await;
    }
    let namespace = conn.namespace().unwrap_or_default();
    let connections = conn.status.as_ref().map(|s| s.platform_connections.clone()).unwrap_or_default();
    let skip = conn.annotations().get(crate::api::annotations::SKIP_CLEANUP).is_some_and(|v| v == "true");
    // Every registration under the connection's names goes, recorded or not (a create
    // whose answer was lost, a duplicate): the finalizer is there so that none keeps keys.
    if !skip && conn.spec.platform.is_some() {
        let owner = format!("{namespace}/{}", conn.name_any());
        let failed = match &conn.spec.platform {
            None => None,
            Some(p) => {
                let secret = get_secret(ctx, &namespace, &p.secret_ref.name).await?;
                match super::platform::credentials(secret.as_ref(), &p.secret_ref, &namespace) {
                    Err(cond) => Some(cond),
                    Ok(creds) => match register::remove_all(
                        &ctx.platform,
                        &creds,
                        &owner,
                        &conn.uid().unwrap_or_default(),
                        &connections,
                    )
                    .await
                    {
                        Ok(_) => None,
                        Err((doing, e)) => Some(super::platform::failure(conditions::REGISTERED, &doing, &e)),
                    },
                }
            }
        };
        if let Some(cond) = failed {
            let message = format!(
                "{} The S3Connection is deleted once its platform connections are; to let it go without that, annotate it {}=true.",
                cond.message,
                crate::api::annotations::SKIP_CLEANUP
            );
            return Ok(deletion_waits(ctx, conn, Cond { message, ..cond }).await);
        }
    }
    set_finalizers(ctx, conn, finalizer::without(conn, crate::api::annotations::PLATFORM_CONNECTION_FINALIZER)).await?;
    info!(connection = %format!("{namespace}/{}", conn.name_any()), skipped = skip, "platform connections removed");
    Ok(Action::await_change())
}

/// Shows why deletion waits (`cond`, under a field manager of its own so that the main
/// status stays as it is) and retries with backoff.
async fn deletion_waits(ctx: &Context, conn: &S3Connection, cond: Cond) -> Action {
    let patch = serde_json::json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "S3Connection", "status": {
        "conditions": conditions::merge(
            &conn.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default(),
            &[cond],
            conn.metadata.generation,
            &Time(Timestamp::now()),
        ),
    }});
    let _ = Api::<S3Connection>::namespaced(ctx.client.clone(), &conn.namespace().unwrap_or_default())
        .patch_status(&conn.name_any(), &PatchParams::apply("s3connect-cleanup").force(), &Patch::Apply(&patch))
        .await;
    let uid = conn.uid().unwrap_or_default();
    let next = super::status::Next::Retry { cap: Duration::from_secs(300) };
    super::status::action(ctx, &uid, next, jitter_fraction(&uid))
}

/// Managed credentials replaced by a secretRef: the operator's IAM user and its Secret go,
/// then the finalizer and the status that named them. Until IAM allows it, the status says
/// why and the connection is retried.
async fn switch_off_managed(conn: &S3Connection, ctx: &Context) -> Result<Action, Error> {
    let (namespace, name) = (conn.namespace().unwrap_or_default(), conn.name_any());
    if let Err((reason, e)) = managed::remove(ctx, conn, false).await {
        let message = format!(
            "{e} spec.credentials.managed was removed; the operator deletes the IAM user it made before it uses the new credentials."
        );
        let cond = Cond::failed(conditions::CREDENTIALS_VALID, reason, message);
        return Ok(deletion_waits(ctx, conn, cond).await);
    }
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    let secret_name = crate::api::connection::managed_secret_name(&name);
    let uid = conn.uid().unwrap_or_default();
    if let Some(s) = secrets.get_opt(&secret_name).await.map_err(|source| Error::ReadSecret {
        namespace: namespace.clone(),
        name: secret_name.clone(),
        source,
    })? && s.owner_references().iter().any(|o| o.uid == uid)
    {
        managed::delete_secret(&secrets, &s).await.map_err(|source| Error::WriteManaged {
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        })?;
    }
    let mut version =
        set_finalizers(ctx, conn, finalizer::without(conn, crate::api::annotations::IAM_USER_FINALIZER)).await?;
    if conn.status.as_ref().is_some_and(|s| s.managed_credentials.is_some()) {
        let status = S3ConnectionStatus { managed_credentials: None, ..conn.status.clone().unwrap_or_default() };
        super::status::apply(ctx, conn, &status, &mut version).await.map_err(|source| Error::WriteStatus {
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        })?;
    }
    info!(connection = %format!("{namespace}/{name}"), "managed credentials switched off: the IAM user was removed");
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// Deletion of a managed connection: its IAM user, policy and keys (unless retained), then
/// the finalizer. What IAM refused is shown in the status, and retried.
async fn clean_up_managed(conn: &S3Connection, ctx: &Context) -> Result<Action, Error> {
    if !finalizer::has(conn, crate::api::annotations::IAM_USER_FINALIZER) {
        return Ok(Action::await_change());
    }
    let namespace = conn.namespace().unwrap_or_default();
    if let Err((reason, e)) = managed::remove(ctx, conn, managed::retains(conn)).await {
        let message = format!("{e} The S3Connection is deleted once its IAM user is.");
        let cond = Cond::failed(conditions::CREDENTIALS_VALID, reason, message);
        return Ok(deletion_waits(ctx, conn, cond).await);
    }
    set_finalizers(ctx, conn, finalizer::without(conn, crate::api::annotations::IAM_USER_FINALIZER)).await?;
    info!(connection = %format!("{namespace}/{}", conn.name_any()), "managed IAM user removed");
    Ok(Action::await_change())
}

pub async fn reconcile(conn: Arc<S3Connection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let name = conn.name_any();
    let namespace = conn.namespace().ok_or_else(|| Error::NoNamespace(name.clone()))?;
    if conn.metadata.deletion_timestamp.is_some() {
        crate::telemetry::metrics::METRICS.forget(&conn.uid().unwrap_or_default());
        return clean_up(&conn, &ctx).await;
    }
    let uid = conn.uid().unwrap_or_default();
    let spec = &conn.spec;

    // Finalizers before anything is registered or made in IAM, so that nothing outside the
    // cluster outlives the object; one write for both.
    // (Only added here: each is removed once what it holds is gone.)
    let wants = [
        (spec.platform.is_some(), crate::api::annotations::PLATFORM_CONNECTION_FINALIZER),
        (spec.credentials.managed.is_some(), crate::api::annotations::IAM_USER_FINALIZER),
    ];
    let added: Vec<(bool, &str)> = wants.into_iter().filter(|(wanted, _)| *wanted).collect();
    let written_at: Version = Arc::new(std::sync::Mutex::new(conn.resource_version()));
    if let Some(finalizers) = finalizer::wanted(conn.as_ref(), &added) {
        let written = set_finalizers(&ctx, &conn, finalizers).await?;
        if let Ok(mut v) = written_at.lock() {
            *v = written;
        }
    }
    // Managed credentials taken out of the spec: the IAM user they made goes too (no live
    // key is left behind), then the finalizer.
    if spec.credentials.managed.is_none() && finalizer::has(conn.as_ref(), crate::api::annotations::IAM_USER_FINALIZER)
    {
        return switch_off_managed(&conn, &ctx).await;
    }
    // Managed credentials: the IAM user and a current key exist before the Secret is read.
    let (mut managed_status, mut managed_blocker, mut managed_secret) = (None, None, None);
    if spec.credentials.managed.is_some() {
        match managed::ensure(&ctx, &conn).await {
            Ok(Ok(ensured)) => (managed_status, managed_secret) = (Some(ensured.status), Some(ensured.secret)),
            Ok(Err(blocker)) => managed_blocker = Some(blocker),
            Err(source) => return Err(Error::WriteManaged { namespace, name, source }),
        }
    }
    let refs = spec.credentials.secret(&name);
    let read = match managed_secret {
        Some(secret) => Ok(secret),
        None => get_secret(&ctx, &namespace, &refs.name).await,
    };
    let (secret, forbidden) = match read {
        Ok(s) => (s, false),
        Err(Error::ReadSecret { source: kube::Error::Api(e), name, .. }) if e.code == 403 => {
            warn!(connection = %format!("{namespace}/{}", conn.name_any()), secret = %name, "the operator's RBAC forbids reading the Secret");
            (None, true)
        }
        Err(e) => return Err(e),
    };
    let secret_version = secret.as_ref().and_then(|s| s.metadata.resource_version.clone());
    let secret_digest = secret.as_ref().and_then(|s| credentials_digest(&uid, s, &refs));
    let rotation_waits_until = managed_status.as_ref().and_then(|m| m.rotation_waits_until.as_ref()).map(|t| t.0);
    let platform_secret = match &spec.platform {
        Some(p) => get_secret(&ctx, &namespace, &p.secret_ref.name).await?,
        None => None,
    };
    let platform_secret_version = platform_secret.as_ref().and_then(|s| s.metadata.resource_version.clone());

    let interval = parse_interval(&spec.revalidate_interval);
    let jitter = jitter_fraction(&uid);
    let now = Timestamp::now();
    let since_last = conn
        .status
        .as_ref()
        .and_then(|s| s.last_validated_time.as_ref())
        .map(|t| Duration::try_from(now.duration_since(t.0)).unwrap_or(Duration::ZERO));
    let requested = crate::api::annotations::requested_at(conn.annotations());
    let facts = schedule::Facts {
        status: conn.status.as_ref(),
        generation: conn.metadata.generation,
        secret_digest: secret_digest.as_deref(),
        secret_version: secret_version.as_deref(),
        platform_secret_version: platform_secret_version.as_deref(),
        requested: requested.as_deref(),
        since_last,
        interval,
        failures: ctx.failures(&uid),
        jitter,
    };
    // Held Ready while the store answered nothing: once the unreachable grace is over, look
    // now, so that Ready turns False then and not at the next scheduled validation.
    let down_for = conn.status.as_ref().and_then(|s| {
        let ready = s.conditions.iter().any(|c| c.type_ == conditions::READY && c.status == "True");
        validation::reconciling_for(&s.conditions, now)
            .filter(|(reason, _)| ready && *reason == conditions::Reason::EndpointUnreachable.as_str())
            .map(|(_, d)| d)
    });
    match plan(&facts) {
        Plan::ValidateNow => {}
        _ if down_for.is_some_and(|d| d >= ctx.config.unreachable_grace) => {}
        // A managed-credentials problem the status does not show yet.
        _ if managed_blocker.as_ref().is_some_and(|b| !shows(conn.as_ref(), b)) => {}
        // A rotation that waits, not shown yet.
        _ if rotation_waits_until.is_some()
            && conn.status.as_ref().and_then(|s| s.managed_credentials.as_ref()).map(|m| &m.rotation_waits_until)
                != managed_status.as_ref().map(|m| &m.rotation_waits_until) =>
        {
            if let Some(until) = rotation_waits_until {
                let every = ctx.config.managed.as_ref().map_or(0, |m| m.min_rotation_interval.as_secs());
                let note = format!(
                    "The key rotation asked for waits until {until}: the operator rotates managed keys on request at most once every {every} s (--min-rotation-interval)."
                );
                ctx.event(
                    conn.object_ref(&()),
                    false,
                    conditions::OperatorReason::RotationWaits.as_str(),
                    "RotateKeys",
                    &note,
                )
                .await;
            }
        }
        Plan::WaitFor(d) => return Ok(Action::requeue(d)),
        Plan::WaitForChange => return Ok(Action::await_change()),
    }

    // Validations of one object are spaced: a tenant annotating its Secret or connection in
    // a loop cannot make the operator probe S3 or call the platform faster than this. A
    // spec change (a new generation) is looked at at once.
    let spec_changed = conn.status.as_ref().is_none_or(|s| s.observed_generation != conn.metadata.generation);
    let left = ctx.spacing_left(&uid);
    if !spec_changed && !left.is_zero() {
        return Ok(Action::requeue(left));
    }
    ctx.validation_started(&uid);

    let owner = format!("{namespace}/{name}");
    let subject = Subject { spec, name: &name, namespace: &namespace, keys_from: KeysFrom::Secret };
    let existing = conn.status.as_ref().map(|s| s.platform_connections.clone()).unwrap_or_default();
    let mut platform_connections = existing.clone();
    let mut registration_intents =
        conn.status.as_ref().map(|s| s.platform_registration_intents.clone()).unwrap_or_default();
    // Keys revoked (no grant covers the connection): the status no longer names them.
    let revoked =
        matches!(&managed_blocker, Some(Blocker::Managed { reason: conditions::Reason::ManagedBucketNotAllowed, .. }));
    let prepared = if let Some(blocker) = managed_blocker {
        Err(blocker)
    } else if forbidden {
        Err(Blocker::SecretForbidden)
    } else {
        prepare(spec, &refs, secret.as_ref(), &ctx.config.allowed_endpoints)
    };
    let (verdict, report) = async {
        match prepared {
            Ok((location, keys)) => {
                let probe =
                    Probe { deadline: ctx.config.validation_timeout, ..validation::probe_for(spec, &location, &owner) };
                let report = probe::run(&probe, &keys).await;
                let mut verdict = decide(&subject, Ok((&location, &report)));
                if let Some(p) = &spec.platform {
                    let registered = if !verdict.ready().is_true() {
                        Cond::not_checked(
                            conditions::REGISTERED,
                            "the connection is registered once every probe passes",
                        )
                    } else {
                        match super::platform::credentials(platform_secret.as_ref(), &p.secret_ref, &namespace) {
                            Err(cond) => cond,
                            Ok(creds) => {
                                // Registered per key values: a metadata-only change of the
                                // Secret never re-creates the registration.
                                let version =
                                    secret_digest.clone().or_else(|| secret_version.clone()).unwrap_or_default();
                                let done = register::register(
                                    &ctx.platform,
                                    &creds,
                                    spec,
                                    &location,
                                    &keys,
                                    &existing,
                                    &registration_intents,
                                    &version,
                                    &owner,
                                    &uid,
                                    &mut |intents| record_intents(&ctx, &conn, intents, written_at.clone()),
                                )
                                .await;
                                platform_connections = done.connections;
                                registration_intents = done.intents;
                                done.cond
                            }
                        }
                    };
                    verdict = validation::with_registration(verdict, registered);
                }
                // `keys` goes out of scope here: nothing below can read them.
                (verdict, Some(report))
            }
            Err(blocker) => {
                let mut verdict = decide(&subject, Err(&blocker));
                if spec.platform.is_some() {
                    let registered = Cond::not_checked(
                        conditions::REGISTERED,
                        "the connection is registered once every probe passes",
                    );
                    verdict = validation::with_registration(verdict, registered);
                }
                (verdict, None)
            }
        }
    }
    .await;
    let report = report.as_ref();
    let location = Location::parse(&spec.uri).ok();

    let old = conn.status.clone().unwrap_or_default();
    let same_inputs = old.observed_generation == conn.metadata.generation
        && !schedule::secret_changed(&old, secret_digest.as_deref(), secret_version.as_deref())
        && old.platform_secret_version == platform_secret_version;
    // A managed key S3 does not know yet (IAM propagates in seconds): retried, and a
    // rotation keeps the last Ready verdict meanwhile; the new Secret is our own change.
    let propagating = validation::key_propagating(
        verdict.ready(),
        managed_status.as_ref().and_then(|m| m.key_created_time.as_ref()).map(|t| t.0),
        now,
    );
    // A store that answered nothing is down, not flaky: a shorter grace.
    let down = report.is_some_and(Report::unanswered);
    let grace = if down { ctx.config.unreachable_grace } else { ctx.config.transient_grace };
    let held = validation::hold_ready_if(
        &old,
        same_inputs || propagating,
        verdict.ready(),
        verdict.ready().reason.is_transient() || propagating,
        now,
        grace,
    );
    // While held for a store that is down, look again by the end of the grace, so that
    // Ready turns False when it ends rather than at the next backoff step.
    let grace_left = held
        .as_ref()
        .filter(|_| down)
        .and_then(|conds| validation::reconciling_for(conds, now))
        .map(|(_, held_for)| grace.saturating_sub(held_for));
    let created = conn.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let secret_wait = validation::secret_grace_left(&verdict, created, now, ctx.config.secret_grace);
    let holding = held.is_some();
    let mut status = match held {
        // Ready stays as the last complete validation found it, with Reconciling saying why
        // this one did not finish.
        Some(conditions) => {
            S3ConnectionStatus { conditions, last_handled_reconcile_at: requested.clone(), ..old.clone() }
        }
        None => {
            let mut status = new_status(
                &conn,
                &old,
                &verdict,
                secret_wait.is_some() || propagating,
                location.as_ref(),
                report,
                (secret_version, secret_digest),
                now,
            );
            status.platform_connection_id = register::primary_id(&platform_connections);
            status.platform_connections = platform_connections;
            status.platform_secret_version = platform_secret_version;
            status.last_handled_reconcile_at = requested.clone();
            status.platform_registration_intents = registration_intents;
            status
        }
    };
    if let Some(mut managed) = managed_status {
        // The previous key goes once a validation with the new one is Ready.
        if !holding
            && verdict.ready().is_true()
            && let Some(validated) = &secret
        {
            managed::retire_previous(&ctx, &conn, validated, &mut managed).await;
        }
        status.managed_credentials = Some(managed);
    } else if revoked {
        status.managed_credentials = None;
    }
    if !holding && let Some(l) = &location {
        status.endpoint = Some(crate::s3::client::contacted_url(
            spec.endpoint.as_deref(),
            spec.force_path_style,
            &l.bucket,
            status.region.as_deref().unwrap_or("us-east-1"),
        ));
    }
    let mut written = current(&written_at);
    super::status::apply(&ctx, conn.as_ref(), &status, &mut written).await.map_err(|source| Error::WriteStatus {
        namespace: namespace.clone(),
        name: name.clone(),
        source,
    })?;
    if !holding {
        publish_events(&ctx, &conn, &old, &verdict).await;
    }

    let next = match verdict.next {
        Next::Revalidate => super::status::Next::Success(Some(revalidate_after(interval, jitter))),
        Next::Retry | Next::RecheckLater => super::status::Next::Retry { cap: interval },
        Next::WaitForChange => super::status::Next::Success(None),
    };
    // Within the Secret's grace: the watch brings it back when the Secret appears, and this
    // turns it Stalled when the grace is over.
    let next = secret_wait.map_or(next, |left| super::status::Next::After(left + Duration::from_secs(1)));
    let next = if propagating { super::status::Next::After(Duration::from_secs(5)) } else { next };
    let next = match grace_left {
        Some(left) => super::status::Next::After((left + Duration::from_secs(1)).min(Duration::from_secs(10))),
        None => next,
    };
    // A rotation that waits is done when its time comes.
    let next = match (rotation_waits_until.and_then(|t| Duration::try_from(t.duration_since(now)).ok()), next) {
        (Some(wait), super::status::Next::Success(after)) => {
            let wait = wait + Duration::from_secs(1);
            super::status::Next::Success(Some(after.map_or(wait, |a| a.min(wait))))
        }
        (_, next) => next,
    };
    let action = super::status::action(&ctx, &uid, next, jitter);
    let ready = verdict.ready();
    let metrics = &crate::telemetry::metrics::METRICS;
    metrics.reconciled("S3Connection", ready.reason.as_str(), started.elapsed());
    // Within the transient grace the status still says Ready, and so does the gauge.
    let (shown, shown_reason) =
        if holding { (true, conditions::Reason::Validated) } else { (ready.is_true(), ready.reason) };
    metrics.set_ready(&uid, "S3Connection", &namespace, &name, shown, shown_reason.as_str());
    info!(
        connection = %owner,
        ready = ready.status.as_str(),
        reason = ready.reason.as_str(),
        s3_requests = report.map_or(0, |r| r.requests),
        duration_ms = started.elapsed().as_millis() as u64,
        "validated"
    );
    Ok(action)
}

/// Everything a probe needs, or the one thing that stops it.
fn prepare(
    spec: &crate::api::connection::S3ConnectionSpec,
    refs: &crate::api::connection::CredentialsSecretRef,
    secret: Option<&Secret>,
    allowed: &crate::endpoints::AllowList,
) -> Result<(Location, Keys), Blocker> {
    let location = Location::parse(&spec.uri).map_err(|e| Blocker::InvalidUri(e.to_string()))?;
    if let Some(endpoint) = &spec.endpoint
        && !allowed.allows(endpoint)
    {
        return Err(Blocker::EndpointNotAllowed { endpoint: endpoint.clone(), allowed: allowed.to_string() });
    }
    // With virtual-hosted addressing the bucket becomes part of the host: the URL actually
    // contacted is what the allow-list must admit.
    if let Some(endpoint) = &spec.endpoint {
        let contacted = crate::s3::client::contacted_url(Some(endpoint), spec.force_path_style, &location.bucket, "");
        if !allowed.allows(&contacted) {
            return Err(Blocker::EndpointNotAllowed { endpoint: contacted, allowed: allowed.to_string() });
        }
    }
    let secret = secret.ok_or(Blocker::SecretNotFound)?;
    Ok((location, keys_from(secret, refs)?))
}

#[allow(clippy::too_many_arguments)]
fn new_status(
    conn: &S3Connection,
    old: &S3ConnectionStatus,
    verdict: &Verdict,
    waiting_for_secret: bool,
    location: Option<&Location>,
    report: Option<&Report>,
    (secret_version, secret_digest): (Option<String>, Option<String>),
    now: Timestamp,
) -> S3ConnectionStatus {
    let generation = conn.metadata.generation;
    // kstatus: Reconciling while retrying by itself, Stalled while someone must act.
    let conds = super::status::with_kstatus(
        verdict.conditions.iter().cloned().map(conditions::NamedCond::from).collect(),
        verdict.ready().reason.is_transient() || waiting_for_secret,
    );
    let region = report.and_then(|r| r.bucket_region.clone()).or_else(|| conn.spec.region.clone());
    S3ConnectionStatus {
        observed_generation: generation,
        conditions: conditions::merge_named(&old.conditions, &conds, generation, &Time(now)),
        bucket: location.map(|l| l.bucket.clone()),
        prefix: location.map(|l| l.prefix.clone()),
        endpoint: conn
            .spec
            .endpoint
            .clone()
            .or_else(|| region.as_ref().map(|r| format!("https://s3.{r}.amazonaws.com"))),
        region,
        permissions: verdict.permissions.clone(),
        missing_policy: verdict.missing_policy.clone(),
        sample_object: report.and_then(|r| r.sample_object.clone()),
        cors: verdict.cors,
        platform_connection_id: old.platform_connection_id.clone(),
        platform_connections: old.platform_connections.clone(),
        platform_registration_intents: old.platform_registration_intents.clone(),
        platform_secret_version: old.platform_secret_version.clone(),
        last_validated_time: Some(Time(now)),
        credentials_version: secret_version,
        credentials_digest: secret_digest,
        last_handled_reconcile_at: old.last_handled_reconcile_at.clone(),
        managed_credentials: old.managed_credentials.clone(),
    }
}

/// Events on transitions of Ready, and when the operator changed the bucket.
async fn publish_events(ctx: &Context, conn: &S3Connection, old: &S3ConnectionStatus, verdict: &Verdict) {
    let ready = verdict.ready();
    let before = old.conditions.iter().find(|c| c.type_ == conditions::READY);
    if before.is_none_or(|b| b.status != ready.status.as_str() || b.reason != ready.reason.as_str()) {
        ctx.event(conn.object_ref(&()), !ready.is_true(), ready.reason.as_str(), "Validate", &ready.message).await;
    }
    if verdict.cors == Some(CorsState::Applied) {
        let note = "Added the CORS rule the labelling UI needs; the bucket's other rules were kept.";
        ctx.event(conn.object_ref(&()), false, conditions::Reason::CorsApplied.as_str(), "ApplyCors", note).await;
    }
}

fn error_kind(err: &Error) -> &'static str {
    match err {
        Error::NoNamespace(_) => "NoNamespace",
        Error::ReadSecret { .. } => "ReadSecret",
        Error::WriteStatus { .. } => "WriteStatus",
        Error::WriteManaged { .. } => "WriteManaged",
    }
}

fn error_policy(conn: Arc<S3Connection>, err: &Error, ctx: Arc<Context>) -> Action {
    if let Error::WriteStatus { source, .. } = err
        && super::status::is_conflict(source)
    {
        return super::status::after_conflict("S3Connection", &conn.name_any());
    }
    let uid = conn.uid().unwrap_or_default();
    let failures = ctx.record_failure(&uid);
    let delay =
        schedule::after_api_error(failures, parse_interval(&conn.spec.revalidate_interval), jitter_fraction(&uid));
    crate::telemetry::metrics::METRICS.reconcile_error("S3Connection", error_kind(err));
    warn!(connection = %conn.name_any(), error = %err, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// Reconcile when the spec changes or deletion starts, not on our own status writes.
fn trigger_hash(conn: &S3Connection) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    conn.metadata.generation.hash(&mut h);
    conn.metadata.deletion_timestamp.is_some().hash(&mut h);
    conn.annotations().get(crate::api::annotations::SKIP_CLEANUP).hash(&mut h);
    crate::api::annotations::requested_at(conn.annotations()).hash(&mut h);
    conn.annotations().get(crate::api::annotations::ROTATE_ANNOTATION).hash(&mut h);
    // Deletion goes one finalizer at a time (platform registrations, then the IAM user).
    conn.finalizers().hash(&mut h);
    Some(h.finish())
}

/// The connections that reference `secret`, for re-validation within seconds of a change.
fn referencing(store: &Store<S3Connection>, secret: &PartialObjectMeta<Secret>) -> Vec<ObjectRef<S3Connection>> {
    let (namespace, name) = (secret.namespace(), secret.name_any());
    store
        .state()
        .iter()
        .filter(|c| c.namespace() == namespace)
        .filter(|c| {
            *c.spec.credentials.secret(&c.name_any()).name == *name
                || c.spec.platform.as_ref().is_some_and(|p| *p.secret_ref.name == *name)
        })
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// Secrets per LIST page of the metadata watch.
const SECRET_PAGE: u32 = 10;

/// The last event of each Secret in `batch` (errors kept), in order.
fn last_per_secret<E>(batch: Vec<Result<PartialObjectMeta<Secret>, E>>) -> Vec<Result<PartialObjectMeta<Secret>, E>> {
    let key = |r: &Result<PartialObjectMeta<Secret>, E>| r.as_ref().ok().map(|s| (s.namespace(), s.name_any()));
    let mut out: Vec<Result<PartialObjectMeta<Secret>, E>> = Vec::with_capacity(batch.len());
    for item in batch {
        if let Some(k) = key(&item)
            && let Some(i) = out.iter().position(|o| key(o).as_ref() == Some(&k))
        {
            drop(out.remove(i));
        }
        out.push(item);
    }
    out
}

/// Runs the controller until a termination signal.
pub async fn run(ctx: Arc<Context>) {
    // Metadata only: secret values never sit in the operator's memory between probes.
    let secrets = super::api::<PartialObjectMeta<Secret>>(&ctx);
    // Small LIST pages: a tenant's Secrets may carry up to 256 KiB of annotations each, and
    // a page of 500 of them would be over 100 MB at once (10 per page: 600 such Secrets
    // cost the operator 9 MiB more at its peak than none, measured).
    let secret_changes = watcher(secrets, ctx.config.watch_config().page_size(SECRET_PAGE))
        .backoff(super::watch_backoff())
        .touched_objects()
        // A burst of events for one Secret (someone re-annotating it in a loop) maps once.
        .ready_chunks(256)
        .flat_map(|batch| futures::stream::iter(last_per_secret(batch)));
    super::run_controller(
        ctx.clone(),
        "S3Connection",
        super::api(&ctx),
        trigger_hash,
        secret_changes,
        referencing,
        reconcile,
        error_policy,
        |controller, store| {
            if ctx.config.managed.is_none() {
                return controller;
            }
            // A grant changed or went: every managed connection is checked again at once.
            tokio::spawn(grants::keep_status(ctx.clone(), store.clone()));
            let changes =
                grants::changes(&ctx).flat_map(move |()| futures::stream::iter(grants::managed_connections(&store)));
            controller.reconcile_on(changes)
        },
    )
    .await;
}

/// Whether the status already shows `blocker` on CredentialsValid.
fn shows(conn: &S3Connection, blocker: &Blocker) -> bool {
    let Blocker::Managed { reason, message } = blocker else { return false };
    conn.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == conditions::CREDENTIALS_VALID && c.reason == reason.as_str() && c.message == *message)
    })
}
