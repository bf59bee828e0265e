//! The probe engine: one S3 request per permission a connection needs, in an order where
//! each answer makes the next meaningful, never more than seven requests. Used by the
//! controller and by `s3connect check`. It records facts; `decide` turns them into
//! conditions.

use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use super::client::{Keys, RequestCounter, Target};
use super::cors::{self, CorsRule};
use super::error::{Failure, FailureKind, classify, looks_like_region};
use super::policy::{Action, required};
use super::uri::Location;
use super::{Access, Cors};

/// Start of the name of the object an Export probe writes and deletes right away, under
/// the prefix. Each connection has its own (see [`probe_key`]), so that connections
/// sharing a prefix never delete each other's, and `~` sorts it after ordinary keys, so
/// that listings find real objects first.
pub const PROBE_OBJECT: &str = "~s3connect-write-probe";

/// The probe object of the connection `owner` (`namespace/name`) under `prefix`: stable,
/// so repeated validations reuse one key.
pub fn probe_key(prefix: &str, owner: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in owner.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    format!("{prefix}{PROBE_OBJECT}-{h:08x}")
}

/// What to probe.
#[derive(Clone, Debug)]
pub struct Probe<'a> {
    pub location: &'a Location,
    pub access: Access,
    pub cors: Cors,
    pub origins: &'a [String],
    /// The region from the spec, if any.
    pub region: Option<&'a str>,
    pub endpoint: Option<&'a str>,
    pub force_path_style: bool,
    /// Who is probing (`namespace/name`), written into the probe object and naming the
    /// connection's CORS rule.
    pub owner: &'a str,
    /// The most a whole validation may take, retries included; a store that has not
    /// answered by then is unreachable, so that a hung endpoint never holds on for long.
    pub deadline: Duration,
}

/// The default for [`Probe::deadline`].
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// Tries per request for a busy or briefly unreachable server (5xx, throttling, resets).
const ATTEMPTS: u32 = 4;
/// The first pause between tries; it doubles, with full jitter, up to `MAX_PAUSE`.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// The pause before try `attempt + 1`: full jitter over a doubling ceiling.
fn pause(attempt: u32) -> Duration {
    let ceiling = FIRST_PAUSE.saturating_mul(1 << attempt.min(8)).min(MAX_PAUSE);
    ceiling.mul_f64(0.5 + 0.5 * fastrand::f64())
}

/// The answer to one action's probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Denied(Failure),
    /// The request failed for another reason (a server error, say).
    Failed(Failure),
    /// Not probed: an earlier answer made this probe meaningless.
    Untested,
}

/// What was found about the bucket's CORS rule.
#[derive(Clone, Debug, PartialEq)]
pub enum CorsOutcome {
    Ignored,
    /// The rule is there (Apply or Verify mode).
    Present,
    /// The rule was missing and has been added.
    Applied,
    /// The rule is missing (Verify mode); `wanted` is the configuration to set.
    Missing {
        wanted: serde_json::Value,
    },
    /// The configuration could not be read; `wanted` is the managed rule alone.
    ReadDenied {
        wanted: serde_json::Value,
    },
    /// The rule is missing and could not be written; `wanted` includes the existing rules.
    WriteDenied {
        wanted: serde_json::Value,
    },
    NotSupported(Failure),
    /// The rule is missing and the bucket already has `count` rules, the most S3 allows.
    TooManyRules {
        count: usize,
    },
    Failed(Failure),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Every required action, in probe order.
    pub actions: Vec<(Action, Outcome)>,
    /// A failure that stopped the probing: credentials, bucket or endpoint.
    pub fatal: Option<Failure>,
    /// The bucket's region as S3 reported it.
    pub bucket_region: Option<String>,
    /// The region the requests were signed for.
    pub region_used: String,
    /// Whether the listing ran, and the first key it found.
    pub listed: bool,
    pub sample_object: Option<String>,
    /// The probe object's key, when an Export probe ran.
    pub probe_object: Option<String>,
    pub cors: Option<CorsOutcome>,
    /// S3 requests sent.
    pub requests: u32,
}

