//! Condition types, reasons, and merging new conditions into old ones so that
//! `lastTransitionTime` moves only on a real transition.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A reason enum: each variant is spelled in conditions, metrics and events exactly as it
/// is named, so the name is the one place the word is written (`as_str`, `Display`), and
/// `ALL` lists them for the docs' and tests' checks.
macro_rules! reasons {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The variant spelled `text`, if any.
            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|r| r.as_str() == text)
            }

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant),)*
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use reasons;

pub const READY: &str = "Ready";
pub const CREDENTIALS_VALID: &str = "CredentialsValid";
pub const BUCKET_REACHABLE: &str = "BucketReachable";
pub const READ_PERMITTED: &str = "ReadPermitted";
pub const WRITE_PERMITTED: &str = "WritePermitted";
pub const CORS_CONFIGURED: &str = "CorsConfigured";
pub const REGISTERED: &str = "Registered";
/// Every kind that works through an S3Connection: whether it can use it.
pub const CONNECTION_READY: &str = "ConnectionReady";
/// DatasetExport: whether the platform accepted the export.
pub const SUBMITTED: &str = "Submitted";
/// DatasetExport: whether the export has finished.
pub const COMPLETE: &str = "Complete";
/// AnnotationProject: whether its datasets are Ready, with files, of one data type.
pub const DATASETS_READY: &str = "DatasetsReady";
/// AnnotationProject: whether its template exists.
pub const TEMPLATE_READY: &str = "TemplateReady";
/// AnnotationProject: whether its project exists on the platform.
pub const CREATED: &str = "Created";
/// kstatus: the controller is still working towards the desired state (retrying).
pub const RECONCILING: &str = "Reconciling";
/// kstatus: the controller cannot make progress until someone changes something.
pub const STALLED: &str = "Stalled";

reasons! {
/// Every reason a condition can carry. One name per documented failure mode.
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
    /// IAM writes for this connection or namespace are spaced (a key made at most once per
    /// --min-rotation-interval, a namespace's IAM writes per minute): done when due.
    IamWritesSpaced,
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
    /// The store answered a probe with something that is not S3's answer (a proxy's HTML
    /// page, a region that cannot be one): nothing is concluded or changed on it.
    S3AnswerUnreadable,
    // A condition that could not be evaluated because an earlier one failed.
    NotChecked,
    // Ready
    Validated,
}
}

reasons! {
    /// The reasons of ConnectionReady of every kind that works through an S3Connection,
    /// besides the connection's own reason, which a connection that is not Ready passes on.
    pub enum ConnectionReadyReason {
        ConnectionNotFound,
        ConnectionNotForImport,
        ConnectionNotForExport,
        ConnectionNotRegistered,
        ConnectionReady,
    }
}

reasons! {
    /// Reasons of the operator's own making, on any kind.
    pub enum OperatorReason {
        /// A reconcile panicked (a bug): caught, shown on the object, the rest carries on.
        ReconcilePanicked,
        /// The API server refused a status write.
        StatusWriteRefused,
        /// A key rotation asked for by annotation waits for the least interval.
        RotationWaits,
        /// The sweep found an IAM user of this installation whose S3Connection is gone (its
        /// finalizer stripped, say) and removed its keys (and the user, unless Retain).
        OrphanedUserRemoved,
        /// The sweep found a managed user whose connection no grant covers any more and
        /// revoked its keys.
        UncoveredKeysRevoked,
    }
}

impl Reason {
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
                | Reason::IamWritesSpaced
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
    printable_within(text, MAX_MESSAGE, char::is_control)
}

