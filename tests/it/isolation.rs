//! One operator, many tenants: whatever one namespace puts in its Secrets and specs, or
//! whatever its endpoints do, the operator keeps running, the other namespaces keep being
//! reconciled, and nothing it says is false or leaks. Each test through the real stack.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use s3connect::api::S3Connection;
use s3connect::api::connection::{CorsMode, Usage};
use s3connect::s3::client::Keys;
use s3connect::s3::policy::policy;
use s3connect::s3::uri::Location;
use s3connect::validation::required;
use serde_json::{Value, json};

use crate::support::operator::{condition, everything_shown, log_lines, operator_pid, shared, wait_for};
use crate::support::{self, faults, iam, platform, s3};

/// A namespace, a bucket with one object under `images/`, and keys allowed what
/// `usage` needs there.
struct Tenant {
    client: kube::Client,
    ns: String,
    bucket: String,
    keys: Keys,
}

impl Tenant {
    async fn new(hint: &str) -> Tenant {
        Self::with_usage(hint, &[Usage::Import]).await
    }

    async fn with_usage(hint: &str, usage: &[Usage]) -> Tenant {
        let client = support::client().await;
        let ns = support::namespace(&client, hint).await;
        Self::in_namespace(client, ns, hint, usage).await
    }

    async fn in_namespace(client: kube::Client, ns: String, hint: &str, usage: &[Usage]) -> Tenant {
        let bucket = s3::bucket(hint, "us-east-1").await;
        s3::put(&bucket, "images/cat.jpg", b"a cat").await;
        let location = Location::parse(&format!("{bucket}/images/")).unwrap();
        let keys = iam::user_with_policy(hint, &policy(&location, None, &required(usage, CorsMode::Apply))).await;
        support::keys_secret(&client, &ns, "keys", &keys).await;
        Tenant { client, ns, bucket, keys }
    }

    async fn connection(&self, name: &str, extra: Value) {
        support::s3_connection(&self.client, &self.ns, name, &self.bucket, "keys", extra).await;
    }

    async fn ready(&self, name: &str) -> S3Connection {
        wait_for(&self.client, &self.ns, name, "Ready", is_ready).await
    }

    fn api(&self) -> Api<S3Connection> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Asks for a validation now and waits until it has been written.
    async fn revalidate(&self, name: &str) -> S3Connection {
        let token = format!("{}", fastrand::u64(..));
        let patch = json!({"metadata": {"annotations": {"s3connect.io/requested-at": token}}});
        self.api().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotating");
        wait_for(&self.client, &self.ns, name, "the requested validation", |c| {
            c.status.as_ref().and_then(|s| s.last_handled_reconcile_at.as_deref()) == Some(token.as_str())
        })
        .await
    }

    async fn assert_no_secrets(&self) {
        let shown = everything_shown(&self.client, &self.ns).await;
        assert!(!shown.contains(&self.keys.access_key_id), "an access key id was shown");
        assert!(!shown.contains(&self.keys.secret_access_key), "a secret access key was shown");
    }
}

fn is_ready(c: &S3Connection) -> bool {
    condition(c, "Ready").is_some_and(|r| r.status == "True")
}

fn has(c: &S3Connection, type_: &str, status: &str, reason: &str) -> bool {
    condition(c, type_).is_some_and(|x| x.status == status && x.reason == reason)
}

/// The shared operator is the process it was when `pid` was read, and still running.
fn assert_same_operator(pid: u32) {
    assert_eq!(operator_pid(shared()), pid, "the operator was restarted");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "the operator process is gone");
}

async fn event_reasons(client: &kube::Client, ns: &str) -> Vec<(String, String, String)> {
    events_of(client, ns, None).await
}

/// The events about the object `name` only.
async fn event_reasons_for(client: &kube::Client, ns: &str, name: &str) -> Vec<(String, String, String)> {
    events_of(client, ns, Some(name)).await
}

async fn events_of(client: &kube::Client, ns: &str, name: Option<&str>) -> Vec<(String, String, String)> {
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| name.is_none() || e.regarding.as_ref().and_then(|r| r.name.as_deref()) == name)
        .map(|e| (e.reason.unwrap_or_default(), e.type_.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn secret_values_no_credential_can_be_are_refused_by_key_and_the_operator_lives_on() {
    let _timer = crate::timed!();
    let tenant = Tenant::new("badvalue").await;
    let pid = operator_pid(shared());
    let bad_ids: [&[u8]; 4] = [b"AKIA\nX", b"AKIA\x01X", b"AKIA\x7fX", b"\xff\xfe\x00A"];
    let secrets = Api::<Secret>::namespaced(tenant.client.clone(), &tenant.ns);
    let mut cases: Vec<(String, &str)> = Vec::new();
    for (i, id) in bad_ids.iter().enumerate() {
        cases.push((format!("id-{i}"), "AWS_ACCESS_KEY_ID"));
        let data = BTreeMap::from([
            ("AWS_ACCESS_KEY_ID".to_owned(), ByteString(id.to_vec())),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), ByteString(tenant.keys.secret_access_key.clone().into_bytes())),
        ]);
        let secret = Secret {
            metadata: ObjectMeta { name: Some(format!("id-{i}")), ..Default::default() },
            data: Some(data),
            ..Default::default()
        };
        secrets.create(&PostParams::default(), &secret).await.unwrap();
    }
    cases.push(("secret-0".into(), "AWS_SECRET_ACCESS_KEY"));
    let data = BTreeMap::from([
        ("AWS_ACCESS_KEY_ID".to_owned(), ByteString(tenant.keys.access_key_id.clone().into_bytes())),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), ByteString(b"abc\ndef".to_vec())),
    ]);
    let secret = Secret {
        metadata: ObjectMeta { name: Some("secret-0".into()), ..Default::default() },
        data: Some(data),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    for (name, _) in &cases {
        support::s3_connection(&tenant.client, &tenant.ns, name, &tenant.bucket, name, json!({})).await;
    }
    for (name, key) in &cases {
        let c = wait_for(&tenant.client, &tenant.ns, name, "SecretValueInvalid", |c| {
            has(c, "CredentialsValid", "False", "SecretValueInvalid")
        })
        .await;
        let message = &condition(&c, "CredentialsValid").unwrap().message;
        assert!(message.contains(&format!("key \"{key}\" in Secret \"{name}\"")), "{message}");
        assert!(has(&c, "Ready", "False", "SecretValueInvalid") && has(&c, "Stalled", "True", "SecretValueInvalid"));
    }
    // Another tenant, created after, is served as usual by the same process.
    let other = Tenant::new("badvalue-other").await;
    other.connection("c", json!({})).await;
    other.ready("c").await;
    assert_same_operator(pid);
    let shown = everything_shown(&tenant.client, &tenant.ns).await;
    for fragment in ["AKIA\\nX", "AKIA\\u0001X", "abc\\ndef", "abc\ndef"] {
        assert!(!shown.contains(fragment), "a Secret value was shown: {fragment:?}");
    }
    tenant.assert_no_secrets().await;
}

