//! Managed credentials through the real stack: an operator whose own AWS identity is an IAM
//! user holding exactly the policy `s3connect policy --operator` prints, the S3/IAM server
//! enforcing IAM per action, and the platform stand-in. The operator makes the user, its
//! policy and key, rotates the key without Ready ever going False, deletes the user with
//! the connection, serves only what an S3AccessGrant covers (revoking keys when a grant
//! narrows), and never adopts or deletes a user that is not provably its own.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use s3connect::api::{S3AccessGrant, S3Connection};
use serde_json::{Value, json};

use crate::support::operator::{condition, everything_shown, private_namespace, spawn_with_env};
use crate::support::{self, env, faults, iam, platform, s3};

/// The operator's own policy, as the CLI prints it for docs/managed-credentials.md.
fn operator_policy() -> Value {
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_s3connect")).args(["policy", "--operator"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("a JSON policy")
}

/// Whether the IAM user exists.
async fn iam_get_user(user: &str) -> bool {
    iam::try_call(&[("Action", "GetUser"), ("UserName", user)]).await.0.is_success()
}

async fn access_keys(user: &str) -> Vec<String> {
    let body = iam::call(&[("Action", "ListAccessKeys"), ("UserName", user)]).await;
    body.split("<AccessKeyId>").skip(1).filter_map(|s| s.split('<').next()).map(str::to_owned).collect()
}

async fn wait(api: &Api<S3Connection>, name: &str, what: &str, done: impl Fn(&S3Connection) -> bool) -> S3Connection {
    support::wait_for(format!("{name}: {what}"), Duration::from_secs(60), Duration::from_millis(200), || async {
        match api.get_opt(name).await.unwrap() {
            Some(c) if done(&c) => Ok(c),
            c => Err(serde_json::to_string_pretty(&c.and_then(|c| c.status)).unwrap()),
        }
    })
    .await
}

fn ready(c: &S3Connection) -> bool {
    condition(c, "Ready").is_some_and(|r| r.status == "True")
}

fn managed(c: &S3Connection) -> Value {
    serde_json::to_value(&c.status.as_ref().unwrap().managed_credentials).unwrap()
}

async fn apply(api: &Api<S3Connection>, name: &str, bucket: &str, platform: bool) {
    let mut spec = json!({"uri": format!("s3://{bucket}/images/"), "credentials": {"managed": {}},
        "endpoint": env().s3_endpoint, "forcePathStyle": true});
    if platform {
        spec["platform"] = json!({"secretRef": {"name": "labellerr"}});
    }
    let conn = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "S3Connection", "metadata": {"name": name}, "spec": spec});
    api.patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&conn)).await.unwrap();
}

use platform::registrations;

/// Creates (or replaces) a cluster-scoped S3AccessGrant.
async fn grant(client: &kube::Client, name: &str, spec: Value) {
    let g = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "S3AccessGrant", "metadata": {"name": name}, "spec": spec});
    Api::<S3AccessGrant>::all(client.clone())
        .patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&g))
        .await
        .unwrap();
}

/// The operator's identity for a test: the documented policy's actions, nothing else. The
/// test IAM server matches IAM resources only as `*`, so the user ARNs are widened to that
/// here (the operator checks the path and tags itself, tested with users outside them).
async fn operator_identity(hint: &str) -> (s3connect::s3::client::Keys, String, Value) {
    let mut policy = operator_policy();
    for statement in policy["Statement"].as_array_mut().unwrap() {
        let documented = if statement["Sid"] == "S3ConnectListUsers" { "*" } else { "arn:aws:iam::*:user/s3connect/*" };
        assert_eq!(statement["Resource"], documented);
        statement["Resource"] = json!("*");
    }
    let (keys, user) = iam::user_with_policy_named(hint, &policy).await;
    (keys, user, policy)
}

