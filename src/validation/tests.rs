//! One row per documented failure mode: facts in, the condition that names it (type,
//! status, reason) and the remedy's key words out.

use super::*;
use crate::api::conditions::Status;
use crate::s3::error::classify_parts;
use serde_json::json;

fn spec(extra: serde_json::Value) -> S3ConnectionSpec {
    let mut v = json!({"uri": "s3://data/images/", "credentials": {"secretRef": {"name": "keys"}}});
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    // Defaults as the API server applies them.
    let mut spec: S3ConnectionSpec = serde_json::from_value(v).unwrap();
    if spec.usage.is_empty() {
        spec.usage = vec![Usage::Import];
    }
    spec
}

fn location() -> Location {
    Location::parse("s3://data/images/").unwrap()
}

/// A report where every required action was allowed and a sample was found.
fn healthy(spec: &S3ConnectionSpec) -> Report {
    Report {
        actions: super::required(&spec.usage, spec.cors.mode)
            .into_iter()
            .map(|a| (a, if a == Action::PutBucketCors { Outcome::Untested } else { Outcome::Allowed }))
            .collect(),
        fatal: None,
        bucket_region: Some("us-east-1".into()),
        region_used: "us-east-1".into(),
        listed: true,
        sample_object: Some("images/cat.jpg".into()),
        probe_object: Some("images/~s3connect-write-probe-0123abcd".into()),
        cors: Some(CorsOutcome::Present),
        requests: 5,
    }
}

fn failure(code: &str) -> Failure {
    classify_parts(Some(code), Some("said the server"), 403, None)
}

fn deny(report: &mut Report, action: Action) {
    report.set_for_test(action, Outcome::Denied(failure("AccessDenied")));
}

impl Report {
    fn set_for_test(&mut self, action: Action, outcome: Outcome) {
        self.actions.iter_mut().find(|(a, _)| *a == action).expect("a required action").1 = outcome;
    }
}

fn verdict(spec: &S3ConnectionSpec, report: &Report) -> Verdict {
    decide(&Subject { spec, name: "c", namespace: "team-a", keys_from: KeysFrom::Secret }, Ok((&location(), report)))
}

fn condition<'a>(v: &'a Verdict, type_: &str) -> &'a Cond {
    v.conditions.iter().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("no {type_} in {:?}", v.conditions))
}

/// Asserts `type_` is False with `reason`, Ready carries the same reason and message, and
/// the message has every key word.
fn assert_fails(v: &Verdict, type_: &str, reason: Reason, words: &[&str]) {
    let c = condition(v, type_);
    assert_eq!((c.status, c.reason), (Status::False, reason), "{type_}: {c:?}");
    for w in words {
        assert!(c.message.contains(w), "{type_}/{reason:?}: {w:?} missing from {:?}", c.message);
    }
    let ready = v.ready();
    assert_eq!((ready.status, ready.reason, &ready.message), (Status::False, reason, &c.message));
}

#[test]
fn all_allowed_is_ready_with_every_condition_true() {
    let spec = spec(json!({"usage": ["Import", "Export"]}));
    let v = verdict(&spec, &healthy(&spec));
    let types: Vec<_> = v.conditions.iter().map(|c| (c.type_, c.status)).collect();
    assert_eq!(
        types,
        [
            (CREDENTIALS_VALID, Status::True),
            (BUCKET_REACHABLE, Status::True),
            (READ_PERMITTED, Status::True),
            (WRITE_PERMITTED, Status::True),
            (CORS_CONFIGURED, Status::True),
            (READY, Status::True),
        ]
    );
    assert!(
        v.ready().message.contains("s3://data/images/ in us-east-1 is ready for Import and Export"),
        "{}",
        v.ready().message
    );
    assert_eq!(v.next, Next::Revalidate);
    assert_eq!(v.missing_policy, None);
    assert_eq!(v.cors, Some(CorsState::AlreadyPresent));
}

#[test]
fn import_only_connections_have_no_write_condition() {
    let spec = spec(json!({}));
    let v = verdict(&spec, &healthy(&spec));
    assert!(v.conditions.iter().all(|c| c.type_ != WRITE_PERMITTED));
}

