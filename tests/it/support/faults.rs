//! The S3 fault proxy's controls (testenv/fault_proxy.py): per bucket, answer a share of
//! requests with an S3 error, or accept them and never answer.

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};

use super::{env, http::send};

/// Sets the faults for `bucket` (`{}` clears them): `share` or `every`, `status`, `code`, `hang`,
/// and for IAM calls (bucket "", or "iam:<user>" for one user's) `action`, `lose_answer`,
/// `count`.
pub async fn set(bucket: &str, settings: Value) {
    let mut body = settings;
    body["bucket"] = json!(bucket);
    let request = http::Request::post(format!("{}/_faults", env().s3_fault_proxy))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let (status, text) = send(request).await;
    assert!(status.is_success(), "setting faults: {status} {text}");
}

/// Requests the proxy saw for `bucket`, and how many of them it answered with a fault.
pub async fn stats(bucket: &str) -> (u64, u64) {
    let request =
        http::Request::get(format!("{}/_faults", env().s3_fault_proxy)).body(Full::new(Bytes::new())).unwrap();
    let (_, text) = send(request).await;
    let all: Value = serde_json::from_str(&text).expect("JSON from the fault proxy");
    (all[bucket]["requests"].as_u64().unwrap_or(0), all[bucket]["injected"].as_u64().unwrap_or(0))
}
