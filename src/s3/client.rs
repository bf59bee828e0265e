//! S3 clients for probing one connection. All clients share one HTTP connection pool and
//! make exactly the requests asked of them: SDK retries are off so that every request is
//! counted and the controller's own backoff decides when to try again.

use std::sync::OnceLock;
use std::time::Duration;

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, SharedHttpClient, retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_smithy_http_client::{Builder, tls};

/// Where a connection's bucket lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub region: String,
    /// An S3-compatible endpoint; `None` means AWS.
    pub endpoint: Option<String>,
    pub force_path_style: bool,
}

/// Access keys read from a Secret. `Debug` never prints the secret parts.
#[derive(Clone)]
pub struct Keys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(** redacted **)")
    }
}

fn http_client() -> SharedHttpClient {
    static CLIENT: OnceLock<SharedHttpClient> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            Builder::new().tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring)).build_https()
        })
        .clone()
}

/// A client that signs with `keys` and sends to `target`.
pub fn client(keys: &Keys, target: &Target) -> aws_sdk_s3::Client {
    let credentials =
        Credentials::new(&keys.access_key_id, &keys.secret_access_key, keys.session_token.clone(), None, "s3connect");
    let mut config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(http_client())
        .credentials_provider(credentials)
        .region(Region::new(target.region.clone()))
        .force_path_style(target.force_path_style)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(20))
                .build(),
        );
    if let Some(endpoint) = &target.endpoint {
        config = config.endpoint_url(endpoint);
    }
    aws_sdk_s3::Client::from_conf(config.build())
}