impl Report {
    /// Whether the store answered nothing at all: the validation stopped on an unreachable
    /// endpoint (refused, timed out) before any request got an answer. Unlike sporadic
    /// failures, this is not waited out for long: the store is down for everyone.
    pub fn unanswered(&self) -> bool {
        let unreachable = |f: &Failure| f.kind == FailureKind::Unreachable;
        self.fatal.as_ref().is_some_and(unreachable)
            && self.actions.iter().all(|(_, o)| match o {
                Outcome::Untested => true,
                Outcome::Failed(f) => unreachable(f),
                Outcome::Allowed | Outcome::Denied(_) => false,
            })
    }

    pub fn outcome(&self, action: Action) -> Option<&Outcome> {
        self.actions.iter().find(|(a, _)| *a == action).map(|(_, o)| o)
    }

    fn set(&mut self, action: Action, outcome: Outcome) {
        if let Some(slot) = self.actions.iter_mut().find(|(a, _)| *a == action) {
            slot.1 = outcome;
        }
    }
}

/// The first listed key that is not a probe object.
fn sample<'a>(keys: impl Iterator<Item = &'a str>, prefix: &str) -> Option<String> {
    let probe = format!("{prefix}{PROBE_OBJECT}");
    keys.into_iter().find(|k| !k.starts_with(&probe)).map(str::to_owned)
}

/// The region S3 means by a GetBucketLocation answer: empty is us-east-1, `EU` is the
/// legacy name of eu-west-1.
fn normalise_region(constraint: &str) -> String {
    match constraint {
        "" => "us-east-1".to_owned(),
        "EU" => "eu-west-1".to_owned(),
        r => r.to_owned(),
    }
}

