//! IAM fixtures: users with a given policy and their access keys, made through the S3
//! server's IAM Query API, signed with the admin's keys (IAM enforcement is on).

use bytes::Bytes;
use http_body_util::Full;
use s3connect::s3::client::Keys;

use super::{env, http::send, sign::signed, unique};

/// Calls one IAM action and returns the XML response; panics on an error status.
pub async fn call(params: &[(&str, &str)]) -> String {
    let (status, body) = try_call(params).await;
    let action = params.iter().find(|(k, _)| *k == "Action").map_or("?", |(_, v)| *v);
    assert!(status.is_success(), "IAM {action} failed with {status}: {body}");
    body
}

/// Calls one IAM action and returns its status and body, whatever they are.
pub async fn try_call(params: &[(&str, &str)]) -> (http::StatusCode, String) {
    let mut form = String::from("Version=2010-05-08");
    for (k, v) in params {
        form.push('&');
        form.push_str(k);
        form.push('=');
        form.push_str(&percent_encode(v));
    }
    let endpoint = format!("{}/", env().s3_endpoint);
    let request = http::Request::post(&endpoint)
        .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
        .body(Full::new(Bytes::from(form.clone())))
        .expect("an IAM request");
    let request = signed(request, form.as_bytes(), "iam", &env().s3_admin);
    send(request).await
}

fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn xml_value<'a>(doc: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = doc.find(&open).unwrap_or_else(|| panic!("<{tag}> missing in {doc}")) + open.len();
    let end = doc[start..].find(&format!("</{tag}>")).expect("closing tag") + start;
    &doc[start..end]
}

/// Creates an IAM user whose only permissions are `policy` (a JSON policy document) and
/// returns its new access keys.
pub async fn user_with_policy(hint: &str, policy: &serde_json::Value) -> Keys {
    user_with_policy_named(hint, policy).await.0
}

/// Replaces the policy of the user `name` (as `user_with_policy_named` made it).
pub async fn put_user_policy(name: &str, policy: &serde_json::Value) {
    call(&[
        ("Action", "PutUserPolicy"),
        ("UserName", name),
        ("PolicyName", "s3connect-test"),
        ("PolicyDocument", &policy.to_string()),
    ])
    .await;
}

/// Like `user_with_policy`, also returning the user's name.
pub async fn user_with_policy_named(hint: &str, policy: &serde_json::Value) -> (Keys, String) {
    let name = unique(hint);
    call(&[("Action", "CreateUser"), ("UserName", &name)]).await;
    call(&[
        ("Action", "PutUserPolicy"),
        ("UserName", &name),
        ("PolicyName", "s3connect-test"),
        ("PolicyDocument", &policy.to_string()),
    ])
    .await;
    let key = call(&[("Action", "CreateAccessKey"), ("UserName", &name)]).await;
    let keys = Keys {
        access_key_id: xml_value(&key, "AccessKeyId").to_owned(),
        secret_access_key: xml_value(&key, "SecretAccessKey").to_owned(),
        session_token: None,
    };
    (keys, name)
}

/// A policy document allowing `actions` on `resources`.
pub fn allow(actions: &[&str], resources: &[String]) -> serde_json::Value {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resources}],
    })
}
