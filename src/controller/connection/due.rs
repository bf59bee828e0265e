//! Whether a validation is due now: `schedule::plan` on the facts, plus what the status
//! does not show yet and the spacing of one object's validations.

use std::time::Duration;

use kube::Resource;
use kube::runtime::controller::Action;

use super::facts::Facts;
use super::schedule::{self, Plan, plan};
use crate::api::conditions;
use crate::api::connection::S3Connection;
use crate::controller::Context;
use crate::validation::{self, Blocker};

/// When no validation is due yet: the action that waits for it. Validations of one object
/// are also spaced, so that a tenant annotating its Secret or connection in a loop cannot
/// make the operator probe S3 or call the platform faster than that (a spec change is
/// looked at at once).
pub(super) async fn not_due(ctx: &Context, conn: &S3Connection, f: &Facts) -> Option<Action> {
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
        Plan::WaitFor(d) => {
            tracing::debug!(connection = %format!("{}/{}", f.namespace, f.name), next_in_s = d.as_secs(), "not due");
            return Some(Action::requeue(d));
        }
        Plan::WaitForChange => {
            tracing::debug!(connection = %format!("{}/{}", f.namespace, f.name), "not due until it changes");
            return Some(Action::await_change());
        }
    }
    let spec_changed = conn.status.as_ref().is_none_or(|s| s.observed_generation != conn.metadata.generation);
    let left = ctx.spacing_left(&f.uid);
    (!spec_changed && !left.is_zero()).then(|| Action::requeue(left))
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