#[tokio::test]
async fn check_refuses_such_keys_as_bad_input_naming_the_variable() {
    let _timer = crate::timed!();
    for (var, value) in [("AWS_ACCESS_KEY_ID", "AKIA\nXYZ"), ("AWS_SECRET_ACCESS_KEY", "sec\u{1}ret")] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3connect"))
            .args(["check", "--uri", "s3://some-bucket/images/", "--endpoint", "http://127.0.0.1:1"])
            .env("AWS_ACCESS_KEY_ID", "AKIAOK")
            .env("AWS_SECRET_ACCESS_KEY", "secret")
            .env(var, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}: {stderr}");
        assert!(stderr.contains(var) && stderr.contains("control character"), "{stderr}");
        assert!(!stderr.contains(value) && !stderr.contains("XYZ") && !stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn a_panic_in_one_reconcile_is_that_objects_condition_and_no_one_elses() {
    let _timer = crate::timed!();
    let tenant = Tenant::new("panic").await;
    let pid = operator_pid(shared());
    let conn = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "S3Connection",
        "metadata": {"name": "boom", "annotations": {"s3connect.io/debug-panic": "true"}},
        "spec": {"uri": format!("s3://{}/images/", tenant.bucket), "credentials": {"secretRef": {"name": "keys"}},
                 "endpoint": support::env().s3_endpoint, "forcePathStyle": true}});
    tenant.api().create(&PostParams::default(), &serde_json::from_value(conn).unwrap()).await.unwrap();
    tenant.connection("fine", json!({})).await;
    let c = wait_for(&tenant.client, &tenant.ns, "boom", "ReconcilePanicked", |c| {
        has(c, "Ready", "False", "ReconcilePanicked")
    })
    .await;
    assert!(has(&c, "Reconciling", "True", "ReconcilePanicked"), "{:?}", c.status);
    assert!(condition(&c, "Ready").unwrap().message.contains("no other object is affected"));
    tenant.ready("fine").await;
    let events = event_reasons(&tenant.client, &tenant.ns).await;
    assert!(events.iter().any(|(r, t, _)| r == "ReconcilePanicked" && t == "Warning"), "events: {events:?}");
    assert!(log_lines().iter().any(|l| l["message"].as_str().is_some_and(|m| m.starts_with("reconcile panicked"))));
    assert_same_operator(pid);
}

#[tokio::test]
async fn a_status_write_the_api_server_refuses_is_a_warning_event() {
    let _timer = crate::timed!();
    let tenant = Tenant::new("refused").await;
    // An admission policy that refuses every status update of S3Connections in this
    // namespace, as a stricter cluster policy might.
    let policy_name = support::unique("deny-status");
    let vap = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": policy_name},
        "spec": {"failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": ["s3connect.io"], "apiVersions": ["*"],
                "operations": ["UPDATE"], "resources": ["s3connections/status"]}]},
            "validations": [{"expression": "false", "message": "status updates are frozen here"}]}});
    let binding = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy_name},
        "spec": {"policyName": policy_name, "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": tenant.ns}}}}});
    for (kind, object) in [("ValidatingAdmissionPolicy", vap), ("ValidatingAdmissionPolicyBinding", binding)] {
        let file = std::env::temp_dir().join(format!("{policy_name}-{kind}.json"));
        std::fs::write(&file, object.to_string()).unwrap();
        let (ok, out) = support::kubectl(&["apply", "-f", file.to_str().unwrap()]);
        assert!(ok, "{kind}: {out}");
    }
    // In force once a dry-run status update of another connection is refused.
    tenant.connection("probe", json!({})).await;
    let in_force = "the admission policy in force";
    support::wait_for(in_force, Duration::from_secs(30), Duration::from_millis(100), || async {
        let patch = json!({"status": {"observedGeneration": 0}});
        let dry_run = PatchParams { dry_run: true, ..Default::default() };
        match tenant.api().patch_status("probe", &dry_run, &Patch::Merge(&patch)).await {
            Err(e) if e.to_string().contains("status updates are frozen here") => Ok(()),
            Err(e) => Err(e.to_string()),
            Ok(_) => Err("the dry-run status update was admitted".to_owned()),
        }
    })
    .await;
    tenant.connection("c", json!({})).await;
    let events = support::wait_for(
        "a StatusWriteRefused event",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let events = event_reasons_for(&tenant.client, &tenant.ns, "c").await;
            if events.iter().any(|(r, _, _)| r == "StatusWriteRefused") {
                Ok(events)
            } else {
                Err(format!("{events:?}"))
            }
        },
    )
    .await;
    let (_, type_, note) = events
        .iter()
        .find(|(r, _, _)| r == "StatusWriteRefused")
        .unwrap_or_else(|| panic!("no StatusWriteRefused event: {events:?}"));
    assert_eq!(type_, "Warning");
    assert!(note.contains("status updates are frozen here") && note.contains("refused"), "{note}");
    let c = tenant.api().get("c").await.unwrap();
    assert!(c.status.is_none(), "the status could not be written: {:?}", c.status);
    assert!(log_lines().iter().any(|l| l["message"] == "the API server refused a status update"));
    for kind in ["validatingadmissionpolicybinding", "validatingadmissionpolicy"] {
        support::kubectl(&["delete", kind, &policy_name]);
    }
    tenant.assert_no_secrets().await;
}

