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
    let what = "a new connection Ready with 600 bulky Secrets in the cluster, and the endless answer refused";
    support::wait_for(what, Duration::from_secs(60), Duration::from_millis(200), || async {
        let c = api.get("c").await.unwrap();
        let e = api.get("endless").await.unwrap();
        let ready = condition(&c, "Ready").is_some_and(|r| r.status == "True");
        let refused = condition(&e, "Ready").is_some_and(|r| r.status == "False" || r.reason == "EndpointUnreachable");
        if ready && refused { Ok(()) } else { Err(format!("c: {:?}; endless: {:?}", c.status, e.status)) }
    })
    .await;
    let peak = peak_rss_mib(pid);
    println!("memory: peak RSS {peak:.1} MiB with 600 Secrets of 250 KB annotations and an endless answer");
    assert!(peak < 64.0, "peak RSS {peak:.1} MiB");

    drop(operator.stdin.take());
    assert!(operator.wait().unwrap().success(), "the operator did not stop cleanly");
    drop(launcher.stdin.take());
    let _ = launcher.wait();
}

/// What a tenant can put on the operator's own kinds does not become the operator's memory:
/// 100 S3Connections with a 250 KB annotation under an `s3connect.io/` key the operator does
/// not define and 40 KB of labels, and 60 AnnotationProjects as large as their schema allows
/// (a template of 500 options: one more option is refused at admission). The operator,
/// started with all of them there, stays small and serves another namespace at once.
#[tokio::test]
async fn padded_connections_and_maximal_projects_do_not_take_the_operators_memory() {
    let _timer = crate::timed!();
    let support::Private { mut launcher, kubeconfig, client, .. } = support::private(&[]).await;
    let padded = support::namespace(&client, "padded").await;
    let annotation = "x".repeat(250_000);
    let labels: serde_json::Map<String, serde_json::Value> =
        (0..500).map(|i| (format!("example.com/label-{i:03}"), json!("y".repeat(60)))).collect();
    let conns = Api::<S3Connection>::namespaced(client.clone(), &padded);
    let made = futures::stream::iter(0..100)
        .map(|i| {
            let (conns, annotation, labels) = (conns.clone(), annotation.clone(), labels.clone());
            async move {
                let c = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "S3Connection", "metadata": {
                    "name": format!("padded-{i}"), "labels": labels, "annotations": {"s3connect.io/padding": annotation}},
                    "spec": {"uri": "s3://padded-bucket/", "credentials": {"secretRef": {"name": "none"}}}});
                conns.create(&PostParams::default(), &serde_json::from_value(c).unwrap()).await.is_ok()
            }
        })
        .buffer_unordered(8)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    assert_eq!(made, 100);
    // The largest template the schema admits: 50 questions, 500 options of 128 characters.
    let option = "o".repeat(120);
    let questions: Vec<serde_json::Value> = (0..50)
        .map(|q| {
            json!({"question": format!("{q}-{}", "q".repeat(500)), "type": "dropdown",
                "options": (0..10).map(|o| format!("{o:03}{option}")).collect::<Vec<_>>()})
        })
        .collect();
    let projects = Api::<s3connect::api::AnnotationProject>::namespaced(client.clone(), &padded);
    let project = |name: String, questions: &[serde_json::Value]| {
        json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "AnnotationProject", "metadata": {"name": name},
            "spec": {"datasetRefs": [{"name": "none"}], "template": {"questions": questions}}})
    };
    let mut over = questions.clone();
    over[0]["options"].as_array_mut().unwrap().push(json!("one too many"));
    let refused =
        projects.create(&PostParams::default(), &serde_json::from_value(project("over".into(), &over)).unwrap()).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.to_string().contains("at most 500 options")),
        "a template of 501 options was admitted: {refused:?}"
    );
    let made = futures::stream::iter(0..60)
        .map(|i| {
            let (projects, body) = (projects.clone(), project(format!("big-{i}"), &questions));
            async move { projects.create(&PostParams::default(), &serde_json::from_value(body).unwrap()).await.is_ok() }
        })
        .buffer_unordered(8)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    assert_eq!(made, 60);

    // The operator starts (as after a restart) with all of them there.
    let ns = support::namespace(&client, "served").await;
    let bucket = s3::bucket("padserved", "us-east-1").await;
    s3::put(&bucket, "images/cat.jpg", b"a cat").await;
    let location = Location::parse(&format!("{bucket}/images/")).unwrap();
    let keys =
        iam::user_with_policy("padserved", &policy(&location, None, &required(&[Usage::Import], CorsMode::Apply)))
            .await;
    support::keys_secret(&client, &ns, "keys", &keys).await;
    let log = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("operator-padded-{}.log", std::process::id()));
    let mut operator = spawn_with(&log, &kubeconfig, &[]);
    let pid = operator_pid(&log);
    let started = std::time::Instant::now();
    support::s3_connection(&client, &ns, "c", &bucket, "keys", json!({})).await;
    let api = Api::<S3Connection>::namespaced(client.clone(), &ns);
    let what = "another namespace's connection Ready beside the padded objects";
    support::wait_for(what, Duration::from_secs(30), Duration::from_millis(100), || async {
        let c = api.get("c").await.unwrap();
        if condition(&c, "Ready").is_some_and(|r| r.status == "True") { Ok(()) } else { Err(format!("{:?}", c.status)) }
    })
    .await;
    support::figure("a connection Ready beside 100 padded connections and 60 maximal projects", started.elapsed());
    // Every padded connection was seen (its status written), so all of them were listed.
    support::wait_for(
        "every padded connection reconciled",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let list = conns.list(&Default::default()).await.unwrap();
            match list.items.iter().filter(|c| c.status.is_some()).count() {
                100 => Ok(()),
                seen => Err(format!("{seen} of 100")),
            }
        },
    )
    .await;
    let peak = peak_rss_mib(pid);
    println!("memory: peak RSS {peak:.1} MiB with 100 padded S3Connections and 60 maximal AnnotationProjects");
    // The chart's limit is 128 MiB; measured 85 MiB (caches keeping every annotation and
    // label, and listing 500 objects a page: 193 MiB).
    assert!(peak < 110.0, "peak RSS {peak:.1} MiB");
    drop(operator.stdin.take());
    assert!(operator.wait().unwrap().success(), "the operator did not stop cleanly");
    drop(launcher.stdin.take());
    let _ = launcher.wait();
}
