//! The S3Connection controller through the real stack: the operator binary, the API
//! server, and an S3 server enforcing IAM per action. One test per documented failure
//! mode, asserting the condition type, status, reason and the remedy's key words; every
//! test also checks that its keys appear in no status, event or log line.

use std::collections::BTreeMap;

use aws_sdk_s3::types::{CorsConfiguration, CorsRule};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use s3connect::api::S3Connection;
use s3connect::api::connection::{CorsMode, Usage};
use s3connect::s3::client::Keys;
use s3connect::s3::policy::{Action, policy};
use s3connect::s3::uri::Location;
use s3connect::validation::required;
use serde_json::{Value, json};

use crate::support::operator::{condition, everything_shown, log_lines, wait_for};
use crate::support::s3::Store;
use crate::support::{self, iam};

struct Case {
    store: Store,
    client: kube::Client,
    ns: String,
    bucket: String,
    keys: Vec<Keys>,
}

impl Case {
    /// A namespace and a bucket on moto in `region` with one object under `images/`.
    async fn new(hint: &str, region: &str) -> Case {
        Case::on(Store::Moto, hint, region).await
    }

    /// A namespace and a bucket on `store` in `region` with one object under `images/`.
    async fn on(store: Store, hint: &str, region: &str) -> Case {
        let client = support::client().await;
        let ns = support::namespace(&client, hint).await;
        let bucket = store.bucket(hint, region).await;
        store.put(&bucket, "images/cat.jpg", b"\xff\xd8 not really a jpeg").await;
        Case { store, client, ns, bucket, keys: Vec::new() }
    }

    /// An IAM user allowed `actions` as `s3connect policy` would scope them.
    async fn user(&mut self, actions: &[Action]) -> Keys {
        let location = Location::parse(&format!("{}/images/", self.bucket)).unwrap();
        let keys = self.store.user_with_policy("conn", &self.bucket, &policy(&location, None, actions)).await;
        self.keys.push(keys.clone());
        keys
    }

    /// An IAM user allowed everything `usage` and `cors` need except `denied`.
    async fn user_without(&mut self, usage: &[Usage], cors: CorsMode, denied: &[Action]) -> Keys {
        let actions: Vec<Action> = required(usage, cors).into_iter().filter(|a| !denied.contains(a)).collect();
        self.user(&actions).await
    }

    async fn secret(&self, name: &str, keys: &Keys) {
        let data = BTreeMap::from([
            ("AWS_ACCESS_KEY_ID".to_owned(), ByteString(keys.access_key_id.clone().into_bytes())),
            // A trailing newline, as `echo` leaves it: the operator trims it.
            ("AWS_SECRET_ACCESS_KEY".to_owned(), ByteString(format!("{}\n", keys.secret_access_key).into_bytes())),
        ]);
        let secret = Secret {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            data: Some(data),
            ..Default::default()
        };
        Api::<Secret>::namespaced(self.client.clone(), &self.ns)
            .patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&secret))
            .await
            .expect("applying the Secret");
    }

    /// Applies an S3Connection for `images/` in this case's bucket, on the test S3 server.
    async fn connection(&self, name: &str, extra: Value) {
        let mut spec = json!({
            "uri": format!("s3://{}/images/", self.bucket),
            "credentials": {"secretRef": {"name": "keys"}},
            "endpoint": self.store.endpoint(),
            "forcePathStyle": true,
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let obj = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "S3Connection", "metadata": {"name": name}, "spec": spec});
        let obj: S3Connection = serde_json::from_value(obj).unwrap();
        Api::<S3Connection>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &obj)
            .await
            .expect("creating the S3Connection");
    }

    /// Waits for `type_` to have `status` and `reason`, asserts the message has every key
    /// word, and returns the connection.
    async fn expect(&self, name: &str, type_: &str, status: &str, reason: &str, words: &[&str]) -> S3Connection {
        let c = wait_for(&self.client, &self.ns, name, &format!("{type_}={status} ({reason})"), |c| {
            condition(c, type_).is_some_and(|x| x.status == status && x.reason == reason)
        })
        .await;
        let message = &condition(&c, type_).unwrap().message;
        for w in words {
            assert!(message.contains(w), "{type_}/{reason}: {w:?} missing from {message:?}");
        }
        c
    }

    /// Asserts the connection is not Ready for `reason`, with kstatus Stalled.
    fn assert_not_ready(&self, c: &S3Connection, reason: &str) {
        let ready = condition(c, "Ready").expect("Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", reason));
        let stalled = condition(c, "Stalled").expect("a failure someone must fix is Stalled");
        assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", reason));
        // `kubectl describe` shows the failure under the failing condition and Ready only.
        let conditions = &c.status.as_ref().unwrap().conditions;
        let shown: Vec<&str> =
            conditions.iter().filter(|x| x.message == ready.message).map(|x| x.type_.as_str()).collect();
        assert_eq!(shown.len(), 2, "{reason}: the failure is shown by {shown:?}");
        assert!(stalled.message.contains("requested-at"), "{}", stalled.message);
    }

    /// No key of this case appears in any status, event or operator log line.
    async fn assert_no_secrets(&self) {
        let shown = everything_shown(&self.client, &self.ns).await;
        for keys in &self.keys {
            assert!(!shown.contains(&keys.access_key_id), "an access key id was shown");
            assert!(!shown.contains(&keys.secret_access_key), "a secret access key was shown");
        }
    }
}

