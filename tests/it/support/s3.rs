//! S3 fixtures: buckets and objects, made with the admin's keys.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use s3connect::s3::client::{Keys, Target};

use super::sdk::sdk;
use super::{env, unique};

/// The test S3 server (moto), in `region`, path style (as S3-compatible stores are used).
pub fn target(region: &str) -> Target {
    Store::Moto.target(region)
}

/// A client with `keys` against the test S3 server.
pub fn client_with(keys: &Keys, region: &str) -> aws_sdk_s3::Client {
    sdk(keys, &target(region))
}

/// A client with the admin's keys.
pub fn admin(region: &str) -> aws_sdk_s3::Client {
    Store::Moto.admin(region)
}

/// Creates a new, empty bucket in `region` and returns its name.
pub async fn bucket(hint: &str, region: &str) -> String {
    Store::Moto.bucket(hint, region).await
}

/// Writes `body` at `key` in `bucket`.
pub async fn put(bucket: &str, key: &str, body: &[u8]) {
    Store::Moto.put(bucket, key, body).await
}

/// An S3 server the failure-mode tests run against: moto grants per action with IAM user
/// policies; versitygw, a second implementation that checks every signature, grants its
/// accounts per action with bucket policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    Moto,
    Versitygw,
}

impl Store {
    pub fn endpoint(self) -> &'static str {
        match self {
            Store::Moto => &env().s3_endpoint,
            Store::Versitygw => &env().versitygw,
        }
    }

    pub fn admin_keys(self) -> &'static Keys {
        match self {
            Store::Moto => &env().s3_admin,
            Store::Versitygw => &env().versitygw_root,
        }
    }

    /// This server, in `region`, path style.
    pub fn target(self, region: &str) -> Target {
        Target { region: region.to_owned(), endpoint: Some(self.endpoint().to_owned()), force_path_style: true }
    }

    /// A client with the admin's keys.
    pub fn admin(self, region: &str) -> aws_sdk_s3::Client {
        sdk(self.admin_keys(), &self.target(region))
    }

    /// Two regions for a bucket and a spec that disagree: versitygw serves one region
    /// (us-east-1) whatever the request is signed for.
    pub fn mismatched_regions(self) -> (&'static str, &'static str) {
        match self {
            Store::Moto => ("eu-west-1", "us-east-1"),
            Store::Versitygw => ("us-east-1", "eu-west-1"),
        }
    }

    /// Creates a new, empty bucket in `region` and returns its name.
    pub async fn bucket(self, hint: &str, region: &str) -> String {
        let name = unique(hint);
        let mut request = self.admin(region).create_bucket().bucket(&name);
        if region != "us-east-1" {
            request = request.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region))
                    .build(),
            );
        }
        request.send().await.unwrap_or_else(|e| panic!("creating bucket {name} on {self:?}: {e:?}"));
        name
    }

    /// Writes `body` at `key` in `bucket`.
    pub async fn put(self, bucket: &str, key: &str, body: &[u8]) {
        self.admin("us-east-1")
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body.to_vec()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("writing s3://{bucket}/{key}: {e:?}"));
    }

    /// New keys allowed what `policy` (an IAM policy document) allows: on moto an IAM user
    /// with it as its policy; on versitygw an account added, as the principal of the
    /// policy's statements, to `bucket`'s policy (a `*` resource standing for the bucket).
    pub async fn user_with_policy(self, hint: &str, bucket: &str, policy: &serde_json::Value) -> Keys {
        match self {
            Store::Moto => super::iam::user_with_policy(hint, policy).await,
            Store::Versitygw => {
                let keys = versitygw_account(hint).await;
                grant_in_bucket_policy(bucket, &keys.access_key_id, policy).await;
                keys
            }
        }
    }
}

/// A versitygw account with the `user` role, made through its admin API.
async fn versitygw_account(hint: &str) -> Keys {
    let access = unique(hint).replace('-', "");
    let secret = format!("{:x>40}", unique("s").replace('-', ""));
    let keys = Keys { access_key_id: access, secret_access_key: secret, session_token: None };
    let body = format!(
        "<Account><Access>{}</Access><Secret>{}</Secret><Role>user</Role><UserID>0</UserID><GroupID>0</GroupID><ProjectID>0</ProjectID></Account>",
        keys.access_key_id, keys.secret_access_key
    );
    let request = http::Request::patch(format!("{}/create-user", env().versitygw))
        .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
        .expect("an admin request");
    let request = super::sign::signed(request, body.as_bytes(), "s3", &env().versitygw_root);
    let (status, answer) = super::http::send(request).await;
    assert!(status.is_success(), "versitygw create-user: {status} {answer}");
    keys
}

/// Adds `policy`'s statements, for `principal`, to `bucket`'s policy on versitygw.
async fn grant_in_bucket_policy(bucket: &str, principal: &str, policy: &serde_json::Value) {
    let admin = Store::Versitygw.admin("us-east-1");
    let mut current: serde_json::Value = match admin.get_bucket_policy().bucket(bucket).send().await {
        Ok(out) => serde_json::from_str(out.policy().unwrap_or("{}")).expect("a JSON bucket policy"),
        Err(_) => serde_json::json!({"Version": "2012-10-17", "Statement": []}),
    };
    let bucket_arns = serde_json::json!([format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")]);
    for (i, statement) in policy["Statement"].as_array().expect("statements").iter().enumerate() {
        let mut statement = statement.clone();
        statement["Sid"] = format!("{principal}{i}").into();
        statement["Principal"] = serde_json::json!({"AWS": [principal]});
        let everything = |r: &serde_json::Value| r == "*" || r.as_array().is_some_and(|a| a.iter().any(|r| r == "*"));
        if everything(&statement["Resource"]) {
            statement["Resource"] = bucket_arns.clone();
        }
        // Object actions on the bucket's ARN alone grant nothing in IAM, and S3 refuses them
        // in a bucket policy: they are left out, as they would count for nothing.
        let on_objects = |r: &serde_json::Value| r.as_str().is_some_and(|r| r.contains('/'));
        let resources = statement["Resource"].clone();
        if !(on_objects(&resources) || resources.as_array().is_some_and(|a| a.iter().any(on_objects))) {
            let object_actions = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"];
            let actions = statement["Action"].as_array().cloned().unwrap_or_else(|| vec![statement["Action"].clone()]);
            let kept: Vec<_> = actions.into_iter().filter(|a| !object_actions.iter().any(|o| a == o)).collect();
            if kept.is_empty() {
                continue;
            }
            statement["Action"] = kept.into();
        }
        current["Statement"].as_array_mut().expect("statements").push(statement);
    }
    admin
        .put_bucket_policy()
        .bucket(bucket)
        .policy(current.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("putting {bucket}'s policy on versitygw: {e:?}"));
}