#[test]
fn secret_problems_block_everything_and_wait_for_a_change() {
    let spec = spec(json!({}));
    let subject = Subject { spec: &spec, name: "c", namespace: "team-a", keys_from: KeysFrom::Secret };
    let v = decide(&subject, Err(&Blocker::SecretNotFound));
    assert_fails(
        &v,
        CREDENTIALS_VALID,
        Reason::SecretNotFound,
        &["\"keys\"", "\"team-a\"", "AWS_ACCESS_KEY_ID", "create it"],
    );
    assert_eq!(condition(&v, READ_PERMITTED).status, Status::Unknown);
    assert_eq!(v.next, Next::WaitForChange);
    assert!(v.permissions.iter().all(|p| p.result == PermissionResult::Untested));

    let missing =
        Blocker::SecretKeyMissing { key: "AWS_SECRET_ACCESS_KEY".into(), present: vec!["AWS_ACCESS_KEY_ID".into()] };
    let v = decide(&subject, Err(&missing));
    assert_fails(
        &v,
        CREDENTIALS_VALID,
        Reason::SecretKeyMissing,
        &["no key \"AWS_SECRET_ACCESS_KEY\"", "it has: AWS_ACCESS_KEY_ID"],
    );
}

#[test]
fn invalid_uri_and_disallowed_endpoint_are_bucket_failures() {
    let spec = spec(json!({}));
    let subject = Subject { spec: &spec, name: "c", namespace: "ns", keys_from: KeysFrom::Secret };
    let v = decide(&subject, Err(&Blocker::InvalidUri("bad bucket".into())));
    assert_fails(&v, BUCKET_REACHABLE, Reason::InvalidUri, &["bad bucket", "s3://bucket/prefix/"]);
    let v = decide(
        &subject,
        Err(&Blocker::EndpointNotAllowed {
            endpoint: "https://evil.example".into(),
            allowed: "https://minio.internal.corp:9000".into(),
        }),
    );
    assert_fails(&v, BUCKET_REACHABLE, Reason::EndpointNotAllowed, &["https://evil.example", "--allowed-endpoints"]);
    // The admin's list is not shown to the tenant.
    assert!(!v.ready().message.contains("minio.internal.corp"), "{}", v.ready().message);
}

#[test]
fn credential_failures_name_the_key_to_fix() {
    for (code, reason, words) in [
        ("InvalidAccessKeyId", Reason::InvalidAccessKeyId, &["access key id", "AWS_ACCESS_KEY_ID"][..]),
        ("SignatureDoesNotMatch", Reason::SignatureDoesNotMatch, &["AWS_SECRET_ACCESS_KEY", "matching secret"][..]),
        ("ExpiredToken", Reason::ExpiredToken, &["AWS_SESSION_TOKEN", "expired"][..]),
        ("RequestTimeTooSkewed", Reason::ClockSkew, &["clock", "NTP"][..]),
    ] {
        let spec = spec(json!({}));
        let mut report = healthy(&spec);
        report.fatal = Some(failure(code));
        let v = verdict(&spec, &report);
        assert_fails(&v, CREDENTIALS_VALID, reason, words);
        assert_eq!(condition(&v, BUCKET_REACHABLE).status, Status::Unknown, "{code}");
    }
}

