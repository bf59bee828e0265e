//! The decision: facts about a connection in, conditions out. Pure, so that every
//! documented failure mode and its message is a table test. Each message says what is
//! wrong and what to do, in one sentence a person can act on.

use crate::api::conditions::{
    BUCKET_REACHABLE, CORS_CONFIGURED, CREDENTIALS_VALID, Cond, READ_PERMITTED, READY, Reason, WRITE_PERMITTED,
};
use crate::api::connection::{CorsMode, CorsState, PermissionCheck, PermissionResult, S3ConnectionSpec, Usage};
use crate::s3::error::{Failure, FailureKind};
use crate::s3::policy::{Action, policy};
use crate::s3::probe::{CorsOutcome, Outcome, Probe, Report};
use crate::s3::uri::Location;

/// Why no probe could run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocker {
    InvalidUri(String),
    EndpointNotAllowed {
        endpoint: String,
        allowed: String,
    },
    /// The endpoint is admitted through a `*`, and its name resolves only to internal
    /// addresses (loopback, private, link-local), which an entry must name exactly.
    EndpointInternal {
        endpoint: String,
    },
    SecretNotFound,
    /// The Secret lacks `key`; `present` are the key names it has (never values).
    SecretKeyMissing {
        key: String,
        present: Vec<String>,
    },
    /// The value at `key` cannot be a credential (control characters, non-ASCII).
    SecretValueInvalid {
        key: String,
    },
    /// The operator's own RBAC does not let it read the Secret.
    SecretForbidden,
    /// Managed credentials could not be made (IAM, the operator's set-up, a conflict).
    Managed {
        reason: Reason,
        message: String,
    },
}

/// What the controller should do next, as far as the decision goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Everything passed: re-validate at the interval.
    Revalidate,
    /// A failure that may clear by itself: retry with backoff.
    Retry,
    /// A failure someone must fix outside Kubernetes (IAM, bucket): re-check with
    /// backoff up to the interval, since no watch event will say it was fixed.
    RecheckLater,
    /// A failure only a change of the object or its Secret can fix.
    WaitForChange,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// CredentialsValid, BucketReachable, ReadPermitted, WritePermitted (Export only),
    /// CorsConfigured, then Ready.
    pub conditions: Vec<Cond>,
    pub permissions: Vec<PermissionCheck>,
    pub missing_policy: Option<String>,
    pub cors: Option<CorsState>,
    pub next: Next,
}

impl Verdict {
    pub fn ready(&self) -> &Cond {
        self.conditions.last().expect("Ready is always decided")
    }
}

/// Names the connection's Secret in messages.
pub struct Subject<'a> {
    pub spec: &'a S3ConnectionSpec,
    /// The connection's name (a managed connection's Secret is named after it).
    pub name: &'a str,
    pub namespace: &'a str,
    pub keys_from: KeysFrom,
}

/// Where the keys were read from, for messages that say where to fix them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeysFrom {
    /// The Secret `spec.credentials.secretRef` names (the operator).
    Secret,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (`s3connect check`).
    Environment,
}

impl Subject<'_> {
    /// The Secret the keys are read from.
    fn refs(&self) -> crate::api::connection::CredentialsSecretRef {
        self.spec.credentials.secret(self.name)
    }

    /// Where the keys are: `Secret "name"` or `the environment`.
    fn keys_place(&self) -> String {
        match self.keys_from {
            KeysFrom::Secret => format!("Secret {:?}", self.refs().name.as_ref() as &str),
            KeysFrom::Environment => "the environment".to_owned(),
        }
    }

    /// Where one key is: `Secret "name" (key K)` or `the environment (AWS_...)`.
    fn key_place(&self, secret_key: &str, variable: &str) -> String {
        match self.keys_from {
            KeysFrom::Secret => format!("{} (key {secret_key})", self.keys_place()),
            KeysFrom::Environment => format!("the environment ({variable})"),
        }
    }
}

pub fn decide(subject: &Subject<'_>, facts: Result<(&Location, &Report), &Blocker>) -> Verdict {
    match facts {
        Err(blocker) => blocked(subject, blocker),
        Ok((location, report)) => probed(subject, location, report),
    }
}

/// Adds the Registered condition before Ready; a failed registration makes Ready fail
/// with its reason (after every S3 problem, which comes first).
pub fn with_registration(mut verdict: Verdict, registered: Cond) -> Verdict {
    let ready = verdict.conditions.pop().expect("Ready is always decided");
    let fails_now = ready.is_true() && registered.status == crate::api::conditions::Status::False;
    verdict.conditions.push(registered.clone());
    if fails_now {
        verdict.next = match registered.reason {
            r if r.is_transient() => Next::Retry,
            Reason::PlatformSecretNotFound | Reason::PlatformSecretKeyMissing | Reason::SecretValueInvalid => {
                Next::WaitForChange
            }
            _ => Next::RecheckLater,
        };
        verdict.conditions.push(Cond::failed(READY, registered.reason, registered.message));
    } else {
        verdict.conditions.push(ready);
    }
    verdict
}

