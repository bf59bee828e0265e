//! The S3 client the probes use: each request signed with SigV4 and sent on one shared
//! connection pool (the platform client's rustls + ring stack), exactly once. There are no
//! retries in here: every attempt is counted and the probe engine decides when to try
//! again. The seven requests the probes make need no SDK: building an SDK client and
//! running its orchestrator cost more CPU than the request itself (docs/benchmarks.md).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode,
    sign,
};
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full, Limited};

use super::error::{Failure, FailureKind, classify_parts};

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

/// How long a connection may take to open, and a whole request (answer read) to finish.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

const USER_AGENT: &str = concat!("s3connect/", env!("CARGO_PKG_VERSION"));

/// The most of a response body the operator reads: the probes' answers are a few kilobytes
/// (a one-key listing, a CORS configuration of at most 100 rules, a 1-byte range), and a
/// tenant's endpoint answering a gigabyte must not take the operator's memory.
pub const MAX_RESPONSE_BODY: usize = 1 << 20;

/// The one HTTP client (and connection pool) every S3 request goes through. Without any
/// CA certificate, https fails with an untrusted certificate, which the status says.
fn http() -> Result<&'static crate::net::Https, Failure> {
    static CLIENT: OnceLock<Result<crate::net::Https, String>> = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        let roots = crate::net::roots().unwrap_or_else(|_| rustls::RootCertStore::empty());
        crate::net::https_client(roots, CONNECT_TIMEOUT, Duration::from_secs(20))
    });
    client.as_ref().map_err(|e| Failure {
        kind: FailureKind::Other,
        code: "TlsUnavailable".into(),
        detail: format!("the operator could not set up TLS ({e}); report this as a bug"),
        bucket_region: None,
    })
}

/// The base URL requests for `bucket` go to, and whether the bucket is then the first
/// segment of the path (path-style) rather than part of the host (virtual-hosted).
/// Virtual-hosted addressing is used wherever it can be, as the AWS SDKs do: not with an
/// IP address as the host, nor for a bucket name with dots (which no TLS wildcard covers).
/// FIPS, dual-stack or private-link endpoints are given as `endpoint`; access point ARNs
/// and S3 Express directory buckets are not buckets the platform connects to.
fn base_url(endpoint: Option<&str>, force_path_style: bool, bucket: &str, region: &str) -> (String, bool) {
    let dotted = bucket.contains('.');
    let Some(endpoint) = endpoint else {
        // The China regions are a partition of their own.
        let domain = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
        return if force_path_style || dotted {
            (format!("https://s3.{region}.{domain}"), true)
        } else {
            (format!("https://{bucket}.s3.{region}.{domain}"), false)
        };
    };
    let endpoint = endpoint.trim_end_matches('/');
    let Some((scheme, host)) = endpoint.split_once("://") else { return (endpoint.to_owned(), true) };
    let name =
        host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    let ip = name.starts_with('[') || name.parse::<std::net::Ipv4Addr>().is_ok();
    if force_path_style || ip || dotted || host.contains('/') {
        (endpoint.to_owned(), true)
    } else {
        (format!("{scheme}://{bucket}.{host}"), false)
    }
}

/// The base URL requests for `bucket` go to (shown in the status).
pub fn contacted_url(endpoint: Option<&str>, force_path_style: bool, bucket: &str, region: &str) -> String {
    base_url(endpoint, force_path_style, bucket, region).0
}

/// `s` percent-encoded as SigV4 wants it: every byte but the unreserved ones (and `/`
/// where `keep_slash`).
fn encode(s: &str, keep_slash: bool, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.extend(['%', char::from(HEX[usize::from(b >> 4)]), char::from(HEX[usize::from(b & 15)])]);
        }
    }
}

/// One S3 request.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// The S3 operation's name, as metrics count it.
    pub operation: &'static str,
    pub method: Method,
    pub bucket: &'a str,
    pub key: Option<&'a str>,
    /// Query parameters, unencoded; an empty value is sent as a bare name (`?cors`).
    pub query: Vec<(&'static str, &'a str)>,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    /// Whether the answer's body matters when it succeeds (a 1-byte range read does not,
    /// even from a server that ignores the range).
    pub read_body: bool,
}

impl<'a> Request<'a> {
    pub fn new(operation: &'static str, method: Method, bucket: &'a str) -> Self {
        Request {
            operation,
            method,
            bucket,
            key: None,
            query: Vec::new(),
            headers: Vec::new(),
            body: Bytes::new(),
            read_body: true,
        }
    }
}

/// A client that signs with one set of keys for one target, counting what it sends.
#[derive(Debug)]
pub struct Client {
    keys: Keys,
    /// The keys as the signer takes them, made once for every request of the client.
    identity: Identity,
    target: Target,
    counter: RequestCounter,
}

