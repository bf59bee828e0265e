//! The S3Connection controller: fetch facts (Secret, probes) -> decide (pure) -> write
//! status (server-side apply) -> schedule the next validation.

pub mod grants;
pub mod managed;
pub mod register;
pub mod schedule;
pub mod sweep;

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

/// One reconcile, as named steps: deletion; finalizers; the facts (managed credentials,
/// the Secrets); whether a validation is due; the validation (probes, then the platform
/// registration); the status it leads to; the write; what next.
pub async fn reconcile(conn: Arc<S3Connection>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let name = conn.name_any();
    let namespace = conn.namespace().ok_or_else(|| Error::NoNamespace(name.clone()))?;
    if conn.metadata.deletion_timestamp.is_some() {
        crate::telemetry::metrics::METRICS.forget(&conn.uid().unwrap_or_default());
        return clean_up(&conn, &ctx).await;
    }
    let written_at = ensure_finalizers(&ctx, &conn).await?;
    // Managed credentials taken out of the spec: the IAM user they made goes too (no live
    // key is left behind), then the finalizer.
    if conn.spec.credentials.managed.is_none()
        && finalizer::has(conn.as_ref(), crate::api::annotations::IAM_USER_FINALIZER)
    {
        return switch_off_managed(&conn, &ctx).await;
    }
    let facts = gather(&ctx, &conn, name, namespace).await?;
    if let Some(action) = not_due(&ctx, &conn, &facts).await {
        return Ok(action);
    }
    ctx.validation_started(&facts.uid);
    let validated = validate(&ctx, &conn, &facts, &written_at).await;
    let settled = settle(&ctx, &conn, &facts, &validated).await;
    let mut written = current(&written_at);
    super::status::apply(&ctx, conn.as_ref(), &settled.status, &mut written).await.map_err(|source| {
        Error::WriteStatus { namespace: facts.namespace.clone(), name: facts.name.clone(), source }
    })?;
    if !settled.holding {
        publish_events(&ctx, &conn, &settled.old, &validated.verdict).await;
    }
    Ok(finish(&ctx, &facts, &validated, &settled, started))
}

/// Finalizers before anything is registered or made in IAM, so that nothing outside the
/// cluster outlives the object; one write for both (each is removed only once what it
/// holds is gone). Returns the version later writes are preconditioned on.
async fn ensure_finalizers(ctx: &Context, conn: &S3Connection) -> Result<Version, Error> {
    let wants = [
        (conn.spec.platform.is_some(), crate::api::annotations::PLATFORM_CONNECTION_FINALIZER),
        (conn.spec.credentials.managed.is_some(), crate::api::annotations::IAM_USER_FINALIZER),
    ];
    let added: Vec<(bool, &str)> = wants.into_iter().filter(|(wanted, _)| *wanted).collect();
    let written_at: Version = Arc::new(std::sync::Mutex::new(conn.resource_version()));
    if let Some(finalizers) = finalizer::wanted(conn, &added) {
        let written = set_finalizers(ctx, conn, finalizers).await?;
        if let Ok(mut v) = written_at.lock() {
            *v = written;
        }
    }
    Ok(written_at)
}

/// What one reconcile of a connection knows before it decides anything.
struct Facts {
    name: String,
    namespace: String,
    uid: String,
    refs: CredentialsSecretRef,
    /// Managed credentials as made (or kept) in IAM, or what stops them.
    managed_status: Option<crate::api::connection::ManagedCredentialsStatus>,
    managed_blocker: Option<Blocker>,
    secret: Option<Secret>,
    /// The operator's RBAC forbids reading the Secret.
    forbidden: bool,
    secret_version: Option<String>,
    secret_digest: Option<String>,
    rotation_waits_until: Option<Timestamp>,
    platform_secret: Option<Secret>,
    platform_secret_version: Option<String>,
    interval: Duration,
    jitter: f64,
    now: Timestamp,
    requested: Option<String>,
}