#[test]
fn keys_from_the_environment_are_named_as_such_not_as_a_secret() {
    // `s3connect check` reads AWS_* variables; a manifest it reads may name other keys.
    let spec = spec(
        json!({"credentials": {"secretRef": {"name": "keys", "accessKeyIdKey": "id", "secretAccessKeyKey": "secret"}}}),
    );
    let subject = |keys_from| Subject { spec: &spec, name: "c", namespace: "(local)", keys_from };
    for (code, reason, secret_words, env_words) in [
        (
            "InvalidAccessKeyId",
            Reason::InvalidAccessKeyId,
            &["Secret \"keys\" (key id)"][..],
            &["in the environment (AWS_ACCESS_KEY_ID)"][..],
        ),
        (
            "SignatureDoesNotMatch",
            Reason::SignatureDoesNotMatch,
            &["Secret \"keys\" (key secret)"][..],
            &["in the environment (AWS_SECRET_ACCESS_KEY)"][..],
        ),
        (
            "ExpiredToken",
            Reason::ExpiredToken,
            &["fresh temporary credentials in Secret \"keys\""][..],
            &["in the environment (AWS_SESSION_TOKEN)", "fresh temporary credentials in the environment"][..],
        ),
    ] {
        let mut report = healthy(&spec);
        report.fatal = Some(failure(code));
        let from_secret = decide(&subject(KeysFrom::Secret), Ok((&location(), &report)));
        assert_fails(&from_secret, CREDENTIALS_VALID, reason, secret_words);
        let from_env = decide(&subject(KeysFrom::Environment), Ok((&location(), &report)));
        assert_fails(&from_env, CREDENTIALS_VALID, reason, env_words);
        let message = &condition(&from_env, CREDENTIALS_VALID).message;
        assert!(!message.contains("Secret"), "{code}: {message}");
    }
    let accepted = decide(&subject(KeysFrom::Environment), Ok((&location(), &healthy(&spec))));
    assert_eq!(condition(&accepted, CREDENTIALS_VALID).message, "AWS S3 accepted the keys in the environment.");
}

#[test]
fn bucket_failures_say_which_bucket_and_region() {
    let spec_ = spec(json!({"region": "us-east-1"}));
    let mut report = healthy(&spec_);
    report.fatal = Some(failure("NoSuchBucket"));
    assert_fails(
        &verdict(&spec_, &report),
        BUCKET_REACHABLE,
        Reason::NoSuchBucket,
        &["\"data\" does not exist", "spec.uri"],
    );

    let mut report = healthy(&spec_);
    report.bucket_region = Some("eu-west-1".into());
    report.region_used = "eu-west-1".into();
    assert_fails(
        &verdict(&spec_, &report),
        BUCKET_REACHABLE,
        Reason::RegionMismatch,
        &["is in region eu-west-1, not us-east-1", "set spec.region to eu-west-1"],
    );

    let mut report = healthy(&spec_);
    report.fatal = Some(classify_parts(Some("PermanentRedirect"), None, 301, Some("ap-south-1")));
    report.bucket_region = Some("ap-south-1".into());
    assert_fails(&verdict(&spec_, &report), BUCKET_REACHABLE, Reason::RegionMismatch, &["ap-south-1"]);

    let spec_ = spec(json!({"endpoint": "http://127.0.0.1:1"}));
    let mut report = healthy(&spec_);
    report.fatal = Some(Failure::new(FailureKind::Unreachable, "Unreachable", "Connection refused (os error 111)"));
    let v = verdict(&spec_, &report);
    assert_fails(
        &v,
        BUCKET_REACHABLE,
        Reason::EndpointUnreachable,
        &["http://127.0.0.1:1", "Connection refused", "retrying"],
    );
    assert_eq!(v.next, Next::Retry);
}

