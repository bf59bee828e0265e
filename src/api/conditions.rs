//! Condition types, reasons, and merging new conditions into old ones so that
//! `lastTransitionTime` moves only on a real transition.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const CREDENTIALS_VALID: &str = "CredentialsValid";
pub const BUCKET_REACHABLE: &str = "BucketReachable";
pub const READ_PERMITTED: &str = "ReadPermitted";
pub const WRITE_PERMITTED: &str = "WritePermitted";
pub const CORS_CONFIGURED: &str = "CorsConfigured";
pub const REGISTERED: &str = "Registered";
/// kstatus: the controller is still working towards the desired state (retrying).
pub const RECONCILING: &str = "Reconciling";
/// kstatus: the controller cannot make progress until someone changes something.
pub const STALLED: &str = "Stalled";

/// Every reason a condition can carry. One name per documented failure mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    // CredentialsValid
    CredentialsAccepted,
    SecretNotFound,
    SecretKeyMissing,
    /// A Secret value that no credential can be (control characters, non-ASCII).
    SecretValueInvalid,
    SecretForbidden,
    InvalidAccessKeyId,
    SignatureDoesNotMatch,
    ExpiredToken,
    ClockSkew,
    // BucketReachable
    BucketFound,
    InvalidUri,
    EndpointNotAllowed,
    EndpointUnreachable,
    NoSuchBucket,
    RegionMismatch,
    GetBucketLocationDenied,
    // ReadPermitted
    ReadAllowed,
    ListBucketDenied,
    GetObjectDenied,
    NoObjects,
    KmsDecryptDenied,
    // WritePermitted
    WriteAllowed,
    PutObjectDenied,
    DeleteObjectDenied,
    // CorsConfigured
    CorsApplied,
    CorsAlreadyPresent,
    CorsVerified,
    CorsIgnored,
    GetBucketCorsDenied,
    PutBucketCorsDenied,
    CorsRuleMissing,
    CorsNotSupported,
    /// The bucket already has the 100 CORS rules S3 allows.
    CorsRuleLimit,
    // Registered
    Registered,
    PlatformSecretNotFound,
    PlatformSecretKeyMissing,
    PlatformRejected,
    PlatformInternalError,
    PlatformUnreachable,
    /// A registration was asked for, the answer was lost, and it is not on the platform
    /// (yet): looked up again, never blindly created again.
    RegistrationUnconfirmed,
    // CredentialsValid, managed credentials (spec.credentials.managed)
    /// The operator was not set up to manage credentials (no --managed-credentials).
    ManagedCredentialsDisabled,
    /// No S3AccessGrant covers the connection's namespace, bucket, prefix, usage and deletion policy.
    ManagedBucketNotAllowed,
    /// IAM denied a call to the operator's own identity.
    OperatorIamDenied,
    /// IAM refused a call for another reason (a limit, a bad boundary ARN).
    IamRejected,
    /// IAM did not answer, or answered with a server error: retried.
    IamUnavailable,
    /// The Secret or IAM user the operator would use exists and is not the operator's.
    ManagedResourceConflict,
    /// The namespace has as many managed IAM users as the operator allows one namespace.
    ManagedQuotaExceeded,
    /// TLS refused the endpoint's certificate.
    EndpointCertificateUntrusted,
    // Any S3 condition, for an answer that is none of the above (a 5xx, say).
    S3Error,
    /// S3 refused a probe with a 4xx that is neither a permission nor a throttling answer:
    /// retrying the same request changes nothing.
    S3RequestRejected,
    // A condition that could not be evaluated because an earlier one failed.
    NotChecked,
    // Ready
    Validated,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        use Reason::*;
        match self {
            CredentialsAccepted => "CredentialsAccepted",
            SecretNotFound => "SecretNotFound",
            SecretKeyMissing => "SecretKeyMissing",
            SecretValueInvalid => "SecretValueInvalid",
            SecretForbidden => "SecretForbidden",
            InvalidAccessKeyId => "InvalidAccessKeyId",
            SignatureDoesNotMatch => "SignatureDoesNotMatch",
            ExpiredToken => "ExpiredToken",
            ClockSkew => "ClockSkew",
            BucketFound => "BucketFound",
            InvalidUri => "InvalidUri",
            EndpointNotAllowed => "EndpointNotAllowed",
            EndpointUnreachable => "EndpointUnreachable",
            NoSuchBucket => "NoSuchBucket",
            RegionMismatch => "RegionMismatch",
            GetBucketLocationDenied => "GetBucketLocationDenied",
            ReadAllowed => "ReadAllowed",
            ListBucketDenied => "ListBucketDenied",
            GetObjectDenied => "GetObjectDenied",
            NoObjects => "NoObjects",
            KmsDecryptDenied => "KmsDecryptDenied",
            WriteAllowed => "WriteAllowed",
            PutObjectDenied => "PutObjectDenied",
            DeleteObjectDenied => "DeleteObjectDenied",
            CorsApplied => "CorsApplied",
            CorsAlreadyPresent => "CorsAlreadyPresent",
            CorsVerified => "CorsVerified",
            CorsIgnored => "CorsIgnored",
            GetBucketCorsDenied => "GetBucketCorsDenied",
            PutBucketCorsDenied => "PutBucketCorsDenied",
            CorsRuleMissing => "CorsRuleMissing",
            CorsNotSupported => "CorsNotSupported",
            CorsRuleLimit => "CorsRuleLimit",
            Registered => "Registered",
            PlatformSecretNotFound => "PlatformSecretNotFound",
            PlatformSecretKeyMissing => "PlatformSecretKeyMissing",
            PlatformRejected => "PlatformRejected",
            PlatformInternalError => "PlatformInternalError",
            PlatformUnreachable => "PlatformUnreachable",
            RegistrationUnconfirmed => "RegistrationUnconfirmed",
            ManagedCredentialsDisabled => "ManagedCredentialsDisabled",
            ManagedBucketNotAllowed => "ManagedBucketNotAllowed",
            OperatorIamDenied => "OperatorIamDenied",
            IamRejected => "IamRejected",
            IamUnavailable => "IamUnavailable",
            ManagedResourceConflict => "ManagedResourceConflict",
            ManagedQuotaExceeded => "ManagedQuotaExceeded",
            EndpointCertificateUntrusted => "EndpointCertificateUntrusted",
            S3Error => "S3Error",
            S3RequestRejected => "S3RequestRejected",
            NotChecked => "NotChecked",
            Validated => "Validated",
        }
    }

    /// Failures that may go away by themselves (network, clocks, server errors): the
    /// controller retries with backoff and reports Reconciling, not Stalled.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Reason::EndpointUnreachable
                | Reason::ClockSkew
                | Reason::S3Error
                | Reason::PlatformInternalError
                | Reason::PlatformUnreachable
                | Reason::RegistrationUnconfirmed
                | Reason::IamUnavailable
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