/// A Ready connection whose validation just failed only for a reason that clears by
/// itself (S3 5xx, throttling, an unreachable store) stays Ready for `grace` after the
/// first such failure: its conditions stay as the last complete validation found them,
/// and Reconciling=True says what is being retried. Returns those conditions, or None
/// when the new verdict is to be shown as it is: the inputs changed (`same_inputs` false),
/// the connection was not Ready, the failure is not transient, or the grace is over.
pub fn hold_ready(
    old: &crate::api::connection::S3ConnectionStatus,
    same_inputs: bool,
    ready: &Cond,
    now: k8s_openapi::jiff::Timestamp,
    grace: std::time::Duration,
) -> Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>> {
    hold_ready_if(old, same_inputs, ready, ready.reason.is_transient(), now, grace)
}

/// How long after IAM made a managed key S3 may still refuse it: IAM is eventually
/// consistent, and a key is often unknown to S3 for some seconds.
pub const KEY_PROPAGATION: std::time::Duration = std::time::Duration::from_secs(120);

/// Whether `ready` is S3 not knowing a managed key made at `key_created` yet: retried (and
/// a rotation keeps the last Ready verdict meanwhile), not reported as a bad key.
pub fn key_propagating(
    ready: &Cond,
    key_created: Option<k8s_openapi::jiff::Timestamp>,
    now: k8s_openapi::jiff::Timestamp,
) -> bool {
    let refused = matches!(ready.reason, Reason::InvalidAccessKeyId | Reason::SignatureDoesNotMatch);
    let young = key_created
        .is_some_and(|c| std::time::Duration::try_from(now.duration_since(c)).is_ok_and(|age| age < KEY_PROPAGATION));
    refused && young
}

/// How long `Reconciling` has been True, and for what reason (None: it is not).
pub fn reconciling_for(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    now: k8s_openapi::jiff::Timestamp,
) -> Option<(&str, std::time::Duration)> {
    let c = conditions.iter().find(|c| c.type_ == crate::api::conditions::RECONCILING && c.status == "True")?;
    Some((
        c.reason.as_str(),
        std::time::Duration::try_from(now.duration_since(c.last_transition_time.0)).unwrap_or_default(),
    ))
}

/// `hold_ready` for a failure the caller knows to be `retryable`.
pub fn hold_ready_if(
    old: &crate::api::connection::S3ConnectionStatus,
    same_inputs: bool,
    ready: &Cond,
    retryable: bool,
    now: k8s_openapi::jiff::Timestamp,
    grace: std::time::Duration,
) -> Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    let was_ready = old.conditions.iter().any(|c| c.type_ == READY && c.status == "True");
    if !same_inputs || !was_ready || ready.is_true() || !retryable {
        return None;
    }
    let since = old
        .conditions
        .iter()
        .find(|c| c.type_ == crate::api::conditions::RECONCILING && c.status == "True")
        .map_or(now, |c| c.last_transition_time.0);
    let failing_for = std::time::Duration::try_from(now.duration_since(since)).unwrap_or_default();
    if failing_for >= grace {
        return None;
    }
    let last = old.last_validated_time.as_ref().map_or_else(|| "the last validation".to_owned(), |t| t.0.to_string());
    let message = crate::api::conditions::printable(&format!(
        "Still Ready from the validation at {last}; the latest one did not finish: {} Retrying with backoff; Ready turns False if this lasts {} s.",
        ready.message,
        grace.as_secs()
    ))
    .into_owned();
    let mut conditions: Vec<Condition> = old
        .conditions
        .iter()
        .filter(|c| c.type_ != crate::api::conditions::RECONCILING && c.type_ != crate::api::conditions::STALLED)
        .cloned()
        .collect();
    conditions.push(Condition {
        type_: crate::api::conditions::RECONCILING.to_owned(),
        status: "True".to_owned(),
        reason: ready.reason.as_str().to_owned(),
        message,
        observed_generation: old.observed_generation,
        last_transition_time: Time(since),
    });
    Some(conditions)
}

