//! The one place where an S3 error becomes a kind of failure. Everything downstream
//! (conditions, reasons, remedies) works on `Failure`, never on SDK errors.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

/// What went wrong with one S3 request, as far as the remedy is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    AccessDenied,
    /// Access denied because the object's KMS key may not be used to decrypt.
    KmsDenied,
    InvalidAccessKeyId,
    SignatureDoesNotMatch,
    ExpiredToken,
    ClockSkew,
    NoSuchBucket,
    /// The request went to the wrong region for the bucket.
    WrongRegion,
    /// No answer: connection refused, DNS failure or timeout.
    Unreachable,
    /// TLS refused the endpoint's certificate (a private CA not given to the operator).
    CertificateUntrusted,
    /// The store does not implement this API (S3-compatible stores and CORS, say).
    NotImplemented,
    /// The bucket has no CORS configuration at all (not an error for the probes).
    NoCorsConfiguration,
    /// A range read of an empty object (proves the read was allowed).
    InvalidRange,
    /// The object vanished between listing and reading (proves the read was allowed:
    /// without permission S3 answers AccessDenied, not NoSuchKey).
    NoSuchKey,
    /// The store answered, but not as S3 does: a success that is not the XML of the
    /// request's answer (a proxy's HTML page, say), or a field that cannot be what S3 says
    /// (a region with a line break). Nothing is concluded from it, and asking again gets
    /// the same answer.
    Unreadable,
    /// A server error or throttling (5xx, 429, SlowDown): worth another try.
    Transient,
    /// Any other 4xx: the same request would be refused again.
    Rejected,
    /// Anything else (no status at all, say).
    Other,
}

impl FailureKind {
    /// Failures that make every further probe meaningless.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            Self::InvalidAccessKeyId
                | Self::SignatureDoesNotMatch
                | Self::ExpiredToken
                | Self::ClockSkew
                | Self::NoSuchBucket
                | Self::WrongRegion
                | Self::Unreachable
                | Self::CertificateUntrusted
        )
    }
}

impl FailureKind {
    /// Worth retrying within the same validation: the server was busy or briefly gone.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Transient | Self::Unreachable | Self::Other)
    }
}

/// Error codes S3 and compatible stores use to ask a client to slow down or try again.
const RETRY_CODES: [&str; 9] = [
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequests",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
];

/// The longest server text a failure keeps: a hostile endpoint may answer with anything.
const MAX_DETAIL: usize = 512;

/// A classified failure. `detail` is safe to show: it never carries request headers,
/// signatures or signed URLs, and the probe redacts the keys from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    /// The S3 error code, or a short description where there was no response.
    pub code: String,
    pub detail: String,
    /// The bucket's region, where S3 told us (`x-amz-bucket-region` or the error text).
    pub bucket_region: Option<String>,
    /// S3's ids of the request (`x-amz-request-id`, and `x-amz-id-2`), as AWS support
    /// asks for them: "request id X, extended request id Y".
    pub request_id: Option<String>,
}

impl Failure {
    /// A failure without an answer from S3 (no status, no request id).
    pub fn new(kind: FailureKind, code: &str, detail: impl Into<String>) -> Self {
        Failure { kind, code: code.to_owned(), detail: detail.into(), bucket_region: None, request_id: None }
    }
}

/// Classifies an error of the SDK: no answer (timeouts, connections, TLS), a request that
/// could not be made, an answer that is not S3's, or S3's own error code.
pub fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(err: &SdkError<E, HttpResponse>) -> Failure {
    let mut failure = match err {
        SdkError::TimeoutError(_) => Failure::new(FailureKind::Unreachable, "Unreachable", "the request timed out"),
        SdkError::DispatchFailure(d) => {
            let why = if d.is_timeout() {
                "the connection timed out".to_owned()
            } else {
                // The connector's error chain names the cause (refused, DNS) and never
                // carries request headers.
                deepest(d.as_connector_error().map(|c| c as &dyn std::error::Error), "could not connect")
            };
            // rustls: "invalid peer certificate: UnknownIssuer" and the like. Retrying does
            // not change a certificate.
            if why.contains("certificate") {
                Failure::new(FailureKind::CertificateUntrusted, "CertificateUntrusted", why)
            } else {
                Failure::new(FailureKind::Unreachable, "Unreachable", why)
            }
        }
        SdkError::ConstructionFailure(_) => {
            // Endpoint resolution says what it refused (a region that is no host name, a
            // FIPS endpoint with a custom endpoint); nothing was signed or sent yet.
            let why = deepest(std::error::Error::source(err), "the request could not be built");
            Failure::new(
                FailureKind::Other,
                "RequestNotBuilt",
                format!("the request could not be built ({}); check endpoint and region", bounded(&why)),
            )
        }
        _ => {
            let raw = err.raw_response();
            let status = raw.map_or(0, |r| r.status().as_u16());
            if (200..300).contains(&status) || matches!(err, SdkError::ResponseError(_)) {
                unreadable(raw)
            } else {
                let region = raw.and_then(|r| r.headers().get("x-amz-bucket-region"));
                classify_parts(err.code(), err.message(), status, region)
            }
        }
    };
    failure.request_id = err.raw_response().and_then(request_ids);
    failure
}

