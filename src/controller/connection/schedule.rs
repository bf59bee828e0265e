//! When to validate a connection. Pure: the status holds what was validated and when, so
//! a restart neither re-probes every connection at once nor forgets one that is due.

use std::time::Duration;

use crate::api::conditions::{READY, Reason};
use crate::api::connection::S3ConnectionStatus;
use crate::timing::{backoff, revalidate_after};

/// The first retry after a failure; doubles per consecutive failure, up to the interval.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    ValidateNow,
    WaitFor(Duration),
    /// Only a change of the object or its Secret can help.
    WaitForChange,
}

/// The retry after a reconcile failed on the Kubernetes API (unreachable, refused): with
/// backoff, but never later than the connection's own interval (jitter included) nor
/// five minutes, so that an API server outage never pushes a validation past when it
/// was due.
pub fn after_api_error(failures: u32, interval: Duration, jitter: f64) -> Duration {
    backoff(failures, interval.min(Duration::from_secs(300)).mul_f64(0.8), jitter)
}

/// What the last validation concluded, from its status alone.
fn last_next(status: &S3ConnectionStatus) -> Option<Reason> {
    let ready = status.conditions.iter().find(|c| c.type_ == READY)?;
    if ready.status == "True" {
        // Held Ready while validations fail (the transient grace): retried with backoff
        // like any failure, not at the Ready interval, so that Ready turns False when the
        // grace ends rather than at the next scheduled validation.
        let held =
            status.conditions.iter().any(|c| c.type_ == crate::api::conditions::RECONCILING && c.status == "True");
        return Some(if held { Reason::S3Error } else { Reason::Validated });
    }
    // The failures whose schedule differs from an S3 error's; any other counts as one.
    Some(match Reason::parse(&ready.reason) {
        Some(
            r @ (Reason::InvalidUri
            | Reason::EndpointNotAllowed
            | Reason::SecretNotFound
            | Reason::SecretKeyMissing
            | Reason::SecretValueInvalid
            | Reason::PlatformSecretNotFound
            | Reason::PlatformSecretKeyMissing),
        ) => r,
        _ => Reason::S3Error,
    })
}

/// Whether the keys differ from the ones last validated: by their digest where both are
/// known (a metadata-only change of the Secret is no change), else by resourceVersion.
pub fn secret_changed(status: &S3ConnectionStatus, digest: Option<&str>, version: Option<&str>) -> bool {
    match (status.credentials_digest.as_deref(), digest) {
        (Some(old), Some(new)) => old != new,
        _ => status.credentials_version.as_deref() != version,
    }
}

pub struct Facts<'a> {
    pub status: Option<&'a S3ConnectionStatus>,
    pub generation: Option<i64>,
    /// The digest of the key values in the Secret now (None: not found or incomplete).
    pub secret_digest: Option<&'a str>,
    /// resourceVersion of the credentials Secret now (None: not found).
    pub secret_version: Option<&'a str>,
    /// resourceVersion of the platform Secret now, when spec.platform names one.
    pub platform_secret_version: Option<&'a str>,
    /// The reconcile request the annotations make now (see `requested_at`).
    pub requested: Option<&'a str>,
    /// Seconds since the last validation, if there was one.
    pub since_last: Option<Duration>,
    pub interval: Duration,
    pub failures: u32,
    pub jitter: f64,
}