/// A Secret that is not there yet is often on its way (External Secrets, Sealed Secrets
/// and GitOps apply it next to the connection): for `grace` after the connection was
/// created, a missing Secret is something the operator waits for by itself (Reconciling)
/// rather than something a person must fix (Stalled). Returns how much of the grace is
/// left, when `verdict` is such a wait.
pub fn secret_grace_left(
    verdict: &Verdict,
    created: Option<k8s_openapi::jiff::Timestamp>,
    now: k8s_openapi::jiff::Timestamp,
    grace: std::time::Duration,
) -> Option<std::time::Duration> {
    let ready = verdict.ready();
    if ready.is_true() || !matches!(ready.reason, Reason::SecretNotFound | Reason::PlatformSecretNotFound) {
        return None;
    }
    let age = std::time::Duration::try_from(now.duration_since(created?)).unwrap_or_default();
    grace.checked_sub(age).filter(|left| !left.is_zero())
}

fn export(spec: &S3ConnectionSpec) -> bool {
    spec.usage.contains(&Usage::Export)
}

/// Conditions after a blocker: the failing one, the rest not checked, and Ready.
fn blocked(subject: &Subject<'_>, blocker: &Blocker) -> Verdict {
    let spec = subject.spec;
    let refs = &subject.refs();
    let secret: &str = &refs.name;
    let (failing, reason, message) = match blocker {
        Blocker::InvalidUri(why) => (
            BUCKET_REACHABLE,
            Reason::InvalidUri,
            format!("spec.uri {:?} is invalid: {why}; write it as s3://bucket/prefix/.", spec.uri),
        ),
        // The list itself is not shown: it is the admin's map of what the operator may reach,
        // and no tenant needs it to ask for an endpoint.
        Blocker::EndpointNotAllowed { endpoint, allowed: _ } => (
            BUCKET_REACHABLE,
            Reason::EndpointNotAllowed,
            format!(
                "Endpoint {endpoint} is not in the operator's endpoint allow-list: ask the cluster \
                 admin to add it (flag --allowed-endpoints, Helm value allowedEndpoints), or remove spec.endpoint to use AWS."
            ),
        ),
        Blocker::EndpointInternal { endpoint } => (
            BUCKET_REACHABLE,
            Reason::EndpointNotAllowed,
            format!(
                "Endpoint {endpoint} resolves only to internal addresses (loopback, private or link-local), which the \
                 operator reaches only when its endpoint allow-list names the host exactly: ask the cluster admin to \
                 add it (flag --allowed-endpoints, Helm value allowedEndpoints), or use a public endpoint."
            ),
        ),
        Blocker::SecretNotFound => (
            CREDENTIALS_VALID,
            Reason::SecretNotFound,
            format!(
                "Secret {secret:?} was not found in namespace {:?}: create it with the keys {} and {}, or fix spec.credentials.secretRef.name.",
                subject.namespace, refs.access_key_id_key, refs.secret_access_key_key
            ),
        ),
        Blocker::SecretKeyMissing { key, present } => (
            CREDENTIALS_VALID,
            Reason::SecretKeyMissing,
            format!(
                "Secret {secret:?} has no key {key:?} (it has: {}): add it, or name the key that holds it in spec.credentials.secretRef.",
                if present.is_empty() { "no keys".to_owned() } else { present.join(", ") }
            ),
        ),
        Blocker::SecretValueInvalid { key } => (
            CREDENTIALS_VALID,
            Reason::SecretValueInvalid,
            match subject.keys_from {
                KeysFrom::Secret => crate::credentials::invalid_value_message(secret, key),
                KeysFrom::Environment => format!(
                    "The value of {key} in the environment has characters no credential has (a control character, a line break or space inside it, or non-ASCII): set it again, exactly as issued."
                ),
            },
        ),
        Blocker::SecretForbidden => (
            CREDENTIALS_VALID,
            Reason::SecretForbidden,
            format!(
                "The operator may not read Secret {secret:?} in namespace {:?} (RBAC forbids get on secrets): grant the operator's ServiceAccount get, list and watch on secrets, as the Helm chart's role does.",
                subject.namespace
            ),
        ),
        Blocker::Managed { reason, message } => (CREDENTIALS_VALID, *reason, message.clone()),
    };
    let mut conditions = Vec::new();
    let failed = Cond::failed(failing, reason, message.clone());
    for type_ in condition_types(spec) {
        conditions.push(if type_ == failing { failed.clone() } else { Cond::waiting_on(type_, &failed) });
    }
    conditions.push(Cond::failed(READY, reason, message));
    let permissions = required(&spec.usage, spec.cors.mode)
        .into_iter()
        .map(|a| PermissionCheck { action: a.iam().to_owned(), result: PermissionResult::Untested })
        .collect();
    // An RBAC or IAM fix sends no watch event: look again with backoff (a transient IAM
    // failure is retried as any other); a Secret or spec fix does.
    let next = match blocker {
        Blocker::SecretForbidden => Next::RecheckLater,
        Blocker::Managed { reason, .. } if reason.is_transient() => Next::Retry,
        Blocker::Managed { reason: Reason::OperatorIamDenied | Reason::IamRejected, .. } => Next::RecheckLater,
        _ => Next::WaitForChange,
    };
    Verdict { conditions, permissions, missing_policy: None, cors: None, next }
}