/// A TCP listener on loopback that accepts connections and never answers: its port, and
/// how many connections it holds.
fn hung_listener() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    (port, accepted)
}

#[tokio::test]
async fn two_hundred_hung_stores_and_a_hung_platform_in_two_namespaces_do_not_delay_a_third() {
    let _timer = crate::timed!();
    let client = support::client().await;
    // Namespace A: 200 connections to an endpoint that accepts and never answers (far more
    // than the operator starts at once, and than its namespace may have in flight).
    let a = Tenant::new("hung-s3").await;
    let (port, held) = hung_listener();
    for i in 0..200 {
        a.connection(&format!("c{i}"), json!({"endpoint": format!("http://127.0.0.1:{port}")})).await;
    }
    // Namespace B: 16 connections whose S3 is fine and whose platform test hangs.
    let b = Tenant::new("hung-platform").await;
    support::platform_secret(&client, &b.ns).await;
    let path = format!("{}/images/", b.bucket);
    platform::fault("connections/test", json!({"path": path, "count": 1000, "delay": 120})).await;
    for i in 0..16 {
        b.connection(&format!("c{i}"), json!({"platform": {"secretRef": {"name": "labellerr"}}})).await;
    }
    // Both fill their namespaces' slots (8 each, all 16 of the operator's): 8 connections
    // held by the hung store, 8 connection tests held by the platform.
    let platform_held = || async {
        let faults = platform::state().await["faults"]["connections/test"].clone();
        let ours = faults.as_array().into_iter().flatten().find(|f| f["path"] == path.as_str()).cloned();
        ours.map_or(0, |f| 1000 - f["count"].as_i64().unwrap_or(1000))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while held.load(std::sync::atomic::Ordering::Relaxed) < 8 || platform_held().await < 8 {
        assert!(Instant::now() < deadline, "the hung connections did not take their slots within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Not a stopwatch but the order of events: a hung validation gives its slot up only
    // when it times out (30 s, logged "validated"). Had the bystander waited for a slot of
    // theirs, one of them would have ended between the bystander's request and its
    // validation; outside that window they end on their own clock, however slow the
    // machine is. The times are printed as figures.
    let at = |l: &Value| l["timestamp"].as_str().and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
    let validated = |prefix: Vec<String>| {
        log_lines()
            .iter()
            .filter(|l| l["message"] == "validated")
            .filter(|l| l["connection"].as_str().is_some_and(|c| prefix.iter().any(|t| c.starts_with(t.as_str()))))
            .filter_map(at)
            .collect::<Vec<_>>()
    };
    let hung = || validated(vec![format!("{}/", a.ns), format!("{}/", b.ns)]);
    let c = Tenant::new("bystander").await;
    // No hung validation ended between `asked` and the bystander's validation (its log
    // line is written as the reconcile ends, a moment after the status).
    let not_waited = async |asked: k8s_openapi::jiff::Timestamp, what: &str| {
        let ours = format!("{}/c", c.ns);
        let every = Duration::from_millis(100);
        let done = support::wait_for("the bystander's 'validated' log line", Duration::from_secs(10), every, || {
            let latest = validated(vec![ours.clone()]).into_iter().filter(|t| *t > asked).max();
            async move { latest.ok_or("not logged yet") }
        })
        .await;
        let inside: Vec<_> = hung().into_iter().filter(|t| *t > asked && *t <= done).collect();
        assert!(inside.is_empty(), "{what} waited for a hung validation to end: {inside:?} within {asked}..{done}");
    };
    let (started, asked) = (Instant::now(), k8s_openapi::jiff::Timestamp::now());
    c.connection("c", json!({})).await;
    c.ready("c").await;
    support::figure("an unrelated connection Ready beside 216 hung ones", started.elapsed());
    not_waited(asked, "the unrelated connection").await;
    for interval in ["11m", "12m"] {
        let (started, asked) = (Instant::now(), k8s_openapi::jiff::Timestamp::now());
        let patch = json!({"spec": {"revalidateInterval": interval}});
        let edited = c.api().patch("c", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        let generation = edited.metadata.generation;
        wait_for(&client, &c.ns, "c", "the edit validated", |x| {
            x.status.as_ref().is_some_and(|s| s.observed_generation == generation) && is_ready(x)
        })
        .await;
        support::figure("a spec edit validated beside 216 hung connections", started.elapsed());
        not_waited(asked, "the spec edit").await;
    }
    // The hung ones say what they are waiting for, as far as they got.
    let hung = wait_for(&client, &a.ns, "c0", "EndpointUnreachable", |x| {
        has(x, "BucketReachable", "False", "EndpointUnreachable")
    })
    .await;
    assert!(condition(&hung, "Reconciling").is_some_and(|r| r.status == "True"));

    platform::fault("connections/test", json!({"path": path, "count": 0})).await;
    for t in [&a, &b] {
        t.api().delete_collection(&Default::default(), &ListParams::default()).await.unwrap();
    }
}

#[tokio::test]
async fn transient_s3_errors_never_flip_a_ready_connection() {
    let _timer = crate::timed!();
    let t = Tenant::new("flaky").await;
    t.connection("c", json!({"endpoint": support::env().s3_fault_proxy})).await;
    let mut last = t.ready("c").await;
    // Every seventh request (about 15 %), deterministically.
    faults::set(&t.bucket, json!({"every": 7, "status": 500, "code": "InternalError"})).await;
    for _ in 0..8 {
        last = t.revalidate("c").await;
        assert!(is_ready(&last), "Ready flipped: {:?}", last.status);
    }
    let (requests, injected) = faults::stats(&t.bucket).await;
    assert!(injected > 0, "no fault was injected in {requests} requests: the test proves nothing");

    // Even a validation that fails entirely leaves it Ready within the grace, saying why.
    faults::set(&t.bucket, json!({"share": 1.0, "status": 503, "code": "SlowDown"})).await;
    let c = t.revalidate("c").await;
    assert!(is_ready(&c), "Ready flipped: {:?}", c.status);
    let reconciling = condition(&c, "Reconciling").expect("Reconciling says what is retried");
    assert_eq!((reconciling.status.as_str(), reconciling.reason.as_str()), ("True", "S3Error"));
    assert!(reconciling.message.contains("Still Ready") && reconciling.message.contains("SlowDown"));
    // The status still shows the last complete validation.
    assert_eq!(c.status.as_ref().unwrap().last_validated_time, last.status.as_ref().unwrap().last_validated_time);

    faults::set(&t.bucket, json!({})).await;
    let c = t.revalidate("c").await;
    assert!(is_ready(&c) && condition(&c, "Reconciling").is_none(), "{:?}", c.status);
    let events = event_reasons(&t.client, &t.ns).await;
    assert!(!events.iter().any(|(_, type_, _)| type_ == "Warning"), "warnings: {events:?}");
    t.assert_no_secrets().await;
}

#[tokio::test]
async fn half_of_all_requests_slowed_down_still_reaches_ready() {
    let _timer = crate::timed!();
    let t = Tenant::new("slowdown").await;
    faults::set(&t.bucket, json!({"every": 2, "status": 503, "code": "SlowDown"})).await;
    t.connection("c", json!({"endpoint": support::env().s3_fault_proxy})).await;
    let mut c = wait_for(&t.client, &t.ns, "c", "a first validation", |c| condition(c, "Ready").is_some()).await;
    // Each validation retries what S3 asked to slow down; a new one is asked for rather
    // than waiting out the backoff.
    for _ in 0..8 {
        if is_ready(&c) {
            break;
        }
        c = t.revalidate("c").await;
    }
    assert!(is_ready(&c), "never Ready: {:?}", c.status);
    // Every second request, not a random half: a random share of a handful of requests
    // sometimes slowed down none of them, and the test proved nothing.
    let (requests, injected) = faults::stats(&t.bucket).await;
    assert!(injected >= 1 && injected * 2 >= requests - 1, "{injected} of {requests} requests were slowed down");
    faults::set(&t.bucket, json!({})).await;
}

#[tokio::test]
async fn a_4xx_that_is_no_permission_problem_is_stalled_not_retried_as_transient() {
    let _timer = crate::timed!();
    let t = Tenant::new("http431").await;
    faults::set(&t.bucket, json!({"share": 1.0, "status": 431, "code": "RequestHeaderFieldsTooLarge"})).await;
    t.connection("c", json!({"endpoint": support::env().s3_fault_proxy})).await;
    let c =
        wait_for(&t.client, &t.ns, "c", "S3RequestRejected", |c| has(c, "Ready", "False", "S3RequestRejected")).await;
    assert!(has(&c, "Stalled", "True", "S3RequestRejected"), "{:?}", c.status);
    assert!(condition(&c, "Reconciling").is_none());
    let message = &condition(&c, "Ready").unwrap().message;
    assert!(message.contains("RequestHeaderFieldsTooLarge") && !message.contains("retrying with backoff"), "{message}");
    faults::set(&t.bucket, json!({})).await;
}

/// The bucket's CORS configuration exactly as the store has it (the XML, not a reading).
async fn raw_cors(bucket: &str) -> String {
    let url = format!("{}/{bucket}?cors", support::env().s3_endpoint);
    let request = http::Request::get(url).body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
    let (status, body) = support::http::send(support::sign::signed(request, b"", "s3", &support::env().s3_admin)).await;
    assert!(status.is_success(), "GetBucketCors: {status} {body}");
    body
}

#[tokio::test]
async fn a_cors_answer_that_is_not_s3s_leaves_the_bucket_s_rules_alone() {
    let _timer = crate::timed!();
    let t = Tenant::new("cors-html").await;
    let rule = |id: &str, origin: &str| {
        aws_sdk_s3::types::CorsRule::builder().id(id).allowed_origins(origin).allowed_methods("PUT").build().unwrap()
    };
    let configuration = aws_sdk_s3::types::CorsConfiguration::builder()
        .cors_rules(rule("website", "https://www.example.com"))
        .cors_rules(rule("uploads", "https://upload.example.com"))
        .build()
        .unwrap();
    s3::admin("us-east-1").put_bucket_cors().bucket(&t.bucket).cors_configuration(configuration).send().await.unwrap();
    let before = raw_cors(&t.bucket).await;
    assert!(before.contains("website") && before.contains("uploads"), "{before}");

    // A TLS-inspecting proxy's page, with a 200, for GetBucketCors only.
    let page = "<!DOCTYPE html><html><head><title>Access policy</title></head><body>Blocked</body></html>";
    faults::set(
        &t.bucket,
        json!({"method": "GET", "query": "cors", "status": 200, "body": page, "content_type": "text/html"}),
    )
    .await;
    t.connection("c", json!({"endpoint": support::env().s3_fault_proxy})).await;
    let c = wait_for(&t.client, &t.ns, "c", "S3AnswerUnreadable", |c| {
        has(c, "CorsConfigured", "False", "S3AnswerUnreadable")
    })
    .await;
    let message = &condition(&c, "CorsConfigured").unwrap().message;
    assert!(
        message.contains("s3:GetBucketCORS") && message.contains("not S3's") && message.contains("text/html"),
        "{message}"
    );
    assert!(message.contains("left as it is"), "{message}");
    assert!(has(&c, "Ready", "False", "S3AnswerUnreadable"), "{:?}", c.status);
    let (_, injected) = faults::stats(&t.bucket).await;
    assert!(injected > 0, "the page was never served: the test proves nothing");
    // Validated again, still nothing written.
    t.revalidate("c").await;
    faults::set(&t.bucket, json!({})).await;
    assert_eq!(raw_cors(&t.bucket).await, before, "the bucket's CORS configuration changed");
    t.assert_no_secrets().await;
}

#[tokio::test]
async fn a_location_that_is_no_region_is_a_condition_and_check_exits_one() {
    let _timer = crate::timed!();
    let t = Tenant::new("location-lf").await;
    let answer = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">eu&#10;west</LocationConstraint>";
    faults::set(
        &t.bucket,
        json!({"method": "GET", "query": "location", "status": 200, "body": answer, "content_type": "application/xml"}),
    )
    .await;
    t.connection("c", json!({"endpoint": support::env().s3_fault_proxy})).await;
    let c = wait_for(&t.client, &t.ns, "c", "S3AnswerUnreadable", |c| {
        has(c, "BucketReachable", "False", "S3AnswerUnreadable")
    })
    .await;
    let message = &condition(&c, "BucketReachable").unwrap().message;
    assert!(message.contains("s3:GetBucketLocation") && message.contains(r#""eu\nwest""#), "{message}");
    assert!(has(&c, "Ready", "False", "S3AnswerUnreadable"), "{:?}", c.status);
    // Not taken for us-east-1: nothing else was probed in a region nobody named.
    assert_eq!(c.status.as_ref().unwrap().region.as_deref(), None, "{:?}", c.status);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3connect"))
        .args(["check", "--uri", &format!("s3://{}/images/", t.bucket), "--endpoint", &support::env().s3_fault_proxy])
        .args(["--force-path-style"])
        .env("AWS_ACCESS_KEY_ID", &t.keys.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &t.keys.secret_access_key)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("S3AnswerUnreadable") && !text.contains("panicked"), "{text}");
    let (_, injected) = faults::stats(&t.bucket).await;
    assert!(injected >= 2, "the location was not answered by the proxy: the test proves nothing");
    faults::set(&t.bucket, json!({})).await;
}

#[tokio::test]
async fn a_server_error_s_request_ids_are_in_the_condition() {
    let _timer = crate::timed!();
    let t = Tenant::new("request-id").await;
    let headers = json!({"x-amz-request-id": "4442587FB7D0A2F9", "x-amz-id-2": "fault/Extended+Id2="});
    faults::set(&t.bucket, json!({"status": 500, "code": "InternalError", "headers": headers})).await;
    t.connection("c", json!({"endpoint": support::env().s3_fault_proxy})).await;
    let c = wait_for(&t.client, &t.ns, "c", "S3Error", |c| has(c, "BucketReachable", "False", "S3Error")).await;
    let message = &condition(&c, "BucketReachable").unwrap().message;
    assert!(message.contains("InternalError"), "{message}");
    assert!(
        message.contains("request id 4442587FB7D0A2F9, extended request id fault/Extended+Id2="),
        "no request id: {message}"
    );
    faults::set(&t.bucket, json!({})).await;
}

#[tokio::test]
async fn connections_sharing_a_bucket_with_different_origins_keep_both_rules() {
    let _timer = crate::timed!();
    let t = Tenant::new("shared-cors").await;
    let foreign = aws_sdk_s3::types::CorsRule::builder()
        .id("website")
        .allowed_origins("https://www.example.com")
        .allowed_methods("PUT")
        .build()
        .unwrap();
    s3::admin("us-east-1")
        .put_bucket_cors()
        .bucket(&t.bucket)
        .cors_configuration(aws_sdk_s3::types::CorsConfiguration::builder().cors_rules(foreign).build().unwrap())
        .send()
        .await
        .unwrap();
    t.connection("a", json!({"cors": {"allowedOrigins": ["https://a.example"]}})).await;
    t.connection("b", json!({"cors": {"allowedOrigins": ["https://b.example"]}})).await;
    t.ready("a").await;
    t.ready("b").await;
    let rules = || async {
        let out = s3::admin("us-east-1").get_bucket_cors().bucket(&t.bucket).send().await.unwrap();
        // Read back with the SDK: an independent reader of what the operator wrote.
        let rules: Vec<s3connect::s3::cors::CorsRule> = out
            .cors_rules()
            .iter()
            .map(|r| s3connect::s3::cors::CorsRule {
                id: r.id().map(str::to_owned),
                allowed_origins: r.allowed_origins().to_vec(),
                allowed_methods: r.allowed_methods().to_vec(),
                allowed_headers: r.allowed_headers().to_vec(),
                expose_headers: r.expose_headers().to_vec(),
                max_age_seconds: r.max_age_seconds(),
            })
            .collect();
        s3connect::s3::cors::to_json(&rules)
    };
    let before = rules().await;
    let ids: Vec<&str> = before["CORSRules"].as_array().unwrap().iter().filter_map(|r| r["ID"].as_str()).collect();
    assert_eq!(ids.len(), 3, "{before}");
    assert!(ids.contains(&"website"), "the foreign rule survived: {before}");
    for _ in 0..3 {
        for name in ["a", "b"] {
            let c = t.revalidate(name).await;
            let status = c.status.as_ref().unwrap();
            assert_eq!(serde_json::to_value(status.cors).unwrap(), "AlreadyPresent", "{name} wrote CORS again");
            assert!(is_ready(&c));
        }
    }
    assert_eq!(rules().await, before, "the bucket's CORS configuration changed");
    t.assert_no_secrets().await;
}

#[tokio::test]
async fn the_allow_list_is_checked_against_the_host_actually_contacted() {
    let _timer = crate::timed!();
    let t = Tenant::new("vhost").await;
    let port = support::env().s3_endpoint.rsplit(':').next().unwrap().to_owned();
    // Virtual-hosted addressing sends to <bucket>.<host>: a host the admin never allowed.
    t.connection(
        "virtual",
        json!({"endpoint": format!("http://s3-virtual.localhost:{port}"), "forcePathStyle": false}),
    )
    .await;
    let c = wait_for(&t.client, &t.ns, "virtual", "EndpointNotAllowed", |c| {
        has(c, "BucketReachable", "False", "EndpointNotAllowed")
    })
    .await;
    let message = &condition(&c, "BucketReachable").unwrap().message;
    assert!(message.contains(&format!("http://{}.s3-virtual.localhost:{port}", t.bucket)), "{message}");
    // Path style on the same allowed host gets past the allow-list (and names the URL used).
    t.connection("path", json!({})).await;
    let c = t.ready("path").await;
    assert_eq!(c.status.as_ref().unwrap().endpoint.as_deref(), Some(support::env().s3_endpoint.as_str()));
}

#[tokio::test]
async fn the_vendor_guides_policies_work_exactly_as_written() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let ns = support::namespace(&client, "guide").await;
    let bucket = s3::bucket("guide", "us-east-1").await;
    s3::put(&bucket, "images/cat.jpg", b"a cat").await;
    // The import and export policies of the vendor's "Connect AWS S3" guide, word for word
    // (`s3:GetBucketCors`, `s3:PutBucketCors`, objects as `bucket/*`), in one document.
    let object = format!("arn:aws:s3:::{bucket}/*");
    let bucket_arn = format!("arn:aws:s3:::{bucket}");
    let guide = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "S3ObjectAccess", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": object},
        {"Sid": "S3BucketReadAccess", "Effect": "Allow",
         "Action": ["s3:ListBucket", "s3:GetBucketCors", "s3:GetBucketLocation"], "Resource": bucket_arn},
        {"Sid": "S3PutCorsAccess", "Effect": "Allow", "Action": ["s3:PutBucketCors"], "Resource": bucket_arn},
        {"Sid": "S3ObjectWriteDeleteAccess", "Effect": "Allow", "Action": ["s3:PutObject", "s3:DeleteObject"], "Resource": object},
        {"Sid": "S3BucketListAccess", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": bucket_arn},
    ]});
    let keys = iam::user_with_policy("guide", &guide).await;
    support::keys_secret(&client, &ns, "keys", &keys).await;
    support::s3_connection(&client, &ns, "c", &bucket, "keys", json!({"usage": ["Import", "Export"]})).await;
    let c = wait_for(&client, &ns, "c", "Ready", is_ready).await;
    let cors = condition(&c, "CorsConfigured").unwrap();
    assert_eq!((cors.status.as_str(), cors.reason.as_str()), ("True", "CorsApplied"));
}

/// Starts a private operator at `level` in its own namespace and returns what it logged
/// while validating a connection with a session token and one without.
async fn validate_with_logging_at(level: &str, purpose: &str) -> (String, Vec<String>) {
    let client = support::client().await;
    let ns = crate::support::operator::private_namespace(purpose);
    let namespace = k8s_openapi::api::core::v1::Namespace {
        metadata: ObjectMeta { name: Some(ns.clone()), ..Default::default() },
        ..Default::default()
    };
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let bucket = s3::bucket(purpose, "us-east-1").await;
    s3::put(&bucket, "images/cat.jpg", b"a cat").await;
    let location = Location::parse(&format!("{bucket}/images/")).unwrap();
    let keys =
        iam::user_with_policy(purpose, &policy(&location, None, &required(&[Usage::Import], CorsMode::Apply))).await;
    let token = format!("FwoGZXIvYXdzE{}TOKEN", fastrand::u64(..));
    support::keys_secret(&client, &ns, "keys", &keys).await;
    let with_token = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token-keys"},
        "stringData": {"AWS_ACCESS_KEY_ID": keys.access_key_id, "AWS_SECRET_ACCESS_KEY": keys.secret_access_key,
                       "AWS_SESSION_TOKEN": token}});
    Api::<Secret>::namespaced(client.clone(), &ns)
        .patch("token-keys", &PatchParams::apply("test").force(), &Patch::Apply(&with_token))
        .await
        .unwrap();
    let log = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("operator-{purpose}-{}.log", std::process::id()));
    let mut child = crate::support::operator::spawn_with_log_level(&log, level, &["--namespace", &ns]);
    support::s3_connection(&client, &ns, "c", &bucket, "keys", json!({})).await;
    support::s3_connection(&client, &ns, "t", &bucket, "token-keys", json!({})).await;
    let api = Api::<S3Connection>::namespaced(client.clone(), &ns);
    let every = Duration::from_millis(200);
    support::wait_for(format!("c Ready and t judged under {level}"), Duration::from_secs(60), every, || async {
        let c = api.get("c").await.unwrap();
        let t = api.get("t").await.unwrap();
        if is_ready(&c) && condition(&t, "Ready").is_some() {
            Ok(())
        } else {
            Err(format!("c: {:?}; t: {:?}", c.status, t.status))
        }
    })
    .await;
    drop(child.stdin.take());
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    (text, vec![keys.access_key_id, keys.secret_access_key, token])
}