/// Managed credentials first (the IAM user and a current key exist before the Secret is
/// read), then the key Secret and the platform Secret.
async fn gather(ctx: &Context, conn: &S3Connection, name: String, namespace: String) -> Result<Facts, Error> {
    let uid = conn.uid().unwrap_or_default();
    let spec = &conn.spec;
    let (mut managed_status, mut managed_blocker, mut managed_secret) = (None, None, None);
    if spec.credentials.managed.is_some() {
        match managed::ensure(ctx, conn).await {
            Ok(Ok(ensured)) => (managed_status, managed_secret) = (Some(ensured.status), Some(ensured.secret)),
            Ok(Err(blocker)) => managed_blocker = Some(blocker),
            Err(source) => return Err(Error::WriteManaged { namespace, name, source }),
        }
    }
    let refs = spec.credentials.secret(&name);
    let read = match managed_secret {
        Some(secret) => Ok(secret),
        None => get_secret(ctx, &namespace, &refs.name).await,
    };
    let (secret, forbidden) = match read {
        Ok(s) => (s, false),
        Err(Error::ReadSecret { source: kube::Error::Api(e), name: secret, .. }) if e.code == 403 => {
            warn!(connection = %format!("{namespace}/{name}"), secret = %secret, "the operator's RBAC forbids reading the Secret");
            (None, true)
        }
        Err(e) => return Err(e),
    };
    let platform_secret = match &spec.platform {
        Some(p) => get_secret(ctx, &namespace, &p.secret_ref.name).await?,
        None => None,
    };
    Ok(Facts {
        secret_version: secret.as_ref().and_then(|s| s.metadata.resource_version.clone()),
        secret_digest: secret.as_ref().and_then(|s| credentials_digest(&uid, s, &refs)),
        rotation_waits_until: managed_status.as_ref().and_then(|m| m.rotation_waits_until.as_ref()).map(|t| t.0),
        platform_secret_version: platform_secret.as_ref().and_then(|s| s.metadata.resource_version.clone()),
        interval: parse_interval(&spec.revalidate_interval),
        jitter: jitter_fraction(&uid),
        now: Timestamp::now(),
        requested: crate::api::annotations::requested_at(conn.annotations()),
        name,
        namespace,
        uid,
        refs,
        managed_status,
        managed_blocker,
        secret,
        forbidden,
        platform_secret,
    })
}

/// When no validation is due yet: the action that waits for it. Validations of one object
/// are also spaced, so that a tenant annotating its Secret or connection in a loop cannot
/// make the operator probe S3 or call the platform faster than that (a spec change is
/// looked at at once).
async fn not_due(ctx: &Context, conn: &S3Connection, f: &Facts) -> Option<Action> {
    let since_last = conn
        .status
        .as_ref()
        .and_then(|s| s.last_validated_time.as_ref())
        .map(|t| Duration::try_from(f.now.duration_since(t.0)).unwrap_or(Duration::ZERO));
    let facts = schedule::Facts {
        status: conn.status.as_ref(),
        generation: conn.metadata.generation,
        secret_digest: f.secret_digest.as_deref(),
        secret_version: f.secret_version.as_deref(),
        platform_secret_version: f.platform_secret_version.as_deref(),
        requested: f.requested.as_deref(),
        since_last,
        interval: f.interval,
        failures: ctx.failures(&f.uid),
        jitter: f.jitter,
    };
    // Held Ready while the store answered nothing: once the unreachable grace is over, look
    // now, so that Ready turns False then and not at the next scheduled validation.
    let down_for = conn.status.as_ref().and_then(|s| {
        let ready = s.conditions.iter().any(|c| c.type_ == conditions::READY && c.status == "True");
        validation::reconciling_for(&s.conditions, f.now)
            .filter(|(reason, _)| ready && *reason == conditions::Reason::EndpointUnreachable.as_str())
            .map(|(_, d)| d)
    });
    match plan(&facts) {
        Plan::ValidateNow => {}
        _ if down_for.is_some_and(|d| d >= ctx.config.unreachable_grace) => {}
        // A managed-credentials problem the status does not show yet.
        _ if f.managed_blocker.as_ref().is_some_and(|b| !shows(conn, b)) => {}
        // A rotation that waits, not shown yet.
        _ if f.rotation_waits_until.is_some()
            && conn.status.as_ref().and_then(|s| s.managed_credentials.as_ref()).map(|m| &m.rotation_waits_until)
                != f.managed_status.as_ref().map(|m| &m.rotation_waits_until) =>
        {
            if let Some(until) = f.rotation_waits_until {
                let every = ctx.config.managed.as_ref().map_or(0, |m| m.min_rotation_interval.as_secs());
                let note = format!(
                    "The key rotation asked for waits until {until}: the operator rotates managed keys on request at most once every {every} s (--min-rotation-interval)."
                );
                let reason = conditions::OperatorReason::RotationWaits.as_str();
                ctx.event(conn.object_ref(&()), false, reason, "RotateKeys", &note).await;
            }
        }
        Plan::WaitFor(d) => return Some(Action::requeue(d)),
        Plan::WaitForChange => return Some(Action::await_change()),
    }
    let spec_changed = conn.status.as_ref().is_none_or(|s| s.observed_generation != conn.metadata.generation);
    let left = ctx.spacing_left(&f.uid);
    (!spec_changed && !left.is_zero()).then(|| Action::requeue(left))
}

