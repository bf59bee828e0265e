//! Running the operator as a platform team does: metrics and health endpoints, and two
//! replicas that take turns through a Lease.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use kube::api::Api;
use s3connect::api::S3Connection;
use s3connect::api::connection::Usage;
use s3connect::s3::policy::policy;
use s3connect::s3::uri::Location;
use s3connect::validation::required;
use serde_json::{Value, json};

use crate::support::operator::{condition, log_path, operator_pid, private_namespace, spawn, wait_for};
use crate::support::{self, iam, s3};

/// A Secret with a user's keys and a Ready-able S3Connection `name` in `ns`.
async fn ready_connection(client: &kube::Client, ns: &str, name: &str) {
    let bucket = s3::bucket("ops", "us-east-1").await;
    s3::put(&bucket, "images/a.jpg", b"a").await;
    let location = Location::parse(&format!("{bucket}/images/")).unwrap();
    let keys =
        iam::user_with_policy("ops", &policy(&location, None, &required(&[Usage::Import], Default::default()))).await;
    support::keys_secret(client, ns, &format!("{name}-keys"), &keys).await;
    support::s3_connection(client, ns, name, &bucket, &format!("{name}-keys"), json!({})).await;
}

fn is_ready(c: &S3Connection) -> bool {
    condition(c, "Ready").is_some_and(|r| r.status == "True")
}

