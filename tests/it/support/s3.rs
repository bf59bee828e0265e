//! S3 fixtures: buckets and objects, made with the admin's keys.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use s3connect::s3::client::{Keys, Target};

use super::sdk::sdk;
use super::{env, unique};

/// The test S3 server, in `region`, path style (as S3-compatible stores are used).
pub fn target(region: &str) -> Target {
    Target { region: region.to_owned(), endpoint: Some(env().s3_endpoint.clone()), force_path_style: true }
}

/// A client with `keys` against the test S3 server.
pub fn client_with(keys: &Keys, region: &str) -> aws_sdk_s3::Client {
    sdk(keys, &target(region))
}

/// A client with the admin's keys.
pub fn admin(region: &str) -> aws_sdk_s3::Client {
    client_with(&env().s3_admin, region)
}

/// Creates a new, empty bucket in `region` and returns its name.
pub async fn bucket(hint: &str, region: &str) -> String {
    let name = unique(hint);
    let mut request = admin(region).create_bucket().bucket(&name);
    if region != "us-east-1" {
        request = request.create_bucket_configuration(
            CreateBucketConfiguration::builder().location_constraint(BucketLocationConstraint::from(region)).build(),
        );
    }
    request.send().await.unwrap_or_else(|e| panic!("creating bucket {name}: {e:?}"));
    name
}

/// Writes `body` at `key` in `bucket`.
pub async fn put(bucket: &str, key: &str, body: &[u8]) {
    admin("us-east-1")
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("writing s3://{bucket}/{key}: {e:?}"));
}