/// What a validation found: the verdict (with the registration), the probes' report, and
/// the platform registrations as they are now.
struct Validated {
    verdict: Verdict,
    report: Option<Report>,
    platform_connections: Vec<crate::api::connection::PlatformConnection>,
    registration_intents: Vec<crate::api::connection::RegistrationIntent>,
    /// Keys revoked (no grant covers the connection): the status no longer names them.
    revoked: bool,
}

/// The probes with the connection's keys, then, once every probe passes, its registration
/// on the platform (intents recorded first, preconditioned on `written_at`).
async fn validate(ctx: &Context, conn: &S3Connection, f: &Facts, written_at: &Version) -> Validated {
    let spec = &conn.spec;
    let owner = format!("{}/{}", f.namespace, f.name);
    let subject = Subject { spec, name: &f.name, namespace: &f.namespace, keys_from: KeysFrom::Secret };
    let existing = conn.status.as_ref().map(|s| s.platform_connections.clone()).unwrap_or_default();
    let mut platform_connections = existing.clone();
    let mut registration_intents =
        conn.status.as_ref().map(|s| s.platform_registration_intents.clone()).unwrap_or_default();
    let revoked = matches!(
        &f.managed_blocker,
        Some(Blocker::Managed { reason: conditions::Reason::ManagedBucketNotAllowed, .. })
    );
    let prepared = if let Some(blocker) = f.managed_blocker.clone() {
        Err(blocker)
    } else if f.forbidden {
        Err(Blocker::SecretForbidden)
    } else {
        prepare(spec, &f.refs, f.secret.as_ref(), &ctx.config.allowed_endpoints)
    };
    let not_checked =
        || Cond::not_checked(conditions::REGISTERED, "the connection is registered once every probe passes");
    let (verdict, report) = match prepared {
        Ok((location, keys)) => {
            let probe =
                Probe { deadline: ctx.config.validation_timeout, ..validation::probe_for(spec, &location, &owner) };
            let report = probe::run(&probe, &keys).await;
            let mut verdict = decide(&subject, Ok((&location, &report)));
            if let Some(p) = &spec.platform {
                let registered = if !verdict.ready().is_true() {
                    not_checked()
                } else {
                    match super::platform::credentials(f.platform_secret.as_ref(), &p.secret_ref, &f.namespace) {
                        Err(cond) => cond,
                        Ok(creds) => {
                            // Registered per key values: a metadata-only change of the
                            // Secret never re-creates the registration.
                            let version =
                                f.secret_digest.clone().or_else(|| f.secret_version.clone()).unwrap_or_default();
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
                                &f.uid,
                                &mut |intents| record_intents(ctx, conn, intents, written_at.clone()),
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
                verdict = validation::with_registration(verdict, not_checked());
            }
            (verdict, None)
        }
    };
    Validated { verdict, report, platform_connections, registration_intents, revoked }
}

/// The status a validation leads to, and what decides the next one.
struct Settled {
    old: S3ConnectionStatus,
    status: S3ConnectionStatus,
    /// Ready is held as the last complete validation found it (a transient failure, a key
    /// still propagating).
    holding: bool,
    propagating: bool,
    /// Within the Secret's grace: how long it is still waited for.
    secret_wait: Option<Duration>,
    /// Held for a store that is down: how long the grace still runs.
    grace_left: Option<Duration>,
}

async fn settle(ctx: &Context, conn: &S3Connection, f: &Facts, v: &Validated) -> Settled {
    let (verdict, report, now) = (&v.verdict, v.report.as_ref(), f.now);
    let location = Location::parse(&conn.spec.uri).ok();
    let old = conn.status.clone().unwrap_or_default();
    let same_inputs = old.observed_generation == conn.metadata.generation
        && !schedule::secret_changed(&old, f.secret_digest.as_deref(), f.secret_version.as_deref())
        && old.platform_secret_version == f.platform_secret_version;
    // A managed key S3 does not know yet (IAM propagates in seconds): retried, and a
    // rotation keeps the last Ready verdict meanwhile; the new Secret is our own change.
    let propagating = validation::key_propagating(
        verdict.ready(),
        f.managed_status.as_ref().and_then(|m| m.key_created_time.as_ref()).map(|t| t.0),
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
    let secret_wait = validation::secret_grace_left(verdict, created, now, ctx.config.secret_grace);
    let holding = held.is_some();
    let mut status = match held {
        // Ready stays as the last complete validation found it, with Reconciling saying why
        // this one did not finish.
        Some(conditions) => {
            S3ConnectionStatus { conditions, last_handled_reconcile_at: f.requested.clone(), ..old.clone() }
        }
        None => {
            let mut status = new_status(
                conn,
                &old,
                verdict,
                secret_wait.is_some() || propagating,
                location.as_ref(),
                report,
                (f.secret_version.clone(), f.secret_digest.clone()),
                now,
            );
            status.platform_connection_id = register::primary_id(&v.platform_connections);
            status.platform_connections = v.platform_connections.clone();
            status.platform_secret_version = f.platform_secret_version.clone();
            status.last_handled_reconcile_at = f.requested.clone();
            status.platform_registration_intents = v.registration_intents.clone();
            status
        }
    };
    if let Some(mut managed) = f.managed_status.clone() {
        // The previous key goes once a validation with the new one is Ready.
        if !holding
            && verdict.ready().is_true()
            && let Some(validated) = &f.secret
        {
            managed::retire_previous(ctx, conn, validated, &mut managed).await;
        }
        status.managed_credentials = Some(managed);
    } else if v.revoked {
        status.managed_credentials = None;
    }
    if !holding && let Some(l) = &location {
        status.endpoint = Some(crate::s3::client::contacted_url(
            conn.spec.endpoint.as_deref(),
            conn.spec.force_path_style,
            &l.bucket,
            status.region.as_deref().unwrap_or("us-east-1"),
        ));
    }
    Settled { old, status, holding, propagating, secret_wait, grace_left }
}

/// The next validation, the metrics and the log line of a validation that was written.
fn finish(ctx: &Context, f: &Facts, v: &Validated, s: &Settled, started: Instant) -> Action {
    use super::status::Next as After;
    let next = match v.verdict.next {
        Next::Revalidate => After::Success(Some(revalidate_after(f.interval, f.jitter))),
        Next::Retry | Next::RecheckLater => After::Retry { cap: f.interval },
        Next::WaitForChange => After::Success(None),
    };
    // Within the Secret's grace: the watch brings it back when the Secret appears, and this
    // turns it Stalled when the grace is over.
    let next = s.secret_wait.map_or(next, |left| After::After(left + Duration::from_secs(1)));
    let next = if s.propagating { After::After(Duration::from_secs(5)) } else { next };
    let next = match s.grace_left {
        Some(left) => After::After((left + Duration::from_secs(1)).min(Duration::from_secs(10))),
        None => next,
    };
    // A rotation that waits is done when its time comes.
    let next = match (f.rotation_waits_until.and_then(|t| Duration::try_from(t.duration_since(f.now)).ok()), next) {
        (Some(wait), After::Success(after)) => {
            let wait = wait + Duration::from_secs(1);
            After::Success(Some(after.map_or(wait, |a| a.min(wait))))
        }
        (_, next) => next,
    };
    let action = super::status::action(ctx, &f.uid, next, f.jitter);
    let ready = v.verdict.ready();
    let metrics = &crate::telemetry::metrics::METRICS;
    metrics.reconciled("S3Connection", ready.reason.as_str(), started.elapsed());
    // Within the transient grace the status still says Ready, and so does the gauge.
    let (shown, shown_reason) =
        if s.holding { (true, conditions::Reason::Validated) } else { (ready.is_true(), ready.reason) };
    metrics.set_ready(&f.uid, "S3Connection", &f.namespace, &f.name, shown, shown_reason.as_str());
    info!(
        connection = %format!("{}/{}", f.namespace, f.name),
        ready = ready.status.as_str(),
        reason = ready.reason.as_str(),
        s3_requests = v.report.as_ref().map_or(0, |r| r.requests),
        duration_ms = started.elapsed().as_millis() as u64,
        "validated"
    );
    action
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
            // A grant changed or went: every managed connection is checked again at once; a
            // namespace's labels changed: its managed connections are. The sweep finds
            // what these miss, and what a Stalled connection's reconciles never see.
            tokio::spawn(grants::keep_status(ctx.clone(), store.clone()));
            let (recheck, rechecks) = futures::channel::mpsc::unbounded();
            tokio::spawn(sweep::run(ctx.clone(), recheck));
            let all = store.clone();
            let changes = grants::changes(&ctx)
                .flat_map(move |()| futures::stream::iter(grants::managed_connections(&all, None)));
            let labelled = grants::namespace_label_changes(&ctx)
                .flat_map(move |ns| futures::stream::iter(grants::managed_connections(&store, Some(&ns))));
            controller.reconcile_on(futures::stream::select(futures::stream::select(changes, labelled), rechecks))
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