#[tokio::test]
async fn missing_secret_and_missing_key() {
    let _timer = crate::timed!();
    let mut case = Case::new("nosecret", "us-east-1").await;
    case.connection("c", json!({})).await;
    let c = case
        .expect("c", "CredentialsValid", "False", "SecretNotFound", &["\"keys\"", "was not found", "create it"])
        .await;
    // First it may be on its way (the tests' grace is 4 s): Reconciling, then Stalled.
    if condition(&c, "Stalled").is_none() {
        let r = condition(&c, "Reconciling").expect("Reconciling within the grace");
        assert_eq!((r.status.as_str(), r.reason.as_str()), ("True", "SecretNotFound"));
    }
    let c = case.expect("c", "Stalled", "True", "SecretNotFound", &["requested-at"]).await;
    case.assert_not_ready(&c, "SecretNotFound");
    assert!(condition(&c, "Reconciling").is_none(), "Stalled and Reconciling at once");
    assert_eq!(condition(&c, "ReadPermitted").unwrap().status, "Unknown");

    let keys = case.user(&[Action::ListBucket]).await;
    let data = BTreeMap::from([("AWS_ACCESS_KEY_ID".to_owned(), ByteString(keys.access_key_id.clone().into_bytes()))]);
    let secret = Secret {
        metadata: ObjectMeta { name: Some("keys".into()), ..Default::default() },
        data: Some(data),
        ..Default::default()
    };
    Api::<Secret>::namespaced(case.client.clone(), &case.ns).create(&PostParams::default(), &secret).await.unwrap();
    // Creating the Secret re-validates through the Secret watch; no change to the object.
    case.expect(
        "c",
        "CredentialsValid",
        "False",
        "SecretKeyMissing",
        &["no key \"AWS_SECRET_ACCESS_KEY\"", "it has: AWS_ACCESS_KEY_ID"],
    )
    .await;
    case.assert_no_secrets().await;
}

async fn unknown_access_key_and_wrong_secret(store: Store) {
    let mut case = Case::on(store, "badkeys", "us-east-1").await;
    let unknown =
        Keys { access_key_id: "AKIAUNKNOWN000000000".into(), secret_access_key: "s".repeat(40), session_token: None };
    case.keys.push(unknown.clone());
    case.secret("keys", &unknown).await;
    case.connection("c", json!({})).await;
    let c = case
        .expect("c", "CredentialsValid", "False", "InvalidAccessKeyId", &["access key id", "AWS_ACCESS_KEY_ID"])
        .await;
    case.assert_not_ready(&c, "InvalidAccessKeyId");

    let real = case.user(&[Action::ListBucket]).await;
    let wrong = Keys { secret_access_key: "w".repeat(40), ..real };
    case.keys.push(wrong.clone());
    case.secret("keys", &wrong).await;
    case.expect(
        "c",
        "CredentialsValid",
        "False",
        "SignatureDoesNotMatch",
        &["AWS_SECRET_ACCESS_KEY", "matching secret"],
    )
    .await;
    case.assert_no_secrets().await;
}