fn log_lines(path: &PathBuf) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The address an operator logged that it serves metrics on.
fn metrics_addr(log: &PathBuf) -> String {
    for _ in 0..100 {
        if let Some(addr) = log_lines(log).iter().find_map(|l| l["addr"].as_str().map(str::to_owned)) {
            return addr;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no metrics address in {}", log.display());
}

/// Whether `check` holds within five seconds.
fn eventually(check: impl Fn() -> bool) -> bool {
    within(5, check)
}

/// Whether `check` holds within `seconds`, looked at every 100 ms.
fn within(seconds: u64, check: impl Fn() -> bool) -> bool {
    for _ in 0..seconds * 10 {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

async fn get(url: &str) -> (u16, String) {
    let request = http::Request::get(url).body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
    let (status, body) = crate::support::http::send(request).await;
    (status.as_u16(), body)
}

#[tokio::test]
async fn metrics_and_health_endpoints() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let ns = support::namespace(&client, "metrics").await;
    ready_connection(&client, &ns, "c").await;
    wait_for(&client, &ns, "c", "Ready", is_ready).await;

    let addr = metrics_addr(crate::support::operator::shared());
    assert_eq!(get(&format!("http://{addr}/healthz")).await.0, 200);
    assert_eq!(get(&format!("http://{addr}/readyz")).await.0, 200);
    let expected = [
        "# TYPE s3connect_reconciliations_total counter",
        "s3connect_reconciliations_total{kind=\"S3Connection\",reason=\"Validated\"}",
        "s3connect_s3_requests_total{operation=\"GetBucketLocation\",outcome=\"ok\"}",
        "s3connect_s3_requests_total{operation=\"ListObjectsV2\",outcome=\"ok\"}",
        "s3connect_reconcile_duration_seconds_bucket{kind=\"S3Connection\",le=\"+Inf\"}",
        "# TYPE s3connect_reconcile_busy_seconds summary",
        "s3connect_reconcile_busy_seconds_count{kind=\"S3Connection\"}",
        "s3connect_resources{kind=\"S3Connection\",ready=\"true\"}",
        // Without leader election this instance does the work.
        "s3connect_leader 1",
        "s3connect_build_info{version=",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_start_time_seconds ",
        "process_open_fds ",
    ];
    let own = format!("s3connect_ready{{kind=\"S3Connection\",namespace=\"{ns}\",name=\"c\",reason=\"Validated\"}} 1");
    let expected: Vec<String> = expected.iter().map(|s| s.to_string()).chain([own.clone()]).collect();
    // A reconcile is counted after its status write: give the scrape a moment.
    let every = Duration::from_millis(100);
    let text = support::wait_for("every series in /metrics", Duration::from_secs(5), every, || async {
        let (status, text) = get(&format!("http://{addr}/metrics")).await;
        assert_eq!(status, 200);
        match expected.iter().find(|s| !text.contains(s.as_str())) {
            None => Ok(text),
            Some(missing) => Err(format!("{missing} missing from:\n{text}")),
        }
    })
    .await;
    // Reconciles did work, and it was measured: some CPU, far less than they took.
    let value = |name: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} missing"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let busy = value("s3connect_reconcile_busy_seconds_sum{kind=\"S3Connection\"}");
    let took = value("s3connect_reconcile_duration_seconds_sum{kind=\"S3Connection\"}");
    assert!(busy > 0.0 && busy < took, "busy {busy} s, reconciles took {took} s");

    // A deleted object's series goes with it: the gauges name only objects that exist.
    Api::<S3Connection>::namespaced(client.clone(), &ns).delete("c", &Default::default()).await.unwrap();
    let series = format!("namespace=\"{ns}\",name=\"c\"");
    support::wait_for("the deleted connection's series gone", Duration::from_secs(10), every, || async {
        let text = get(&format!("http://{addr}/metrics")).await.1;
        if text.contains(&series) { Err(text) } else { Ok(()) }
    })
    .await;
}

#[tokio::test]
async fn two_replicas_take_turns_through_the_lease() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let ns = private_namespace("leader");
    support::named_namespace(&client, &ns).await;
    let args = ["--namespace", &ns, "--leader-election", "--lease-namespace", &ns, "--lease-duration", "4"];
    let (log_a, log_b) = (log_path("leader-a"), log_path("leader-b"));
    let validated = |log: &PathBuf| log_lines(log).iter().filter(|l| l["message"] == "validated").count();
    let leading = |log: &PathBuf| log_lines(log).iter().any(|l| l["message"] == "became the leader");
    let mut a = spawn(&log_a, &args);
    assert!(within(30, || leading(&log_a)), "the first replica did not take the lease within 30 s");
    let mut b = spawn(&log_b, &args);
    ready_connection(&client, &ns, "first").await;
    wait_for(&client, &ns, "first", "Ready", is_ready).await;

    assert!(leading(&log_a) && !leading(&log_b), "a started first and leads");
    // The log line follows the status write: give it a moment.
    assert!(eventually(|| validated(&log_a) >= 1), "the leader did not validate");
    assert_eq!(validated(&log_b), 0, "the standby reconciled");
    assert!(
        log_lines(&log_b).iter().any(|l| l["message"].as_str().unwrap_or("").starts_with("waiting for leadership"))
    );

    // The leader dies without releasing the lease; the standby takes over once it expires.
    let killed_at = Instant::now();
    assert!(Command::new("kill").args(["-KILL", &operator_pid(&log_a).to_string()]).status().unwrap().success());
    ready_connection(&client, &ns, "second").await;
    wait_for(&client, &ns, "second", "Ready", is_ready).await;
    let took = killed_at.elapsed();
    assert!(leading(&log_b), "b did not take over");
    assert!(eventually(|| validated(&log_b) >= 1), "the new leader did not validate");
    assert!(took < Duration::from_secs(20), "took over after {took:?} with a 4 s lease");

    for child in [&mut a, &mut b] {
        drop(child.stdin.take());
        child.wait().unwrap();
    }
    // On SIGTERM the leader gave the lease up.
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), &ns)
        .get("s3connect-leader")
        .await
        .unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity, None);
}

/// One raw GET of `path`, answered within a second, or None.
async fn raw_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        Some(String::from_utf8_lossy(&answer).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(1), exchange).await.ok().flatten()
}