fn condition_types(spec: &S3ConnectionSpec) -> Vec<&'static str> {
    let mut types = vec![CREDENTIALS_VALID, BUCKET_REACHABLE, READ_PERMITTED];
    if export(spec) {
        types.push(WRITE_PERMITTED);
    }
    types.push(CORS_CONFIGURED);
    types
}

fn probed(subject: &Subject<'_>, location: &Location, report: &Report) -> Verdict {
    let spec = subject.spec;
    let region = report.bucket_region.as_deref().or(spec.region.as_deref());
    let mut conditions = Vec::new();

    let credentials = with_request_id(credentials_condition(subject, report.fatal.as_ref()), report.fatal.as_ref());
    let bucket = bucket_condition(spec, location, report, &credentials);
    let bucket =
        with_request_id(bucket, report.fatal.as_ref().or_else(|| failure_of(report, &[Action::GetBucketLocation])));
    // Only a failure that stopped the probing leaves the later conditions unchecked: after
    // a denied GetBucketLocation or a region mismatch the other probes still ran, and one
    // policy should fix everything at once.
    let gate = if report.fatal.is_some() || !credentials.is_true() {
        let both = [&credentials, &bucket];
        both.iter()
            .find(|c| c.status == crate::api::conditions::Status::False)
            .or_else(|| both.iter().find(|c| !c.is_true()))
            .map(|c| (*c).clone())
    } else {
        None
    };
    conditions.push(credentials);
    conditions.push(bucket);

    let read = gate
        .as_ref()
        .map_or_else(|| read_condition(spec, location, report, region), |g| Cond::waiting_on(READ_PERMITTED, g));
    conditions.push(with_request_id(read, failure_of(report, &[Action::ListBucket, Action::GetObject])));
    if export(spec) {
        let write = gate
            .as_ref()
            .map_or_else(|| write_condition(location, report, region), |g| Cond::waiting_on(WRITE_PERMITTED, g));
        conditions.push(with_request_id(write, failure_of(report, &[Action::PutObject, Action::DeleteObject])));
    }
    let cors =
        gate.as_ref().map_or_else(|| cors_condition(spec, location, report), |g| Cond::waiting_on(CORS_CONFIGURED, g));
    let cors_failure = match &report.cors {
        Some(CorsOutcome::NotSupported(f) | CorsOutcome::Failed(f)) => Some(f),
        _ => failure_of(report, &[Action::GetBucketCors, Action::PutBucketCors]),
    };
    conditions.push(with_request_id(cors, cors_failure));

    // The first False condition names the problem; an Unknown one only says what was not
    // checked because of it.
    let first_failing = conditions
        .iter()
        .find(|c| c.status == crate::api::conditions::Status::False)
        .or_else(|| conditions.iter().find(|c| !c.is_true()));
    let ready = match first_failing {
        None => Cond::ok(
            READY,
            Reason::Validated,
            format!(
                "{location} in {} is ready for {}: every permission it needs is allowed{}.",
                report.region_used,
                usage_words(&spec.usage),
                match report.cors {
                    Some(CorsOutcome::Ignored) | None => "",
                    _ => " and the CORS rule for the labelling UI is in place",
                }
            ),
        ),
        Some(first) => Cond::failed(READY, first.reason, first.message.clone()),
    };
    let next = if ready.is_true() {
        Next::Revalidate
    } else if ready.reason.is_transient() {
        Next::Retry
    } else {
        Next::RecheckLater
    };
    conditions.push(ready);

    let permissions: Vec<PermissionCheck> = report
        .actions
        .iter()
        .map(|(action, outcome)| PermissionCheck {
            action: action.iam().to_owned(),
            result: match outcome {
                Outcome::Allowed => PermissionResult::Allowed,
                Outcome::Denied(_) => PermissionResult::Denied,
                Outcome::Failed(_) | Outcome::Untested => PermissionResult::Untested,
            },
        })
        .collect();
    let denied: Vec<Action> = report
        .actions
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Denied(f) if f.kind == FailureKind::AccessDenied))
        .map(|(a, _)| *a)
        .collect();
    let missing_policy = (!denied.is_empty())
        .then(|| serde_json::to_string_pretty(&policy(location, region, &denied)).expect("a policy serialises"));
    let cors = report.cors.as_ref().map(|c| match c {
        CorsOutcome::Ignored => CorsState::Ignored,
        CorsOutcome::Present if spec.cors.mode == crate::api::connection::CorsMode::Verify => CorsState::Verified,
        CorsOutcome::Present => CorsState::AlreadyPresent,
        CorsOutcome::Applied => CorsState::Applied,
        _ => CorsState::Missing,
    });
    Verdict { conditions, permissions, missing_policy, cors, next }
}