/// A 2xx answer the SDK could not read as the request's answer (or an answer that broke
/// off): S3 always answers its own XML, so something else answered.
fn unreadable(raw: Option<&HttpResponse>) -> Failure {
    let what = match raw {
        Some(r) => {
            let kind = r.headers().get("content-type").map(printable).unwrap_or_default();
            let kind = if kind.is_empty() { String::new() } else { format!(", {kind}") };
            format!("the answer (HTTP {}{kind}) is not the XML S3 answers this request with", r.status().as_u16())
        }
        None => "the answer could not be read".to_owned(),
    };
    Failure::new(FailureKind::Unreadable, "UnreadableAnswer", what)
}

/// The innermost message of an error chain, or `otherwise`.
fn deepest(mut source: Option<&dyn std::error::Error>, otherwise: &str) -> String {
    let mut why = otherwise.to_owned();
    while let Some(s) = source {
        why = s.to_string();
        source = s.source();
    }
    why
}

/// `text` with anything but printable ASCII dropped, at most 128 characters: request ids
/// and content types come from whoever answered.
fn printable(text: &str) -> String {
    text.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(128).collect()
}

fn bounded(text: &str) -> &str {
    let mut end = text.len().min(MAX_DETAIL);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// "request id X, extended request id Y" from an answer's headers, if it has them.
fn request_ids(raw: &HttpResponse) -> Option<String> {
    let header = |name| raw.headers().get(name).map(printable).filter(|v| !v.is_empty());
    match (header("x-amz-request-id"), header("x-amz-id-2")) {
        (Some(id), Some(ext)) => Some(format!("request id {id}, extended request id {ext}")),
        (Some(id), None) => Some(format!("request id {id}")),
        (None, Some(ext)) => Some(format!("extended request id {ext}")),
        (None, None) => None,
    }
}

/// Classifies an S3 error response from its parts.
pub fn classify_parts(code: Option<&str>, message: Option<&str>, status: u16, region_header: Option<&str>) -> Failure {
    let message = message.unwrap_or_default();
    let code = code.map(str::to_owned).unwrap_or_else(|| format!("HTTP{status}"));
    let kind = match code.as_str() {
        "AccessDenied" if mentions_kms(message) => FailureKind::KmsDenied,
        "AccessDenied" | "AllAccessDisabled" => FailureKind::AccessDenied,
        "KMS.AccessDeniedException" | "KMS.DisabledException" | "KMS.NotFoundException" => FailureKind::KmsDenied,
        "InvalidAccessKeyId" | "InvalidClientTokenId" => FailureKind::InvalidAccessKeyId,
        "SignatureDoesNotMatch" => FailureKind::SignatureDoesNotMatch,
        "ExpiredToken" | "TokenRefreshRequired" | "InvalidToken" => FailureKind::ExpiredToken,
        "RequestTimeTooSkewed" => FailureKind::ClockSkew,
        "NoSuchBucket" => FailureKind::NoSuchBucket,
        "PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException" => {
            FailureKind::WrongRegion
        }
        "NotImplemented" | "NotSupported" | "XNotImplemented" => FailureKind::NotImplemented,
        "NoSuchCORSConfiguration" => FailureKind::NoCorsConfiguration,
        "InvalidRange" => FailureKind::InvalidRange,
        "NoSuchKey" => FailureKind::NoSuchKey,
        // A 301 without a body (HEAD-like answers) is S3 pointing at another region.
        _ if status == 301 => FailureKind::WrongRegion,
        _ if status == 501 => FailureKind::NotImplemented,
        c if RETRY_CODES.contains(&c) || status == 429 || status >= 500 => FailureKind::Transient,
        _ if (400..500).contains(&status) => FailureKind::Rejected,
        _ => FailureKind::Other,
    };
    let bucket_region =
        region_header.map(str::to_owned).or_else(|| expected_region(message)).filter(|r| looks_like_region(r));
    let code =
        if code.len() > 64 || !code.bytes().all(|b| b.is_ascii_graphic()) { format!("HTTP{status}") } else { code };
    Failure { kind, code, detail: bounded(message).to_owned(), bucket_region, request_id: None }
}

/// Whether `region` can be a region's name as AWS and compatible stores name them
/// (`eu-west-1`, `us-gov-west-1`, a Ceph zone group's `default`): letters, digits, `-`,
/// `_` and `.`, starting with a letter or digit, at most 63 characters. Anything else that
/// a server says (a line break, a space, markup) is neither signed with nor shown.
pub fn looks_like_region(region: &str) -> bool {
    region.len() <= 63
        && region.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && region.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn mentions_kms(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("kms:decrypt") || m.contains("kms key") || m.contains("kms.") || m.contains("customer master key")
}

/// S3's AuthorizationHeaderMalformed names the right region: "... the region 'us-east-1'
/// is wrong; expecting 'eu-west-1'" (versitygw quotes it with `"`).
fn expected_region(message: &str) -> Option<String> {
    let rest = &message[message.find("expecting ")? + "expecting ".len()..];
    let quote = rest.chars().next().filter(|c| matches!(c, '\'' | '"'))?;
    let rest = &rest[1..];
    Some(rest[..rest.find(quote)?].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureKind::*;

    #[test]
    fn error_codes_map_to_one_kind_each() {
        for (code, message, status, want) in [
            ("AccessDenied", "Access Denied", 403, AccessDenied),
            ("AccessDenied", "User is not authorized to perform: kms:Decrypt on the resource", 403, KmsDenied),
            ("KMS.AccessDeniedException", "", 403, KmsDenied),
            (
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
                403,
                InvalidAccessKeyId,
            ),
            ("SignatureDoesNotMatch", "The request signature we calculated does not match", 403, SignatureDoesNotMatch),
            ("ExpiredToken", "The provided token has expired.", 400, ExpiredToken),
            (
                "RequestTimeTooSkewed",
                "The difference between the request time and the current time is too large.",
                403,
                ClockSkew,
            ),
            ("NoSuchBucket", "The specified bucket does not exist", 404, NoSuchBucket),
            (
                "PermanentRedirect",
                "The bucket you are attempting to access must be addressed using the specified endpoint.",
                301,
                WrongRegion,
            ),
            (
                "AuthorizationHeaderMalformed",
                "the region 'us-east-1' is wrong; expecting 'eu-west-1'",
                400,
                WrongRegion,
            ),
            (
                "NotImplemented",
                "A header you provided implies functionality that is not implemented",
                501,
                NotImplemented,
            ),
            ("NoSuchCORSConfiguration", "The CORS configuration does not exist", 404, NoCorsConfiguration),
            ("InvalidRange", "The requested range is not satisfiable", 416, InvalidRange),
            ("NoSuchKey", "The specified key does not exist.", 404, NoSuchKey),
            ("InternalError", "We encountered an internal error.", 500, Transient),
            ("SlowDown", "Please reduce your request rate.", 503, Transient),
            ("WhateverBusy", "", 503, Transient),
            ("RequestHeaderFieldsTooLarge", "", 431, Rejected),
        ] {
            assert_eq!(classify_parts(Some(code), Some(message), status, None).kind, want, "{code}: {message}");
        }
    }

    #[test]
    fn responses_without_a_code_are_classified_by_status() {
        assert_eq!(classify_parts(None, None, 301, None).kind, WrongRegion);
        assert_eq!(classify_parts(None, None, 501, None).kind, NotImplemented);
        let other = classify_parts(None, None, 503, None);
        assert_eq!((other.kind, other.code.as_str()), (Transient, "HTTP503"));
        assert_eq!(classify_parts(None, None, 431, None).kind, Rejected);
        assert_eq!(classify_parts(None, None, 0, None).kind, Other);
    }

    #[test]
    fn the_bucket_region_comes_from_the_header_or_the_message() {
        let f = classify_parts(Some("PermanentRedirect"), Some(""), 301, Some("ap-south-1"));
        assert_eq!(f.bucket_region.as_deref(), Some("ap-south-1"));
        let f = classify_parts(
            Some("AuthorizationHeaderMalformed"),
            Some("The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-west-1'"),
            400,
            None,
        );
        assert_eq!(f.bucket_region.as_deref(), Some("eu-west-1"));
        let said = r#"The authorization header is malformed; the region "eu-west-1" is wrong; expecting "us-east-1""#;
        let f = classify_parts(Some("AuthorizationHeaderMalformed"), Some(said), 400, None);
        assert_eq!(f.bucket_region.as_deref(), Some("us-east-1"), "as versitygw says it");
        let f = classify_parts(Some("AuthorizationHeaderMalformed"), Some("expecting 'eu-west-1"), 400, None);
        assert_eq!(f.bucket_region, None, "no closing quote");
    }

    #[test]
    fn only_failures_that_end_the_probing_are_fatal() {
        for k in
            [InvalidAccessKeyId, SignatureDoesNotMatch, ExpiredToken, ClockSkew, NoSuchBucket, WrongRegion, Unreachable]
        {
            assert!(k.is_fatal(), "{k:?}");
        }
        for k in [
            AccessDenied,
            KmsDenied,
            NotImplemented,
            NoCorsConfiguration,
            InvalidRange,
            NoSuchKey,
            Transient,
            Rejected,
            Unreadable,
            Other,
        ] {
            assert!(!k.is_fatal(), "{k:?}");
        }
    }

    #[test]
    fn only_region_shaped_names_are_regions() {
        for good in ["us-east-1", "eu-west-1", "us-gov-west-1", "cn-north-1", "default", "zone_a.1"] {
            assert!(looks_like_region(good), "{good}");
        }
        for bad in ["", "eu\nwest", "eu west", "-eu", "<b>", "eu/west", &"a".repeat(64), "r\u{e9}gion"] {
            assert!(!looks_like_region(bad), "{bad:?}");
        }
        let f = classify_parts(Some("PermanentRedirect"), Some(""), 301, Some("eu\nwest"));
        assert_eq!(f.bucket_region, None);
    }

    #[test]
    fn only_busy_or_unreachable_servers_are_retried() {
        for k in [Transient, Unreachable, Other] {
            assert!(k.is_retryable(), "{k:?}");
        }
        for k in [AccessDenied, Rejected, NoSuchBucket, SignatureDoesNotMatch, WrongRegion, NotImplemented, Unreadable]
        {
            assert!(!k.is_retryable(), "{k:?}");
        }
    }

    fn sdk_error(status: u16, code: Option<&str>, headers: &[(&str, &str)]) -> Failure {
        use aws_sdk_s3::operation::get_bucket_cors::GetBucketCorsError;
        use aws_smithy_types::error::ErrorMetadata;
        let mut raw = HttpResponse::new(status.try_into().unwrap(), aws_smithy_types::body::SdkBody::from("<html>"));
        for (name, value) in headers {
            raw.headers_mut().insert(name.to_string(), value.to_string());
        }
        let mut meta = ErrorMetadata::builder();
        if let Some(code) = code {
            meta = meta.code(code);
        }
        classify(&SdkError::service_error(GetBucketCorsError::generic(meta.build()), raw))
    }

    #[test]
    fn a_success_the_sdk_cannot_read_is_unreadable_not_empty() {
        let f = sdk_error(200, None, &[("content-type", "text/html; charset=utf-8")]);
        assert_eq!((f.kind, f.code.as_str()), (Unreadable, "UnreadableAnswer"));
        assert!(f.detail.contains("HTTP 200, text/html"), "{}", f.detail);
        // An HTML error page is still classified by its status.
        assert_eq!(sdk_error(502, None, &[]).kind, Transient);
        assert_eq!(sdk_error(403, Some("AccessDenied"), &[]).kind, AccessDenied);
    }

    #[test]
    fn s3_request_ids_are_kept_printable() {
        let f = sdk_error(
            500,
            Some("InternalError"),
            &[
                ("x-amz-request-id", "4442587FB7D0A2F9"),
                ("x-amz-id-2", "vlR7PnpV2Ce81l0PRw6jlUpck7Jo5ZsQjryTjKlc5aLWGVHPZLj5NeC6qMa0emYBDXOo6QBU0Wo="),
            ],
        );
        assert_eq!(
            f.request_id.as_deref(),
            Some(
                "request id 4442587FB7D0A2F9, extended request id vlR7PnpV2Ce81l0PRw6jlUpck7Jo5ZsQjryTjKlc5aLWGVHPZLj5NeC6qMa0emYBDXOo6QBU0Wo="
            )
        );
        assert_eq!(
            sdk_error(500, None, &[("x-amz-request-id", "A\u{e9}<B>")]).request_id.as_deref(),
            Some("request id A<B>")
        );
        assert_eq!(sdk_error(500, None, &[]).request_id, None);
    }

    #[test]
    fn what_a_server_says_is_bounded() {
        let long = "é".repeat(1000);
        let f = classify_parts(Some("InternalError"), Some(&long), 500, None);
        assert!(f.detail.len() <= MAX_DETAIL);
        let f = classify_parts(Some("bad\ncode"), None, 400, None);
        assert_eq!(f.code, "HTTP400");
    }
}
