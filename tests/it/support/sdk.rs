//! An aws-sdk-s3 client for fixtures (buckets, objects, reading back what the operator
//! wrote): an S3 client independent of the operator's own. Used by the tests and by the
//! benchmarks (examples/bench.rs includes this file).

use s3connect::s3::client::{Keys, Target};

/// An SDK client with `keys` against `target`.
pub fn sdk(keys: &Keys, target: &Target) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let credentials =
        Credentials::new(&keys.access_key_id, &keys.secret_access_key, keys.session_token.clone(), None, "fixtures");
    let mut config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        // A connection pool of its own: each test has its own runtime, and a pooled
        // connection made in one that has ended cannot serve another ("dispatch gone"),
        // which a store keeping connections alive (versitygw) would otherwise show.
        .http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https(),
        )
        .credentials_provider(credentials)
        .region(Region::new(target.region.clone()))
        .force_path_style(target.force_path_style);
    if let Some(endpoint) = &target.endpoint {
        config = config.endpoint_url(endpoint);
    }
    aws_sdk_s3::Client::from_conf(config.build())
}