/// The first failure among the outcomes of `actions`.
fn failure_of<'r>(report: &'r Report, actions: &[Action]) -> Option<&'r Failure> {
    actions.iter().find_map(|a| match report.outcome(*a) {
        Some(Outcome::Denied(f) | Outcome::Failed(f)) => Some(f),
        _ => None,
    })
}

/// `cond` with S3's ids of the request that caused it, when it failed on an S3 answer
/// that had them: what AWS support asks for.
fn with_request_id(mut cond: Cond, cause: Option<&Failure>) -> Cond {
    if cond.status == crate::api::conditions::Status::False
        && let Some(ids) = cause.and_then(|f| f.request_id.as_deref())
    {
        cond.message = match cond.message.strip_suffix('.') {
            Some(m) => format!("{m} (S3 {ids})."),
            None => format!("{} (S3 {ids})", cond.message),
        };
    }
    cond
}

fn usage_words(usage: &[Usage]) -> &'static str {
    match (usage.contains(&Usage::Import), usage.contains(&Usage::Export)) {
        (true, true) => "Import and Export",
        (false, true) => "Export",
        _ => "Import",
    }
}

fn where_(spec: &S3ConnectionSpec) -> String {
    spec.endpoint.as_deref().map_or_else(|| "AWS S3".to_owned(), |e| e.to_owned())
}

fn credentials_condition(subject: &Subject<'_>, fatal: Option<&Failure>) -> Cond {
    let spec = subject.spec;
    let refs = &subject.refs();
    let accepted = || {
        Cond::ok(
            CREDENTIALS_VALID,
            Reason::CredentialsAccepted,
            format!("{} accepted the keys in {}.", where_(spec), subject.keys_place()),
        )
    };
    let Some(f) = fatal else {
        return accepted();
    };
    let (reason, message) = match f.kind {
        FailureKind::InvalidAccessKeyId => (
            Reason::InvalidAccessKeyId,
            format!(
                "{} does not know the access key id in {}: put the id of an active access key there (InvalidAccessKeyId).",
                where_(spec),
                subject.key_place(&refs.access_key_id_key, "AWS_ACCESS_KEY_ID")
            ),
        ),
        FailureKind::SignatureDoesNotMatch => (
            Reason::SignatureDoesNotMatch,
            format!(
                "The secret access key in {} does not belong to its access key id: put the matching secret there, without extra characters (SignatureDoesNotMatch).",
                subject.key_place(&refs.secret_access_key_key, "AWS_SECRET_ACCESS_KEY")
            ),
        ),
        FailureKind::ExpiredToken => (
            Reason::ExpiredToken,
            format!(
                "The session token in {} has expired: put fresh temporary credentials in {}, or use a long-lived access key without a session token (ExpiredToken).",
                subject.key_place(&refs.session_token_key, "AWS_SESSION_TOKEN"),
                subject.keys_place()
            ),
        ),
        FailureKind::ClockSkew => (
            Reason::ClockSkew,
            format!(
                "{} refused the request because the operator's clock differs too much from its own: fix time synchronisation (NTP) on the operator's node (RequestTimeTooSkewed).",
                where_(spec)
            ),
        ),
        // S3 authenticates a request before it looks for the bucket.
        FailureKind::NoSuchBucket => return accepted(),
        _ => {
            return Cond::not_checked(CREDENTIALS_VALID, &format!("{} could not be asked ({}).", where_(spec), f.code));
        }
    };
    Cond::failed(CREDENTIALS_VALID, reason, message)
}