/// Starts a managed-credentials operator for `ns` as `keys`, with `extra` arguments.
fn managed_operator(
    log: &str,
    ns: &str,
    keys: &s3connect::s3::client::Keys,
    extra: &[&str],
) -> (std::process::Child, PathBuf) {
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("operator-{log}-{}.log", std::process::id()));
    // The admission policy is the chart's, proven in chart.rs against the operator's own
    // ServiceAccount; these operators run as the test admin, whom it does not confine.
    let mut args =
        vec!["--namespace", ns, "--lease-namespace", ns, "--managed-credentials", "--require-admission-policy=false"];
    args.extend_from_slice(extra);
    let child = spawn_with_env(
        &log,
        &args,
        &[
            ("AWS_ACCESS_KEY_ID", &keys.access_key_id),
            ("AWS_SECRET_ACCESS_KEY", &keys.secret_access_key),
            // Through the fault proxy, to lose an answer.
            ("AWS_ENDPOINT_URL_IAM", &env().s3_fault_proxy),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    (child, log)
}

fn reason_is(type_: &'static str, reason: &'static str) -> impl Fn(&S3Connection) -> bool {
    move |c| condition(c, type_).is_some_and(|x| x.reason == reason)
}

/// Whether `keys` can read `key` in `bucket` (S3 as the tenant would use the key).
async fn can_read(keys: &s3connect::s3::client::Keys, bucket: &str, key: &str) -> bool {
    s3::client_with(keys, "us-east-1").get_object().bucket(bucket).key(key).send().await.is_ok()
}

fn keys_in(secret: &Secret) -> s3connect::s3::client::Keys {
    let data = secret.data.as_ref().unwrap();
    let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    s3connect::s3::client::Keys {
        access_key_id: text("AWS_ACCESS_KEY_ID"),
        secret_access_key: text("AWS_SECRET_ACCESS_KEY"),
        session_token: None,
    }
}

#[tokio::test]
async fn the_operator_makes_rotates_and_deletes_the_iam_user_and_its_keys() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let ns = private_namespace("managed");
    support::named_namespace(&client, &ns).await;
    let bucket = s3::bucket("managed", "us-east-1").await;
    s3::put(&bucket, "images/cat.jpg", b"cat").await;
    let elsewhere = s3::bucket("elsewhere", "us-east-1").await;
    s3::put(&elsewhere, "images/cat.jpg", b"cat").await;
    support::platform_secret(&client, &ns).await;

    let (operator_keys, operator_user, policy) = operator_identity("operator").await;
    // The bucket is granted to this namespace (with Retain allowed); `elsewhere` is not.
    let installation = support::unique("mgd");
    grant(
        &client,
        &support::unique("grant"),
        json!({"namespaces": [ns], "buckets": [{"bucket": bucket}], "deletionPolicies": ["Delete", "Retain"]}),
    )
    .await;
    let (mut operator, log) = managed_operator(
        "managed",
        &ns,
        &operator_keys,
        &["--installation", &installation, "--min-rotation-interval", "0"],
    );
    let api = Api::<S3Connection>::namespaced(client.clone(), &ns);

    // Create: a fresh user under /s3connect/ with one key in a Secret the connection owns.
    apply(&api, "c", &bucket, true).await;
    let c = wait(&api, "c", "Ready", ready).await;
    let user = format!("{ns}.c");
    let m = managed(&c);
    assert_eq!((m["userName"].as_str(), m["userPath"].as_str()), (Some(user.as_str()), Some("/s3connect/")), "{m}");
    assert_eq!(m["secretName"], "c-s3connect-keys");
    let got = iam::call(&[("Action", "GetUser"), ("UserName", &user)]).await;
    assert!(got.contains("<Path>/s3connect/</Path>"), "{got}");
    let first = access_keys(&user).await;
    assert_eq!(first.len(), 1, "{first:?}");
    let secret = Api::<Secret>::namespaced(client.clone(), &ns).get("c-s3connect-keys").await.unwrap();
    assert_eq!(secret.metadata.owner_references.as_ref().unwrap()[0].uid, c.metadata.uid.clone().unwrap());
    assert_eq!(secret.data.as_ref().unwrap()["AWS_ACCESS_KEY_ID"].0, first[0].as_bytes());
    // Exactly the policy `s3connect policy` prints for this uri and usage.
    let got = iam::call(&[("Action", "GetUserPolicy"), ("UserName", &user), ("PolicyName", "s3connect")]).await;
    let document = got.split("<PolicyDocument>").nth(1).and_then(|s| s.split('<').next()).unwrap();
    let document = percent_decode(&document.replace("&quot;", "\""));
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_s3connect"))
        .args(["policy", "--uri", &format!("s3://{bucket}/images/"), "--usage", "import"])
        .output()
        .unwrap();
    let printed: Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&document).expect("a JSON policy"), printed);
    let owner = format!("{ns}/c");
    let before = registrations(&owner).await;
    assert_eq!(before.len(), 1, "{before:?}");

    // A key the Secret does not hold (an answer lost, one a person made): with it the user
    // is at AWS's two-key limit, and the rotation must still work and remove it.
    let stray = iam::call(&[("Action", "CreateAccessKey"), ("UserName", &user)]).await;
    let stray = stray.split("<AccessKeyId>").nth(1).and_then(|s| s.split('<').next()).unwrap().to_owned();
    assert_eq!(access_keys(&user).await.len(), 2);

    // Rotate now: Ready throughout; the registration is replaced; one (new) key is left.
    let rotate = json!({"metadata": {"annotations": {"s3connect.io/rotate-keys-at": "now-1"}}});
    api.patch("c", &PatchParams::default(), &Patch::Merge(&rotate)).await.unwrap();
    let c = support::wait_for("the rotation", Duration::from_secs(30), Duration::from_millis(100), || async {
        let c = api.get("c").await.unwrap();
        assert!(ready(&c), "Ready went False during a rotation: {:?}", c.status);
        let m = managed(&c);
        if m["lastHandledRotateAt"] == "now-1" && m["retiringPreviousKey"] == false {
            Ok(c)
        } else {
            Err(format!("{m}"))
        }
    })
    .await;
    let second = access_keys(&user).await;
    assert_eq!(second.len(), 1, "one key after a rotation: {second:?}");
    assert_ne!(second, first, "the key was not replaced");
    assert_ne!(second[0], stray, "the stray key was kept");
    let after = registrations(&owner).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after[0]["connection_id"], before[0]["connection_id"], "the platform registration was not replaced");
    assert_ne!(after[0]["name"], before[0]["name"], "registered under the old key's name");
    assert!(ready(&c));

    // CreateAccessKey happens in IAM but its answer is lost: the key is never sent again
    // blindly; the next attempt finds a key the Secret does not hold, deletes it, makes one.
    // Only this user's call: other tests' operators send their IAM calls through the proxy.
    let lost_user = format!("{ns}.lost");
    let slot = format!("iam:{lost_user}");
    faults::set(&slot, json!({"action": "CreateAccessKey", "lose_answer": true, "count": 1})).await;
    apply(&api, "lost", &bucket, false).await;
    let l = wait(&api, "lost", "Ready", ready).await;
    faults::set(&slot, json!({})).await;
    let keys = access_keys(&lost_user).await;
    let lost_secret = Api::<Secret>::namespaced(client.clone(), &ns).get("lost-s3connect-keys").await.unwrap();
    assert_eq!(keys.len(), 1, "the key whose answer was lost is still there: {keys:?}");
    assert_eq!(lost_secret.data.unwrap()["AWS_ACCESS_KEY_ID"].0, keys[0].as_bytes());
    assert_eq!(faults::stats(&slot).await.1, 1, "the answer was not lost: the test proves nothing");
    assert!(ready(&l));

    // A bucket no grant covers: refused, and nothing is made in IAM.
    apply(&api, "outside", &elsewhere, false).await;
    let o = wait(&api, "outside", "ManagedBucketNotAllowed", reason_is("CredentialsValid", "ManagedBucketNotAllowed"))
        .await;
    let message = &condition(&o, "CredentialsValid").unwrap().message;
    assert!(
        message.contains(&elsewhere) && message.contains("S3AccessGrant") && message.contains("secretRef"),
        "{message}"
    );
    assert_eq!(condition(&o, "Ready").unwrap().reason, "ManagedBucketNotAllowed");
    assert!(condition(&o, "Stalled").is_some_and(|s| s.status == "True"), "{:?}", o.status);
    assert!(!iam_get_user(&format!("{ns}.outside")).await, "a user was made for a bucket outside the list");

    // The operator may no longer create access keys: the reason names the IAM action.
    let mut without = policy.clone();
    for statement in without["Statement"].as_array_mut().unwrap() {
        statement["Action"].as_array_mut().unwrap().retain(|a| a != "iam:CreateAccessKey");
    }
    iam::put_user_policy(&operator_user, &without).await;
    apply(&api, "denied", &bucket, false).await;
    let d = wait(&api, "denied", "OperatorIamDenied", |c| {
        condition(c, "CredentialsValid").is_some_and(|x| x.reason == "OperatorIamDenied")
    })
    .await;
    let message = &condition(&d, "CredentialsValid").unwrap().message;
    assert!(message.contains("iam:CreateAccessKey") && message.contains("s3connect policy --operator"), "{message}");
    assert!(condition(&c, "Ready").is_some_and(|r| r.status == "True"), "c is unaffected");
    iam::put_user_policy(&operator_user, &policy).await;

    // A user of that name outside the operator's path is someone else's: never adopted,
    // and left alone when the connection goes.
    let foreign = format!("{ns}.foreign");
    iam::call(&[("Action", "CreateUser"), ("UserName", &foreign)]).await;
    apply(&api, "foreign", &bucket, false).await;
    let f = wait(&api, "foreign", "ManagedResourceConflict", |c| {
        condition(c, "CredentialsValid").is_some_and(|x| x.reason == "ManagedResourceConflict")
    })
    .await;
    let message = &condition(&f, "CredentialsValid").unwrap().message;
    assert!(message.contains(&foreign) && message.contains("secretRef"), "{message}");
    assert!(access_keys(&foreign).await.is_empty(), "a key was made for a user outside the path");

    // A person's user of that name under the operator's path, without the operator's tags:
    // never adopted, never given a key, left alone when the connection goes.
    let person = format!("{ns}.person");
    iam::call(&[("Action", "CreateUser"), ("UserName", &person), ("Path", "/s3connect/")]).await;
    apply(&api, "person", &bucket, false).await;
    let p =
        wait(&api, "person", "ManagedResourceConflict", reason_is("CredentialsValid", "ManagedResourceConflict")).await;
    let message = &condition(&p, "CredentialsValid").unwrap().message;
    assert!(message.contains(&person) && message.contains("did not make it"), "{message}");
    assert!(access_keys(&person).await.is_empty(), "a key was made for a person's user");

    // IAM wildcards and policy variables in a prefix are literals in the minted policy,
    // exactly as `s3connect policy` prints it.
    for (name, prefix, escaped) in [("star", "ima*/", "ima${*}/"), ("var", "${aws:username}/", "${$}{aws:username}/")] {
        let uri = format!("s3://{bucket}/{prefix}");
        let conn = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "S3Connection", "metadata": {"name": name}, "spec": {
            "uri": uri, "credentials": {"managed": {}}, "endpoint": env().s3_endpoint, "forcePathStyle": true}});
        api.patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&conn)).await.unwrap();
        let user = format!("{ns}.{name}");
        let what = "the managed user's policy put";
        let document = support::wait_for(what, Duration::from_secs(30), Duration::from_millis(200), || async {
            let (status, body) =
                iam::try_call(&[("Action", "GetUserPolicy"), ("UserName", &user), ("PolicyName", "s3connect")]).await;
            if status.is_success() { Ok(minted(&body)) } else { Err(status.to_string()) }
        })
        .await;
        let printed = std::process::Command::new(env!("CARGO_BIN_EXE_s3connect"))
            .args(["policy", "--uri", &uri, "--usage", "import"])
            .output()
            .unwrap();
        let printed: Value = serde_json::from_slice(&printed.stdout).unwrap();
        assert_eq!(document, printed);
        let text = document.to_string();
        assert!(text.contains(&format!("{bucket}/{escaped}*")), "{text}");
        assert!(!text.contains(&format!("/{prefix}")), "an unescaped prefix: {text}");
    }

    // deletionPolicy: Retain leaves the user (and its key) in IAM for a person.
    let kept = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "S3Connection", "metadata": {"name": "kept"}, "spec": {
        "uri": format!("s3://{bucket}/images/"), "credentials": {"managed": {"deletionPolicy": "Retain"}},
        "endpoint": env().s3_endpoint, "forcePathStyle": true}});
    api.patch("kept", &PatchParams::apply("test").force(), &Patch::Apply(&kept)).await.unwrap();
    wait(&api, "kept", "Ready", ready).await;

    // No key material anywhere the operator writes: status, events, its log.
    let mut shown = everything_shown(&client, &ns).await;
    shown.push_str(&std::fs::read_to_string(&log).unwrap());
    let secret = Api::<Secret>::namespaced(client.clone(), &ns).get("c-s3connect-keys").await.unwrap();
    let data = secret.data.unwrap();
    for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        assert!(!shown.contains(std::str::from_utf8(&data[key].0).unwrap()), "{key} was shown");
    }
    for id in first.iter().chain(&second).chain([&stray]) {
        assert!(!shown.contains(id.as_str()), "an access key id was shown");
    }
    assert!(!shown.contains(&operator_keys.access_key_id) && !shown.contains(&operator_keys.secret_access_key));

    // Managed credentials taken out of the spec: the IAM user and its Secret go with them.
    support::keys_secret(&client, &ns, "own-keys", &operator_keys).await;
    let lost_uid = l.metadata.uid.clone().unwrap();
    let switched = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "S3Connection", "metadata": {"name": "lost"}, "spec": {
        "uri": format!("s3://{bucket}/images/"), "credentials": {"secretRef": {"name": "own-keys"}},
        "endpoint": env().s3_endpoint, "forcePathStyle": true}});
    api.patch("lost", &PatchParams::apply("test").force(), &Patch::Apply(&switched)).await.unwrap();
    let l = wait(&api, "lost", "the managed finalizer removed", |c| {
        !c.metadata.finalizers.as_ref().is_some_and(|f| f.iter().any(|f| f == "s3connect.io/iam-user"))
    })
    .await;
    assert_eq!(l.metadata.uid.unwrap(), lost_uid);
    assert!(!iam_get_user(&lost_user).await, "the IAM user outlived managed credentials being switched off");
    assert!(Api::<Secret>::namespaced(client.clone(), &ns).get_opt("lost-s3connect-keys").await.unwrap().is_none());

    // Deletion: the key, the policy and the user go, then the S3Connection.
    let all = ["c", "denied", "outside", "foreign", "lost", "kept", "person", "star", "var"];
    for name in all {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in all {
        support::wait_for(
            format!("{name}'s deletion"),
            Duration::from_secs(30),
            Duration::from_millis(200),
            || async {
                match api.get_opt(name).await.unwrap() {
                    None => Ok(()),
                    Some(c) => Err(format!("{:?}", c.status)),
                }
            },
        )
        .await;
    }
    assert!(!iam_get_user(&user).await, "the IAM user outlived its S3Connection");
    assert!(!iam_get_user(&format!("{ns}.denied")).await);
    assert!(iam_get_user(&foreign).await, "a user outside the operator's path was deleted");
    assert!(iam_get_user(&person).await, "a person's user under the operator's path was deleted");
    assert!(!iam_get_user(&format!("{ns}.star")).await);
    assert!(iam_get_user(&format!("{ns}.kept")).await, "deletionPolicy Retain, yet the user was deleted");
    assert_eq!(access_keys(&format!("{ns}.kept")).await.len(), 1);
    assert!(registrations(&owner).await.is_empty());
    drop(operator.stdin.take());
    assert!(operator.wait().unwrap().success(), "the operator did not stop cleanly");
}

