//! The test environment is the real thing: a real API server of the pinned version, and
//! an S3 server that enforces IAM per action.

use aws_sdk_s3::error::ProvideErrorMetadata;
use s3connect::s3::client::Keys;

use crate::support::{self, iam, s3};

#[tokio::test]
async fn apiserver_is_the_pinned_upstream_version() {
    let _timer = crate::timed!();
    let info = support::client().await.apiserver_version().await.expect("GET /version");
    let pinned = std::fs::read_to_string(support::repo_root().join("testenv/versions.env")).unwrap();
    let pinned = pinned.lines().find_map(|l| l.strip_prefix("KUBERNETES_VERSION=")).expect("KUBERNETES_VERSION pinned");
    assert_eq!(info.git_version, pinned);
    assert_eq!(support::env().apiserver_version, pinned);
}

#[tokio::test]
async fn list_only_user_lists_but_is_denied_get_object() {
    let _timer = crate::timed!();
    let bucket = s3::bucket("list-only", "us-east-1").await;
    s3::put(&bucket, "images/cat.jpg", b"not really a jpeg").await;
    let keys =
        iam::user_with_policy("list-only", &iam::allow(&["s3:ListBucket"], &[format!("arn:aws:s3:::{bucket}")])).await;
    let user = s3::client_with(&keys, "us-east-1");

    let listed = user
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("images/")
        .max_keys(1)
        .send()
        .await
        .expect("ListBucket is allowed");
    let keys_listed: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys_listed, ["images/cat.jpg"]);

    let err =
        user.get_object().bucket(&bucket).key("images/cat.jpg").send().await.expect_err("GetObject is not allowed");
    assert_eq!(err.code(), Some("AccessDenied"), "{err:?}");
    let err = user.get_bucket_location().bucket(&bucket).send().await.expect_err("GetBucketLocation is not allowed");
    assert_eq!(err.code(), Some("AccessDenied"), "{err:?}");
}

#[tokio::test]
async fn unknown_keys_and_wrong_secrets_are_refused() {
    let _timer = crate::timed!();
    let bucket = s3::bucket("auth", "us-east-1").await;
    let unknown =
        Keys { access_key_id: "AKIAUNKNOWNUNKNOWN00".into(), secret_access_key: "x".repeat(40), session_token: None };
    let err =
        s3::client_with(&unknown, "us-east-1").list_objects_v2().bucket(&bucket).send().await.expect_err("unknown key");
    assert_eq!(err.code(), Some("InvalidAccessKeyId"), "{err:?}");

    let real = iam::user_with_policy("auth", &iam::allow(&["s3:*"], &["*".to_owned()])).await;
    let wrong = Keys { secret_access_key: "y".repeat(40), ..real };
    let err =
        s3::client_with(&wrong, "us-east-1").list_objects_v2().bucket(&bucket).send().await.expect_err("wrong secret");
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"), "{err:?}");
}
