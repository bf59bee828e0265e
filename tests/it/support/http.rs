//! Plain HTTP/1.1 requests to the local test servers.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Sends `request` and returns the status and the body as text.
pub async fn send(request: http::Request<Full<Bytes>>) -> (http::StatusCode, String) {
    let (status, body, _) = send_with_headers(request).await;
    (status, body)
}

/// Sends `request` and returns the status, the body as text and the headers.
pub async fn send_with_headers(request: http::Request<Full<Bytes>>) -> (http::StatusCode, String, http::HeaderMap) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let uri = request.uri().clone();
    let response = client.request(request).await.unwrap_or_else(|e| panic!("request to {uri}: {e}"));
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("reading a response body").to_bytes();
    (parts.status, String::from_utf8_lossy(&body).into_owned(), parts.headers)
}
