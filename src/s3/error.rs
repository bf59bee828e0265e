//! The one place where an S3 error becomes a kind of failure. Everything downstream
//! (conditions, reasons, remedies) works on `Failure`, never on HTTP answers.

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
    let bucket_region = region_header.map(str::to_owned).or_else(|| expected_region(message));
    let mut end = message.len().min(MAX_DETAIL);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let code =
        if code.len() > 64 || !code.bytes().all(|b| b.is_ascii_graphic()) { format!("HTTP{status}") } else { code };
    Failure { kind, code, detail: message[..end].to_owned(), bucket_region }
}

fn mentions_kms(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("kms:decrypt") || m.contains("kms key") || m.contains("kms.") || m.contains("customer master key")
}

/// S3's AuthorizationHeaderMalformed names the right region: "... the region 'us-east-1'
/// is wrong; expecting 'eu-west-1'".
fn expected_region(message: &str) -> Option<String> {
    let rest = &message[message.find("expecting '")? + "expecting '".len()..];
    Some(rest[..rest.find('\'')?].to_owned())
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
            Other,
        ] {
            assert!(!k.is_fatal(), "{k:?}");
        }
    }

    #[test]
    fn only_busy_or_unreachable_servers_are_retried() {
        for k in [Transient, Unreachable, Other] {
            assert!(k.is_retryable(), "{k:?}");
        }
        for k in [AccessDenied, Rejected, NoSuchBucket, SignatureDoesNotMatch, WrongRegion, NotImplemented] {
            assert!(!k.is_retryable(), "{k:?}");
        }
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
