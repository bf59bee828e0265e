//! The operator behind a proxy and in front of a store with a private CA: an HTTPS S3
//! endpoint (TLS in front of the test S3 server, its certificate signed by a CA made for
//! the test) is Ready only when the operator is given the CA, and with HTTPS_PROXY and
//! HTTP_PROXY set, S3 and the platform API are reached through the proxy.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use s3connect::api::connection::{CorsMode, Usage};
use s3connect::s3::policy::policy;
use s3connect::s3::uri::Location;
use s3connect::validation::required;
use serde_json::json;

use crate::support::operator::{condition, private_namespace, spawn_with_env, wait_for};
use crate::support::{self, env, iam, s3};

/// A testenv/net_fixtures.py process, stopped when dropped.
struct Fixture(Child);

impl Fixture {
    fn start(args: &[&str]) -> Fixture {
        let mut child = Command::new(support::repo_root().join(".testenv/venv/bin/python"))
            .arg(support::repo_root().join("testenv/net_fixtures.py"))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting testenv/net_fixtures.py");
        let line = BufReader::new(child.stdout.take().unwrap()).lines().next();
        assert!(matches!(line, Some(Ok(ref l)) if l == "READY"), "net_fixtures.py {args:?} did not start: {line:?}");
        Fixture(child)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/').to_owned()
}

async fn namespace_with_secrets(client: &kube::Client, purpose: &str, keys: &s3connect::s3::client::Keys) -> String {
    let ns = private_namespace(purpose);
    support::named_namespace(client, &ns).await;
    support::keys_secret(client, &ns, "keys", keys).await;
    support::platform_secret(client, &ns).await;
    ns
}

#[tokio::test]
async fn a_private_ca_and_a_proxy_are_followed_for_s3_and_the_platform() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let bucket = s3::bucket("netca", "us-east-1").await;
    s3::put(&bucket, "images/cat.jpg", b"cat").await;
    let location = Location::parse(&format!("{bucket}/images/")).unwrap();
    let keys =
        iam::user_with_policy("netca", &policy(&location, None, &required(&[Usage::Import], CorsMode::Apply))).await;

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(support::unique("network"));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    let tls_port = free_port();
    let _tls = Fixture::start(&[
        "tls-front",
        "--port",
        &tls_port.to_string(),
        "--upstream",
        &host_port(&env().s3_endpoint),
        "--ca-out",
        ca.to_str().unwrap(),
    ]);
    let proxy_log = dir.join("proxy.log");
    std::fs::write(&proxy_log, "").unwrap();
    let proxy_port = free_port();
    let _proxy = Fixture::start(&["proxy", "--port", &proxy_port.to_string(), "--log", proxy_log.to_str().unwrap()]);
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    let https_endpoint = format!("https://127.0.0.1:{tls_port}");