/// `printable`, bounded to `max` bytes, escaping the characters `escaped` says.
fn printable_within(text: &str, max: usize, escaped: fn(char) -> bool) -> std::borrow::Cow<'_, str> {
    if text.len() <= max && !text.chars().any(escaped) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        if escaped(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() >= max {
            let mut end = max - 3;
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

/// Makes every string in `value` printable (control characters, DEL and C1 included,
/// escaped) and at most `MAX_STATUS_STRING` bytes. A status write is a server-side apply,
/// which the API server decodes as YAML, and YAML refuses control characters: one object
/// key or server answer carrying them would otherwise have every status write of the
/// object refused, whoever put it there.
pub fn printable_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) => {
            // Line breaks and tabs are YAML's own and keep a multi-line value (a policy
            // document) intact; every other control character is escaped.
            let escaped = |c: char| c.is_control() && !matches!(c, '\n' | '\r' | '\t');
            if let std::borrow::Cow::Owned(clean) = printable_within(text, MAX_STATUS_STRING, escaped) {
                *text = clean;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(printable_json),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(printable_json),
        _ => {}
    }
}

/// The longest string a status holds (a message is shorter still: `MAX_MESSAGE`).
pub const MAX_STATUS_STRING: usize = 16 * 1024;

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

    #[test]
    fn every_status_string_is_printable_and_bounded() {
        let mut status = serde_json::json!({"sampleObject": "images/!\u{7f}\u{85}\u{9b}", "ok": "images/cat.jpg",
            "policy": "{\n\t\"Version\": 1\r\n}",
            "list": [{"id": "a\u{0}b"}], "long": "x".repeat(20_000), "n": 3});
        printable_json(&mut status);
        let text = serde_json::to_string(&status).unwrap();
        assert!(!status.to_string().contains('\u{7f}') && !text.contains('\u{85}'), "{text}");
        assert_eq!(status["sampleObject"], "images/!\\u{7f}\\u{85}\\u{9b}");
        assert_eq!(status["ok"], "images/cat.jpg");
        assert_eq!(status["policy"], "{\n\t\"Version\": 1\r\n}", "a multi-line value is kept whole");
        assert_eq!(status["list"][0]["id"], "a\\u{0}b");
        assert!(status["long"].as_str().unwrap().len() <= MAX_STATUS_STRING);
        assert_eq!(status["n"], 3);
    }

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

#[cfg(test)]
mod vocabulary_tests {
    use super::*;

    /// Every reason word of every kind.
    fn all_reasons() -> Vec<&'static str> {
        let mut all: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        all.extend(ConnectionReadyReason::ALL.iter().map(|r| r.as_str()));
        all.extend(OperatorReason::ALL.iter().map(|r| r.as_str()));
        all.extend(crate::api::export::ExportReason::ALL.iter().map(|r| r.as_str()));
        all.extend(crate::api::dataset::DatasetReason::ALL.iter().map(|r| r.as_str()));
        all.extend(crate::api::grant::GrantReason::ALL.iter().map(|r| r.as_str()));
        all.extend(crate::api::project::ProjectReason::ALL.iter().map(|r| r.as_str()));
        all
    }

    #[test]
    fn a_reason_is_spelled_by_its_variant_and_parses_back() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(*r));
        }
        assert_eq!(Reason::parse("NoSuchReason"), None);
        assert_eq!(Reason::GetObjectDenied.to_string(), "GetObjectDenied");
    }

    /// The operator's code names reasons and condition types through api/ only: a string
    /// literal that is a reason (outside the S3 and IAM clients, whose error codes share
    /// some names, and outside tests) is a word that can drift from its variant.
    #[test]
    fn no_reason_is_written_as_a_string_literal_outside_api() {
        let reasons = all_reasons();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                let rel = path.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
                if path.is_dir() {
                    if !["api", "s3"].contains(&rel.as_str()) {
                        dirs.push(path);
                    }
                    continue;
                }
                if rel == "iam.rs" || rel.ends_with("tests.rs") || !rel.ends_with(".rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                // Unit tests at the end of a file may spell what they assert.
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                for (i, line) in code.lines().enumerate() {
                    for r in &reasons {
                        if line.contains(&format!("\"{r}\"")) {
                            found.push(format!("src/{rel}:{}: {r}", i + 1));
                        }
                    }
                }
            }
        }
        assert!(found.is_empty(), "use the reason's variant: {found:#?}");
    }
}