#[test]
fn denied_actions_get_their_reason_and_the_exact_missing_statement() {
    let spec = spec(json!({}));
    let mut report = healthy(&spec);
    deny(&mut report, Action::GetBucketLocation);
    let v = verdict(&spec, &report);
    assert_fails(&v, BUCKET_REACHABLE, Reason::GetBucketLocationDenied, &["s3:GetBucketLocation", "arn:aws:s3:::data"]);
    assert_eq!(v.next, Next::RecheckLater);
    assert_eq!(condition(&v, READ_PERMITTED).status, Status::True, "the other probes ran and count");
    let policy: serde_json::Value = serde_json::from_str(v.missing_policy.as_deref().unwrap()).unwrap();
    assert_eq!(
        policy["Statement"],
        json!([{"Sid": "S3ConnectBucket", "Effect": "Allow", "Action": ["s3:GetBucketLocation"], "Resource": "arn:aws:s3:::data"}])
    );

    let mut report = healthy(&spec);
    deny(&mut report, Action::ListBucket);
    assert_fails(
        &verdict(&spec, &report),
        READ_PERMITTED,
        Reason::ListBucketDenied,
        &["may not list s3://data/images/", "s3:ListBucket"],
    );

    let mut report = healthy(&spec);
    deny(&mut report, Action::GetObject);
    let v = verdict(&spec, &report);
    assert_fails(&v, READ_PERMITTED, Reason::GetObjectDenied, &["arn:aws:s3:::data/images/*", "Note the /*"]);
    let policy: serde_json::Value = serde_json::from_str(v.missing_policy.as_deref().unwrap()).unwrap();
    assert_eq!(policy["Statement"][0]["Resource"], "arn:aws:s3:::data/images/*");
    assert_eq!(
        v.permissions.iter().find(|p| p.action == "s3:GetObject").map(|p| p.result),
        Some(PermissionResult::Denied)
    );

    let mut report = healthy(&spec);
    report.set_for_test(
        Action::GetObject,
        Outcome::Denied(classify_parts(
            Some("AccessDenied"),
            Some("not authorized to perform: kms:Decrypt"),
            403,
            None,
        )),
    );
    let v = verdict(&spec, &report);
    assert_fails(&v, READ_PERMITTED, Reason::KmsDecryptDenied, &["kms:Decrypt", "key policy"]);
    assert_eq!(v.missing_policy, None, "no S3 statement fixes a KMS denial");
}

#[test]
fn an_empty_prefix_is_no_objects_for_import_but_fine_for_export() {
    let import = spec(json!({}));
    let mut report = healthy(&import);
    report.sample_object = None;
    report.set_for_test(Action::GetObject, Outcome::Untested);
    assert_fails(
        &verdict(&import, &report),
        READ_PERMITTED,
        Reason::NoObjects,
        &["no objects under s3://data/images/", "Dataset has no files"],
    );

    let export = spec(json!({"usage": ["Export"]}));
    let mut report = healthy(&export);
    report.sample_object = None;
    assert!(verdict(&export, &report).ready().is_true());
}

#[test]
fn write_failures_for_export() {
    let spec = spec(json!({"usage": ["Import", "Export"]}));
    let mut report = healthy(&spec);
    deny(&mut report, Action::PutObject);
    deny(&mut report, Action::DeleteObject);
    let v = verdict(&spec, &report);
    assert_fails(&v, WRITE_PERMITTED, Reason::PutObjectDenied, &["may not write to s3://data/images/", "s3:PutObject"]);
    let policy: serde_json::Value = serde_json::from_str(v.missing_policy.as_deref().unwrap()).unwrap();
    assert_eq!(policy["Statement"][0]["Action"], json!(["s3:PutObject", "s3:DeleteObject"]));

    let mut report = healthy(&spec);
    deny(&mut report, Action::DeleteObject);
    assert_fails(
        &verdict(&spec, &report),
        WRITE_PERMITTED,
        Reason::DeleteObjectDenied,
        &["s3:DeleteObject", "s3://data/images/~s3connect-write-probe-0123abcd"],
    );
}

#[test]
fn cors_failures_carry_the_json_to_set_by_hand() {
    let wanted = json!({"CORSRules": [{"AllowedOrigins": ["https://pro.labellerr.com"]}]});
    for (mode, outcome, reason, words) in [
        (
            "Apply",
            CorsOutcome::ReadDenied { wanted: wanted.clone() },
            Reason::GetBucketCorsDenied,
            &["s3:GetBucketCORS", "CORSRules"][..],
        ),
        (
            "Apply",
            CorsOutcome::WriteDenied { wanted: wanted.clone() },
            Reason::PutBucketCorsDenied,
            &["s3:PutBucketCORS", "aws s3api put-bucket-cors --bucket data --cors-configuration '{\"CORSRules\""][..],
        ),
        (
            "Verify",
            CorsOutcome::Missing { wanted: wanted.clone() },
            Reason::CorsRuleMissing,
            &["put-bucket-cors", "Apply"][..],
        ),
        (
            "Apply",
            CorsOutcome::NotSupported(classify_parts(Some("NotImplemented"), None, 501, None)),
            Reason::CorsNotSupported,
            &["does not implement the S3 CORS API", "Ignore"][..],
        ),
    ] {
        let spec = spec(json!({"cors": {"mode": mode}}));
        let mut report = healthy(&spec);
        report.cors = Some(outcome);
        let v = verdict(&spec, &report);
        assert_fails(&v, CORS_CONFIGURED, reason, words);
        assert_eq!(v.cors, Some(CorsState::Missing));
    }
}