async fn missing_bucket(store: Store) {
    let mut case = Case::on(store, "nobucket", "us-east-1").await;
    // S3 says NoSuchBucket only to someone allowed on that bucket name; otherwise it is
    // AccessDenied, existing or not.
    let keys = store.user_with_policy("nobucket", &case.bucket, &iam::allow(&["s3:*"], &["*".to_owned()])).await;
    case.keys.push(keys.clone());
    case.secret("keys", &keys).await;
    case.connection("c", json!({"uri": "s3://no-such-bucket-s3connect/images/"})).await;
    let c = case
        .expect(
            "c",
            "BucketReachable",
            "False",
            "NoSuchBucket",
            &["\"no-such-bucket-s3connect\" does not exist", "spec.uri"],
        )
        .await;
    case.assert_not_ready(&c, "NoSuchBucket");
    case.assert_no_secrets().await;
}

async fn list_bucket_denied(store: Store) {
    let mut case = Case::on(store, "nolist", "us-east-1").await;
    let keys = case.user_without(&[Usage::Import], CorsMode::Apply, &[Action::ListBucket]).await;
    case.secret("keys", &keys).await;
    case.connection("c", json!({})).await;
    let c = case
        .expect("c", "ReadPermitted", "False", "ListBucketDenied", &["may not list", "s3:ListBucket", "missingPolicy"])
        .await;
    case.assert_not_ready(&c, "ListBucketDenied");
    let missing: Value = serde_json::from_str(c.status.as_ref().unwrap().missing_policy.as_deref().unwrap()).unwrap();
    assert_eq!(missing["Statement"][0]["Action"], json!(["s3:ListBucket"]));
    assert_eq!(missing["Statement"][0]["Resource"], format!("arn:aws:s3:::{}", case.bucket));
    case.assert_no_secrets().await;
}