/// A condition as decided, before it gets its times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    pub type_: &'static str,
    pub status: Status,
    pub reason: Reason,
    pub message: String,
}

impl Cond {
    pub fn ok(type_: &'static str, reason: Reason, message: impl Into<String>) -> Self {
        Self { type_, status: Status::True, reason, message: message.into() }
    }

    pub fn failed(type_: &'static str, reason: Reason, message: impl Into<String>) -> Self {
        Self { type_, status: Status::False, reason, message: message.into() }
    }

    pub fn not_checked(type_: &'static str, because: &str) -> Self {
        Self {
            type_,
            status: Status::Unknown,
            reason: Reason::NotChecked,
            message: format!("Not checked until this is fixed: {because}"),
        }
    }

    /// Not checked because `failing` failed: names it instead of repeating its message,
    /// so that `kubectl describe` says the fix once.
    pub fn waiting_on(type_: &'static str, failing: &Cond) -> Self {
        Self {
            type_,
            status: Status::Unknown,
            reason: Reason::NotChecked,
            message: format!("Not checked until {} ({}) is fixed.", failing.type_, failing.reason.as_str()),
        }
    }

    pub fn is_true(&self) -> bool {
        self.status == Status::True
    }
}

/// A condition whose reason is open-ended: a DatasetExport passes on its S3Connection's
/// reason as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedCond {
    pub type_: &'static str,
    pub status: Status,
    pub reason: String,
    pub message: String,
}