/// The policy document in a GetUserPolicy answer.
fn minted(body: &str) -> Value {
    let document = body.split("<PolicyDocument>").nth(1).and_then(|s| s.split('<').next()).unwrap();
    let document = percent_decode(&document.replace("&quot;", "\"").replace("&amp;", "&"));
    serde_json::from_str(&document).expect("a JSON policy")
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// Two teams, one operator installation sharded over two namespaces, and a second
/// installation in the same AWS account: each namespace gets only what its grant covers,
/// a narrowed grant revokes at once, quotas and rotation spacing hold, and no installation
/// touches another's users.
#[tokio::test]
async fn namespaces_get_only_what_a_grant_covers_and_installations_keep_apart() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let (ns_a, ns_b) = (private_namespace("mgda"), private_namespace("mgdb"));
    support::named_namespace(&client, &ns_a).await;
    support::named_namespace(&client, &ns_b).await;
    let bucket_a = s3::bucket("team-a", "us-east-1").await;
    let bucket_b = s3::bucket("team-b", "us-east-1").await;
    for b in [&bucket_a, &bucket_b] {
        s3::put(b, "images/cat.jpg", b"cat").await;
    }
    let (grant_a, grant_b) = (support::unique("grant-a"), support::unique("grant-b"));
    grant(&client, &grant_a, json!({"namespaces": [ns_a], "buckets": [{"bucket": bucket_a}]})).await;
    grant(&client, &grant_b, json!({"namespaces": [ns_b], "buckets": [{"bucket": bucket_b}]})).await;
    let (keys, _, _) = operator_identity("operator-mt").await;
    let installation = support::unique("mt");
    let (mut op_a, _) =
        managed_operator("mgda", &ns_a, &keys, &["--installation", &installation, "--min-rotation-interval", "0"]);
    let (mut op_b, log_b) = managed_operator(
        "mgdb",
        &ns_b,
        &keys,
        &["--installation", &installation, "--max-managed-per-namespace", "1", "--min-rotation-interval", "3600"],
    );
    let (api_a, api_b) = (
        Api::<S3Connection>::namespaced(client.clone(), &ns_a),
        Api::<S3Connection>::namespaced(client.clone(), &ns_b),
    );

    // B is served for its own bucket.
    apply(&api_b, "b1", &bucket_b, false).await;
    let b1 = wait(&api_b, "b1", "Ready", ready).await;
    assert_eq!(managed(&b1)["grant"], grant_b.as_str());

    // B asks for A's whole bucket, to read and write, and to keep the user: refused before
    // anything is made in IAM; the message names what is missing and who can fix it.
    let steal = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "S3Connection", "metadata": {"name": "steal"}, "spec": {
        "uri": format!("s3://{bucket_a}/"), "usage": ["Import", "Export"],
        "credentials": {"managed": {"deletionPolicy": "Retain"}}, "endpoint": env().s3_endpoint, "forcePathStyle": true}});
    api_b.patch("steal", &PatchParams::apply("test").force(), &Patch::Apply(&steal)).await.unwrap();
    let s = wait(&api_b, "steal", "ManagedBucketNotAllowed", reason_is("CredentialsValid", "ManagedBucketNotAllowed"))
        .await;
    let message = &condition(&s, "CredentialsValid").unwrap().message;
    assert!(message.contains(&bucket_a) && message.contains("cluster admin"), "{message}");
    assert!(condition(&s, "Stalled").is_some_and(|c| c.status == "True"), "{:?}", s.status);
    assert!(!iam_get_user(&format!("{ns_b}.steal")).await, "a user was made for another team's bucket");
    let none = Api::<Secret>::namespaced(client.clone(), &ns_b).get_opt("steal-s3connect-keys").await.unwrap();
    assert!(none.is_none(), "a key Secret was written for another team's bucket");

    // A is served for the same bucket.
    apply(&api_a, "a1", &bucket_a, false).await;
    let a1 = wait(&api_a, "a1", "Ready", ready).await;
    let user_a = format!("{ns_a}.a1");
    let tags = iam::call(&[("Action", "ListUserTags"), ("UserName", &user_a)]).await;
    for wanted in [ns_a.as_str(), "a1", a1.metadata.uid.as_deref().unwrap()] {
        assert!(tags.contains(&format!("<Value>{wanted}</Value>")), "{wanted} not in the user's tags: {tags}");
    }

    // B's quota is one IAM user: a second is refused, and nothing is made for it.
    apply(&api_b, "b2", &bucket_b, false).await;
    let b2 = wait(&api_b, "b2", "ManagedQuotaExceeded", reason_is("CredentialsValid", "ManagedQuotaExceeded")).await;
    let message = &condition(&b2, "CredentialsValid").unwrap().message;
    assert!(message.contains("at most 1") && message.contains("--max-managed-per-namespace"), "{message}");
    assert!(!iam_get_user(&format!("{ns_b}.b2")).await, "a user was made beyond the namespace's quota");

    // Rotation asked for again and again within --min-rotation-interval: waits, and says so.
    let user_b = format!("{ns_b}.b1");
    let before = access_keys(&user_b).await;
    for n in 0..5 {
        let rotate = json!({"metadata": {"annotations": {"s3connect.io/rotate-keys-at": format!("spam-{n}")}}});
        api_b.patch("b1", &PatchParams::default(), &Patch::Merge(&rotate)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let b1 = wait(&api_b, "b1", "the rotation shown as waiting", |c| !managed(c)["rotationWaitsUntil"].is_null()).await;
    assert!(ready(&b1));
    assert_eq!(access_keys(&user_b).await, before, "a rotation inside the minimum interval happened");
    let events = everything_shown(&client, &ns_b).await;
    assert!(
        events.contains("RotationWaits") && events.contains("--min-rotation-interval"),
        "no event says the rotation waits"
    );

    // A's grant narrowed to a prefix a1 is not under: its key stops working and is gone,
    // within one reconcile of the change; B is unaffected.
    let secret_a = Api::<Secret>::namespaced(client.clone(), &ns_a).get("a1-s3connect-keys").await.unwrap();
    let old_keys = keys_in(&secret_a);
    assert!(can_read(&old_keys, &bucket_a, "images/cat.jpg").await, "the managed key cannot read its own bucket");
    grant(&client, &grant_a, json!({"namespaces": [ns_a], "buckets": [{"bucket": bucket_a, "prefixes": ["other/"]}]}))
        .await;
    let a1 = wait(&api_a, "a1", "revoked", reason_is("CredentialsValid", "ManagedBucketNotAllowed")).await;
    let message = &condition(&a1, "CredentialsValid").unwrap().message;
    assert!(message.contains("\"other/\"") && message.contains("deactivated and deleted"), "{message}");
    assert!(access_keys(&user_a).await.is_empty(), "the revoked key is still in IAM");
    assert!(!can_read(&old_keys, &bucket_a, "images/cat.jpg").await, "the revoked key still reads the bucket");
    assert!(Api::<Secret>::namespaced(client.clone(), &ns_a).get_opt("a1-s3connect-keys").await.unwrap().is_none());
    assert!(managed(&a1).is_null(), "the status still names revoked credentials: {}", managed(&a1));
    assert!(ready(&api_b.get("b1").await.unwrap()), "B's connection was affected by A's grant");
    // Granted again: a new key, Ready.
    grant(&client, &grant_a, json!({"namespaces": [ns_a], "buckets": [{"bucket": bucket_a}]})).await;
    wait(&api_a, "a1", "Ready again", ready).await;
    assert_eq!(access_keys(&user_a).await.len(), 1);
    let served = Api::<S3AccessGrant>::all(client.clone());
    let what = "grant B's status counting its one connection";
    support::wait_for(what, Duration::from_secs(30), Duration::from_millis(200), || async {
        let g = served.get(&grant_b).await.unwrap();
        if g.status.as_ref().is_some_and(|s| {
            s.connections == 1 && s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
        }) {
            Ok(())
        } else {
            Err(format!("{:?}", g.status))
        }
    })
    .await;

    // A second installation in the same AWS account takes over A's namespace: it never
    // rotates, adopts or deletes the first installation's user.
    drop(op_a.stdin.take());
    assert!(op_a.wait().unwrap().success());
    let other = support::unique("other");
    let (mut op_other, _) =
        managed_operator("mgda2", &ns_a, &keys, &["--installation", &other, "--min-rotation-interval", "0"]);
    let keys_before = access_keys(&user_a).await;
    let rotate = json!({"metadata": {"annotations": {"s3connect.io/rotate-keys-at": "takeover"}}});
    api_a.patch("a1", &PatchParams::default(), &Patch::Merge(&rotate)).await.unwrap();
    let a1 =
        wait(&api_a, "a1", "ManagedResourceConflict", reason_is("CredentialsValid", "ManagedResourceConflict")).await;
    let message = &condition(&a1, "CredentialsValid").unwrap().message;
    assert!(message.contains("another s3connect installation"), "{message}");
    assert_eq!(access_keys(&user_a).await, keys_before, "another installation changed the user's keys");
    api_a.delete("a1", &DeleteParams::default()).await.unwrap();
    support::wait_for("a1's deletion", Duration::from_secs(30), Duration::from_millis(200), || async {
        api_a.get_opt("a1").await.unwrap().map_or(Ok(()), |_| Err("a1 is still there"))
    })
    .await;
    assert!(iam_get_user(&user_a).await, "another installation deleted the user");
    assert_eq!(access_keys(&user_a).await, keys_before);

    // No key material in what B's operator showed.
    let mut shown = everything_shown(&client, &ns_b).await;
    shown.push_str(&std::fs::read_to_string(&log_b).unwrap());
    let b_secret = Api::<Secret>::namespaced(client.clone(), &ns_b).get("b1-s3connect-keys").await.unwrap();
    let b_keys = keys_in(&b_secret);
    assert!(!shown.contains(&b_keys.access_key_id) && !shown.contains(&b_keys.secret_access_key));
    assert!(!shown.contains(&old_keys.secret_access_key));

    for (api, names) in [(&api_b, &["b1", "b2", "steal"][..])] {
        for name in names {
            api.delete(name, &DeleteParams::default()).await.unwrap();
        }
    }
    for name in ["b1", "b2", "steal"] {
        support::wait_for(format!("{name} deleted"), Duration::from_secs(30), Duration::from_millis(200), || async {
            match api_b.get_opt(name).await.unwrap() {
                None => Ok(()),
                Some(c) => Err(format!("{:?}", c.status)),
            }
        })
        .await;
    }
    assert!(!iam_get_user(&user_b).await, "B's user outlived its connection");
    for op in [&mut op_b, &mut op_other] {
        drop(op.stdin.take());
        assert!(op.wait().unwrap().success(), "an operator did not stop cleanly");
    }
}

/// A client that acts as `user` (impersonated by the test admin).
async fn client_as(user: &str) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(&env().kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    config.auth_info.impersonate = Some(user.to_owned());
    kube::Client::try_from(config).unwrap()
}

/// A tenant of `ns` with what the `edit` role (and the chart's aggregated s3connect role)
/// gives: S3Connections and Secrets, every verb, in its own namespace only.
async fn tenant(client: &kube::Client, ns: &str) -> kube::Client {
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let user = format!("tenant-{ns}");
    let role: Role = serde_json::from_value(json!({"metadata": {"name": "tenant"}, "rules": [
        {"apiGroups": ["s3connect.io"], "resources": ["s3connections"], "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]}]}))
    .unwrap();
    Api::<Role>::namespaced(client.clone(), ns).create(&PostParams::default(), &role).await.unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "tenant"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), ns).create(&PostParams::default(), &binding).await.unwrap();
    let tenant = client_as(&user).await;
    // RBAC is in force once the tenant can read its own namespace's connections.
    let connections = Api::<S3Connection>::namespaced(tenant.clone(), ns);
    support::wait_for("the tenant's Role in force", Duration::from_secs(10), Duration::from_millis(100), || async {
        connections.list(&Default::default()).await.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;
    tenant
}

async fn user_policy(user: &str) -> Option<Value> {
    let (status, body) =
        iam::try_call(&[("Action", "GetUserPolicy"), ("UserName", user), ("PolicyName", "s3connect")]).await;
    status.is_success().then(|| minted(&body))
}

/// Waits until `done` holds for what IAM says, or panics naming `what`.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    support::wait_for(what, Duration::from_secs(60), Duration::from_millis(200), || {
        let check = done();
        async move { if check.await { Ok(()) } else { Err("not yet") } }
    })
    .await
}

/// What IAM holds decides managed credentials, never what a tenant with the edit role can
/// write: a forged Secret annotation, a finalizer stripped in a script, a Secret deleted
/// in a loop, a Secret made in advance, a namespace label removed. Each as a tenant (or
/// an admin) would do it, asserting IAM's own state and what a copied key can still do.
#[tokio::test]
async fn iam_not_what_a_tenant_writes_decides_managed_credentials() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let ns = private_namespace("mgdt");
    let team = support::unique("team");
    let namespace: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": ns, "labels": {"team": team}}})).unwrap();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let tenant = tenant(&client, &ns).await;
    let bucket = s3::bucket("tenant", "us-east-1").await;
    for key in ["images/cat.jpg", "team/cat.jpg", "other/cat.jpg"] {
        s3::put(&bucket, key, b"cat").await;
    }
    let shared = s3::bucket("shared", "us-east-1").await;
    s3::put(&shared, &format!("{ns}/cat.jpg"), b"cat").await;
    // The namespace is granted by label; a shared bucket only under its own prefix.
    let by_label = support::unique("by-label");
    grant(
        &client,
        &by_label,
        json!({"namespaceSelector": {"matchLabels": {"team": team}}, "buckets": [
            {"bucket": bucket}, {"bucket": shared, "prefixes": ["{namespace}/"]}],
            "deletionPolicies": ["Delete", "Retain"]}),
    )
    .await;
    let (keys, _, _) = operator_identity("operator-tenant").await;
    let installation = support::unique("tn");
    let args = [
        "--installation",
        installation.as_str(),
        "--min-rotation-interval",
        "3600",
        "--max-managed-per-namespace",
        "3",
        "--managed-sweep-interval",
        "2",
        "--policy-change-spacing",
        "1",
    ];
    let (mut operator, first_log) = managed_operator("mgdt", &ns, &keys, &args);
    let api = Api::<S3Connection>::namespaced(tenant.clone(), &ns);
    let secrets = Api::<Secret>::namespaced(tenant.clone(), &ns);
    let conn = |name: &str, uri: String| {
        json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "S3Connection", "metadata": {"name": name}, "spec": {
            "uri": uri, "credentials": {"managed": {}}, "endpoint": env().s3_endpoint, "forcePathStyle": true}})
    };
    let create = |name: &'static str, uri: String| {
        let api = api.clone();
        let body = conn(name, uri);
        async move { api.create(&PostParams::default(), &serde_json::from_value(body).unwrap()).await.unwrap() }
    };

    // A finalizer stripped and the connection deleted in two requests sent back to back, as
    // a script would (where the chart's finalizer policy is not in force: chart.rs proves
    // it refuses this): the user and its key are gone within one sweep, and the copied key
    // no longer reads the bucket.
    // Its first key's answer is lost: a key nobody holds is replaced at once, though a key
    // was made within --min-rotation-interval (an hour here).
    let stripped_user = format!("{ns}.stripped");
    let slot = format!("iam:{stripped_user}");
    faults::set(&slot, json!({"action": "CreateAccessKey", "lose_answer": true, "count": 1})).await;
    create("stripped", format!("s3://{bucket}/images/")).await;
    wait(&api, "stripped", "Ready", ready).await;
    faults::set(&slot, json!({})).await;
    assert_eq!(faults::stats(&slot).await.1, 1, "the answer was not lost");
    assert_eq!(access_keys(&stripped_user).await.len(), 1, "the key whose answer was lost is still there");
    let copied = keys_in(&secrets.get("stripped-s3connect-keys").await.unwrap());
    assert!(can_read(&copied, &bucket, "images/cat.jpg").await);
    let strip = json!({"metadata": {"finalizers": null}});
    api.patch("stripped", &PatchParams::default(), &Patch::Merge(&strip)).await.unwrap();
    api.delete("stripped", &DeleteParams::default()).await.unwrap();
    eventually("the orphaned user deleted", || async { !iam_get_user(&stripped_user).await }).await;
    assert!(!can_read(&copied, &bucket, "images/cat.jpg").await, "the orphan's copied key still reads the bucket");
    // The event follows the deletion.
    eventually("an event saying the orphan was removed", || {
        let (client, ns) = (client.clone(), ns.clone());
        async move { everything_shown(&client, &ns).await.contains("OrphanedUserRemoved") }
    })
    .await;

    // The same while the operator is down: the sweep at its start finds the orphan.
    create("down", format!("s3://{bucket}/images/")).await;
    wait(&api, "down", "Ready", ready).await;
    let down_keys = keys_in(&secrets.get("down-s3connect-keys").await.unwrap());
    drop(operator.stdin.take());
    assert!(operator.wait().unwrap().success());
    api.patch("down", &PatchParams::default(), &Patch::Merge(&strip)).await.unwrap();
    api.delete("down", &DeleteParams::default()).await.unwrap();
    assert!(can_read(&down_keys, &bucket, "images/cat.jpg").await, "nothing revoked it yet: the test proves nothing");
    let (restarted, log) = managed_operator("mgdt-2", &ns, &keys, &args);
    operator = restarted;
    let down_user = format!("{ns}.down");
    eventually("the user orphaned while the operator was down deleted", || async { !iam_get_user(&down_user).await })
        .await;
    assert!(!can_read(&down_keys, &bucket, "images/cat.jpg").await, "the copied key still reads the bucket");

    // The policy-hash annotation a tenant forges is not what decides: IAM's own document is.
    create("wide", format!("s3://{bucket}/")).await;
    wait(&api, "wide", "Ready", ready).await;
    let wide_user = format!("{ns}.wide");
    let narrow = json!({"spec": {"uri": format!("s3://{bucket}/team/")}});
    api.patch("wide", &PatchParams::default(), &Patch::Merge(&narrow)).await.unwrap();
    let forged = json!({"metadata": {"annotations": {"s3connect.io/policy-hash": "0badc0de"}}});
    secrets.patch("wide-s3connect-keys", &PatchParams::default(), &Patch::Merge(&forged)).await.unwrap();
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_s3connect"))
        .args(["policy", "--uri", &format!("s3://{bucket}/team/"), "--usage", "import"])
        .output()
        .unwrap();
    let printed: Value = serde_json::from_slice(&printed.stdout).unwrap();
    eventually("IAM holding the narrow policy", || {
        let (user, printed) = (wide_user.clone(), printed.clone());
        async move { user_policy(&user).await == Some(printed) }
    })
    .await;
    let wide_keys = keys_in(&secrets.get("wide-s3connect-keys").await.unwrap());
    assert!(can_read(&wide_keys, &bucket, "team/cat.jpg").await);
    assert!(!can_read(&wide_keys, &bucket, "other/cat.jpg").await, "the narrowed key still reads other/");

    // The key Secret deleted in a loop: the operator makes no key sooner than
    // --min-rotation-interval after the last, whatever asks for it, and says so.
    create("looped", format!("s3://{bucket}/images/")).await;
    wait(&api, "looped", "Ready", ready).await;
    let looped_user = format!("{ns}.looped");
    let first = access_keys(&looped_user).await;
    assert_eq!(first.len(), 1);
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let _ = secrets.delete("looped-s3connect-keys", &DeleteParams::default()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let l = wait(&api, "looped", "IamWritesSpaced", reason_is("CredentialsValid", "IamWritesSpaced")).await;
    let message = &condition(&l, "CredentialsValid").unwrap().message;
    assert!(message.contains("--min-rotation-interval"), "{message}");
    assert_eq!(access_keys(&looped_user).await, first, "a key was made for a Secret deleted in a loop");

    // A prefix of a shared bucket: the key never holds the bucket-wide s3:PutBucketCORS.
    create("prefixed", format!("s3://{shared}/{ns}/")).await;
    let prefixed_user = format!("{ns}.prefixed");
    eventually("the prefixed user's policy", || {
        let user = prefixed_user.clone();
        async move { user_policy(&user).await.is_some() }
    })
    .await;
    let document = user_policy(&prefixed_user).await.unwrap().to_string();
    assert!(!document.contains("PutBucketCORS") && document.contains("GetBucketCORS"), "{document}");

    // A Secret made in advance with the operator's label, an ownerReference and a made-up
    // key: no proof in IAM that it holds this user's key, so it is never written to and
    // counts as no key; the namespace (at its cap of 3 users) gets no fourth.
    let premade = create("premade", format!("s3://{bucket}/images/")).await;
    let fake: Secret = serde_json::from_value(json!({"metadata": {"name": "premade-s3connect-keys",
        "labels": {"app.kubernetes.io/managed-by": "s3connect"},
        "ownerReferences": [{"apiVersion": "s3connect.io/v1alpha1", "kind": "S3Connection", "name": "premade",
            "uid": premade.metadata.uid.clone().unwrap(), "controller": true}]},
        "stringData": {"AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKEFAKE", "AWS_SECRET_ACCESS_KEY": "fake"}}))
    .unwrap();
    secrets.create(&PostParams::default(), &fake).await.unwrap();
    let p = wait(&api, "premade", "ManagedResourceConflict", reason_is("CredentialsValid", "ManagedResourceConflict"))
        .await;
    let message = &condition(&p, "CredentialsValid").unwrap().message;
    assert!(message.contains("premade-s3connect-keys") && message.contains("Delete the Secret"), "{message}");
    assert!(!iam_get_user(&format!("{ns}.premade")).await, "a user was made past the namespace's cap");
    let still = secrets.get("premade-s3connect-keys").await.unwrap();
    assert_eq!(still.data.unwrap()["AWS_ACCESS_KEY_ID"].0, b"AKIAFAKEFAKEFAKEFAKE", "the foreign Secret was written");

    // The namespace label the grant selected removed by an admin: every key is revoked at
    // once, and a copied key stops working.
    assert!(can_read(&wide_keys, &bucket, "team/cat.jpg").await);
    let unlabel = json!({"metadata": {"labels": {"team": null}}});
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&unlabel))
        .await
        .unwrap();
    let w = wait(&api, "wide", "revoked", reason_is("CredentialsValid", "ManagedBucketNotAllowed")).await;
    assert!(managed(&w).is_null(), "{}", managed(&w));
    assert!(access_keys(&wide_user).await.is_empty(), "IAM still holds the key of a namespace no grant selects");
    assert!(!can_read(&wide_keys, &bucket, "team/cat.jpg").await, "the copied key still reads after the label went");
    eventually("every key of the namespace revoked", || {
        let (a, b) = (looped_user.clone(), prefixed_user.clone());
        async move { access_keys(&a).await.is_empty() && access_keys(&b).await.is_empty() }
    })
    .await;

    // No key material in what the operator showed.
    let mut shown = everything_shown(&client, &ns).await;
    shown.push_str(&std::fs::read_to_string(&first_log).unwrap());
    shown.push_str(&std::fs::read_to_string(&log).unwrap());
    for k in [&copied, &wide_keys, &down_keys] {
        assert!(!shown.contains(&k.access_key_id) && !shown.contains(&k.secret_access_key), "a key was shown");
    }
    for name in ["wide", "looped", "prefixed", "premade"] {
        Api::<S3Connection>::namespaced(client.clone(), &ns).delete(name, &DeleteParams::default()).await.unwrap();
    }
    eventually("every user deleted with its connection", || {
        let (a, b, c) = (wide_user.clone(), looped_user.clone(), prefixed_user.clone());
        async move { !iam_get_user(&a).await && !iam_get_user(&b).await && !iam_get_user(&c).await }
    })
    .await;
    drop(operator.stdin.take());
    assert!(operator.wait().unwrap().success(), "the operator did not stop cleanly");
}