#[tokio::test]
async fn no_key_material_reaches_the_log_at_debug_or_trace() {
    let _timer = crate::timed!();
    for (level, purpose) in [("debug", "log-debug"), ("trace", "log-trace")] {
        let (text, secrets) = validate_with_logging_at(level, purpose).await;
        assert!(text.lines().count() > 50, "{level}: the log is too short to prove anything");
        assert!(text.contains("\"validated\"") || text.contains("validated"), "{level}: no validation logged");
        for s in secrets {
            assert!(!text.contains(&s), "{level}: key material in the log ({} chars)", s.len());
        }
    }
}

#[tokio::test]
async fn after_an_api_server_restart_new_objects_are_reconciled_within_seconds() {
    let _timer = crate::timed!();
    // A private control plane: restarting the shared one would disturb every other test.
    let support::Private { mut launcher, kubeconfig, run_dir, client } = support::private(&[]).await;
    let ns = support::namespace(&client, "restart-api").await;
    let bucket = s3::bucket("restart-api", "us-east-1").await;
    s3::put(&bucket, "images/cat.jpg", b"a cat").await;
    let location = Location::parse(&format!("{bucket}/images/")).unwrap();
    let keys =
        iam::user_with_policy("restart", &policy(&location, None, &required(&[Usage::Import], CorsMode::Apply))).await;
    support::keys_secret(&client, &ns, "keys", &keys).await;
    let log = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("operator-restart-api-{}.log", std::process::id()));
    let mut operator = crate::support::operator::spawn_with(&log, &kubeconfig, &[]);
    let api = Api::<S3Connection>::namespaced(client.clone(), &ns);
    let ready = |name: &'static str| {
        let api = api.clone();
        async move {
            let every = Duration::from_millis(100);
            support::wait_for(format!("{name} Ready"), Duration::from_secs(30), every, || async {
                match api.get(name).await {
                    Ok(c) if is_ready(&c) => Ok(()),
                    Ok(c) => Err(format!("{:?}", c.status)),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await
        }
    };
    support::s3_connection(&client, &ns, "before", &bucket, "keys", json!({})).await;
    ready("before").await;

    support::restart_apiserver(&run_dir, &client).await;
    // A watch left dead by the restart would be noticed only at its timeout (minutes): the
    // 30 s deadline of `ready` is generous against the second or so this takes.
    let started = Instant::now();
    support::s3_connection(&client, &ns, "after", &bucket, "keys", json!({})).await;
    ready("after").await;
    support::figure("a connection created after an API server restart Ready", started.elapsed());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("RBAC"), "an API server outage was blamed on RBAC");
    drop(operator.stdin.take());
    let _ = operator.wait();
    drop(launcher.stdin.take());
    let _ = launcher.wait();
}

