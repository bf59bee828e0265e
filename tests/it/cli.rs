//! The operator process and the `check` command, as users run them.

use std::process::Command;
use std::time::Duration;

use kube::api::Api;
use s3connect::api::S3Connection;
use s3connect::s3::policy::{Action, policy};
use s3connect::s3::uri::Location;
use serde_json::Value;

use crate::support::operator::{condition, log_lines, spawn, wait_for};
use crate::support::{self, iam, s3};

fn check(uri: &str, keys: &s3connect::s3::client::Keys, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_s3connect"))
        .args(["check", "--uri", uri, "--endpoint", &support::env().s3_endpoint, "--force-path-style"])
        .args(extra)
        .env("AWS_ACCESS_KEY_ID", &keys.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &keys.secret_access_key)
        .output()
        .expect("running s3connect check");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains(&keys.secret_access_key) && !text.contains(&keys.access_key_id), "check printed a key");
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn check_exits_zero_when_ready_and_one_with_the_reason_when_not() {
    let bucket = s3::bucket("check", "us-east-1").await;
    s3::put(&bucket, "images/a.jpg", b"a").await;
    let uri = format!("s3://{bucket}/images/");
    let location = Location::parse(&uri).unwrap();

    let reader = iam::user_with_policy(
        "check-ok",
        &policy(
            &location,
            None,
            &[
                Action::GetBucketLocation,
                Action::ListBucket,
                Action::GetObject,
                Action::GetBucketCors,
                Action::PutBucketCors,
            ],
        ),
    )
    .await;
    // A look changes nothing: the missing CORS rule is reported, not added.
    let (code, table) = check(&uri, &reader, &[]);
    assert_eq!(code, 1, "{table}");
    assert!(
        table.contains("CONDITION") && table.contains("CorsRuleMissing") && table.contains("put-bucket-cors"),
        "{table}"
    );
    let err = s3::admin("us-east-1").get_bucket_cors().bucket(&bucket).send().await.expect_err("still no CORS rules");
    assert_eq!(aws_sdk_s3::error::ProvideErrorMetadata::code(&err), Some("NoSuchCORSConfiguration"));

    let (code, table) = check(&uri, &reader, &["--apply-cors"]);
    assert_eq!(code, 0, "{table}");
    assert!(table.contains("CorsApplied") && table.contains("Validated"), "{table}");
    assert!(table.contains("s3:GetObject") && table.contains("Allowed"), "{table}");

    let lister =
        iam::user_with_policy("check-bad", &policy(&location, None, &[Action::GetBucketLocation, Action::ListBucket]))
            .await;
    let (code, json_text) = check(&uri, &lister, &["--output", "json", "--cors-mode", "ignore"]);
    assert_eq!(code, 1, "{json_text}");
    let report: Value = serde_json::from_str(&json_text).expect("--output json prints JSON");
    assert_eq!(report["ready"], false);
    let ready = report["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!(ready["reason"], "GetObjectDenied");
    assert_eq!(report["missingPolicy"]["Statement"][0]["Action"][0], "s3:GetObject");
    assert!(report["s3Requests"].as_u64().unwrap() <= 7);

    let out = Command::new(env!("CARGO_BIN_EXE_s3connect"))
        .args(["check", "--uri", &uri])
        .env_remove("AWS_ACCESS_KEY_ID")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "no credentials is a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("AWS_ACCESS_KEY_ID"));

    // Bad keys: the remedy points at the variable to fix, not at a Secret.
    let unknown = s3connect::s3::client::Keys {
        access_key_id: "AKIAUNKNOWN000000001".into(),
        secret_access_key: "s".repeat(40),
        session_token: None,
    };
    let (code, table) = check(&uri, &unknown, &[]);
    assert_eq!(code, 1, "{table}");
    assert!(table.contains("InvalidAccessKeyId") && table.contains("the environment (AWS_ACCESS_KEY_ID)"), "{table}");
    assert!(!table.contains("Secret \""), "{table}");
}

#[tokio::test]
async fn a_ready_connection_is_not_validated_or_written_again_until_due() {
    let client = support::client().await;
    let ns = support::namespace(&client, "quiet").await;
    let bucket = s3::bucket("quiet", "us-east-1").await;
    s3::put(&bucket, "images/a.jpg", b"a").await;
    let location = Location::parse(&format!("{bucket}/images/")).unwrap();
    let keys = iam::user_with_policy(
        "quiet",
        &policy(
            &location,
            None,
            &s3connect::s3::policy::required(&[s3connect::api::connection::Usage::Import], Default::default()),
        ),
    )
    .await;
    support::keys_secret(&client, &ns, "keys", &keys).await;
    support::s3_connection(&client, &ns, "c", &bucket, "keys", serde_json::json!({})).await;
    let api = Api::<S3Connection>::namespaced(client.clone(), &ns);
    let ready =
        wait_for(&client, &ns, "c", "Ready", |c| condition(c, "Ready").is_some_and(|r| r.status == "True")).await;

    // Its own status write must not trigger another validation: a few seconds later the
    // object is unchanged and it was validated exactly once.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = api.get("c").await.unwrap();
    assert_eq!(later.metadata.resource_version, ready.metadata.resource_version, "status was written again");
    let owner = format!("{ns}/c");
    let validations =
        log_lines().iter().filter(|l| l["connection"] == owner.as_str() && l["message"] == "validated").count();
    assert_eq!(validations, 1);
}

#[test]
fn the_operator_stops_cleanly_on_sigterm() {
    let log = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("operator-sigterm-{}.log", std::process::id()));
    // A namespace of its own, so that it does not race the shared operator.
    let mut child = spawn(&log, &["--namespace", &crate::support::operator::private_namespace("sigterm")]);
    let started = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::fs::read_to_string(&log).unwrap_or_default().contains("operator starting")
    });
    assert!(started, "the operator did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
    std::thread::sleep(Duration::from_millis(500));
    drop(child.stdin.take()); // the wrapper sends SIGTERM
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "exit {status}: {text}");
    assert!(text.contains("s3connect operator stopped"), "{text}");
}
