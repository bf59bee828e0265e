//! SigV4 signing of plain HTTP requests to the test S3/IAM server, for calls the SDK does
//! not make (IAM) or whose raw response the tests inspect (CORS headers).

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http_body_util::Full;
use s3connect::s3::client::Keys;

/// Signs `request` (whose body is `body`) for `service` with `keys`, in us-east-1.
pub fn signed(
    mut request: http::Request<Full<Bytes>>,
    body: &[u8],
    service: &str,
    keys: &Keys,
) -> http::Request<Full<Bytes>> {
    let identity: Identity =
        Credentials::new(&keys.access_key_id, &keys.secret_access_key, None, None, "testenv").into();
    let mut settings = SigningSettings::default();
    if service == "s3" {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name(service)
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .expect("signing params")
        .into();
    let uri = request.uri().to_string();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().expect("ASCII header").to_owned()))
        .collect();
    let signable = SignableRequest::new(
        request.method().as_str(),
        &uri,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .expect("signable request");
    let (instructions, _) = sign(signable, &params).expect("signing").into_parts();
    instructions.apply_to_request_http1x(&mut request);
    request
}
