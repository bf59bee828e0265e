//! Managed credentials through the real stack: an operator whose own AWS identity is an IAM
//! user holding exactly the policy `s3connect policy --operator` prints, the S3/IAM server
//! enforcing IAM per action, and the platform stand-in. The operator makes the user, its
//! policy and key, rotates the key without Ready ever going False, deletes the user with
//! the connection, and refuses buckets outside its list and calls IAM denies it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use s3connect::api::S3Connection;
use serde_json::{Value, json};

use crate::support::operator::{condition, everything_shown, private_namespace, spawn_with_env};
use crate::support::{self, env, faults, iam, platform, s3};

/// The operator's own policy, as the CLI prints it for the README.
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
    let mut last = None;
    for _ in 0..300 {
        if let Some(c) = api.get_opt(name).await.unwrap() {
            if done(&c) {
                return c;
            }
            last = c.status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{name}: {what} did not happen within 60 s; status: {}", serde_json::to_string_pretty(&last).unwrap());
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

#[tokio::test]
async fn the_operator_makes_rotates_and_deletes_the_iam_user_and_its_keys() {
    let client = support::client().await;
    let ns = private_namespace("managed");
    support::named_namespace(&client, &ns).await;
    let bucket = s3::bucket("managed", "us-east-1").await;
    s3::put(&bucket, "images/cat.jpg", b"cat").await;
    let elsewhere = s3::bucket("elsewhere", "us-east-1").await;
    s3::put(&elsewhere, "images/cat.jpg", b"cat").await;
    let platform = &env().platform;
    let data: BTreeMap<String, ByteString> = [
        ("LABELLERR_API_KEY", &platform.api_key),
        ("LABELLERR_API_SECRET", &platform.api_secret),
        ("LABELLERR_CLIENT_ID", &platform.client_id),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), ByteString(v.clone().into_bytes())))
    .collect();
    let secret = Secret {
        metadata: ObjectMeta { name: Some("labellerr".into()), ..Default::default() },
        data: Some(data),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &secret).await.unwrap();

    // The operator's identity: the documented policy's actions, nothing else. The test IAM
    // server matches IAM resources only as `*`, so the user ARNs are widened to that here
    // (the operator checks the path itself, tested below with a user outside it).
    let mut policy = operator_policy();
    for statement in policy["Statement"].as_array_mut().unwrap() {
        assert_eq!(statement["Resource"], "arn:aws:iam::*:user/s3connect/*");
        statement["Resource"] = json!("*");
    }
    let (operator_keys, operator_user) = iam::user_with_policy_named("operator", &policy).await;
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("operator-managed-{}.log", std::process::id()));
    let mut operator = spawn_with_env(
        &log,
        &["--namespace", &ns, "--managed-buckets", &format!("{bucket},no-such-*")],
        &[
            ("AWS_ACCESS_KEY_ID", &operator_keys.access_key_id),
            ("AWS_SECRET_ACCESS_KEY", &operator_keys.secret_access_key),
            // Through the fault proxy, to lose an answer below.
            ("AWS_ENDPOINT_URL_IAM", &env().s3_fault_proxy),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
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
    let mut done = None;
    for _ in 0..300 {
        let c = api.get("c").await.unwrap();
        assert!(ready(&c), "Ready went False during a rotation: {:?}", c.status);
        let m = managed(&c);
        if m["lastHandledRotateAt"] == "now-1" && m["retiringPreviousKey"] == false {
            done = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = done.expect("the rotation finished within 30 s");
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
    faults::set("", json!({"action": "CreateAccessKey", "lose_answer": true, "count": 1})).await;
    apply(&api, "lost", &bucket, false).await;
    let l = wait(&api, "lost", "Ready", ready).await;
    faults::set("", json!({})).await;
    let lost_user = format!("{ns}.lost");
    let keys = access_keys(&lost_user).await;
    let lost_secret = Api::<Secret>::namespaced(client.clone(), &ns).get("lost-s3connect-keys").await.unwrap();
    assert_eq!(keys.len(), 1, "the key whose answer was lost is still there: {keys:?}");
    assert_eq!(lost_secret.data.unwrap()["AWS_ACCESS_KEY_ID"].0, keys[0].as_bytes());
    assert_eq!(faults::stats("").await.1, 1, "the answer was not lost: the test proves nothing");
    assert!(ready(&l));

    // A bucket outside the operator's list: refused, and nothing is made in IAM.
    apply(&api, "outside", &elsewhere, false).await;
    let o = wait(&api, "outside", "ManagedBucketNotAllowed", |c| {
        condition(c, "CredentialsValid").is_some_and(|x| x.reason == "ManagedBucketNotAllowed")
    })
    .await;
    let message = &condition(&o, "CredentialsValid").unwrap().message;
    assert!(message.contains(&elsewhere) && message.contains("--managed-buckets"), "{message}");
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

    // Deletion: the key, the policy and the user go, then the S3Connection.
    for name in ["c", "denied", "outside", "foreign", "lost", "kept"] {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in ["c", "denied", "outside", "foreign", "lost", "kept"] {
        let mut gone = false;
        for _ in 0..150 {
            if api.get_opt(name).await.unwrap().is_none() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(gone, "{name} was not deleted: {:?}", api.get_opt(name).await.unwrap().map(|c| c.status));
    }
    assert!(!iam_get_user(&user).await, "the IAM user outlived its S3Connection");
    assert!(!iam_get_user(&format!("{ns}.denied")).await);
    assert!(iam_get_user(&foreign).await, "a user outside the operator's path was deleted");
    assert!(!iam_get_user(&format!("{ns}.lost")).await);
    assert!(iam_get_user(&format!("{ns}.kept")).await, "deletionPolicy Retain, yet the user was deleted");
    assert_eq!(access_keys(&format!("{ns}.kept")).await.len(), 1);
    assert!(registrations(&owner).await.is_empty());
    drop(operator.stdin.take());
    assert!(operator.wait().unwrap().success(), "the operator did not stop cleanly");
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
