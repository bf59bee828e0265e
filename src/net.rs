//! How the operator's clients reach the network: an extra CA bundle (PEM) trusted besides
//! the system's, and `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`/`NO_PROXY` (either case) from
//! the environment. Set once, before the first client is made; S3, IAM, STS and the
//! platform API all follow it. (The Kubernetes client follows its kubeconfig.)

use std::sync::OnceLock;

static EXTRA_CA: OnceLock<Option<Vec<u8>>> = OnceLock::new();

/// Trusts the certificates in the PEM file at `path` (besides the system's) from now on.
/// Err says why the file cannot be used; nothing is set then.
pub fn trust_ca_bundle(path: Option<&std::path::Path>) -> Result<(), String> {
    let pem = match path {
        None => None,
        Some(p) => {
            let bytes = std::fs::read(p).map_err(|e| format!("reading the CA bundle {}: {e}", p.display()))?;
            let count =
                certificates(&bytes).map_err(|e| format!("the CA bundle {} is not PEM: {e}", p.display()))?.len();
            if count == 0 {
                return Err(format!("the CA bundle {} has no CERTIFICATE block", p.display()));
            }
            Some(bytes)
        }
    };
    EXTRA_CA.set(pem).map_err(|_| "the CA bundle was already set".to_owned())
}

/// The extra CA certificates (PEM), if any.
pub fn extra_ca() -> Option<&'static [u8]> {
    EXTRA_CA.get().and_then(|p| p.as_deref())
}

/// The DER certificates in a PEM document.
pub fn certificates(pem: &[u8]) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())
}

/// Whether the environment names a proxy at all (so that without one no request pays for
/// proxy matching).
pub fn proxy_in_environment() -> bool {
    ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
}

/// The system's CA certificates plus the extra bundle, if any (possibly none at all).
pub fn roots() -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(pem) = extra_ca() {
        roots.add_parsable_certificates(certificates(pem)?);
    }
    Ok(roots)
}

/// An HTTP/1.1 client, over TLS where the URL says https, trusting `roots`, through the
/// environment's proxy. Pooled connections idle for at most `idle`: a connection the
/// server closed while idle fails a request in a way that looks like "sent, then lost".
pub fn https_client(
    roots: rustls::RootCertStore,
    connect_timeout: std::time::Duration,
    idle: std::time::Duration,
) -> Result<Https, String> {
    let tls =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(ProxyConnector::from_environment(connect_timeout));
    let mut http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
    http.pool_idle_timeout(idle);
    Ok(http.build(https))
}

/// The client [`https_client`] makes.
pub type Https = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<ProxyConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_without_certificates_or_with_garbage_is_refused() {
        assert_eq!(certificates(b"").unwrap().len(), 0);
        assert!(certificates(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").is_err());
    }
}

/// A TCP connector that goes through the environment's proxy (HTTP CONNECT) for the
/// destinations it intercepts, and directly otherwise; TLS is layered on top by the caller.
#[derive(Clone)]
pub struct ProxyConnector {
    direct: hyper_util::client::legacy::connect::HttpConnector,
    matcher: Option<std::sync::Arc<hyper_util::client::proxy::matcher::Matcher>>,
}

impl ProxyConnector {
    /// Connections give up after `connect_timeout`.
    pub fn from_environment(connect_timeout: std::time::Duration) -> Self {
        let mut direct = hyper_util::client::legacy::connect::HttpConnector::new();
        direct.enforce_http(false);
        direct.set_connect_timeout(Some(connect_timeout));
        let matcher = proxy_in_environment()
            .then(|| std::sync::Arc::new(hyper_util::client::proxy::matcher::Matcher::from_env()));
        ProxyConnector { direct, matcher }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Stream = hyper_util::rt::TokioIo<tokio::net::TcpStream>;

impl tower_service::Service<http::Uri> for ProxyConnector {
    type Response = Stream;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        let mut direct = self.direct.clone();
        let intercept = self.matcher.as_ref().and_then(|m| m.intercept(&dst));
        Box::pin(async move {
            match intercept {
                None => Ok(direct.call(dst).await?),
                Some(proxy) => {
                    let mut tunnel =
                        hyper_util::client::legacy::connect::proxy::Tunnel::new(proxy.uri().clone(), direct);
                    if let Some(auth) = proxy.basic_auth() {
                        tunnel = tunnel.with_auth(auth.clone());
                    }
                    Ok(tunnel.call(dst).await?)
                }
            }
        })
    }
}