fn bucket_condition(spec: &S3ConnectionSpec, location: &Location, report: &Report, credentials: &Cond) -> Cond {
    let bucket = &location.bucket;
    if let Some(f) = &report.fatal {
        let failed = |reason, message: String| Cond::failed(BUCKET_REACHABLE, reason, message);
        match f.kind {
            FailureKind::CertificateUntrusted => {
                return failed(
                    Reason::EndpointCertificateUntrusted,
                    format!(
                        "The TLS certificate of {} is not trusted ({}): give the operator the CA that signed it (flag --ca-bundle, Helm value caBundle), or fix the store's certificate.",
                        where_(spec),
                        f.detail
                    ),
                );
            }
            FailureKind::Unreachable => {
                return failed(
                    Reason::EndpointUnreachable,
                    format!(
                        "Could not reach {} ({}): check spec.endpoint, DNS and the network path from the operator to the store; retrying with backoff.",
                        where_(spec),
                        f.detail
                    ),
                );
            }
            FailureKind::NoSuchBucket => {
                return failed(
                    Reason::NoSuchBucket,
                    format!(
                        "Bucket {bucket:?} does not exist at {}: check the bucket name in spec.uri{}.",
                        where_(spec),
                        if spec.endpoint.is_some() { " and spec.endpoint" } else { "" }
                    ),
                );
            }
            FailureKind::WrongRegion => {
                return failed(
                    Reason::RegionMismatch,
                    region_message(bucket, report.bucket_region.as_deref(), &report.region_used),
                );
            }
            // The bucket's location was unreadable and the spec names no region.
            FailureKind::Unreadable => return s3_error(BUCKET_REACHABLE, Action::GetBucketLocation, f),
            _ => {}
        }
    }
    if !credentials.is_true() {
        return if credentials.status == crate::api::conditions::Status::False {
            Cond::waiting_on(BUCKET_REACHABLE, credentials)
        } else {
            Cond::not_checked(BUCKET_REACHABLE, &credentials.message)
        };
    }
    if let (Some(want), Some(have)) = (spec.region.as_deref(), report.bucket_region.as_deref())
        && want != have
    {
        return Cond::failed(BUCKET_REACHABLE, Reason::RegionMismatch, region_message(bucket, Some(have), want));
    }
    match report.outcome(Action::GetBucketLocation) {
        Some(Outcome::Denied(_)) => Cond::failed(
            BUCKET_REACHABLE,
            Reason::GetBucketLocationDenied,
            format!(
                "The credentials may not call s3:GetBucketLocation on {}: allow it in the IAM policy (status.missingPolicy has the statement).",
                location.bucket_arn(spec.region.as_deref())
            ),
        ),
        Some(Outcome::Failed(f)) => s3_error(BUCKET_REACHABLE, Action::GetBucketLocation, f),
        _ => Cond::ok(
            BUCKET_REACHABLE,
            Reason::BucketFound,
            format!("Bucket {bucket:?} is in {} at {}.", report.region_used, where_(spec)),
        ),
    }
}

fn region_message(bucket: &str, actual: Option<&str>, used: &str) -> String {
    // A redirect that names the region the request was already signed for says nothing
    // about where the bucket is.
    match actual.filter(|a| *a != used) {
        Some(actual) => format!(
            "Bucket {bucket:?} is in region {actual}, not {used}: set spec.region to {actual}, or remove spec.region to discover it."
        ),
        None => format!(
            "Bucket {bucket:?} is not in region {used}, and S3 did not say which region it is in: set spec.region to the bucket's region, or remove spec.region and allow s3:GetBucketLocation to discover it."
        ),
    }
}

fn s3_error(type_: &'static str, action: Action, f: &Failure) -> Cond {
    if f.kind == FailureKind::Unreadable {
        return Cond::failed(
            type_,
            Reason::S3AnswerUnreadable,
            format!(
                "The answer to the {} probe was not S3's ({}), so nothing was concluded from it{}: check that the endpoint is the S3 API itself and that nothing in between (a TLS-inspecting proxy, a captive portal, a load balancer's error page) answers in its place. Re-checking with backoff.",
                action.iam(),
                f.detail,
                if action == Action::GetBucketCors {
                    " and the bucket's CORS configuration was left as it is"
                } else {
                    ""
                }
            ),
        );
    }
    if f.kind == FailureKind::Rejected {
        return Cond::failed(
            type_,
            Reason::S3RequestRejected,
            format!(
                "The store refused the {} probe with {}{}: this is neither a permission nor a temporary problem, so retrying the same request will not help; check that the endpoint speaks the S3 API as expected (a proxy in front of it, say). Re-checking with backoff.",
                action.iam(),
                f.code,
                detail(f)
            ),
        );
    }
    Cond::failed(
        type_,
        Reason::S3Error,
        format!("S3 answered the {} probe with {}{}; retrying with backoff.", action.iam(), f.code, detail(f)),
    )
}

fn detail(f: &Failure) -> String {
    if f.detail.is_empty() { String::new() } else { format!(": {}", f.detail) }
}

