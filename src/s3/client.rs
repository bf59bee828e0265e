//! S3 clients for probing one connection. All clients share one HTTP connection pool and
//! make exactly the requests asked of them: SDK retries are off so that every request is
//! counted and the controller's own backoff decides when to try again.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_sdk_s3::config::{
    BehaviorVersion, ConfigBag, Credentials, IdentityCache, Intercept, Region, RequestChecksumCalculation,
    ResponseChecksumValidation, RuntimeComponents, SharedHttpClient, StalledStreamProtectionConfig,
    interceptors::{
        BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
    },
    retry::RetryConfig,
    timeout::TimeoutConfig,
};
use aws_smithy_http_client::{Builder, tls};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{HttpClient, HttpConnectorSettings, SharedHttpConnector};
use aws_smithy_runtime_api::client::orchestrator::Metadata;

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

/// The one HTTP client (and connection pool) every S3 client uses.
pub(crate) fn http_client() -> SharedHttpClient {
    static CLIENT: OnceLock<SharedHttpClient> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let provider = tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring);
            let (ca, proxy) = (crate::net::extra_ca(), crate::net::proxy_in_environment());
            let hyper = if ca.is_none() && !proxy {
                Builder::new().tls_provider(provider).build_https()
            } else {
                // The system's roots plus the extra bundle; the proxy from the environment.
                let trust = ca.map_or_else(tls::TrustStore::default, |pem| {
                    tls::TrustStore::default().with_pem_certificate(pem.to_vec())
                });
                let context = tls::TlsContext::builder().with_trust_store(trust).build().expect("a TLS context");
                Builder::new().build_with_connector_fn(move |settings, components| {
                    let mut builder = aws_smithy_http_client::Connector::builder();
                    builder.set_connector_settings(settings.cloned());
                    if let Some(c) = components {
                        builder.set_sleep_impl(c.sleep_impl());
                    }
                    let proxy = if proxy {
                        aws_smithy_http_client::proxy::ProxyConfig::from_env()
                    } else {
                        aws_smithy_http_client::proxy::ProxyConfig::disabled()
                    };
                    builder.proxy_config(proxy).tls_provider(provider.clone()).tls_context(context.clone()).build()
                })
            };
            SharedHttpClient::new(Pooled(hyper))
        })
        .clone()
}

/// The shared hyper client without its check at client construction, which builds (and
/// drops) a whole TLS connector, root certificates included, for every new S3 client: about
/// 4 % of the operator's CPU in the 1,000-connection benchmark. Connectors are still built
/// once per setting and cached by the client itself.
#[derive(Debug)]
struct Pooled(SharedHttpClient);

impl HttpClient for Pooled {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

impl Keys {
    /// `text` with every occurrence of these keys replaced, for anything that echoes
    /// what a server said.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        let parts = [Some(&self.access_key_id), Some(&self.secret_access_key), self.session_token.as_ref()];
        for part in parts.into_iter().flatten().filter(|p| p.len() >= 4) {
            out = out.replace(part.as_str(), "[redacted]");
        }
        out
    }
}

/// Counts the requests a client actually sends (each attempt, as it goes on the wire).
#[derive(Clone, Debug, Default)]
pub struct RequestCounter(Arc<AtomicU32>);

impl RequestCounter {
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let outcome = match context.response().map(|r| r.status().as_u16()) {
            None => "unreachable",
            Some(200..=299) => "ok",
            Some(403) => "denied",
            Some(400..=499) => "client_error",
            Some(_) => "server_error",
        };
        let operation = cfg.load::<Metadata>().map_or("unknown", |m| m.name());
        crate::telemetry::metrics::METRICS.s3_request(operation, outcome);
        Ok(())
    }
}

/// The base URL requests for `bucket` go to, as the SDK's endpoint rules pick it: with
/// virtual-hosted addressing the bucket is part of the host, except where it cannot be
/// (an IP address as the host, a bucket name with dots on a custom endpoint).
pub fn contacted_url(endpoint: Option<&str>, force_path_style: bool, bucket: &str, region: &str) -> String {
    let Some(endpoint) = endpoint else {
        return if force_path_style {
            format!("https://s3.{region}.amazonaws.com")
        } else {
            format!("https://{bucket}.s3.{region}.amazonaws.com")
        };
    };
    let endpoint = endpoint.trim_end_matches('/');
    let Some((scheme, host)) = endpoint.split_once("://") else { return endpoint.to_owned() };
    let name =
        host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    let ip = name.starts_with('[') || name.parse::<std::net::Ipv4Addr>().is_ok();
    if force_path_style || ip || bucket.contains('.') {
        endpoint.to_owned()
    } else {
        format!("{scheme}://{bucket}.{host}")
    }
}