/// Whether a reconcile should probe now. Changes of spec or Secret always do; otherwise
/// the last result decides how long to wait.
pub fn plan(f: &Facts<'_>) -> Plan {
    let Some(status) = f.status else { return Plan::ValidateNow };
    if status.observed_generation != f.generation
        || secret_changed(status, f.secret_digest, f.secret_version)
        || status.platform_secret_version.as_deref() != f.platform_secret_version
        || (f.requested.is_some() && status.last_handled_reconcile_at.as_deref() != f.requested)
    {
        return Plan::ValidateNow;
    }
    let (Some(since), Some(last)) = (f.since_last, last_next(status)) else { return Plan::ValidateNow };
    let due = match last {
        Reason::Validated => revalidate_after(f.interval, f.jitter),
        Reason::InvalidUri
        | Reason::EndpointNotAllowed
        | Reason::SecretNotFound
        | Reason::SecretKeyMissing
        | Reason::SecretValueInvalid
        | Reason::PlatformSecretNotFound
        | Reason::PlatformSecretKeyMissing => {
            // Waiting (Reconciling) for a Secret that may still come: look again when due;
            // once someone must act (Stalled), only a change helps.
            if !status.conditions.iter().any(|c| c.type_ == crate::api::conditions::RECONCILING && c.status == "True") {
                return Plan::WaitForChange;
            }
            backoff(f.failures.max(1), f.interval, f.jitter)
        }
        _ => backoff(f.failures.max(1), f.interval, f.jitter),
    };
    if since >= due { Plan::ValidateNow } else { Plan::WaitFor(due - since) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::{Cond, merge};
    use crate::timing::{jitter_fraction, parse_interval};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn status(ready: Cond, generation: i64, secret: &str) -> S3ConnectionStatus {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        S3ConnectionStatus {
            observed_generation: Some(generation),
            conditions: merge(&[], &[ready], Some(generation), &now),
            credentials_version: Some(secret.into()),
            ..Default::default()
        }
    }

    fn facts(status: &S3ConnectionStatus, since: u64) -> Facts<'_> {
        Facts {
            status: Some(status),
            generation: Some(1),
            secret_digest: None,
            secret_version: Some("100"),
            platform_secret_version: None,
            requested: None,
            since_last: Some(Duration::from_secs(since)),
            interval: Duration::from_secs(600),
            failures: 0,
            jitter: 0.5,
        }
    }

    fn ready() -> Cond {
        Cond::ok(READY, Reason::Validated, "ok")
    }

    #[test]
    fn intervals_parse_and_stay_in_bounds() {
        for (text, secs) in [("10m", 600), ("30s", 30), ("1h30m", 5400), ("90s", 90), ("24h", 86_400), ("1m30s", 90)] {
            assert_eq!(parse_interval(text), Duration::from_secs(secs), "{text}");
        }
        for bad in ["", "10", "m", "10x", "-1m", "0s"] {
            assert_eq!(parse_interval(bad), Duration::from_secs(600), "{bad}");
        }
        assert_eq!(parse_interval("1s"), Duration::from_secs(30));
        assert_eq!(parse_interval("48h"), Duration::from_secs(86_400));
    }

    #[test]
    fn new_objects_spec_changes_and_secret_changes_validate_at_once() {
        let s = status(ready(), 1, "100");
        assert_eq!(plan(&Facts { status: None, ..facts(&s, 0) }), Plan::ValidateNow);
        assert_eq!(plan(&Facts { generation: Some(2), ..facts(&s, 0) }), Plan::ValidateNow);
        assert_eq!(plan(&Facts { secret_version: Some("101"), ..facts(&s, 0) }), Plan::ValidateNow);
        assert_eq!(plan(&Facts { secret_version: None, ..facts(&s, 0) }), Plan::ValidateNow);
        assert_eq!(plan(&Facts { platform_secret_version: Some("7"), ..facts(&s, 0) }), Plan::ValidateNow);
    }

    #[test]
    fn a_connection_held_ready_through_failures_is_retried_with_backoff_not_at_its_interval() {
        use crate::api::conditions::RECONCILING;
        let mut s = status(Cond::ok(READY, Reason::Validated, "ok"), 1, "100");
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let held = Cond {
            status: crate::api::conditions::Status::True,
            ..Cond::failed(RECONCILING, Reason::S3Error, "still Ready; retrying")
        };
        s.conditions = merge(&[], &[Cond::ok(READY, Reason::Validated, "ok"), held], Some(1), &now);
        assert_eq!(s.conditions.len(), 2);
        // 30 s after the last complete validation: due by backoff (10 s), not in 10 minutes.
        assert_eq!(plan(&Facts { failures: 1, ..facts(&s, 30) }), Plan::ValidateNow);
        let ready = status(Cond::ok(READY, Reason::Validated, "ok"), 1, "100");
        assert!(matches!(plan(&facts(&ready, 30)), Plan::WaitFor(_)));
    }

    #[test]
    fn a_secret_whose_keys_are_unchanged_is_no_reason_to_validate() {
        let mut s = status(Cond::ok(READY, Reason::Validated, "ok"), 1, "100");
        s.credentials_digest = Some("d1".into());
        // Labels or annotations changed (a new resourceVersion), the keys did not.
        let metadata_only = Facts { secret_version: Some("101"), secret_digest: Some("d1"), ..facts(&s, 0) };
        assert!(matches!(plan(&metadata_only), Plan::WaitFor(_)), "{:?}", plan(&metadata_only));
        let new_keys = Facts { secret_version: Some("102"), secret_digest: Some("d2"), ..facts(&s, 0) };
        assert_eq!(plan(&new_keys), Plan::ValidateNow);
        // The Secret gone: a change.
        assert_eq!(plan(&Facts { secret_version: None, secret_digest: None, ..facts(&s, 0) }), Plan::ValidateNow);
        // A status from before digests: the resourceVersion decides, once.
        s.credentials_digest = None;
        assert_eq!(
            plan(&Facts { secret_version: Some("101"), secret_digest: Some("d1"), ..facts(&s, 0) }),
            Plan::ValidateNow
        );
    }

    #[test]
    fn a_new_reconcile_request_validates_at_once_and_a_handled_one_does_not() {
        let mut s = status(ready(), 1, "100");
        assert_eq!(plan(&Facts { requested: Some("t1"), ..facts(&s, 0) }), Plan::ValidateNow);
        s.last_handled_reconcile_at = Some("t1".into());
        assert_eq!(plan(&Facts { requested: Some("t1"), ..facts(&s, 60) }), Plan::WaitFor(Duration::from_secs(540)));
        assert_eq!(plan(&Facts { requested: Some("t2"), ..facts(&s, 60) }), Plan::ValidateNow);
        // Removing the annotation is no request.
        assert_eq!(plan(&Facts { requested: None, ..facts(&s, 60) }), Plan::WaitFor(Duration::from_secs(540)));
        // Even a failure that waits for a change is looked at again when asked.
        let mut stuck = status(Cond::failed(READY, Reason::SecretNotFound, "x"), 1, "100");
        stuck.last_handled_reconcile_at = Some("t1".into());
        assert_eq!(plan(&Facts { requested: Some("t2"), ..facts(&stuck, 100_000) }), Plan::ValidateNow);
    }

    #[test]
    fn a_ready_connection_waits_for_its_jittered_interval() {
        let s = status(ready(), 1, "100");
        // jitter 0.5 puts the interval at exactly 600 s.
        assert_eq!(plan(&facts(&s, 60)), Plan::WaitFor(Duration::from_secs(540)));
        assert_eq!(plan(&facts(&s, 600)), Plan::ValidateNow);
        let early = Facts { jitter: 0.0, ..facts(&s, 540) };
        assert_eq!(plan(&early), Plan::ValidateNow, "-10 %");
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_interval() {
        let s = status(Cond::failed(READY, Reason::GetObjectDenied, "denied"), 1, "100");
        let at = |failures, since| plan(&Facts { failures, jitter: 0.0, ..facts(&s, since) });
        assert_eq!(at(1, 5), Plan::WaitFor(Duration::from_secs(5)));
        assert_eq!(at(1, 10), Plan::ValidateNow);
        assert_eq!(at(3, 10), Plan::WaitFor(Duration::from_secs(30)));
        assert_eq!(at(20, 100), Plan::WaitFor(Duration::from_secs(500)), "capped at the interval");
        assert_eq!(backoff(1, Duration::from_secs(600), 1.0), Duration::from_secs(12));
    }

    #[test]
    fn api_errors_never_push_a_retry_past_the_interval() {
        for interval in [30, 90, 600, 86_400] {
            let interval = Duration::from_secs(interval);
            for failures in [1, 5, 30] {
                let d = after_api_error(failures, interval, 0.999);
                assert!(d <= interval && d <= Duration::from_secs(300), "{failures} failures, {interval:?}: {d:?}");
            }
        }
        assert_eq!(after_api_error(1, Duration::from_secs(600), 0.0), Duration::from_secs(10));
    }

    #[test]
    fn spec_and_secret_problems_wait_for_a_change() {
        for reason in [
            Reason::InvalidUri,
            Reason::EndpointNotAllowed,
            Reason::SecretNotFound,
            Reason::SecretKeyMissing,
            Reason::SecretValueInvalid,
        ] {
            let s = status(Cond::failed(READY, reason, "x"), 1, "100");
            assert_eq!(plan(&facts(&s, 100_000)), Plan::WaitForChange, "{reason:?}");
        }
    }

    #[test]
    fn a_secret_still_waited_for_is_looked_at_again_and_a_stalled_one_is_not() {
        let mut s = status(Cond::failed(READY, Reason::SecretNotFound, "x"), 1, "100");
        assert_eq!(plan(&facts(&s, 100_000)), Plan::WaitForChange);
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        s.conditions = merge(
            &[],
            &[
                Cond::failed(READY, Reason::SecretNotFound, "x"),
                Cond {
                    type_: crate::api::conditions::RECONCILING,
                    status: crate::api::conditions::Status::True,
                    reason: Reason::SecretNotFound,
                    message: "x".into(),
                },
            ],
            Some(1),
            &now,
        );
        assert_eq!(plan(&Facts { failures: 1, jitter: 0.0, ..facts(&s, 5) }), Plan::WaitFor(Duration::from_secs(5)));
        assert_eq!(plan(&Facts { failures: 1, jitter: 0.0, ..facts(&s, 10) }), Plan::ValidateNow);
    }

    #[test]
    fn jitter_is_stable_and_spread() {
        assert_eq!(jitter_fraction("a-uid"), jitter_fraction("a-uid"));
        let fractions: Vec<f64> = (0..1000).map(|i| jitter_fraction(&format!("uid-{i}"))).collect();
        assert!(fractions.iter().all(|f| (0.0..1.0).contains(f)));
        let low = fractions.iter().filter(|f| **f < 0.5).count();
        assert!((400..600).contains(&low), "{low} of 1000 below 0.5");
    }
}