#[test]
fn cors_successes_say_what_happened() {
    for (mode, outcome, reason, state) in [
        ("Apply", CorsOutcome::Applied, Reason::CorsApplied, CorsState::Applied),
        ("Apply", CorsOutcome::Present, Reason::CorsAlreadyPresent, CorsState::AlreadyPresent),
        ("Verify", CorsOutcome::Present, Reason::CorsVerified, CorsState::Verified),
        ("Ignore", CorsOutcome::Ignored, Reason::CorsIgnored, CorsState::Ignored),
    ] {
        let spec = spec(json!({"cors": {"mode": mode}}));
        let mut report = healthy(&spec);
        report.cors = Some(outcome);
        let v = verdict(&spec, &report);
        assert_eq!(condition(&v, CORS_CONFIGURED).reason, reason);
        assert_eq!(v.cors, Some(state));
        assert!(v.ready().is_true());
    }
}

#[test]
fn server_errors_are_transient() {
    let spec = spec(json!({}));
    let mut report = healthy(&spec);
    report.set_for_test(
        Action::GetObject,
        Outcome::Failed(classify_parts(Some("InternalError"), Some("try again"), 500, None)),
    );
    let v = verdict(&spec, &report);
    assert_fails(&v, READ_PERMITTED, Reason::S3Error, &["s3:GetObject", "InternalError", "retrying"]);
    assert_eq!(v.next, Next::Retry);
}

#[test]
fn the_first_failure_in_order_is_the_ready_reason() {
    let spec = spec(json!({"usage": ["Import", "Export"]}));
    let mut report = healthy(&spec);
    deny(&mut report, Action::PutObject);
    deny(&mut report, Action::ListBucket);
    let v = verdict(&spec, &report);
    assert_eq!(v.ready().reason, Reason::ListBucketDenied);
    let policy: serde_json::Value = serde_json::from_str(v.missing_policy.as_deref().unwrap()).unwrap();
    let actions: Vec<_> = policy["Statement"].as_array().unwrap().iter().map(|s| s["Action"].clone()).collect();
    assert_eq!(actions, [json!(["s3:ListBucket"]), json!(["s3:PutObject"])], "one statement per denied action group");
}

#[test]
fn registration_comes_after_the_s3_checks_and_gates_ready() {
    let spec = spec(json!({}));
    let ok = verdict(&spec, &healthy(&spec));
    let failed = Cond::failed(crate::api::conditions::REGISTERED, Reason::PlatformInternalError, "tracking id t-1");
    let v = with_registration(ok.clone(), failed);
    assert_fails(&v, crate::api::conditions::REGISTERED, Reason::PlatformInternalError, &["tracking id t-1"]);
    assert_eq!(v.next, Next::Retry);

    let registered = Cond::ok(crate::api::conditions::REGISTERED, Reason::Registered, "ok");
    assert!(with_registration(ok, registered).ready().is_true());

    // An S3 failure stays the Ready reason; registration was not even tried.
    let mut report = healthy(&spec);
    deny(&mut report, Action::GetObject);
    let not_tried = Cond::not_checked(crate::api::conditions::REGISTERED, "probes");
    let v = with_registration(verdict(&spec, &report), not_tried);
    assert_eq!(v.ready().reason, Reason::GetObjectDenied);
}

#[test]
fn a_secret_the_operator_may_not_read_names_its_rbac_and_is_rechecked() {
    let spec = spec(json!({}));
    let v = decide(
        &Subject { spec: &spec, name: "c", namespace: "team-a", keys_from: KeysFrom::Secret },
        Err(&Blocker::SecretForbidden),
    );
    assert_fails(
        &v,
        CREDENTIALS_VALID,
        Reason::SecretForbidden,
        &["may not read Secret \"keys\"", "get, list and watch on secrets"],
    );
    assert_eq!(v.next, Next::RecheckLater, "an RBAC fix sends no watch event");
}

