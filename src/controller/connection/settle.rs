//! The status a validation leads to (held Ready, managed key retirement, the contacted
//! endpoint), the events on its transitions and the next action.

use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use tracing::info;

use super::facts::Facts;
use super::validate::Validated;
use super::{managed, register, schedule};
use crate::api::conditions;
use crate::api::connection::{CorsState, S3Connection, S3ConnectionStatus};
use crate::controller::Context;
use crate::s3::probe::Report;
use crate::s3::uri::Location;
use crate::timing::revalidate_after;
use crate::validation::{self, Next, Verdict};
use kube::runtime::controller::Action;

/// The status a validation leads to, and what decides the next one.
pub(super) struct Settled {
    pub(super) old: S3ConnectionStatus,
    pub(super) status: S3ConnectionStatus,
    /// Ready is held as the last complete validation found it (a transient failure, a key
    /// still propagating).
    pub(super) holding: bool,
    pub(super) propagating: bool,
    /// Within the Secret's grace: how long it is still waited for.
    pub(super) secret_wait: Option<Duration>,
    /// Held for a store that is down: how long the grace still runs.
    pub(super) grace_left: Option<Duration>,
}

pub(super) async fn settle(ctx: &Context, conn: &S3Connection, f: &Facts, v: &Validated) -> Settled {
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
        None => validated(conn, f, v, &old, location.as_ref(), secret_wait.is_some() || propagating),
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
    let conds = crate::controller::status::with_kstatus(
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
pub(super) async fn publish_events(ctx: &Context, conn: &S3Connection, old: &S3ConnectionStatus, verdict: &Verdict) {
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

/// The status a complete validation leads to, with the platform registrations as they
/// are now.
fn validated(
    conn: &S3Connection,
    f: &Facts,
    v: &Validated,
    old: &S3ConnectionStatus,
    location: Option<&Location>,
    waiting: bool,
) -> S3ConnectionStatus {
    let mut status = new_status(
        conn,
        old,
        &v.verdict,
        waiting,
        location,
        v.report.as_ref(),
        (f.secret_version.clone(), f.secret_digest.clone()),
        f.now,
    );
    status.platform_connection_id = register::primary_id(&v.platform_connections);
    status.platform_connections = v.platform_connections.clone();
    status.platform_secret_version = f.platform_secret_version.clone();
    status.last_handled_reconcile_at = f.requested.clone();
    status.platform_registration_intents = v.registration_intents.clone();
    status
}

/// The next validation, the metrics and the log line of a validation that was written.
pub(super) fn finish(ctx: &Context, f: &Facts, v: &Validated, s: &Settled, started: Instant) -> Action {
    use crate::controller::status::Next as After;
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
    let action = crate::controller::status::action(ctx, &f.uid, next, f.jitter);
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
