//! The manual's "CORS errors in the browser", judged by a browser: headless Chromium loads
//! an image from the bucket as a labelling interface does (testenv/browser_check.py: a
//! fetch of a presigned URL, the image drawn on a canvas and a pixel read back, and a fetch
//! that needs a preflight), before and after the operator applies its CORS rule. The S3
//! server is versitygw, which answers CORS per bucket rule as S3 does (moto's IAM mode
//! refuses presigned URLs and unsigned preflights).

use std::process::Command;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use s3connect::api::S3Connection;
use s3connect::s3::client::Target;
use serde_json::{Value, json};

use crate::support::operator::{condition, wait_for};
use crate::support::{self, env};

/// A 1x1 PNG whose one pixel is opaque red.
const RED_PIXEL: &[u8] = b"\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\x0d\x49\x44\x41\x54\x78\xda\x63\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x56\xc7\x2f\x0d\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82";
const READ_BACK: &str = "255,0,0,255";

fn s3() -> aws_sdk_s3::Client {
    let target = Target { region: "us-east-1".into(), endpoint: Some(env().versitygw.clone()), force_path_style: true };
    support::sdk::sdk(&env().versitygw_root, &target)
}

/// A bucket on versitygw, without CORS, holding `images/red.png`.
async fn bucket(hint: &str) -> String {
    let bucket = support::unique(hint);
    let s3 = s3();
    s3.create_bucket().bucket(&bucket).send().await.expect("creating a bucket on versitygw");
    s3.put_object()
        .bucket(&bucket)
        .key("images/red.png")
        .content_type("image/png")
        .body(RED_PIXEL.to_vec().into())
        .send()
        .await
        .expect("uploading the image");
    bucket
}

/// A presigned GET URL for the image, as the platform hands the browser; `n` makes each
/// URL distinct, so that no answer comes from the browser's cache.
async fn presigned(bucket: &str, n: u64) -> String {
    let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(600 + n)).unwrap();
    s3().get_object().bucket(bucket).key("images/red.png").presigned(config).await.unwrap().uri().to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Where the page is served from.
enum Origin {
    /// http://127.0.0.1:<port>
    Local(u16),
    /// https://<host>, mapped to a local server with a test certificate.
    Https(&'static str),
}

impl Origin {
    fn url(&self) -> String {
        match self {
            Origin::Local(port) => format!("http://127.0.0.1:{port}"),
            Origin::Https(host) => format!("https://{host}"),
        }
    }
}

/// What the browser allowed, from `origin`, for the image in `bucket`: the page's own
/// report, `{"fetch": {"ok", "detail"}, "canvas": ..., "preflight": ...}`.
async fn browse(origin: &Origin, bucket: &str) -> Value {
    let mut args = vec![
        "--fetch".to_owned(),
        presigned(bucket, 1).await,
        "--canvas".to_owned(),
        presigned(bucket, 2).await,
        "--preflight".to_owned(),
        presigned(bucket, 3).await,
    ];
    match origin {
        Origin::Local(port) => args.extend(["--port".to_owned(), port.to_string()]),
        Origin::Https(host) => args.extend(["--https-host".to_owned(), (*host).to_owned()]),
    }
    let out = tokio::task::spawn_blocking(move || {
        Command::new(support::repo_root().join(".testenv/venv/bin/python"))
            .arg(support::repo_root().join("testenv/browser_check.py"))
            .args(&args)
            .output()
            .expect("running testenv/browser_check.py")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(3), "this test needs Chromium and cannot run without it: {stderr}");
    assert!(out.status.success(), "the browser check failed: {stderr}");
    let seen: Value = serde_json::from_slice(&out.stdout).expect("the page's JSON report");
    assert_eq!(seen["origin"], origin.url(), "the page ran at another origin: {seen}");
    seen
}

fn allowed(seen: &Value) -> [bool; 3] {
    ["fetch", "canvas", "preflight"].map(|k| seen[k]["ok"].as_bool().unwrap_or_else(|| panic!("{k} missing: {seen}")))
}

async fn connection(client: &kube::Client, ns: &str, name: &str, bucket: &str, cors: Value) {
    support::keys_secret(client, ns, "keys", &env().versitygw_root).await;
    let mut spec = json!({"uri": format!("s3://{bucket}/images/"), "credentials": {"secretRef": {"name": "keys"}},
        "endpoint": env().versitygw, "forcePathStyle": true, "usage": ["Import"]});
    if !cors.is_null() {
        spec["cors"] = cors;
    }
    let conn = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "S3Connection", "metadata": {"name": name}, "spec": spec});
    Api::<S3Connection>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&conn))
        .await
        .unwrap_or_else(|e| panic!("applying S3Connection {ns}/{name}: {e}"));
}

