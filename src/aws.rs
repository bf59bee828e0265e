//! aws-config's default chain on the operator's one HTTP stack (rustls + ring): the
//! environment, `AWS_PROFILE` and the shared config and credentials files (static keys,
//! `credential_process`, assume-role, SSO), web identity (IRSA), the container endpoint
//! (EKS Pod Identity, ECS), instance metadata; `AWS_REGION`, `AWS_ENDPOINT_URL(_<SERVICE>)`.
//! IAM (managed credentials), STS and S3 (`s3::client`) send on the one HTTP client here.

use std::sync::OnceLock;

use aws_smithy_http_client::{Builder, tls};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

/// A loader with the default chain; `.profile_name()` and the like may be added.
pub fn config_loader() -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http_client())
}

/// The one HTTP client (and connection pool) every AWS SDK client uses.
pub fn http_client() -> SharedHttpClient {
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
                // The bundle was read as PEM at start; should TLS still refuse it, the
                // system's roots alone leave the store's certificate untrusted, which the
                // status says, rather than the operator down.
                let context = match tls::TlsContext::builder().with_trust_store(trust).build() {
                    Ok(context) => Some(context),
                    Err(e) => {
                        tracing::error!(error = %e, "the CA bundle cannot be used for AWS and S3 requests");
                        None
                    }
                };
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
                    let builder = builder.proxy_config(proxy).tls_provider(provider.clone());
                    match &context {
                        Some(context) => builder.tls_context(context.clone()).build(),
                        None => builder.build(),
                    }
                })
            };
            SharedHttpClient::new(Pooled(hyper))
        })
        .clone()
}

/// The shared hyper client without its check at client construction, which builds (and
/// drops) a whole TLS connector, root certificates included, for every new SDK client.
/// Connectors are still built once per setting and cached by the client itself.
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