#[test]
fn a_secret_value_no_credential_can_be_names_the_key_never_the_value() {
    let spec = spec(json!({}));
    let blocker = Blocker::SecretValueInvalid { key: "AWS_ACCESS_KEY_ID".into() };
    let v =
        decide(&Subject { spec: &spec, name: "c", namespace: "team-a", keys_from: KeysFrom::Secret }, Err(&blocker));
    assert_fails(
        &v,
        CREDENTIALS_VALID,
        Reason::SecretValueInvalid,
        &["key \"AWS_ACCESS_KEY_ID\" in Secret \"keys\"", "control character", "paste the value again"],
    );
    assert_eq!(v.next, Next::WaitForChange, "only a new Secret value can fix it");
    let v = decide(
        &Subject { spec: &spec, name: "c", namespace: "(local)", keys_from: KeysFrom::Environment },
        Err(&blocker),
    );
    assert_fails(&v, CREDENTIALS_VALID, Reason::SecretValueInvalid, &["AWS_ACCESS_KEY_ID in the environment"]);
}

#[test]
fn a_refusing_4xx_is_not_called_transient() {
    let spec = spec(json!({}));
    let mut report = healthy(&spec);
    report.set_for_test(
        Action::ListBucket,
        Outcome::Failed(classify_parts(Some("RequestHeaderFieldsTooLarge"), Some("too large"), 431, None)),
    );
    let v = verdict(&spec, &report);
    assert_fails(
        &v,
        READ_PERMITTED,
        Reason::S3RequestRejected,
        &["s3:ListBucket", "RequestHeaderFieldsTooLarge", "will not help"],
    );
    assert!(!v.ready().message.contains("retrying with backoff"), "{}", v.ready().message);
    assert!(!Reason::S3RequestRejected.is_transient());
    assert_eq!(v.next, Next::RecheckLater);
}

#[test]
fn a_redirect_to_the_signing_region_does_not_name_it_twice() {
    let spec_ = spec(json!({}));
    let mut report = healthy(&spec_);
    report.fatal = Some(classify_parts(Some("PermanentRedirect"), None, 301, Some("us-east-1")));
    report.bucket_region = Some("us-east-1".into());
    let v = verdict(&spec_, &report);
    assert_fails(&v, BUCKET_REACHABLE, Reason::RegionMismatch, &["is not in region us-east-1", "did not say which"]);
    assert!(!v.ready().message.contains("not us-east-1"), "{}", v.ready().message);
}

#[test]
fn a_bucket_with_the_most_cors_rules_s3_allows_says_what_to_remove() {
    let spec = spec(json!({}));
    let mut report = healthy(&spec);
    report.cors = Some(CorsOutcome::TooManyRules { count: 100 });
    let v = verdict(&spec, &report);
    assert_fails(&v, CORS_CONFIGURED, Reason::CorsRuleLimit, &["100 rules", "s3connect-", "remove a rule"]);
}

mod grace {
    use super::*;
    use crate::api::conditions::{RECONCILING, merge};
    use crate::api::connection::S3ConnectionStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    const GRACE: std::time::Duration = std::time::Duration::from_secs(300);

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn ready_status(extra: &[Cond], since: i64) -> S3ConnectionStatus {
        let mut conds = vec![Cond::ok(CREDENTIALS_VALID, Reason::CredentialsAccepted, "ok")];
        conds.extend_from_slice(extra);
        conds.push(Cond::ok(READY, Reason::Validated, "ready"));
        S3ConnectionStatus {
            observed_generation: Some(1),
            conditions: merge(&[], &conds, Some(1), &Time(at(since))),
            last_validated_time: Some(Time(at(0))),
            ..Default::default()
        }
    }

