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
                Builder::new().tls_provider(provider).build_with_resolver(Screening)
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
                        Some(context) => builder.tls_context(context.clone()).build_with_resolver(Screening),
                        None => builder.build_with_resolver(Screening),
                    }
                })
            };
            SharedHttpClient::new(Pooled(hyper))
        })
        .clone()
}

/// The system's resolver, less the internal addresses of names a tenant may have chosen
/// (see `endpoints`): the addresses checked are the addresses connected to, so a name
/// that changes its answer between a check and a request still reaches nothing internal.
#[derive(Clone, Debug)]
struct Screening;

impl aws_smithy_runtime_api::client::dns::ResolveDns for Screening {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> aws_smithy_runtime_api::client::dns::DnsFuture<'a> {
        aws_smithy_runtime_api::client::dns::DnsFuture::new(async move {
            resolve(name).await.map_err(aws_smithy_runtime_api::client::dns::ResolveDnsError::new)
        })
    }
}

/// The addresses the operator may connect to for `host`: all of them, or, when the host
/// is screened, the public ones; Err when there are none.
pub async fn resolve(host: &str) -> Result<Vec<std::net::IpAddr>, String> {
    addresses(host, crate::endpoints::screened(host)).await.map_err(|e| e.why)
}

/// Whether `host` is screened and every address it resolves to is internal (so no
/// request to it can be sent). A name that does not resolve is not this: the request
/// says it is unreachable.
pub async fn internal_only(host: &str) -> bool {
    let name = host.trim_start_matches('[').trim_end_matches(']');
    crate::endpoints::screened(host) && matches!(addresses(name, true).await, Err(Unusable { internal_only: true, .. }))
}

/// Why a host has no address to connect to.
struct Unusable {
    why: String,
    /// It has addresses, all of them internal.
    internal_only: bool,
}

/// `host`'s addresses, less the internal ones when `screened`.
async fn addresses(host: &str, screened: bool) -> Result<Vec<std::net::IpAddr>, Unusable> {
    let all: Vec<_> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| Unusable { why: format!("{host} could not be resolved: {e}"), internal_only: false })?
        .map(|a| a.ip())
        .collect();
    if !screened {
        return Ok(all);
    }
    let public: Vec<_> = all.iter().copied().filter(|ip| !crate::endpoints::internal(*ip)).collect();
    if public.is_empty() && !all.is_empty() {
        return Err(Unusable {
            why: format!("{host} resolves only to internal addresses, which the endpoint allow-list must name exactly"),
            internal_only: true,
        });
    }
    Ok(public)
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