/// A store that answers nothing at all (every request hangs) is down, not flaky: Ready stays
/// True only for the short unreachable grace, then turns False by itself, while sporadic
/// failures keep the long transient grace (above) and an unrelated connection stays Ready.
#[tokio::test]
async fn a_store_that_answers_nothing_turns_ready_false_after_the_unreachable_grace() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let ns = crate::support::operator::private_namespace("down");
    support::named_namespace(&client, &ns).await;
    let t = Tenant::in_namespace(client, ns, "down", &[Usage::Import]).await;
    let log =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("operator-down-{}.log", std::process::id()));
    let mut operator = crate::support::operator::spawn(
        &log,
        &["--namespace", &t.ns, "--unreachable-grace", "3", "--validation-timeout", "2"],
    );
    t.connection("c", json!({"endpoint": support::env().s3_fault_proxy})).await;
    t.connection("healthy", json!({})).await;
    t.ready("c").await;
    t.ready("healthy").await;

    faults::set(&t.bucket, json!({"hang": true})).await;
    let held = t.revalidate("c").await;
    assert!(is_ready(&held), "Ready flipped before the grace: {:?}", held.status);
    let reconciling = condition(&held, "Reconciling").expect("Reconciling says what is retried");
    assert_eq!(reconciling.reason, "EndpointUnreachable");
    assert!(reconciling.message.contains("Ready turns False if this lasts 3 s"), "{}", reconciling.message);
    // By itself, with no further request.
    let down =
        wait_for(&t.client, &t.ns, "c", "Ready False", |c| has(c, "Ready", "False", "EndpointUnreachable")).await;
    assert!(has(&down, "BucketReachable", "False", "EndpointUnreachable"), "{:?}", down.status);
    let (_, injected) = faults::stats(&t.bucket).await;
    assert!(injected > 0, "no request was held: the test proves nothing");
    let healthy = t.api().get("healthy").await.unwrap();
    assert!(is_ready(&healthy), "an unrelated connection was affected: {:?}", healthy.status);

    faults::set(&t.bucket, json!({})).await;
    let back = t.revalidate("c").await;
    assert!(is_ready(&back), "not Ready again once the store answers: {:?}", back.status);
    drop(operator.stdin.take());
    assert!(operator.wait().unwrap().success());
}