/// A crowd of idle sockets against the health and metrics port of an operator whose
/// open-file limit is low: once they go, /healthz answers again within seconds (an accept
/// that failed once used to end the server for good, and the kubelet then restarted the
/// operator again and again).
#[tokio::test]
async fn health_answers_again_once_a_crowd_of_sockets_is_gone() {
    let _timer = crate::timed!();
    let ns = private_namespace("crowd");
    let log = log_path("crowd");
    let mut operator = spawn(&log, &["--namespace", &ns]);
    let addr = metrics_addr(&log);
    let pid = operator_pid(&log);
    let limited = Command::new("prlimit").args(["--pid", &pid.to_string(), "--nofile=128:128"]).status().unwrap();
    assert!(limited.success(), "prlimit failed");
    assert!(raw_get(&addr, "/healthz").await.is_some_and(|a| a.starts_with("HTTP/1.1 200")));
    // 300 sockets that send nothing, held for three seconds.
    let mut held = Vec::new();
    for _ in 0..300 {
        match tokio::net::TcpStream::connect(&addr).await {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    assert!(held.len() >= 200, "only {} sockets could be opened: the server stopped listening", held.len());
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(held);
    let released = Instant::now();
    let mut answered = false;
    while released.elapsed() < Duration::from_secs(5) {
        if raw_get(&addr, "/healthz").await.is_some_and(|a| a.starts_with("HTTP/1.1 200")) {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "/healthz did not answer within 5 s of the sockets going");
    support::figure("/healthz answering again after 300 idle sockets went", released.elapsed());
    drop(operator.stdin.take());
    let _ = operator.wait();
}

/// The probes' own port answers while the metrics port is crowded, and serves no metrics.
#[tokio::test]
async fn the_health_port_answers_while_the_metrics_port_is_crowded() {
    let _timer = crate::timed!();
    let ns = private_namespace("healthport");
    let log = log_path("healthport");
    let mut operator = spawn(&log, &["--namespace", &ns, "--health-addr", "127.0.0.1:0"]);
    let addr = metrics_addr(&log);
    let health = (0..100)
        .find_map(|_| {
            let found = log_lines(&log).iter().find_map(|l| l["health_addr"].as_str().map(str::to_owned));
            if found.is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            found
        })
        .expect("no health address in the log");
    // 200 idle sockets on the metrics port: more than it serves at once.
    let mut held = Vec::new();
    for _ in 0..200 {
        if let Ok(s) = tokio::net::TcpStream::connect(&addr).await {
            held.push(s);
        }
    }
    assert!(held.len() >= 100, "only {} sockets", held.len());
    let started = Instant::now();
    let answer = raw_get(&health, "/healthz").await;
    assert!(answer.as_deref().is_some_and(|a| a.starts_with("HTTP/1.1 200")), "{answer:?}");
    support::figure("/healthz on the health port beside 200 idle metrics sockets", started.elapsed());
    let ready = raw_get(&health, "/readyz").await;
    assert!(ready.as_deref().is_some_and(|a| a.starts_with("HTTP/1.1 200")), "{ready:?}");
    let metrics = raw_get(&health, "/metrics").await;
    assert!(
        metrics.as_deref().is_some_and(|a| a.starts_with("HTTP/1.1 404")),
        "the health port serves metrics: {metrics:?}"
    );
    drop(held);
    drop(operator.stdin.take());
    let _ = operator.wait();
}

/// A namespace alone is held to no share: with every validation hung on its store, it
/// holds every start permit (`--concurrency 4` here), the rest of it waiting outside the
/// controller, as the gauges say.
#[tokio::test]
async fn a_namespace_alone_uses_every_start_permit() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let ns = private_namespace("permits");
    support::named_namespace(&client, &ns).await;
    let bucket = s3::bucket("permits", "us-east-1").await;
    let location = Location::parse(&format!("{bucket}/images/")).unwrap();
    let keys =
        iam::user_with_policy("permits", &policy(&location, None, &required(&[Usage::Import], Default::default())))
            .await;
    support::keys_secret(&client, &ns, "keys", &keys).await;
    crate::support::faults::set(&bucket, json!({"hang": true})).await;
    let log = log_path("permits");
    let mut operator = spawn(&log, &["--namespace", &ns, "--concurrency", "4", "--validation-timeout", "5"]);
    let addr = metrics_addr(&log);
    for i in 0..12 {
        let spec = json!({"endpoint": support::env().s3_fault_proxy});
        support::s3_connection(&client, &ns, &format!("c{i}"), &bucket, "keys", spec).await;
    }
    let gauge = |text: &str, name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(-1.0)
    };
    let mut seen = (0.0, 0.0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        let (_, text) = get(&format!("http://{addr}/metrics")).await;
        seen = (gauge(&text, "s3connect_start_permits_in_use "), gauge(&text, "s3connect_reconciles_waiting "));
        if seen.0 == 4.0 && seen.1 > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.0 == 4.0 && seen.1 > 0.0,
        "(permits in use, waiting) = {seen:?}: the namespace did not get every permit"
    );
    crate::support::faults::set(&bucket, json!({})).await;
    drop(operator.stdin.take());
    assert!(operator.wait().unwrap().success());
}