impl Client {
    pub fn new(keys: &Keys, target: &Target, counter: &RequestCounter) -> Self {
        let identity = aws_credential_types::Credentials::new(
            &keys.access_key_id,
            &keys.secret_access_key,
            keys.session_token.clone(),
            None,
            "s3connect",
        )
        .into();
        Client { keys: keys.clone(), identity, target: target.clone(), counter: counter.clone() }
    }

    /// The URL of `request`, encoded exactly as it is signed.
    pub(crate) fn url(&self, request: &Request<'_>) -> String {
        let t = &self.target;
        let (mut url, path_style) = base_url(t.endpoint.as_deref(), t.force_path_style, request.bucket, &t.region);
        if path_style {
            url.push('/');
            encode(request.bucket, false, &mut url);
        }
        if let Some(key) = request.key {
            url.push('/');
            encode(key, true, &mut url);
        } else if !path_style {
            url.push('/');
        }
        for (i, (name, value)) in request.query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(name);
            if !value.is_empty() {
                url.push('=');
                encode(value, false, &mut url);
            }
        }
        url
    }

    /// Sends `request` once and returns the body of its 2xx answer. A non-2xx answer, no
    /// answer within the attempt timeout, or a connection that failed becomes a classified
    /// [`Failure`] with the keys redacted.
    pub async fn send(&self, request: &Request<'_>) -> Result<Bytes, Failure> {
        self.counter.0.fetch_add(1, Ordering::Relaxed);
        let (outcome, result) = match self.attempt(request).await {
            Ok(response) => ("ok", Ok(response)),
            Err((status, failure)) => {
                let outcome = match status {
                    None => "unreachable",
                    Some(403) => "denied",
                    Some(400..=499) => "client_error",
                    Some(200..=299) => "ok",
                    Some(_) => "server_error",
                };
                (outcome, Err(failure))
            }
        };
        crate::telemetry::metrics::METRICS.s3_request(request.operation, outcome);
        result.map_err(|mut f: Failure| {
            f.detail = self.keys.redact(&f.detail);
            f
        })
    }

    /// One attempt; the error carries the status, if there was an answer at all.
    async fn attempt(&self, request: &Request<'_>) -> Result<Bytes, (Option<u16>, Failure)> {
        let url = self.url(request);
        let mut http_request = http::Request::builder().method(request.method.clone()).uri(&url);
        for (name, value) in &request.headers {
            http_request = http_request.header(*name, value);
        }
        let mut http_request = http_request.body(Full::new(request.body.clone())).map_err(|e| {
            let detail = format!("the request could not be built ({e}); check endpoint and region");
            (None, Failure { kind: FailureKind::Other, code: "RequestNotBuilt".into(), detail, bucket_region: None })
        })?;
        self.sign(&mut http_request, &url, request)?;
        // After signing: servers log it, nothing needs it signed.
        http_request.headers_mut().insert(http::header::USER_AGENT, http::HeaderValue::from_static(USER_AGENT));
        let answered = tokio::time::timeout(ATTEMPT_TIMEOUT, async {
            let response = http()
                .map_err(|f| (None, f))?
                .request(http_request)
                .await
                .map_err(|e| (None, transport_failure(&e)))?;
            let (parts, body) = response.into_parts();
            let status = parts.status.as_u16();
            let wanted = request.read_body || !parts.status.is_success();
            let too_long = hyper::body::Body::size_hint(&body).lower() > MAX_RESPONSE_BODY as u64;
            let body = if !wanted {
                // Not needed: read what a small answer has (so the connection is reused),
                // drop a large one unread.
                if too_long { Bytes::new() } else { collect(body).await.unwrap_or_default() }
            } else if too_long {
                return Err((Some(status), too_large(status)));
            } else {
                collect(body).await.map_err(|e| (Some(status), e.unwrap_or_else(|| too_large(status))))?
            };
            Ok((parts, body))
        })
        .await;
        let (parts, body) = match answered {
            Err(_) => return Err((None, unreachable("the request timed out"))),
            Ok(r) => r?,
        };
        if parts.status.is_success() {
            return Ok(body);
        }
        let status = parts.status.as_u16();
        let (code, message) = super::xml::error(&body);
        let region = parts.headers.get("x-amz-bucket-region").and_then(|v| v.to_str().ok());
        Err((Some(status), classify_parts(code.as_deref(), message.as_deref(), status, region)))
    }

    fn sign(
        &self,
        http_request: &mut http::Request<Full<Bytes>>,
        url: &str,
        request: &Request<'_>,
    ) -> Result<(), (Option<u16>, Failure)> {
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let not_signed = |e: &dyn std::fmt::Display| {
            let detail = format!("the request could not be signed ({e}); check endpoint, region and keys");
            (None, Failure { kind: FailureKind::Other, code: "RequestNotSigned".into(), detail, bucket_region: None })
        };
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.target.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| not_signed(&e))?
            .into();
        let headers = request.headers.iter().map(|(k, v)| (*k, v.as_str()));
        let signable = SignableRequest::new(request.method.as_str(), url, headers, SignableBody::Bytes(&request.body))
            .map_err(|e| not_signed(&e))?;
        let (instructions, _) = sign(signable, &params).map_err(|e| not_signed(&e))?.into_parts();
        instructions.apply_to_request_http1x(http_request);
        Ok(())
    }
}