/// Sends the request `$builder` builds (evaluated anew for each try), again with
/// jittered, growing pauses while the server answers with a retryable failure. Each try
/// is counted. The validation's deadline bounds the whole.
macro_rules! send {
    ($run:expr, $operation:literal, $builder:expr) => {{
        let mut attempt = 1;
        loop {
            $run.counter.add();
            match $run.outcome($operation, $builder.send().await) {
                Ok(out) => break Ok(out),
                Err(f) if attempt >= ATTEMPTS || !f.kind.is_retryable() => break Err(f),
                Err(_) => {
                    tokio::time::sleep(pause(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }};
}

struct Run<'a> {
    probe: &'a Probe<'a>,
    keys: &'a Keys,
    counter: RequestCounter,
    client: aws_sdk_s3::Client,
    report: Report,
}

impl Run<'_> {
    fn target(&self, region: &str) -> Target {
        Target {
            region: region.to_owned(),
            endpoint: self.probe.endpoint.map(str::to_owned),
            force_path_style: self.probe.force_path_style,
        }
    }

    /// Counts one try of `operation` in the metrics and classifies its failure, with the
    /// keys redacted from anything the server said.
    fn outcome<O, E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        operation: &'static str,
        result: Result<O, SdkError<E, HttpResponse>>,
    ) -> Result<O, Failure> {
        let err = match result {
            Ok(out) => {
                crate::telemetry::metrics::METRICS.s3_request(operation, "ok");
                return Ok(out);
            }
            Err(e) => e,
        };
        let outcome = match err.raw_response().map(|r| r.status().as_u16()) {
            None => "unreachable",
            Some(200..=299) => "ok",
            Some(403) => "denied",
            Some(400..=499) => "client_error",
            Some(_) => "server_error",
        };
        crate::telemetry::metrics::METRICS.s3_request(operation, outcome);
        let mut f = classify(&err);
        f.detail = self.keys.redact(&f.detail);
        Err(f)
    }

    /// Records a failed request for `action`; returns false when probing must stop.
    fn record_failure(&mut self, action: Action, failure: Failure) -> bool {
        if failure.kind.is_fatal() {
            if failure.kind == FailureKind::WrongRegion && self.report.bucket_region.is_none() {
                self.report.bucket_region = failure.bucket_region.clone();
            }
            self.report.fatal = Some(failure);
            return false;
        }
        let outcome = match failure.kind {
            FailureKind::AccessDenied | FailureKind::KmsDenied => Outcome::Denied(failure),
            _ => Outcome::Failed(failure),
        };
        self.report.set(action, outcome);
        true
    }
}

/// Probes every permission `probe` needs with `keys`.
pub async fn run(probe: &Probe<'_>, keys: &Keys) -> Report {
    // An access point's ARN names its region, which is the one to sign for (the SDK
    // refuses another); a spec.region that differs is then a RegionMismatch as for a bucket.
    let initial_region = match probe.location.access_point() {
        Some(ap) => ap.region,
        None => probe.region.unwrap_or("us-east-1"),
    };
    let counter = RequestCounter::default();
    let actions = required(probe.access, probe.cors).into_iter().map(|a| (a, Outcome::Untested)).collect();
    let target = Target {
        region: initial_region.to_owned(),
        endpoint: probe.endpoint.map(str::to_owned),
        force_path_style: probe.force_path_style,
    };
    let mut run = Run {
        probe,
        keys,
        client: super::client::client(keys, &target, probe.owner),
        counter,
        report: Report {
            actions,
            fatal: None,
            bucket_region: None,
            region_used: initial_region.to_owned(),
            listed: false,
            sample_object: None,
            probe_object: None,
            cors: None,
            requests: 0,
        },
    };
    if tokio::time::timeout(probe.deadline, probe_all(&mut run)).await.is_err() {
        // Whatever was learnt so far stays; the store is reported unreachable.
        run.report.fatal = Some(Failure::new(
            FailureKind::Unreachable,
            "Unreachable",
            format!("no complete answer within {} s", probe.deadline.as_secs()),
        ));
    }
    run.report.requests = run.counter.get();
    run.report
}

/// The region a GetBucketLocation answer names, or why it names none: a location that
/// cannot be a region's name is no answer (it is never signed with).
fn answered_region(constraint: Option<&str>) -> Result<String, Failure> {
    let constraint = constraint.unwrap_or_default().trim();
    let region = normalise_region(constraint);
    if looks_like_region(&region) {
        return Ok(region);
    }
    let shown: String = constraint.chars().take(64).flat_map(char::escape_debug).collect();
    Err(Failure::new(
        FailureKind::Unreadable,
        "UnreadableAnswer",
        format!("the bucket's location \"{shown}\" is not the name of a region"),
    ))
}

async fn probe_all(run: &mut Run<'_>) {
    let bucket = run.probe.location.bucket.clone();
    let prefix = run.probe.location.prefix.clone();

    // 1. Where is the bucket? Also the first proof that the keys are accepted.
    let located = send!(run, "GetBucketLocation", run.client.get_bucket_location().bucket(&bucket))
        .and_then(|out| answered_region(out.location_constraint().map(|c| c.as_str())));
    match located {
        Ok(region) => {
            run.report.set(Action::GetBucketLocation, Outcome::Allowed);
            if region != run.report.region_used {
                // Sign the remaining requests for the bucket's real region.
                run.client = super::client::client(run.keys, &run.target(&region), run.probe.owner);
                run.report.region_used = region.clone();
            }
            run.report.bucket_region = Some(region);
        }
        Err(f) if f.kind == FailureKind::Unreadable && run.probe.region.is_none() => {
            // Nothing says where the bucket is: no guessing us-east-1 and probing on.
            run.report.set(Action::GetBucketLocation, Outcome::Failed(f.clone()));
            run.report.fatal = Some(f);
            return;
        }
        Err(f) => {
            if !run.record_failure(Action::GetBucketLocation, f) {
                return;
            }
        }
    }

    // 2. List two keys under the prefix: proves s3:ListBucket and finds a sample. Probe
    // objects sort last and are skipped, since a connection sharing the prefix may
    // delete its own at any moment.
    let listed = send!(run, "ListObjectsV2", run.client.list_objects_v2().bucket(&bucket).prefix(&prefix).max_keys(2));
    match listed {
        Ok(out) => {
            run.report.set(Action::ListBucket, Outcome::Allowed);
            run.report.listed = true;
            run.report.sample_object = sample(out.contents().iter().filter_map(|o| o.key()), &prefix);
        }
        Err(f) => {
            if !run.record_failure(Action::ListBucket, f) {
                return;
            }
        }
    }

    // 3. Read one byte of the sample: s3:GetObject on `bucket/prefix/*`, and KMS. The
    // body is not read (a server that ignores the range sends more than the byte).
    if run.probe.access.read
        && let Some(key) = run.report.sample_object.clone()
    {
        match send!(run, "GetObject", run.client.get_object().bucket(&bucket).key(&key).range("bytes=0-0")) {
            Ok(_) => run.report.set(Action::GetObject, Outcome::Allowed),
            Err(f) => {
                // An empty object has no byte 0, and a vanished one is NoSuchKey only to
                // a reader S3 lets read: either way the read itself was allowed.
                if matches!(f.kind, FailureKind::InvalidRange | FailureKind::NoSuchKey) {
                    run.report.set(Action::GetObject, Outcome::Allowed);
                } else if !run.record_failure(Action::GetObject, f) {
                    return;
                }
            }
        }
    }

    // 4. CORS: read, and in Apply mode add the managed rule when it is missing.
    if run.probe.cors != Cors::Ignore {
        let outcome = probe_cors(run).await;
        if run.report.fatal.is_some() {
            return;
        }
        run.report.cors = Some(outcome);
    } else {
        run.report.cors = Some(CorsOutcome::Ignored);
    }

    // 5. Export: write a small, self-describing object and delete it again. The delete
    // is probed even when the write was denied: deleting a missing key is allowed.
    if run.probe.access.write {
        let key = probe_key(&prefix, run.probe.owner);
        run.report.probe_object = Some(key.clone());
        let body = bytes::Bytes::from(format!(
            "Written by s3connect for S3Connection {} to check s3:PutObject, and deleted right away. \
             If you can read this, s3:DeleteObject is missing.\n",
            run.probe.owner
        ));
        let put = send!(
            run,
            "PutObject",
            run.client.put_object().bucket(&bucket).key(&key).body(ByteStream::from(body.clone()))
        );
        match put {
            Ok(_) => run.report.set(Action::PutObject, Outcome::Allowed),
            Err(f) => {
                if !run.record_failure(Action::PutObject, f) {
                    return;
                }
            }
        }
        match send!(run, "DeleteObject", run.client.delete_object().bucket(&bucket).key(&key)) {
            Ok(_) => run.report.set(Action::DeleteObject, Outcome::Allowed),
            Err(f) => {
                // Some stores answer a delete of a missing key with NoSuchKey (S3 says 204):
                // either way the delete was allowed.
                if f.kind == FailureKind::NoSuchKey {
                    run.report.set(Action::DeleteObject, Outcome::Allowed);
                } else {
                    run.record_failure(Action::DeleteObject, f);
                }
            }
        }
    }
}

/// The Content-MD5 header of `body`.
fn base64_md5(body: &[u8]) -> String {
    use md5::Digest;
    aws_smithy_types::base64::encode(md5::Md5::digest(body))
}

/// One lock per bucket (and endpoint) for the read-modify-write of its CORS
/// configuration: PutBucketCors replaces the whole configuration and S3 has no conditional
/// write, so two connections sharing a bucket that added their rules at the same time
/// would each drop the other's. Entries go once no validation holds them.
fn cors_lock(endpoint: Option<&str>, bucket: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
    use std::collections::HashMap;
    use std::sync::{Arc, LazyLock, Mutex, Weak};
    static LOCKS: LazyLock<Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>> = LazyLock::new(Mutex::default);
    let key = format!("{}|{bucket}", endpoint.unwrap_or("aws"));
    let mut locks = LOCKS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(lock) = locks.get(&key).and_then(Weak::upgrade) {
        return lock;
    }
    locks.retain(|_, l| l.strong_count() > 0);
    let lock = Arc::new(tokio::sync::Mutex::new(()));
    locks.insert(key, Arc::downgrade(&lock));
    lock
}

/// A rule as S3 has it, from the SDK's.
fn from_sdk(rule: &aws_sdk_s3::types::CorsRule) -> CorsRule {
    CorsRule {
        id: rule.id().map(str::to_owned),
        allowed_origins: rule.allowed_origins().to_vec(),
        allowed_methods: rule.allowed_methods().to_vec(),
        allowed_headers: rule.allowed_headers().to_vec(),
        expose_headers: rule.expose_headers().to_vec(),
        max_age_seconds: rule.max_age_seconds(),
    }
}

/// The configuration PutBucketCors sends for `rules`.
fn to_sdk(rules: &[CorsRule]) -> Result<aws_sdk_s3::types::CorsConfiguration, Failure> {
    let not_built = |e: aws_sdk_s3::error::BuildError| {
        Failure::new(FailureKind::Other, "RequestNotBuilt", format!("the CORS configuration could not be built ({e})"))
    };
    let rules = rules
        .iter()
        .map(|r| {
            aws_sdk_s3::types::CorsRule::builder()
                .set_id(r.id.clone())
                .set_allowed_origins(Some(r.allowed_origins.clone()))
                .set_allowed_methods(Some(r.allowed_methods.clone()))
                .set_allowed_headers((!r.allowed_headers.is_empty()).then(|| r.allowed_headers.clone()))
                .set_expose_headers((!r.expose_headers.is_empty()).then(|| r.expose_headers.clone()))
                .set_max_age_seconds(r.max_age_seconds)
                .build()
                .map_err(not_built)
        })
        .collect::<Result<Vec<_>, _>>()?;
    aws_sdk_s3::types::CorsConfiguration::builder().set_cors_rules(Some(rules)).build().map_err(not_built)
}

async fn probe_cors(run: &mut Run<'_>) -> CorsOutcome {
    let bucket = run.probe.location.bucket.clone();
    let lock = cors_lock(run.probe.endpoint, &bucket);
    let _held = lock.lock().await;
    let origins = run.probe.origins;
    let id = cors::rule_id(run.probe.owner);
    // An answer that is not a CORS configuration is an error here, never "no rules": the
    // PUT below replaces the whole configuration.
    let existing: Vec<CorsRule> = match send!(run, "GetBucketCors", run.client.get_bucket_cors().bucket(&bucket)) {
        Ok(out) => {
            run.report.set(Action::GetBucketCors, Outcome::Allowed);
            out.cors_rules().iter().map(from_sdk).collect()
        }
        Err(f) => match f.kind {
            FailureKind::NoCorsConfiguration => {
                run.report.set(Action::GetBucketCors, Outcome::Allowed);
                Vec::new()
            }
            FailureKind::NotImplemented => return CorsOutcome::NotSupported(f),
            _ => {
                let denied = f.kind == FailureKind::AccessDenied;
                if !run.record_failure(Action::GetBucketCors, f.clone()) {
                    return CorsOutcome::Failed(f);
                }
                return if denied {
                    CorsOutcome::ReadDenied { wanted: cors::to_json(&[cors::managed_rule(&id, origins)]) }
                } else {
                    CorsOutcome::Failed(f)
                };
            }
        },
    };
    if cors::covers(&existing, origins) {
        return CorsOutcome::Present;
    }
    let merged = match cors::merge(&existing, &id, origins) {
        Ok(rules) => rules,
        Err(count) => return CorsOutcome::TooManyRules { count },
    };
    if run.probe.cors == Cors::Verify {
        return CorsOutcome::Missing { wanted: cors::to_json(&merged) };
    }
    let configuration = match to_sdk(&merged) {
        Ok(c) => c,
        Err(f) => {
            run.record_failure(Action::PutBucketCors, f.clone());
            return CorsOutcome::Failed(f);
        }
    };
    // S3 requires a checksum of the configuration; Content-MD5, of the body as sent, is
    // the one every S3-compatible store knows.
    let put = send!(
        run,
        "PutBucketCors",
        run.client
            .put_bucket_cors()
            .bucket(&bucket)
            .cors_configuration(configuration.clone())
            .customize()
            .mutate_request(|request| {
                if let Some(body) = request.body().bytes() {
                    let md5 = base64_md5(body);
                    request.headers_mut().insert("content-md5", md5);
                }
            })
    );
    match put {
        Ok(_) => {
            run.report.set(Action::PutBucketCors, Outcome::Allowed);
            CorsOutcome::Applied
        }
        Err(f) => match f.kind {
            FailureKind::NotImplemented => CorsOutcome::NotSupported(f),
            FailureKind::AccessDenied => {
                run.record_failure(Action::PutBucketCors, f);
                CorsOutcome::WriteDenied { wanted: cors::to_json(&merged) }
            }
            _ => {
                run.record_failure(Action::PutBucketCors, f.clone());
                CorsOutcome::Failed(f)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_is_down_only_when_nothing_at_all_answered() {
        let failure = |kind| Failure::new(kind, "x", "y");
        let report = |fatal: Option<Failure>, first: Outcome| Report {
            actions: vec![(Action::GetBucketLocation, first), (Action::ListBucket, Outcome::Untested)],
            fatal,
            bucket_region: None,
            region_used: "us-east-1".into(),
            listed: false,
            sample_object: None,
            probe_object: None,
            cors: None,
            requests: 1,
        };
        let unreachable = || failure(FailureKind::Unreachable);
        assert!(report(Some(unreachable()), Outcome::Untested).unanswered());
        assert!(report(Some(unreachable()), Outcome::Failed(unreachable())).unanswered());
        // Something answered (a denial, a success): flaky or a permission, not down.
        assert!(!report(Some(unreachable()), Outcome::Denied(failure(FailureKind::AccessDenied))).unanswered());
        assert!(!report(Some(unreachable()), Outcome::Allowed).unanswered());
        assert!(!report(Some(failure(FailureKind::NoSuchBucket)), Outcome::Untested).unanswered());
        assert!(!report(None, Outcome::Untested).unanswered());
    }

    #[test]
    fn each_connection_has_its_own_stable_probe_object() {
        assert_eq!(probe_key("p/", "ns/a"), probe_key("p/", "ns/a"));
        assert_ne!(probe_key("p/", "ns/a"), probe_key("p/", "ns/b"));
        assert!(probe_key("p/", "ns/a").starts_with("p/~s3connect-write-probe-"));
    }

    #[test]
    fn the_sample_is_never_a_probe_object() {
        let key = probe_key("data/", "ns/other");
        let p = key.as_str();
        assert_eq!(sample([p, "data/a.jpg"].into_iter(), "data/").as_deref(), Some("data/a.jpg"));
        assert_eq!(sample(["data/a.jpg"].into_iter(), "data/").as_deref(), Some("data/a.jpg"));
        assert_eq!(sample([p].into_iter(), "data/"), None);
        assert_eq!(sample(std::iter::empty(), "data/"), None);
    }

    #[test]
    fn location_constraints_name_real_regions() {
        assert_eq!(normalise_region(""), "us-east-1");
        assert_eq!(normalise_region("EU"), "eu-west-1");
        assert_eq!(normalise_region("ap-south-1"), "ap-south-1");
        assert_eq!(answered_region(None).unwrap(), "us-east-1");
        assert_eq!(answered_region(Some("eu-central-1")).unwrap(), "eu-central-1");
        // Once a panic inside the signer: a location with a line break in it.
        let f = answered_region(Some("eu\nwest")).unwrap_err();
        assert_eq!(f.kind, FailureKind::Unreadable);
        assert!(f.detail.contains("eu\\nwest"), "{}", f.detail);
    }

    #[test]
    fn cors_rules_go_to_the_sdk_and_back_unchanged() {
        let rules = vec![
            cors::managed_rule("s3connect-1", &["https://a.example".to_owned()]),
            CorsRule {
                id: None,
                allowed_origins: vec!["*".into()],
                allowed_methods: vec!["PUT".into()],
                allowed_headers: vec![],
                expose_headers: vec!["ETag".into()],
                max_age_seconds: None,
            },
        ];
        let back: Vec<CorsRule> = to_sdk(&rules).unwrap().cors_rules().iter().map(from_sdk).collect();
        assert_eq!(back, rules);
    }
}