async fn get_object_denied_by_a_policy_without_slash_star(store: Store) {
    let mut case = Case::on(store, "noslash", "us-east-1").await;
    // The classic mistake: s3:GetObject on the bucket ARN instead of bucket/*.
    let bucket_arn = format!("arn:aws:s3:::{}", case.bucket);
    let keys = store
        .user_with_policy(
            "noslash",
            &case.bucket,
            &iam::allow(
                &["s3:GetBucketLocation", "s3:ListBucket", "s3:GetObject", "s3:GetBucketCORS", "s3:PutBucketCORS"],
                &[bucket_arn],
            ),
        )
        .await;
    case.keys.push(keys.clone());
    case.secret("keys", &keys).await;
    case.connection("c", json!({})).await;
    let object_arn = format!("arn:aws:s3:::{}/images/*", case.bucket);
    let c = case.expect("c", "ReadPermitted", "False", "GetObjectDenied", &[&object_arn, "Note the /*"]).await;
    case.assert_not_ready(&c, "GetObjectDenied");
    let status = c.status.as_ref().unwrap();
    let missing: Value = serde_json::from_str(status.missing_policy.as_deref().unwrap()).unwrap();
    assert_eq!(
        missing["Statement"],
        json!([{"Sid": "S3ConnectObjects", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": object_arn}])
    );
    let get = status.permissions.iter().find(|p| p.action == "s3:GetObject").unwrap();
    assert_eq!(serde_json::to_value(get.result).unwrap(), "Denied");
    assert_eq!(status.sample_object.as_deref(), Some("images/cat.jpg"));
    case.assert_no_secrets().await;
}

async fn empty_prefix_has_no_objects(store: Store) {
    let mut case = Case::on(store, "empty", "us-east-1").await;
    // Keys for exactly this prefix (moto does not enforce the s3:prefix condition of
    // ListBucket; versitygw does, as S3 does).
    let location = Location::parse(&format!("{}/nothing-here/", case.bucket)).unwrap();
    let keys = store
        .user_with_policy("empty", &case.bucket, &policy(&location, None, &required(&[Usage::Import], CorsMode::Apply)))
        .await;
    case.keys.push(keys.clone());
    case.secret("keys", &keys).await;
    case.connection("c", json!({"uri": format!("s3://{}/nothing-here/", case.bucket)})).await;
    let c = case
        .expect(
            "c",
            "ReadPermitted",
            "False",
            "NoObjects",
            &["no objects under", "nothing-here/", "Dataset has no files"],
        )
        .await;
    case.assert_not_ready(&c, "NoObjects");
    case.assert_no_secrets().await;
}

async fn get_bucket_location_denied(store: Store) {
    let mut case = Case::on(store, "noloc", "us-east-1").await;
    let keys = case.user_without(&[Usage::Import], CorsMode::Apply, &[Action::GetBucketLocation]).await;
    case.secret("keys", &keys).await;
    case.connection("c", json!({})).await;
    let c = case
        .expect("c", "BucketReachable", "False", "GetBucketLocationDenied", &["s3:GetBucketLocation", "missingPolicy"])
        .await;
    case.assert_not_ready(&c, "GetBucketLocationDenied");
    // The other permissions are still probed, so one policy fixes everything at once.
    assert_eq!(condition(&c, "ReadPermitted").unwrap().status, "True");
    assert_eq!(condition(&c, "CorsConfigured").unwrap().status, "True");
    case.assert_no_secrets().await;
}

async fn get_bucket_cors_denied(store: Store) {
    let mut case = Case::on(store, "nogetcors", "us-east-1").await;
    let keys = case.user_without(&[Usage::Import], CorsMode::Apply, &[Action::GetBucketCors]).await;
    case.secret("keys", &keys).await;
    case.connection("c", json!({})).await;
    let c = case
        .expect(
            "c",
            "CorsConfigured",
            "False",
            "GetBucketCorsDenied",
            &["s3:GetBucketCORS", "CORSRules", "https://pro.labellerr.com"],
        )
        .await;
    case.assert_not_ready(&c, "GetBucketCorsDenied");
    case.assert_no_secrets().await;
}

async fn put_bucket_cors_denied_gives_the_json_to_set_by_hand(store: Store) {
    let mut case = Case::on(store, "noputcors", "us-east-1").await;
    let keys = case.user_without(&[Usage::Import], CorsMode::Apply, &[Action::PutBucketCors]).await;
    case.secret("keys", &keys).await;
    case.connection("c", json!({})).await;
    let by_hand = format!("aws s3api put-bucket-cors --bucket {} --cors-configuration '", case.bucket);
    let c = case.expect("c", "CorsConfigured", "False", "PutBucketCorsDenied", &["s3:PutBucketCORS", &by_hand]).await;
    case.assert_not_ready(&c, "PutBucketCorsDenied");
    // The JSON in the message is valid and is exactly the rule the UI needs.
    let message = &condition(&c, "CorsConfigured").unwrap().message;
    let json_text = message.split(&by_hand).nth(1).unwrap().split('\'').next().unwrap();
    let wanted: Value = serde_json::from_str(json_text).expect("the CORS JSON in the message parses");
    assert_eq!(wanted["CORSRules"][0]["AllowedOrigins"], json!(["https://pro.labellerr.com"]));
    assert_eq!(wanted["CORSRules"][0]["AllowedMethods"], json!(["GET", "HEAD"]));
    case.assert_no_secrets().await;
}

async fn apply_mode_keeps_a_foreign_cors_rule(store: Store) {
    let mut case = Case::on(store, "foreign", "us-east-1").await;
    let foreign = CorsRule::builder()
        .id("website")
        .allowed_origins("https://www.example.com")
        .allowed_methods("PUT")
        .build()
        .unwrap();
    store
        .admin("us-east-1")
        .put_bucket_cors()
        .bucket(&case.bucket)
        .cors_configuration(CorsConfiguration::builder().cors_rules(foreign).build().unwrap())
        .send()
        .await
        .unwrap();
    let keys = case.user(&required(&[Usage::Import], CorsMode::Apply)).await;
    case.secret("keys", &keys).await;
    case.connection("c", json!({})).await;
    let c = case.expect("c", "CorsConfigured", "True", "CorsApplied", &["other rules were kept"]).await;
    assert_eq!(condition(&c, "Ready").unwrap().status, "True");
    let rules = store.admin("us-east-1").get_bucket_cors().bucket(&case.bucket).send().await.unwrap();
    let ids: Vec<_> = rules.cors_rules().iter().map(|r| r.id().unwrap_or("")).collect();
    let own = s3connect::s3::cors::rule_id(&format!("{}/c", case.ns));
    assert_eq!(ids, ["website", own.as_str()]);
    assert_eq!(rules.cors_rules()[0].allowed_origins(), ["https://www.example.com"]);
    case.assert_no_secrets().await;
}

async fn verify_mode_reports_a_missing_rule(store: Store) {
    let mut case = Case::on(store, "verify", "us-east-1").await;
    let keys = case.user(&required(&[Usage::Import], CorsMode::Verify)).await;
    case.secret("keys", &keys).await;
    case.connection("c", json!({"cors": {"mode": "Verify"}})).await;
    let c = case
        .expect(
            "c",
            "CorsConfigured",
            "False",
            "CorsRuleMissing",
            &["put-bucket-cors", "https://pro.labellerr.com", "Apply"],
        )
        .await;
    case.assert_not_ready(&c, "CorsRuleMissing");
    // Verify never writes.
    let err = store
        .admin("us-east-1")
        .get_bucket_cors()
        .bucket(&case.bucket)
        .send()
        .await
        .expect_err("no CORS configuration");
    assert_eq!(aws_sdk_s3::error::ProvideErrorMetadata::code(&err), Some("NoSuchCORSConfiguration"));
    case.assert_no_secrets().await;
}

async fn export_with_put_object_denied(store: Store) {
    let mut case = Case::on(store, "noput", "us-east-1").await;
    let keys = case.user_without(&[Usage::Import, Usage::Export], CorsMode::Apply, &[Action::PutObject]).await;
    case.secret("keys", &keys).await;
    case.connection("c", json!({"usage": ["Import", "Export"]})).await;
    let c = case
        .expect("c", "WritePermitted", "False", "PutObjectDenied", &["may not write to", "s3:PutObject", "exports"])
        .await;
    case.assert_not_ready(&c, "PutObjectDenied");
    let perms = &c.status.as_ref().unwrap().permissions;
    let result = |a: &str| serde_json::to_value(perms.iter().find(|p| p.action == a).unwrap().result).unwrap();
    assert_eq!(result("s3:PutObject"), "Denied");
    assert_eq!(result("s3:DeleteObject"), "Allowed");
    case.assert_no_secrets().await;
}

async fn region_mismatch_names_the_real_region(store: Store) {
    let (real, wrong) = store.mismatched_regions();
    let mut case = Case::on(store, "region", real).await;
    let keys = case.user(&required(&[Usage::Import], CorsMode::Apply)).await;
    case.secret("keys", &keys).await;
    case.connection("c", json!({"region": wrong})).await;
    let c = case
        .expect(
            "c",
            "BucketReachable",
            "False",
            "RegionMismatch",
            &[&format!("is in region {real}, not {wrong}"), &format!("set spec.region to {real}")],
        )
        .await;
    case.assert_not_ready(&c, "RegionMismatch");
    assert_eq!(c.status.as_ref().unwrap().region.as_deref(), Some(real));
    case.assert_no_secrets().await;
}

#[tokio::test]
async fn unreachable_endpoint_retries() {
    let _timer = crate::timed!();
    let mut case = Case::new("unreach", "us-east-1").await;
    let keys = case.user(&[Action::ListBucket]).await;
    case.secret("keys", &keys).await;
    case.connection("c", json!({"endpoint": "http://127.0.0.1:1"})).await;
    let c =
        case.expect("c", "BucketReachable", "False", "EndpointUnreachable", &["http://127.0.0.1:1", "retrying"]).await;
    let reconciling = condition(&c, "Reconciling").expect("a transient failure is Reconciling");
    assert_eq!((reconciling.status.as_str(), reconciling.reason.as_str()), ("True", "EndpointUnreachable"));
    assert!(condition(&c, "Stalled").is_none());
    case.assert_no_secrets().await;
}

#[tokio::test]
async fn endpoint_outside_the_allow_list_is_refused() {
    let _timer = crate::timed!();
    let mut case = Case::new("notallowed", "us-east-1").await;
    let keys = case.user(&[Action::ListBucket]).await;
    case.secret("keys", &keys).await;
    let port = support::env().s3_endpoint.rsplit(':').next().unwrap().to_owned();
    case.connection("c", json!({"endpoint": format!("http://localhost:{port}")})).await;
    let c = case
        .expect("c", "BucketReachable", "False", "EndpointNotAllowed", &["allow-list", "--allowed-endpoints"])
        .await;
    case.assert_not_ready(&c, "EndpointNotAllowed");
    assert!(
        c.status.as_ref().unwrap().permissions.iter().all(|p| serde_json::to_value(p.result).unwrap() == "Untested")
    );
    case.assert_no_secrets().await;
}

async fn the_policy_from_s3connect_policy_is_enough_and_the_ui_origin_can_get_objects(store: Store) {
    let mut case = Case::on(store, "happy", "us-east-1").await;
    let uri = format!("s3://{}/images/", case.bucket);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3connect"))
        .args(["policy", "--uri", &uri, "--usage", "import", "--usage", "export"])
        .output()
        .unwrap();
    assert!(out.status.success(), "s3connect policy failed: {}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).expect("s3connect policy prints JSON");
    let keys = store.user_with_policy("happy", &case.bucket, &printed).await;
    case.keys.push(keys.clone());
    case.secret("keys", &keys).await;
    case.connection("c", json!({"usage": ["Import", "Export"]})).await;
    let c = case.expect("c", "Ready", "True", "Validated", &["ready for Import and Export", "CORS rule"]).await;
    let status = c.status.as_ref().unwrap();
    for type_ in ["CredentialsValid", "BucketReachable", "ReadPermitted", "WritePermitted", "CorsConfigured"] {
        assert_eq!(condition(&c, type_).unwrap().status, "True", "{type_}");
    }
    assert!(condition(&c, "Stalled").is_none() && condition(&c, "Reconciling").is_none());
    assert_eq!(status.permissions.len(), 7);
    assert!(
        status
            .permissions
            .iter()
            .all(|p| p.action == "s3:PutBucketCORS" || serde_json::to_value(p.result).unwrap() == "Allowed")
    );
    assert_eq!(status.missing_policy, None);
    assert_eq!((status.bucket.as_deref(), status.prefix.as_deref()), (Some(case.bucket.as_str()), Some("images/")));
    assert_eq!(status.observed_generation, c.metadata.generation);
    assert!(status.credentials_version.is_some() && status.last_validated_time.is_some());

    // The probe object is gone again.
    let listed = store.admin("us-east-1").list_objects_v2().bucket(&case.bucket).send().await.unwrap();
    let keys_now: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys_now, ["images/cat.jpg"]);

    // The labelling UI's origin may now GET objects from the browser.
    let url = format!("{}/{}/images/cat.jpg", store.endpoint(), case.bucket);
    let request = http::Request::get(&url).body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
    let mut request = crate::support::sign::signed(request, b"", "s3", store.admin_keys());
    request.headers_mut().insert("origin", http::HeaderValue::from_static("https://pro.labellerr.com"));
    let (status_code, _, headers) = crate::support::http::send_with_headers(request).await;
    assert_eq!(status_code, 200);
    assert_eq!(
        headers.get("access-control-allow-origin").map(|v| v.to_str().unwrap()),
        Some("https://pro.labellerr.com")
    );

    // Events: the transition to Ready, and the CORS change, once each. They are posted
    // after the status write, so they may land a moment after Ready is seen.
    let events_api = Api::<k8s_openapi::api::events::v1::Event>::namespaced(case.client.clone(), &case.ns);
    let every = std::time::Duration::from_millis(100);
    let reasons: Vec<String> = support::wait_for(
        "the Validated and CorsApplied events",
        std::time::Duration::from_secs(10),
        every,
        || async {
            let events = events_api.list(&Default::default()).await.unwrap();
            let reasons: Vec<String> = events.items.iter().filter_map(|e| e.reason.clone()).collect();
            if reasons.iter().any(|r| r == "Validated") && reasons.iter().any(|r| r == "CorsApplied") {
                Ok(reasons)
            } else {
                Err(format!("events: {reasons:?}"))
            }
        },
    )
    .await;
    assert!(
        reasons.iter().any(|r| r == "Validated") && reasons.iter().any(|r| r == "CorsApplied"),
        "events: {reasons:?}"
    );

    // A full Import+Export validation stays within its request budget.
    // The log line comes after the events (the reconcile's last step), and a loaded
    // machine may show the events first: wait for it.
    let owner = format!("{}/c", case.ns);
    let counts: Vec<u64> =
        support::wait_for("the 'validated' log line", std::time::Duration::from_secs(10), every, || async {
            let counts: Vec<u64> = log_lines()
                .iter()
                .filter(|l| l["connection"] == owner.as_str() && l["message"] == "validated")
                .filter_map(|l| l["s3_requests"].as_u64())
                .collect();
            if counts.is_empty() { Err(format!("no 'validated' log line for {owner}")) } else { Ok(counts) }
        })
        .await;
    assert!(counts.iter().all(|n| (1..=7).contains(n)), "S3 requests per validation: {counts:?}");
    assert_eq!(counts[counts.len() - 1], 7, "the validation that applied CORS used all seven");
    case.assert_no_secrets().await;
}

#[tokio::test]
async fn rotating_the_secret_from_bad_to_good_keys_makes_it_ready() {
    let _timer = crate::timed!();
    let mut case = Case::new("rotate", "us-east-1").await;
    let good = case.user(&required(&[Usage::Import], CorsMode::Apply)).await;
    let bad = Keys { secret_access_key: "b".repeat(40), ..good.clone() };
    case.secret("keys", &bad).await;
    case.connection("c", json!({})).await;
    let before = case.expect("c", "CredentialsValid", "False", "SignatureDoesNotMatch", &[]).await;

    case.secret("keys", &good).await;
    let after = case.expect("c", "Ready", "True", "Validated", &[]).await;
    // The retry after a failure comes 10 s later at the earliest (the interval is 10 m), so
    // a validation sooner than that was triggered by the Secret watch.
    let validated = |c: &S3Connection| c.status.as_ref().unwrap().last_validated_time.as_ref().unwrap().0;
    let gap = validated(&after).duration_since(validated(&before));
    assert!(
        gap.as_secs_f64() < 10.0,
        "re-validated {gap:?} after the failure: that was the backoff, not the Secret watch"
    );
    assert_eq!(after.metadata.generation, before.metadata.generation, "the S3Connection was not touched");
    assert_ne!(after.status.as_ref().unwrap().credentials_version, before.status.as_ref().unwrap().credentials_version);
    case.assert_no_secrets().await;
}

#[tokio::test]
async fn editing_the_spec_revalidates_at_once() {
    let _timer = crate::timed!();
    let mut case = Case::new("edit", "us-east-1").await;
    // Keys for reading only: adding Export to the spec must turn the connection not Ready.
    let keys = case.user(&required(&[Usage::Import], CorsMode::Apply)).await;
    case.secret("keys", &keys).await;
    case.connection("c", json!({})).await;
    let before = case.expect("c", "Ready", "True", "Validated", &[]).await;
    assert_eq!(before.status.as_ref().unwrap().observed_generation, before.metadata.generation);

    let patch = json!({"spec": {"usage": ["Import", "Export"]}});
    Api::<S3Connection>::namespaced(case.client.clone(), &case.ns)
        .patch("c", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("editing the spec");
    let after = case.expect("c", "WritePermitted", "False", "PutObjectDenied", &["s3:PutObject"]).await;
    case.assert_not_ready(&after, "PutObjectDenied");
    let status = after.status.as_ref().unwrap();
    assert_eq!(status.observed_generation, after.metadata.generation, "the status is about the edited spec");
    assert!(after.metadata.generation > before.metadata.generation);
    // The interval is 10 m and nothing failed before: only the spec change can have
    // triggered this validation.
    let validated = |c: &S3Connection| c.status.as_ref().unwrap().last_validated_time.as_ref().unwrap().0;
    let gap = validated(&after).duration_since(validated(&before));
    assert!(gap.as_secs_f64() < 30.0, "re-validated {gap:?} after the edit: that was not the spec watch");
    case.assert_no_secrets().await;
}

#[tokio::test]
async fn a_secret_that_arrives_a_moment_later_is_waited_for_not_stalled_on() {
    let _timer = crate::timed!();
    // External Secrets, Sealed Secrets and GitOps tools create the Secret next to the
    // connection, often a moment after it.
    let mut case = Case::new("latesecret", "us-east-1").await;
    case.connection("c", json!({})).await;
    let api = Api::<S3Connection>::namespaced(case.client.clone(), &case.ns);
    let started = std::time::Instant::now();
    let mut seen_waiting = false;
    while started.elapsed() < std::time::Duration::from_secs(2) {
        if let Some(c) = api.get_opt("c").await.unwrap() {
            assert!(condition(&c, "Stalled").is_none(), "Stalled on a Secret still on its way: {:?}", c.status);
            seen_waiting |= condition(&c, "Reconciling").is_some_and(|r| r.reason == "SecretNotFound");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen_waiting, "never said it waits for the Secret");
    let keys = case.user(&required(&[Usage::Import], CorsMode::Apply)).await;
    case.secret("keys", &keys).await;
    let c = case.expect("c", "Ready", "True", "Validated", &[]).await;
    assert!(condition(&c, "Stalled").is_none() && condition(&c, "Reconciling").is_none());
    case.assert_no_secrets().await;
}

/// An object whose key holds DEL and C1 control characters, listed first (anyone who can
/// write to a shared prefix can put one there): the connection's status is still written,
/// and shows the key printably.
async fn a_key_with_control_characters_listed_first_never_freezes_the_status(store: Store) {
    let mut case = Case::on(store, "ctrlkey", "us-east-1").await;
    store.put(&case.bucket, "images/!\u{7f}\u{85}\u{9b}", b"x").await;
    let keys = case.user_without(&[Usage::Import], CorsMode::Apply, &[]).await;
    case.secret("keys", &keys).await;
    case.connection("c", json!({})).await;
    let c =
        wait_for(&case.client, &case.ns, "c", "Ready", |c| condition(c, "Ready").is_some_and(|r| r.status == "True"))
            .await;
    let sample = c.status.as_ref().and_then(|s| s.sample_object.clone()).unwrap_or_default();
    assert!(!sample.chars().any(char::is_control), "a control character reached the status: {sample:?}");
    // A re-check asked for is recorded: status writes still go through.
    let ask = json!({"metadata": {"annotations": {"s3connect.io/requested-at": "after-del"}}});
    Api::<S3Connection>::namespaced(case.client.clone(), &case.ns)
        .patch("c", &PatchParams::default(), &Patch::Merge(&ask))
        .await
        .unwrap();
    wait_for(&case.client, &case.ns, "c", "the re-check recorded", |c| {
        c.status.as_ref().and_then(|s| s.last_handled_reconcile_at.as_deref()) == Some("after-del")
    })
    .await;
}

/// Every S3 failure mode against both S3 servers: moto (IAM user policies) and versitygw
/// (bucket policies, every signature checked).
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        on_every_store!(@on on_moto, Moto; $($name),*);
        on_every_store!(@on on_versitygw, Versitygw; $($name),*);
    };
    (@on $module:ident, $store:ident; $($name:ident),*) => {
        mod $module {
            $(#[tokio::test]
            async fn $name() {
                let _timer = crate::timed!();
                super::$name(crate::support::s3::Store::$store).await
            })*
        }
    };
}

on_every_store!(
    unknown_access_key_and_wrong_secret,
    missing_bucket,
    list_bucket_denied,
    get_object_denied_by_a_policy_without_slash_star,
    empty_prefix_has_no_objects,
    get_bucket_location_denied,
    get_bucket_cors_denied,
    put_bucket_cors_denied_gives_the_json_to_set_by_hand,
    apply_mode_keeps_a_foreign_cors_rule,
    verify_mode_reports_a_missing_rule,
    export_with_put_object_denied,
    region_mismatch_names_the_real_region,
    the_policy_from_s3connect_policy_is_enough_and_the_ui_origin_can_get_objects,
    a_key_with_control_characters_listed_first_never_freezes_the_status,
);
