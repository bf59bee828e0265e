//! Memory is bounded by what the operator owns, not by what tenants put next to it: 600
//! Secrets with 250 KB of annotations each (no S3Connection near them), and an endpoint that
//! answers with an endless body.

use std::io::{Read, Write};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use s3connect::api::S3Connection;
use s3connect::api::connection::{CorsMode, Usage};
use s3connect::s3::policy::policy;
use s3connect::s3::uri::Location;
use s3connect::validation::required;
use serde_json::json;

use crate::support::operator::{condition, operator_pid, spawn_with};
use crate::support::{self, iam, s3};

/// Peak resident memory of `pid`, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kb / 1024.0
}

/// A listener that answers every request with 200 and a chunked body that never ends.
fn endless_body() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nTransfer-Encoding: chunked\r\n\r\n";
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 65536, "x".repeat(65536));
                // Until the client hangs up (bounded, so that the thread always ends).
                for _ in 0..16_384 {
                    if stream.write_all(chunk.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn bulky_secrets_and_an_endless_answer_do_not_take_the_operators_memory() {
    let _timer = crate::timed!();
    // A private control plane: 150 MB of Secrets would slow every other test's.
    let support::Private { mut launcher, kubeconfig, client, .. } = support::private(&[]).await;
    let bulky = support::namespace(&client, "bulky").await;
    let annotation = "x".repeat(250_000);
    let secrets = Api::<Secret>::namespaced(client.clone(), &bulky);
    let made = futures::stream::iter(0..600)
        .map(|i| {
            let (secrets, annotation) = (secrets.clone(), annotation.clone());
            async move {
                let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("bulky-{i}"),
                    "annotations": {"example.com/blob": annotation}}, "stringData": {"k": "v"}});
                secrets.create(&PostParams::default(), &serde_json::from_value(s).unwrap()).await.is_ok()
            }
        })
        .buffer_unordered(8)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    assert_eq!(made, 600);

    // The operator starts (as after a restart) with all of them there.
    let ns = support::namespace(&client, "served").await;
    let bucket = s3::bucket("served", "us-east-1").await;
    s3::put(&bucket, "images/cat.jpg", b"a cat").await;
    let location = Location::parse(&format!("{bucket}/images/")).unwrap();
    let keys =
        iam::user_with_policy("served", &policy(&location, None, &required(&[Usage::Import], CorsMode::Apply))).await;
    support::keys_secret(&client, &ns, "keys", &keys).await;
    let log = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("operator-memory-{}.log", std::process::id()));
    let mut operator = spawn_with(&log, &kubeconfig, &[]);
    let pid = operator_pid(&log);
    support::s3_connection(&client, &ns, "c", &bucket, "keys", json!({})).await;
    let port = endless_body();
    support::s3_connection(
        &client,
        &ns,
        "endless",
        &bucket,
        "keys",
        json!({"endpoint": format!("http://127.0.0.1:{port}")}),
    )
    .await;
    let api = Api::<S3Connection>::namespaced(client.clone(), &ns);
    let (mut ready, mut refused) = (false, false);
    for _ in 0..300 {
        let c = api.get("c").await.unwrap();
        let e = api.get("endless").await.unwrap();
        ready = condition(&c, "Ready").is_some_and(|r| r.status == "True");
        refused = condition(&e, "Ready").is_some_and(|r| r.status == "False" || r.reason == "EndpointUnreachable");
        if ready && refused {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ready, "a new connection was not Ready with 600 bulky Secrets in the cluster");
    assert!(refused, "the endless answer was not refused: {:?}", api.get("endless").await.unwrap().status);
    let peak = peak_rss_mib(pid);
    println!("memory: peak RSS {peak:.1} MiB with 600 Secrets of 250 KB annotations and an endless answer");
    assert!(peak < 64.0, "peak RSS {peak:.1} MiB");

    drop(operator.stdin.take());
    assert!(operator.wait().unwrap().success(), "the operator did not stop cleanly");
    drop(launcher.stdin.take());
    let _ = launcher.wait();
}