/// A body read to its end, at most [`MAX_RESPONSE_BODY`] of it; `Err(None)` past that.
async fn collect(body: hyper::body::Incoming) -> Result<Bytes, Option<Failure>> {
    match Limited::new(body, MAX_RESPONSE_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(None),
        Err(e) => Err(Some(unreachable(&format!("the answer broke off: {e}")))),
    }
}

fn too_large(status: u16) -> Failure {
    Failure {
        kind: FailureKind::Other,
        code: format!("HTTP{status}"),
        detail: format!("the answer is more than the {MAX_RESPONSE_BODY} bytes the operator reads"),
        bucket_region: None,
    }
}

/// A request that got no answer: the deepest cause in the error chain (refused, DNS,
/// TLS) names the problem and never carries request headers. A certificate TLS refused
/// is not unreachable: retrying does not change a certificate.
fn transport_failure(err: &hyper_util::client::legacy::Error) -> Failure {
    let mut why = String::from("could not connect");
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(err);
    while let Some(s) = source {
        why = s.to_string();
        source = s.source();
    }
    // rustls: "invalid peer certificate: UnknownIssuer" and the like.
    if why.contains("certificate") {
        return Failure {
            kind: FailureKind::CertificateUntrusted,
            code: "CertificateUntrusted".into(),
            detail: why,
            bucket_region: None,
        };
    }
    unreachable(&why)
}

fn unreachable(why: &str) -> Failure {
    Failure { kind: FailureKind::Unreachable, code: "Unreachable".into(), detail: why.to_owned(), bucket_region: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contacted_url_follows_the_addressing_style() {
        let url = |e, path, bucket| contacted_url(e, path, bucket, "eu-west-1");
        assert_eq!(url(None, false, "b"), "https://b.s3.eu-west-1.amazonaws.com");
        assert_eq!(url(None, true, "b"), "https://s3.eu-west-1.amazonaws.com");
        assert_eq!(url(None, false, "a.b"), "https://s3.eu-west-1.amazonaws.com");
        assert_eq!(contacted_url(None, false, "b", "cn-north-1"), "https://b.s3.cn-north-1.amazonaws.com.cn");
        assert_eq!(url(Some("http://minio.local:9000/"), false, "b"), "http://b.minio.local:9000");
        assert_eq!(url(Some("http://minio.local:9000"), true, "b"), "http://minio.local:9000");
        assert_eq!(url(Some("http://127.0.0.1:9000"), false, "b"), "http://127.0.0.1:9000");
        assert_eq!(url(Some("http://[::1]:9000"), false, "b"), "http://[::1]:9000");
        assert_eq!(url(Some("https://s3.example.com"), false, "a.b"), "https://s3.example.com");
    }

    #[test]
    fn request_urls_encode_keys_and_queries_as_signed() {
        let keys = Keys { access_key_id: "a".into(), secret_access_key: "b".into(), session_token: None };
        let target = |endpoint: Option<&str>, path| Target {
            region: "us-east-1".into(),
            endpoint: endpoint.map(str::to_owned),
            force_path_style: path,
        };
        let client = |t: Target| Client::new(&keys, &t, &RequestCounter::default());
        let mut get = Request::new("GetObject", Method::GET, "data");
        get.key = Some("images/a b+ü.jpg");
        assert_eq!(
            client(target(Some("http://127.0.0.1:9000"), false)).url(&get),
            "http://127.0.0.1:9000/data/images/a%20b%2B%C3%BC.jpg"
        );
        assert_eq!(
            client(target(None, false)).url(&get),
            "https://data.s3.us-east-1.amazonaws.com/images/a%20b%2B%C3%BC.jpg"
        );
        let mut list = Request::new("ListObjectsV2", Method::GET, "data");
        list.query = vec![("list-type", "2"), ("max-keys", "2"), ("prefix", "in/&=")];
        assert_eq!(
            client(target(None, false)).url(&list),
            "https://data.s3.us-east-1.amazonaws.com/?list-type=2&max-keys=2&prefix=in%2F%26%3D"
        );
        let mut cors = Request::new("GetBucketCors", Method::GET, "data");
        cors.query = vec![("cors", "")];
        assert_eq!(client(target(Some("http://s3.local/"), true)).url(&cors), "http://s3.local/data?cors");
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