    #[test]
    fn a_managed_key_s3_does_not_know_yet_is_retried_and_a_rotation_stays_ready() {
        let unknown = Cond::failed(READY, Reason::InvalidAccessKeyId, "S3 does not know the key");
        assert!(key_propagating(&unknown, Some(at(0)), at(30)), "30 s after IAM made it");
        assert!(!key_propagating(&unknown, Some(at(0)), at(121)), "two minutes on, the key is bad");
        assert!(!key_propagating(&unknown, None, at(1)), "keys a person gave: reported at once");
        let denied = Cond::failed(READY, Reason::GetObjectDenied, "denied");
        assert!(!key_propagating(&denied, Some(at(0)), at(1)), "a permission problem is not propagation");
        // A rotation (the Secret changed, so the inputs did) keeps the last Ready verdict.
        let old = ready_status(&[], 0);
        assert!(hold_ready_if(&old, true, &unknown, true, at(5), GRACE).is_some());
        assert!(hold_ready(&old, false, &unknown, at(5), GRACE).is_none(), "without propagation: shown");
    }

    fn transient() -> Cond {
        Cond::failed(READY, Reason::S3Error, "S3 answered the s3:ListBucket probe with InternalError; retrying.")
    }

    #[test]
    fn a_ready_connection_stays_ready_through_transient_failures_within_the_grace() {
        let old = ready_status(&[], 0);
        let held = hold_ready(&old, true, &transient(), at(10), GRACE).expect("held");
        let ready = held.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Validated"));
        let reconciling = held.iter().find(|c| c.type_ == RECONCILING).unwrap();
        assert_eq!((reconciling.status.as_str(), reconciling.reason.as_str()), ("True", "S3Error"));
        assert!(reconciling.message.contains("Still Ready") && reconciling.message.contains("InternalError"));
        assert_eq!(reconciling.last_transition_time.0, at(10), "the grace starts at the first failure");

        // Later failures keep the start of the grace, until it is over.
        let again = S3ConnectionStatus { conditions: held, ..old.clone() };
        let held = hold_ready(&again, true, &transient(), at(200), GRACE).expect("still within the grace");
        assert_eq!(held.iter().find(|c| c.type_ == RECONCILING).unwrap().last_transition_time.0, at(10));
        let again = S3ConnectionStatus { conditions: held, ..old.clone() };
        assert!(hold_ready(&again, true, &transient(), at(10 + 300), GRACE).is_none(), "grace over: show it");
    }

    #[test]
    fn only_transient_failures_of_a_ready_connection_with_unchanged_inputs_are_held() {
        let old = ready_status(&[], 0);
        let denied = Cond::failed(READY, Reason::GetObjectDenied, "denied");
        assert!(hold_ready(&old, true, &denied, at(10), GRACE).is_none(), "a real failure shows at once");
        assert!(hold_ready(&old, false, &transient(), at(10), GRACE).is_none(), "new spec or keys: no old verdict");
        let ok = Cond::ok(READY, Reason::Validated, "ok");
        assert!(hold_ready(&old, true, &ok, at(10), GRACE).is_none());
        let mut not_ready = old.clone();
        not_ready.conditions = merge(&[], &[transient()], Some(1), &Time(at(0)));
        assert!(hold_ready(&not_ready, true, &transient(), at(10), GRACE).is_none());
        let unreachable = Cond::failed(READY, Reason::EndpointUnreachable, "no answer");
        assert!(hold_ready(&old, true, &unreachable, at(10), GRACE).is_some());
    }
}

#[test]
fn a_missing_secret_is_waited_for_within_the_grace_then_someone_must_act() {
    use k8s_openapi::jiff::Timestamp;
    let spec = spec(json!({}));
    let v = decide(
        &Subject { spec: &spec, name: "c", namespace: "team-a", keys_from: KeysFrom::Secret },
        Err(&Blocker::SecretNotFound),
    );
    let created = Timestamp::from_second(1_800_000_000).unwrap();
    let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
    let grace = std::time::Duration::from_secs(120);
    assert_eq!(secret_grace_left(&v, Some(created), at(20), grace), Some(std::time::Duration::from_secs(100)));
    assert_eq!(secret_grace_left(&v, Some(created), at(120), grace), None, "grace over: Stalled");
    let missing_key = decide(
        &Subject { spec: &spec, name: "c", namespace: "team-a", keys_from: KeysFrom::Secret },
        Err(&Blocker::SecretKeyMissing { key: "K".into(), present: vec![] }),
    );
    assert_eq!(secret_grace_left(&missing_key, Some(created), at(1), grace), None, "a wrong Secret is not on its way");
}