    // One operator given the CA and the proxy; one given neither.
    let with_ca = namespace_with_secrets(&client, "netca", &keys).await;
    let without = namespace_with_secrets(&client, "netnoca", &keys).await;
    let allowed = ["--allowed-endpoints", "https://127.0.0.1:*"];
    let log =
        |n: &str| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("operator-{n}-{}.log", std::process::id()));
    let mut trusting = spawn_with_env(
        &log("netca"),
        &[&allowed[..], &["--namespace", &with_ca, "--ca-bundle", ca.to_str().unwrap()]].concat(),
        &[("HTTPS_PROXY", &proxy), ("HTTP_PROXY", &proxy), ("NO_PROXY", "")],
    );
    let mut plain = spawn_with_env(&log("netnoca"), &[&allowed[..], &["--namespace", &without]].concat(), &[]);

    let spec = json!({"platform": {"secretRef": {"name": "labellerr"}}, "endpoint": https_endpoint});
    for ns in [&with_ca, &without] {
        support::s3_connection(&client, ns, "c", &bucket, "keys", spec.clone()).await;
    }
    let c = wait_for(&client, &with_ca, "c", "Ready and registered", |c| {
        condition(c, "Ready").is_some_and(|r| r.status == "True")
            && c.status.as_ref().is_some_and(|s| s.platform_connection_id.is_some())
    })
    .await;
    assert_eq!(c.status.unwrap().endpoint.as_deref(), Some(https_endpoint.as_str()));

    // Without the CA: refused, saying how to give it, and not retried as if it were the network.
    let u = wait_for(&client, &without, "c", "EndpointCertificateUntrusted", |c| {
        condition(c, "BucketReachable").is_some_and(|x| x.reason == "EndpointCertificateUntrusted")
    })
    .await;
    let message = &condition(&u, "BucketReachable").unwrap().message;
    assert!(message.contains("--ca-bundle") && message.contains(&https_endpoint), "{message}");
    assert!(condition(&u, "Stalled").is_some_and(|s| s.status == "True"), "{:?}", u.status);

    // Through the proxy: S3 over HTTPS (a CONNECT tunnel) and the platform API.
    let seen = std::fs::read_to_string(&proxy_log).unwrap();
    assert!(seen.contains(&format!("CONNECT 127.0.0.1:{tls_port}")), "S3 did not go through the proxy:\n{seen}");
    assert!(seen.contains(&host_port(&env().platform_url)), "the platform API did not go through the proxy:\n{seen}");

    // `check` on a person's machine: AWS_CA_BUNDLE as the AWS CLI reads it.
    let check = |ca_bundle: Option<&std::path::Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_s3connect"));
        command
            .args(["check", "--uri", &format!("s3://{bucket}/images/"), "--endpoint", &https_endpoint])
            .args(["--force-path-style", "--cors-mode", "ignore"])
            .env("AWS_ACCESS_KEY_ID", &keys.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &keys.secret_access_key)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_CA_BUNDLE");
        if let Some(ca) = ca_bundle {
            command.env("AWS_CA_BUNDLE", ca);
        }
        let out = command.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (code, text) = check(Some(&ca));
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = check(None);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("EndpointCertificateUntrusted"), "{text}");

    for operator in [&mut trusting, &mut plain] {
        drop(operator.stdin.take());
        assert!(operator.wait().unwrap().success());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_name_reached_through_a_wildcard_never_reaches_an_internal_address() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let bucket = s3::bucket("internal", "us-east-1").await;
    s3::put(&bucket, "images/cat.jpg", b"cat").await;
    let location = Location::parse(&format!("{bucket}/")).unwrap();
    let keys =
        iam::user_with_policy("internal", &policy(&location, None, &required(&[Usage::Import], CorsMode::Ignore)))
            .await;
    let ns = namespace_with_secrets(&client, "internal", &keys).await;
    let port = host_port(&env().s3_endpoint).rsplit(':').next().unwrap().to_owned();
    // `*` admits any one-label name on the store's port; `127.0.0.1` is named exactly (by
    // the shared list every test operator gets).
    let wildcard = format!("http://*:{port}");
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("operator-internal-{}.log", std::process::id()));
    let mut operator = spawn_with_env(&log, &["--allowed-endpoints", &wildcard, "--namespace", &ns], &[]);

    // `localhost` passes the pattern, and resolves to loopback only.
    let via_name = json!({"endpoint": format!("http://localhost:{port}"), "cors": {"mode": "Ignore"}});
    let via_ip = json!({"endpoint": env().s3_endpoint, "cors": {"mode": "Ignore"}});
    support::s3_connection(&client, &ns, "name", &bucket, "keys", via_name).await;
    support::s3_connection(&client, &ns, "ip", &bucket, "keys", via_ip).await;
    let c = wait_for(&client, &ns, "name", "EndpointNotAllowed", |c| {
        condition(c, "BucketReachable").is_some_and(|x| x.reason == "EndpointNotAllowed")
    })
    .await;
    let reachable = condition(&c, "BucketReachable").unwrap();
    assert_eq!(reachable.status, "False");
    for remedy in
        [&format!("http://localhost:{port}")[..], "internal addresses", "--allowed-endpoints", "names the host exactly"]
    {
        assert!(reachable.message.contains(remedy), "{remedy:?} not in {:?}", reachable.message);
    }
    assert!(
        !reachable.message.contains("127.0.0.1"),
        "the addresses a name resolves to are not shown: {}",
        reachable.message
    );
    assert!(condition(&c, "Stalled").is_some_and(|s| s.status == "True"), "{:?}", c.status);
    // The same store by the address the admin named is reachable.
    wait_for(&client, &ns, "ip", "Ready", |c| condition(c, "Ready").is_some_and(|r| r.status == "True")).await;

    drop(operator.stdin.take());
    assert!(operator.wait().unwrap().success());
}