impl NamedCond {
    pub fn new(type_: &'static str, status: Status, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self { type_, status, reason: reason.into(), message: message.into() }
    }

    pub fn is_true(&self) -> bool {
        self.status == Status::True
    }
}

impl From<Cond> for NamedCond {
    fn from(c: Cond) -> Self {
        NamedCond { type_: c.type_, status: c.status, reason: c.reason.as_str().to_owned(), message: c.message }
    }
}

/// The new conditions, keeping each old `lastTransitionTime` whose status did not change.
pub fn merge(old: &[Condition], new: &[Cond], generation: Option<i64>, now: &Time) -> Vec<Condition> {
    let named: Vec<NamedCond> = new.iter().cloned().map(NamedCond::from).collect();
    merge_named(old, &named, generation, now)
}

pub fn merge_named(old: &[Condition], new: &[NamedCond], generation: Option<i64>, now: &Time) -> Vec<Condition> {
    new.iter()
        .map(|c| {
            let message = printable(&c.message).into_owned();
            let last_transition_time = old
                .iter()
                .find(|o| o.type_ == c.type_ && o.status == c.status.as_str())
                .map_or_else(|| now.clone(), |o| o.last_transition_time.clone());
            Condition {
                type_: c.type_.to_owned(),
                status: c.status.as_str().to_owned(),
                reason: c.reason.clone(),
                message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The longest message a status or event carries; what a server said is cut here.
pub const MAX_MESSAGE: usize = 4096;

/// `text` safe to write where people and the API server read it: control characters
/// (which the API server's YAML parser refuses, and terminals act on) shown as escapes,
/// and at most `MAX_MESSAGE` bytes, cut at a character boundary.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_MESSAGE && !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(MAX_MESSAGE));
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() >= MAX_MESSAGE {
            let mut end = MAX_MESSAGE - 3;
            while !out.is_char_boundary(end) {
                end -= 1;
            }
            out.truncate(end);
            out.push_str("...");
            break;
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Conditions equal but for their timestamps.
pub fn same_ignoring_time(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.message == y.message
                && x.observed_generation == y.observed_generation
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let first = merge(&[], &[Cond::failed(READY, Reason::NoObjects, "empty")], Some(1), &at(100));
        assert_eq!(first[0].last_transition_time, at(100));

        // Same status, new reason and message: still the same transition.
        let second = merge(&first, &[Cond::failed(READY, Reason::GetObjectDenied, "denied")], Some(2), &at(200));
        assert_eq!(second[0].last_transition_time, at(100));
        assert_eq!((second[0].reason.as_str(), second[0].observed_generation), ("GetObjectDenied", Some(2)));

        let third = merge(&second, &[Cond::ok(READY, Reason::Validated, "ok")], Some(2), &at(300));
        assert_eq!(third[0].last_transition_time, at(300));
        assert_eq!(third[0].status, "True");
    }

    #[test]
    fn messages_are_printable_and_bounded() {
        assert_eq!(printable("plain text, é and 日本"), "plain text, é and 日本");
        assert_eq!(printable("a\u{7f}b\nc\u{0}"), "a\\u{7f}b\\nc\\u{0}");
        let long = "é".repeat(MAX_MESSAGE);
        let cut = printable(&long);
        assert!(cut.len() <= MAX_MESSAGE && cut.ends_with("..."), "{}", cut.len());
        let merged = merge(&[], &[Cond::failed(READY, Reason::S3Error, "bad\u{7f}")], Some(1), &at(1));
        assert_eq!(merged[0].message, "bad\\u{7f}");
    }

    #[test]
    fn time_insensitive_equality_sees_every_other_field() {
        let a = merge(&[], &[Cond::ok(READY, Reason::Validated, "ok")], Some(1), &at(1));
        let b = merge(&[], &[Cond::ok(READY, Reason::Validated, "ok")], Some(1), &at(2));
        assert!(same_ignoring_time(&a, &b));
        let c = merge(&[], &[Cond::ok(READY, Reason::Validated, "changed")], Some(1), &at(1));
        assert!(!same_ignoring_time(&a, &c));
        let d = merge(&[], &[Cond::ok(READY, Reason::Validated, "ok")], Some(2), &at(1));
        assert!(!same_ignoring_time(&a, &d));
    }
}