/// The most of a response body the operator reads: the probes' answers are a few kilobytes
/// (a one-key listing, a CORS configuration of at most 100 rules, a 1-byte range), and a
/// tenant's endpoint answering a gigabyte must not take the operator's memory.
pub const MAX_RESPONSE_BODY: usize = 1 << 20;

/// Refuses a response body past `MAX_RESPONSE_BODY`: at once when its length says so, else
/// as it is read (the body is wrapped before the SDK buffers it to deserialize).
#[derive(Debug)]
struct BoundedBodies;

impl Intercept for BoundedBodies {
    fn name(&self) -> &'static str {
        "BoundedBodies"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let body = context.response_mut().body_mut();
        if let Some(n) = body.content_length().filter(|n| *n > MAX_RESPONSE_BODY as u64) {
            return Err(format!("the answer is {n} bytes, more than the {MAX_RESPONSE_BODY} the operator reads").into());
        }
        let taken = std::mem::replace(body, aws_smithy_types::body::SdkBody::taken());
        *body = aws_smithy_types::body::SdkBody::from_body_1_x(http_body_util::Limited::new(taken, MAX_RESPONSE_BODY));
        Ok(())
    }
}

/// A client that signs with `keys` and sends to `target`.
pub fn client(keys: &Keys, target: &Target) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(config(keys, target).build())
}

/// Like [`client`], counting every request in `counter`.
pub fn counted_client(keys: &Keys, target: &Target, counter: &RequestCounter) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(config(keys, target).interceptor(counter.clone()).build())
}

fn config(keys: &Keys, target: &Target) -> aws_sdk_s3::config::Builder {
    let credentials =
        Credentials::new(&keys.access_key_id, &keys.secret_access_key, keys.session_token.clone(), None, "s3connect");
    let mut config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(http_client())
        .credentials_provider(credentials)
        .region(Region::new(target.region.clone()))
        .force_path_style(target.force_path_style)
        .retry_config(RetryConfig::disabled())
        .interceptor(BoundedBodies)
        // Static keys, used once: nothing to cache.
        .identity_cache(IdentityCache::no_cache())
        // The probes move a few hundred bytes under an attempt timeout; throughput
        // monitoring of their bodies only costs CPU.
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        // Checksums only where S3 requires them (PutBucketCors).
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(20))
                .build(),
        );
    if let Some(endpoint) = &target.endpoint {
        config = config.endpoint_url(endpoint);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contacted_url_follows_the_addressing_style() {
        let url = |e, path, bucket| contacted_url(e, path, bucket, "eu-west-1");
        assert_eq!(url(None, false, "b"), "https://b.s3.eu-west-1.amazonaws.com");
        assert_eq!(url(None, true, "b"), "https://s3.eu-west-1.amazonaws.com");
        assert_eq!(url(Some("http://minio.local:9000/"), false, "b"), "http://b.minio.local:9000");
        assert_eq!(url(Some("http://minio.local:9000"), true, "b"), "http://minio.local:9000");
        assert_eq!(url(Some("http://127.0.0.1:9000"), false, "b"), "http://127.0.0.1:9000");
        assert_eq!(url(Some("http://[::1]:9000"), false, "b"), "http://[::1]:9000");
        assert_eq!(url(Some("https://s3.example.com"), false, "a.b"), "https://s3.example.com");
    }

    #[test]
    fn debug_and_redact_never_show_the_keys() {
        let keys = Keys {
            access_key_id: "AKIAEXAMPLEKEY123456".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: Some("FwoGZXIvYXdzEXAMPLETOKEN".into()),
        };
        assert_eq!(format!("{keys:?}"), "Keys(** redacted **)");
        let said =
            "key AKIAEXAMPLEKEY123456 secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY token FwoGZXIvYXdzEXAMPLETOKEN";
        assert_eq!(keys.redact(said), "key [redacted] secret [redacted] token [redacted]");
    }
}