#[test]
fn conditions_not_checked_name_the_failure_instead_of_repeating_it() {
    let spec = spec(json!({"usage": ["Import", "Export"]}));
    let v = decide(
        &Subject { spec: &spec, name: "c", namespace: "team-a", keys_from: KeysFrom::Secret },
        Err(&Blocker::SecretNotFound),
    );
    let repeated = v.conditions.iter().filter(|c| c.message.contains("was not found")).count();
    assert_eq!(repeated, 2, "only the failing condition and Ready say it: {:?}", v.conditions);
    assert_eq!(condition(&v, READ_PERMITTED).message, "Not checked until CredentialsValid (SecretNotFound) is fixed.");

    let mut report = healthy(&spec);
    report.fatal = Some(failure("SignatureDoesNotMatch"));
    let v = verdict(&spec, &report);
    assert_eq!(
        condition(&v, WRITE_PERMITTED).message,
        "Not checked until CredentialsValid (SignatureDoesNotMatch) is fixed."
    );
    assert_eq!(condition(&v, BUCKET_REACHABLE).reason, Reason::NotChecked);
    assert_eq!(v.conditions.iter().filter(|c| c.message.contains("matching secret")).count(), 2);
}

#[test]
fn an_answer_that_is_not_s3s_is_its_own_reason_and_no_cors_is_written() {
    let spec = spec(json!({}));
    let mut report = healthy(&spec);
    let unreadable =
        Failure::new(FailureKind::Unreadable, "UnreadableAnswer", "the answer (HTTP 200, text/html) is not S3's XML");
    report.set_for_test(Action::GetBucketCors, Outcome::Failed(unreadable.clone()));
    report.cors = Some(CorsOutcome::Failed(unreadable.clone()));
    let v = verdict(&spec, &report);
    assert_fails(&v, CORS_CONFIGURED, Reason::S3AnswerUnreadable, &["s3:GetBucketCORS", "text/html", "left as it is"]);
    assert_eq!(v.next, Next::RecheckLater, "the same answer would come back at once");

    // A location that is no region, and no spec.region: the bucket, not us-east-1.
    let mut report = healthy(&spec);
    report.fatal = Some(unreadable.clone());
    report.bucket_region = None;
    let v = verdict(&spec, &report);
    assert_fails(&v, BUCKET_REACHABLE, Reason::S3AnswerUnreadable, &["s3:GetBucketLocation", "not S3's"]);
    assert_eq!(condition(&v, READY).reason, Reason::S3AnswerUnreadable);
}

#[test]
fn s3s_request_ids_are_in_every_condition_an_s3_answer_caused() {
    let spec = spec(json!({"usage": ["Import", "Export"]}));
    let ids = "request id 4442587FB7D0A2F9, extended request id vlR7PnpV2Ce81l0PRw6jlUpck7Jo5ZsQ=";
    let with_ids = |mut f: Failure| {
        f.request_id = Some(ids.to_owned());
        f
    };
    let mut report = healthy(&spec);
    report.set_for_test(
        Action::ListBucket,
        Outcome::Failed(with_ids(classify_parts(Some("InternalError"), None, 500, None))),
    );
    report.set_for_test(Action::PutObject, Outcome::Denied(with_ids(failure("AccessDenied"))));
    let v = verdict(&spec, &report);
    for type_ in [READ_PERMITTED, WRITE_PERMITTED, READY] {
        let message = &condition(&v, type_).message;
        assert!(message.contains(&format!("(S3 {ids})")), "{type_}: {message}");
    }
    assert!(!condition(&v, CORS_CONFIGURED).message.contains("request id"));

    let mut report = healthy(&spec);
    report.fatal = Some(with_ids(failure("InvalidAccessKeyId")));
    let v = verdict(&spec, &report);
    assert!(condition(&v, CREDENTIALS_VALID).message.ends_with(&format!("(S3 {ids}).")));
}