/// A change of a Secret's labels or annotations is no change of its keys: no validation, no
/// S3 request, no new platform registration. New keys (or a request) still validate.
#[tokio::test]
async fn a_metadata_only_secret_change_makes_no_s3_request_and_no_platform_call() {
    let _timer = crate::timed!();
    let t = Tenant::new("meta-only").await;
    support::platform_secret(&t.client, &t.ns).await;
    t.connection(
        "c",
        json!({"endpoint": support::env().s3_fault_proxy, "platform": {"secretRef": {"name": "labellerr"}}}),
    )
    .await;
    let before = wait_for(&t.client, &t.ns, "c", "Registered", |c| {
        condition(c, "Registered").is_some_and(|r| r.status == "True")
    })
    .await;
    let owner = format!("{}/c", t.ns);
    let registered = platform::registrations(&owner).await;
    let (requests, _) = faults::stats(&t.bucket).await;
    let secrets = Api::<Secret>::namespaced(t.client.clone(), &t.ns);
    for n in 0..3 {
        let patch = json!({"metadata": {"annotations": {"example.com/touched": n.to_string()}, "labels": {"touched": n.to_string()}}});
        secrets.patch("keys", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }
    // Absence can only be shown by waiting: long enough for the watch and a reconcile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = t.api().get("c").await.unwrap();
    let (s_before, s_after) = (before.status.as_ref().unwrap(), after.status.as_ref().unwrap());
    assert_eq!(s_after.last_validated_time, s_before.last_validated_time, "a metadata-only change validated again");
    assert_eq!(faults::stats(&t.bucket).await.0, requests, "a metadata-only change sent S3 requests");
    assert_eq!(platform::registrations(&owner).await, registered, "a metadata-only change touched the registration");
    assert!(s_after.credentials_digest.as_deref().is_some_and(|d| d.len() == 16), "{s_after:?}");
    // The positive control: a request does validate, through the same counter.
    let c = t.revalidate("c").await;
    assert!(is_ready(&c));
    assert!(
        faults::stats(&t.bucket).await.0 > requests,
        "a requested validation sent no S3 request: the counter proves nothing"
    );
    t.assert_no_secrets().await;
    let shown = everything_shown(&t.client, &t.ns).await;
    assert!(!shown.contains(&t.keys.secret_access_key));
}

/// Validations of one object are spaced: requests in a loop cannot make the operator probe
/// S3 faster than --min-validation-spacing.
#[tokio::test]
async fn requests_in_a_loop_are_spaced() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let ns = crate::support::operator::private_namespace("spacing");
    support::named_namespace(&client, &ns).await;
    let t = Tenant::in_namespace(client, ns, "spacing", &[Usage::Import]).await;
    let log = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("operator-spacing-{}.log", std::process::id()));
    let mut operator = crate::support::operator::spawn(&log, &["--namespace", &t.ns, "--min-validation-spacing", "3"]);
    t.connection("c", json!({"endpoint": support::env().s3_fault_proxy})).await;
    t.ready("c").await;
    // What one validation of a Ready connection sends (the first one also applied CORS).
    let (first, _) = faults::stats(&t.bucket).await;
    t.revalidate("c").await;
    let (start, _) = faults::stats(&t.bucket).await;
    let one_validation = start - first;
    assert!(one_validation > 0);
    let mut last = String::new();
    for n in 0..6 {
        last = format!("loop-{n}");
        let patch = json!({"metadata": {"annotations": {"s3connect.io/requested-at": last}}});
        t.api().patch("c", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = wait_for(&t.client, &t.ns, "c", "the last request handled", |c| {
        c.status.as_ref().and_then(|s| s.last_handled_reconcile_at.as_deref()) == Some(last.as_str())
    })
    .await;
    assert!(is_ready(&c));
    let (total, _) = faults::stats(&t.bucket).await;
    // Six requests within 0.6 s: at most two validations (one when the spacing allows, one
    // for the newest request), never six.
    let validations = (total - start) as f64 / one_validation as f64;
    assert!((1.0..=2.0).contains(&validations), "{validations} validations for six requests");
    drop(operator.stdin.take());
    assert!(operator.wait().unwrap().success());
}