async fn cors_condition(client: &kube::Client, ns: &str, name: &str, status: &str, reason: &str) -> S3Connection {
    wait_for(client, ns, name, &format!("CorsConfigured={status} ({reason})"), |c| {
        condition(c, "CorsConfigured").is_some_and(|x| x.status == status && x.reason == reason)
            && c.status.as_ref().and_then(|s| s.observed_generation) == c.metadata.generation
    })
    .await
}

#[tokio::test]
async fn the_browser_loads_images_exactly_when_the_status_says_cors_is_configured() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let ns = support::namespace(&client, "browser").await;
    let page = Origin::Local(free_port());
    let bucket = bucket("browser").await;

    // No rule: the browser refuses all three, as users see it.
    let seen = browse(&page, &bucket).await;
    assert_eq!(allowed(&seen), [false; 3], "a bucket without CORS let the browser read it: {seen}");

    // Verify mode on that bucket: the status says the rule is missing, and it is.
    connection(&client, &ns, "verify", &bucket, json!({"mode": "Verify", "allowedOrigins": [page.url()]})).await;
    let c = cors_condition(&client, &ns, "verify", "False", "CorsRuleMissing").await;
    let message = &condition(&c, "CorsConfigured").unwrap().message;
    assert!(message.contains(&page.url()) && message.contains("put-bucket-cors"), "{message}");
    let seen = browse(&page, &bucket).await;
    assert_eq!(allowed(&seen), [false; 3], "CorsRuleMissing, yet the browser read the image: {seen}");

    // Apply mode for the page's origin: Ready, and the browser reads the image's pixels.
    connection(&client, &ns, "apply", &bucket, json!({"mode": "Apply", "allowedOrigins": [page.url()]})).await;
    let c = cors_condition(&client, &ns, "apply", "True", "CorsApplied").await;
    assert!(condition(&c, "Ready").is_some_and(|r| r.status == "True"), "{:?}", c.status);
    let seen = browse(&page, &bucket).await;
    assert_eq!(allowed(&seen), [true; 3], "the rule is applied, yet the browser refused: {seen}");
    assert_eq!(seen["canvas"]["detail"], READ_BACK, "{seen}");

    // The Verify connection now finds the rule (asked to look again): the status follows S3.
    let now = json!({"metadata": {"annotations": {"s3connect.io/requested-at": "browser-1"}}});
    Api::<S3Connection>::namespaced(client.clone(), &ns)
        .patch("verify", &PatchParams::default(), &Patch::Merge(&now))
        .await
        .unwrap();
    cors_condition(&client, &ns, "verify", "True", "CorsVerified").await;

    // The rule moved to another origin: the page's origin is refused again.
    let other = Origin::Local(free_port());
    connection(&client, &ns, "apply", &bucket, json!({"mode": "Apply", "allowedOrigins": [other.url()]})).await;
    cors_condition(&client, &ns, "apply", "True", "CorsApplied").await;
    let seen = browse(&page, &bucket).await;
    assert_eq!(allowed(&seen), [false; 3], "a rule for {} let {} read: {seen}", other.url(), page.url());
    let seen = browse(&other, &bucket).await;
    assert_eq!(allowed(&seen), [true; 3], "{seen}");
}

#[tokio::test]
async fn the_default_origin_is_what_a_browser_at_the_labelling_interface_accepts() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let ns = support::namespace(&client, "browser-default").await;
    let interface = Origin::Https("pro.labellerr.com");
    let bucket = bucket("browser-default").await;
    let seen = browse(&interface, &bucket).await;
    assert_eq!(allowed(&seen), [false; 3], "{seen}");

    // No cors field at all: the default rule, for the default origin.
    connection(&client, &ns, "c", &bucket, Value::Null).await;
    let c = cors_condition(&client, &ns, "c", "True", "CorsApplied").await;
    assert!(condition(&c, "Ready").is_some_and(|r| r.status == "True"), "{:?}", c.status);
    assert_eq!(interface.url(), s3connect::api::DEFAULT_ORIGIN);
    let seen = browse(&interface, &bucket).await;
    assert_eq!(allowed(&seen), [true; 3], "the default rule, yet the interface's origin was refused: {seen}");
    assert_eq!(seen["canvas"]["detail"], READ_BACK, "{seen}");
}