fn read_condition(spec: &S3ConnectionSpec, location: &Location, report: &Report, region: Option<&str>) -> Cond {
    let import = spec.usage.contains(&Usage::Import);
    match report.outcome(Action::ListBucket) {
        Some(Outcome::Denied(_)) => {
            return Cond::failed(
                READ_PERMITTED,
                Reason::ListBucketDenied,
                format!(
                    "The credentials may not list {location} (s3:ListBucket on {}): allow it in the IAM policy (status.missingPolicy has the statement).",
                    location.bucket_arn(region)
                ),
            );
        }
        Some(Outcome::Failed(f)) => return s3_error(READ_PERMITTED, Action::ListBucket, f),
        _ => {}
    }
    if import {
        let Some(sample) = &report.sample_object else {
            return Cond::failed(
                READ_PERMITTED,
                Reason::NoObjects,
                format!(
                    "There are no objects under {location}: upload the files to label there, or point spec.uri at the prefix that holds them (the platform would report \"Dataset has no files\")."
                ),
            );
        };
        match report.outcome(Action::GetObject) {
            Some(Outcome::Denied(f)) if f.kind == FailureKind::KmsDenied => {
                return Cond::failed(
                    READ_PERMITTED,
                    Reason::KmsDecryptDenied,
                    format!(
                        "Reading s3://{}/{sample} was denied by KMS: allow kms:Decrypt on the KMS key that encrypts the bucket's objects for these credentials (in the IAM policy and the key policy).",
                        location.bucket
                    ),
                );
            }
            Some(Outcome::Denied(_)) => {
                return Cond::failed(
                    READ_PERMITTED,
                    Reason::GetObjectDenied,
                    format!(
                        "The credentials may list but not read objects in {location} (s3:GetObject denied on {sample:?}): allow s3:GetObject on {}. Note the /*: a statement on the bucket ARN alone does not cover its objects (status.missingPolicy has the statement).",
                        location.objects_arn(region)
                    ),
                );
            }
            Some(Outcome::Failed(f)) => return s3_error(READ_PERMITTED, Action::GetObject, f),
            _ => {}
        }
        Cond::ok(
            READ_PERMITTED,
            Reason::ReadAllowed,
            format!("The credentials may list and read objects in {location} (read {sample:?})."),
        )
    } else {
        Cond::ok(READ_PERMITTED, Reason::ReadAllowed, format!("The credentials may list {location}."))
    }
}

fn write_condition(location: &Location, report: &Report, region: Option<&str>) -> Cond {
    match (report.outcome(Action::PutObject), report.outcome(Action::DeleteObject)) {
        (Some(Outcome::Denied(_)), _) => Cond::failed(
            WRITE_PERMITTED,
            Reason::PutObjectDenied,
            format!(
                "The credentials may not write to {location} (s3:PutObject): allow s3:PutObject on {} so that exports can be written (status.missingPolicy has the statement).",
                location.objects_arn(region)
            ),
        ),
        (Some(Outcome::Failed(f)), _) => s3_error(WRITE_PERMITTED, Action::PutObject, f),
        (_, Some(Outcome::Denied(_))) => Cond::failed(
            WRITE_PERMITTED,
            Reason::DeleteObjectDenied,
            format!(
                "The credentials may write but not delete in {location} (s3:DeleteObject): allow s3:DeleteObject on {}, then delete the probe object s3://{}/{} left behind.",
                location.objects_arn(region),
                location.bucket,
                report.probe_object.as_deref().unwrap_or_default()
            ),
        ),
        (_, Some(Outcome::Failed(f))) => s3_error(WRITE_PERMITTED, Action::DeleteObject, f),
        _ => Cond::ok(
            WRITE_PERMITTED,
            Reason::WriteAllowed,
            format!("The credentials may write and delete objects in {location}."),
        ),
    }
}