/// The installation's id is what proves a user the operator's own. Made anew (its
/// ConfigMap deleted), it is refused at start while IAM holds users of the earlier id,
/// saying how to adopt them; replaced by hand, every connection whose user carries the
/// earlier id shows a conflict, and its deletion keeps the finalizer and the keys rather
/// than report a revocation that did not happen. The old id put back, all goes on.
#[tokio::test]
async fn an_installation_id_made_anew_never_orphans_or_falsely_revokes_keys() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let _timer = crate::timed!();
    let client = support::client().await;
    let ns = private_namespace("mgdid");
    support::named_namespace(&client, &ns).await;
    let bucket = s3::bucket("instid", "us-east-1").await;
    s3::put(&bucket, "images/cat.jpg", b"cat").await;
    grant(&client, &support::unique("grant-id"), json!({"namespaces": [ns], "buckets": [{"bucket": bucket}]})).await;
    let (keys, _, _) = operator_identity("operator-id").await;
    let release = support::unique("rel");
    let args = ["--installation", release.as_str(), "--min-rotation-interval", "0"];
    let (mut first, _) = managed_operator("mgdid-1", &ns, &keys, &args);
    let api = Api::<S3Connection>::namespaced(client.clone(), &ns);
    apply(&api, "c", &bucket, false).await;
    wait(&api, "c", "Ready", ready).await;
    let user = format!("{ns}.c");
    let held = access_keys(&user).await;
    assert_eq!(held.len(), 1);
    drop(first.stdin.take());
    assert!(first.wait().unwrap().success());
    let maps = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let name = format!("{release}-installation");
    let old_id = maps.get(&name).await.unwrap().data.unwrap()["id"].clone();

    // The ConfigMap deleted: the operator refuses a new id and says how to adopt.
    maps.delete(&name, &DeleteParams::default()).await.unwrap();
    let (mut refused, log) = managed_operator("mgdid-2", &ns, &keys, &args);
    let said =
        support::wait_for("the refusal in the log", Duration::from_secs(30), Duration::from_millis(200), || async {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            if said.contains("put the old id back") { Ok(said) } else { Err(said) }
        })
        .await;
    assert!(said.contains("put the old id back") && said.contains(&old_id), "{said}");
    drop(refused.stdin.take());
    assert!(!refused.wait().unwrap().success(), "the operator ran with a new id");
    assert!(maps.get_opt(&name).await.unwrap().is_none(), "the refused id was kept");
    assert_eq!(access_keys(&user).await, held);

    // Replaced by hand with another id: a conflict, keys intact, the deletion held.
    let replaced: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": name}, "data": {"id": "someone-elses"}})).unwrap();
    maps.create(&PostParams::default(), &replaced).await.unwrap();
    let (mut other, _) = managed_operator("mgdid-3", &ns, &keys, &args);
    let rotate = json!({"metadata": {"annotations": {"s3connect.io/rotate-keys-at": "after-replace"}}});
    api.patch("c", &PatchParams::default(), &Patch::Merge(&rotate)).await.unwrap();
    let c = wait(&api, "c", "ManagedResourceConflict", reason_is("CredentialsValid", "ManagedResourceConflict")).await;
    let message = &condition(&c, "CredentialsValid").unwrap().message;
    assert!(message.contains(&old_id) && message.contains("cannot be proven"), "{message}");
    api.delete("c", &DeleteParams::default()).await.unwrap();
    let c = wait(&api, "c", "the deletion held", |c| {
        condition(c, "CredentialsValid")
            .is_some_and(|x| x.reason == "ManagedResourceConflict" && x.message.contains("keeps the finalizer"))
            && c.metadata.deletion_timestamp.is_some()
    })
    .await;
    assert!(c.metadata.finalizers.unwrap_or_default().iter().any(|f| f == "s3connect.io/iam-user"));
    assert_eq!(access_keys(&user).await, held, "keys changed by an installation that cannot prove them its own");
    drop(other.stdin.take());
    assert!(other.wait().unwrap().success());

    // The old id put back: the deletion completes, and the user goes with it.
    let restored = json!({"data": {"id": old_id}});
    maps.patch(&name, &PatchParams::default(), &Patch::Merge(&restored)).await.unwrap();
    let (mut back, _) = managed_operator("mgdid-4", &ns, &keys, &args);
    let what = "the deletion with the old id back";
    support::wait_for(what, Duration::from_secs(30), Duration::from_millis(200), || async {
        api.get_opt("c").await.unwrap().map_or(Ok(()), |_| Err("c is still there"))
    })
    .await;
    assert!(!iam_get_user(&user).await, "the user outlived its connection");
    drop(back.stdin.take());
    assert!(back.wait().unwrap().success());
}