fn cors_condition(spec: &S3ConnectionSpec, location: &Location, report: &Report) -> Cond {
    // S3 takes a CORS configuration for the bucket itself, never through an access point.
    let bucket = if location.through_access_point() { "<the access point's bucket>" } else { &location.bucket };
    let origins = spec.cors.allowed_origins.join(", ");
    let by_hand = |wanted: &serde_json::Value| {
        format!("aws s3api put-bucket-cors --bucket {bucket} --cors-configuration '{wanted}'")
    };
    let Some(outcome) = &report.cors else {
        return Cond::not_checked(CORS_CONFIGURED, "an earlier probe failed");
    };
    match outcome {
        CorsOutcome::Ignored => {
            Cond::ok(CORS_CONFIGURED, Reason::CorsIgnored, "CORS is not managed (spec.cors.mode is Ignore).")
        }
        CorsOutcome::Present if spec.cors.mode == crate::api::connection::CorsMode::Verify => Cond::ok(
            CORS_CONFIGURED,
            Reason::CorsVerified,
            format!("The bucket's CORS configuration lets {origins} GET and HEAD objects."),
        ),
        CorsOutcome::Present => Cond::ok(
            CORS_CONFIGURED,
            Reason::CorsAlreadyPresent,
            format!("The bucket's CORS configuration already lets {origins} GET and HEAD objects."),
        ),
        CorsOutcome::Applied => Cond::ok(
            CORS_CONFIGURED,
            Reason::CorsApplied,
            format!(
                "Added the CORS rule that lets {origins} GET and HEAD objects; the bucket's other rules were kept."
            ),
        ),
        CorsOutcome::Missing { wanted } => Cond::failed(
            CORS_CONFIGURED,
            Reason::CorsRuleMissing,
            format!(
                "The bucket's CORS configuration does not let {origins} GET and HEAD objects, so the labelling UI cannot load them: set it with {}, or set spec.cors.mode to Apply.",
                by_hand(wanted)
            ),
        ),
        CorsOutcome::ReadDenied { wanted } => Cond::failed(
            CORS_CONFIGURED,
            Reason::GetBucketCorsDenied,
            format!(
                "The credentials may not read the bucket's CORS configuration (s3:GetBucketCORS): allow it, or set spec.cors.mode to Ignore and make sure the bucket has this rule: {wanted}."
            ),
        ),
        CorsOutcome::WriteDenied { wanted } => Cond::failed(
            CORS_CONFIGURED,
            Reason::PutBucketCorsDenied,
            format!(
                "The bucket's CORS configuration lacks the rule the labelling UI needs and the credentials may not set it (s3:PutBucketCORS): allow it, or set it by hand (existing rules included) with {}.",
                by_hand(wanted)
            ),
        ),
        CorsOutcome::NotSupported(f) => Cond::failed(
            CORS_CONFIGURED,
            Reason::CorsNotSupported,
            format!(
                "{} does not implement the S3 CORS API ({}): configure CORS on the store itself so that {origins} may GET and HEAD objects, and set spec.cors.mode to Ignore.",
                where_(spec),
                f.code
            ),
        ),
        CorsOutcome::TooManyRules { count } => Cond::failed(
            CORS_CONFIGURED,
            Reason::CorsRuleLimit,
            format!(
                "The bucket's CORS configuration has {count} rules, the most S3 allows, and none lets {origins} GET and HEAD objects: remove a rule the bucket no longer needs (rules with ids starting {} were added for S3Connections), or add {origins} to an existing rule.",
                crate::s3::cors::RULE_ID_PREFIX
            ),
        ),
        CorsOutcome::Failed(f) => s3_error(CORS_CONFIGURED, Action::GetBucketCors, f),
    }
}

/// Reads the access keys from `secret`.
pub fn keys_from(
    secret: &k8s_openapi::api::core::v1::Secret,
    refs: &crate::api::connection::CredentialsSecretRef,
) -> Result<crate::s3::client::Keys, Blocker> {
    let get = |key: &str| match crate::credentials::secret_value(secret, key) {
        Ok(v) => Ok(Some(v)),
        Err(crate::credentials::BadValue::Missing) => Ok(None),
        Err(crate::credentials::BadValue::Invalid) => Err(Blocker::SecretValueInvalid { key: key.to_owned() }),
    };
    let required = |key: &str| {
        get(key)?.ok_or_else(|| Blocker::SecretKeyMissing {
            key: key.to_owned(),
            present: crate::credentials::secret_keys(secret),
        })
    };
    Ok(crate::s3::client::Keys {
        access_key_id: required(&refs.access_key_id_key)?,
        secret_access_key: required(&refs.secret_access_key_key)?,
        session_token: get(&refs.session_token_key)?,
    })
}

/// The least-privilege policy for a connection.
pub fn least_privilege(spec: &S3ConnectionSpec) -> Result<serde_json::Value, String> {
    let location = Location::parse(&spec.uri).map_err(|e| e.to_string())?;
    Ok(crate::s3::policy::policy(&location, spec.region.as_deref(), &required(&spec.usage, spec.cors.mode)))
}

/// What `usage` asks of the bucket.
pub fn access(usage: &[Usage]) -> crate::s3::Access {
    crate::s3::Access { read: usage.contains(&Usage::Import), write: usage.contains(&Usage::Export) }
}

pub fn cors(mode: CorsMode) -> crate::s3::Cors {
    match mode {
        CorsMode::Apply => crate::s3::Cors::Apply,
        CorsMode::Verify => crate::s3::Cors::Verify,
        CorsMode::Ignore => crate::s3::Cors::Ignore,
    }
}

/// The actions a connection with `usage` and CORS `mode` needs, in probe order.
pub fn required(usage: &[Usage], mode: CorsMode) -> Vec<crate::s3::policy::Action> {
    crate::s3::policy::required(access(usage), cors(mode))
}

/// The probes a connection's spec asks for, at `location` (parsed from its uri).
pub fn probe_for<'a>(spec: &'a S3ConnectionSpec, location: &'a Location, owner: &'a str) -> Probe<'a> {
    Probe {
        location,
        access: access(&spec.usage),
        cors: cors(spec.cors.mode),
        origins: &spec.cors.allowed_origins,
        region: spec.region.as_deref(),
        endpoint: spec.endpoint.as_deref(),
        force_path_style: spec.force_path_style,
        owner,
        deadline: crate::s3::probe::DEFAULT_DEADLINE,
    }
}

#[cfg(test)]
mod tests;
