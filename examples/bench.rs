//! Scale benchmark: N S3Connections over 10 Secrets and 10 buckets, against the real test
//! control plane, versitygw as the S3 server, and the release operator binary. Prints
//! figures; `scripts/bench` runs the documented scenarios. Not part of `make test`.
//!
//!   bench scale N          time to Ready, CPU, peak RSS, S3 and API requests per reconcile
//!   bench rotate N         N connections on one Secret: time until all re-validated
//!   bench steady N MINUTES revalidateInterval 1m: S3 requests per minute
//!   bench idle N MINUTES   N Ready connections left alone: CPU and requests per minute
//!   bench s3 N             CPU per S3 request: the operator's client, aws-sdk-s3 as it used
//!                          it before, and a bare aws-sigv4 + hyper request

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use s3connect::api::S3Connection;
use s3connect::s3::client::{Keys, Target};

// The tests' SDK client for fixtures, shared rather than copied.
#[path = "../tests/it/support/sdk.rs"]
mod sdk;
use sdk::sdk;
use serde_json::json;

const NS: &str = "bench";
const BUCKETS: usize = 10;
const SECRETS: usize = 10;
/// The metric label of the S3Connection controller.
const KIND: [&str; 1] = ["kind=\"S3Connection\""];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Children that die with the benchmark.
struct Guard(Vec<Child>);
impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Env {
    s3: String,
    keys: Keys,
    operator_pid: u32,
    metrics: String,
    _guard: Guard,
}

fn launch() -> (Child, HashMap<String, String>) {
    let mut child = Command::new("python3")
        .arg(root().join("testenv/launch.py"))
        .arg("--until-stdin-closes")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the launcher");
    let line = BufReader::new(child.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let path = line.strip_prefix("READY ").expect("the environment started");
    let vars = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    (child, vars)
}

/// versitygw over `data`, with one root user, and the benchmark's buckets (one object
/// each).
async fn versitygw(data: &std::path::Path) -> (Child, String, Keys) {
    let port = free_port();
    let keys = Keys {
        access_key_id: "benchroot".into(),
        secret_access_key: "benchroot-secret-0123456789".into(),
        session_token: None,
    };
    std::fs::create_dir_all(data).unwrap();
    let vgw = Command::new(root().join(".testenv/bin/versitygw"))
        .args([
            "--access",
            &keys.access_key_id,
            "--secret",
            &keys.secret_access_key,
            // Real S3 keeps connections alive; versitygw closes each one unless asked.
            "--keep-alive",
            "--port",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["posix", data.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("versitygw (scripts/bench builds it)");
    let s3 = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let admin = sdk(&keys, &target(&s3));
    for b in 0..BUCKETS {
        let bucket = format!("bench-{b}");
        admin.create_bucket().bucket(&bucket).send().await.expect("create bucket");
        admin.put_object().bucket(&bucket).key("data/sample.jpg").body(b"sample".to_vec().into()).send().await.unwrap();
    }
    (vgw, s3, keys)
}

fn target(s3: &str) -> Target {
    Target { region: "us-east-1".into(), endpoint: Some(s3.to_owned()), force_path_style: true }
}

async fn setup() -> (Env, kube::Client) {
    let (launcher, vars) = launch();
    let kubeconfig = PathBuf::from(&vars["KUBECONFIG"]);
    let run_dir = PathBuf::from(&vars["S3CONNECT_TEST_RUN_DIR"]);

    let (vgw, s3, keys) = versitygw(&run_dir.join("versitygw")).await;

    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let kube = kube::Client::try_from(config).unwrap();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    Api::<k8s_openapi::api::core::v1::Namespace>::all(kube.clone())
        .create(&PostParams::default(), &serde_json::from_value(ns).unwrap())
        .await
        .unwrap();

    let metrics_port = free_port();
    let log = std::fs::File::create(run_dir.join("operator.log")).unwrap();
    // S3CONNECT_BENCH_OPERATOR: another build of the operator, to profile it, say.
    let binary = std::env::var_os("S3CONNECT_BENCH_OPERATOR")
        .map_or_else(|| root().join("target/release/s3connect"), PathBuf::from);
    let operator = Command::new(binary)
        .args(["operator", "--allowed-endpoints", "http://127.0.0.1:*", "--log-format", "json"])
        .args([
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
            "--platform-url",
            &vars["S3CONNECT_TEST_PLATFORM_URL"],
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("target/release/s3connect (scripts/bench builds it)");
    let operator_pid = operator.id();
    let env = Env {
        s3,
        keys,
        operator_pid,
        metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
        _guard: Guard(vec![operator, vgw, launcher]),
    };
    (env, kube)
}

async fn secret(kube: &kube::Client, name: &str, keys: &Keys, rotation: u32) {
    let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "annotations": {"bench/rotation": rotation.to_string()}},
        "stringData": {"AWS_ACCESS_KEY_ID": keys.access_key_id, "AWS_SECRET_ACCESS_KEY": keys.secret_access_key}});
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(kube.clone(), NS)
        .patch(name, &PatchParams::apply("bench").force(), &Patch::Apply(&s))
        .await
        .unwrap();
}

/// Creates `n` connections (Import+Export, CORS applied), 32 at a time; returns when each
/// was created.
async fn connections(
    kube: &kube::Client,
    env: &Env,
    n: usize,
    secret_of: impl Fn(usize) -> String,
    interval: &str,
) -> HashMap<String, Instant> {
    let api = Api::<S3Connection>::namespaced(kube.clone(), NS);
    stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let obj = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "S3Connection", "metadata": {"name": format!("c-{i}")},
                "spec": {"uri": format!("s3://bench-{}/data/", i % BUCKETS), "usage": ["Import", "Export"],
                         "credentials": {"secretRef": {"name": secret_of(i)}}, "endpoint": env.s3, "forcePathStyle": true,
                         "revalidateInterval": interval}});
            async move {
                api.create(&PostParams::default(), &serde_json::from_value(obj).unwrap()).await.unwrap();
                (format!("c-{i}"), Instant::now())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await
}

/// The Secret of connection `i` when they are spread over the ten Secrets.
fn spread(i: usize) -> String {
    format!("keys-{}", i % SECRETS)
}

/// Creates `n` connections (see [`connections`]) and waits until every one is Ready, for up
/// to `timeout`: when each was created and when each was first seen Ready.
async fn create_until_ready(
    kube: &kube::Client,
    env: &Env,
    n: usize,
    secret_of: impl Fn(usize) -> String,
    interval: &str,
    timeout: Duration,
) -> (HashMap<String, Instant>, HashMap<String, Instant>) {
    let watch = tokio::spawn({
        let kube = kube.clone();
        async move { wait_all(&kube, n, ready, timeout).await }
    });
    let created = connections(kube, env, n, secret_of, interval).await;
    (created, watch.await.unwrap())
}

/// The benchmark with its ten Secrets in place.
async fn setup_with_secrets() -> (Env, kube::Client) {
    let (env, kube) = setup().await;
    for s in 0..SECRETS {
        secret(&kube, &spread(s), &env.keys, 0).await;
    }
    (env, kube)
}

fn ready(c: &S3Connection) -> bool {
    c.status.as_ref().is_some_and(|s| s.conditions.iter().any(|x| x.type_ == "Ready" && x.status == "True"))
}

/// Watches until every connection satisfies `done`; returns when each first did.
async fn wait_all(
    kube: &kube::Client,
    n: usize,
    done: impl Fn(&S3Connection) -> bool,
    timeout: Duration,
) -> HashMap<String, Instant> {
    let api = Api::<S3Connection>::namespaced(kube.clone(), NS);
    let mut seen = HashMap::new();
    let stream = watcher(api, watcher::Config::default()).applied_objects();
    futures::pin_mut!(stream);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            item = stream.try_next() => {
                let Ok(Some(c)) = item else { continue };
                if done(&c) {
                    seen.entry(c.metadata.name.clone().unwrap()).or_insert_with(Instant::now);
                }
                if seen.len() == n {
                    return seen;
                }
            }
            () = &mut deadline => {
                eprintln!("timed out with {} of {n} done", seen.len());
                return seen;
            }
        }
    }
}

/// The operator's CPU seconds so far (user, kernel) and peak RSS in KiB.
fn proc_stats(pid: u32) -> (f64, f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    // utime and stime, in clock ticks of 1/100 s
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks(11), ticks(12), hwm)
}

/// RSS now and at its peak, and what it is made of (anonymous memory, mapped files).
fn memory(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    format!(
        "RSS {:.1} MiB (anonymous {:.1}, files {:.1}), peak {:.1} MiB, {} threads",
        kib("VmRSS:"),
        kib("RssAnon:"),
        kib("RssFile:"),
        kib("VmHWM:"),
        kib("Threads:") * 1024.0
    )
}

async fn get(url: &str) -> String {
    let out = Command::new("curl").args(["-sf", url]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sum of a metric's samples whose labels contain every `filter`.
fn sum(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l.as_bytes().get(name.len()) == Some(&b'{') || l.as_bytes().get(name.len()) == Some(&b' '))
        })
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// The operator's requests to the API server, from the server's own counters: the verbs
/// and resources only the operator uses here.
async fn operator_api_requests(kube: &kube::Client) -> f64 {
    let text = kube.request_text(http::Request::get("/metrics").body(Vec::new()).unwrap()).await.unwrap();
    let r = "apiserver_request_total";
    sum(&text, r, &["resource=\"secrets\"", "verb=\"GET\""])
        // Server-side apply is counted as verb APPLY, not PATCH.
        + sum(&text, r, &["resource=\"s3connections\"", "subresource=\"status\"", "verb=\"APPLY\""])
        + sum(&text, r, &["resource=\"s3connections\"", "subresource=\"status\"", "verb=\"PATCH\""])
        + sum(&text, r, &["resource=\"events\"", "verb=\"POST\""])
        + sum(&text, r, &["resource=\"events\"", "verb=\"PATCH\""])
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn scale(n: usize) {
    let (env, kube) = setup_with_secrets().await;
    // Idle: started, caches synced, nothing to reconcile yet.
    while get(&env.metrics).await.is_empty() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    eprintln!("idle, no objects: {}", memory(env.operator_pid));
    let api_before = operator_api_requests(&kube).await;
    let started = Instant::now();
    let (created, ready_at) = create_until_ready(&kube, &env, n, spread, "10m", Duration::from_secs(1800)).await;
    let last_apply = created.values().max().copied().unwrap();
    let all_ready = ready_at.values().max().copied().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await; // let the last events and metrics land
    let (user, kernel, hwm) = proc_stats(env.operator_pid);
    let cpu = user + kernel;
    let metrics = get(&env.metrics).await;
    let reconciles = sum(&metrics, "s3connect_reconciliations_total", &KIND);
    let busy = sum(&metrics, "s3connect_reconcile_busy_seconds_sum", &KIND)
        / sum(&metrics, "s3connect_reconcile_busy_seconds_count", &KIND);
    let s3 = sum(&metrics, "s3connect_s3_requests_total", &[]);
    let api = operator_api_requests(&kube).await - api_before;
    let ttr: Vec<f64> =
        ready_at.iter().filter_map(|(k, t)| created.get(k).map(|c| t.duration_since(*c).as_secs_f64())).collect();
    println!(
        "| {n} | {:.1} s | {:.2} s | {:.2} s | {cpu:.1} s | {:.1} MiB | {:.2} | {:.2} | {:.2} ms ({:.2} + {:.2}) | {:.2} ms | {} of {n} |",
        all_ready.saturating_duration_since(last_apply).as_secs_f64(),
        percentile(ttr.clone(), 0.5),
        percentile(ttr, 0.95),
        hwm as f64 / 1024.0,
        s3 / reconciles,
        api / reconciles,
        cpu * 1000.0 / reconciles,
        user * 1000.0 / reconciles,
        kernel * 1000.0 / reconciles,
        busy * 1000.0,
        ready_at.len(),
    );
    eprintln!("after {n}: {}", memory(env.operator_pid));
    eprintln!(
        "total wall {:.1}s, {reconciles} reconciles, {s3} S3 requests, {api} API requests",
        started.elapsed().as_secs_f64()
    );
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("s3connect_reconciliations_total{") || l.starts_with("s3connect_s3_requests_total{"))
    {
        eprintln!("  {line}");
    }
}

/// `n` connections in the benchmark's namespace, all on one Secret that someone annotates
/// every 2 s (metadata only), and then a connection in another namespace: how long that one
/// takes to be Ready, and what the annotations cost the noisy namespace.
async fn noisy(n: usize) {
    let (env, kube) = setup_with_secrets().await;
    let (_, ready_at) = create_until_ready(&kube, &env, n, |_| "keys-0".into(), "10m", Duration::from_secs(1800)).await;
    assert_eq!(ready_at.len(), n, "not every noisy connection became Ready");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = get(&env.metrics).await;
    let annotating = tokio::spawn({
        let (kube, keys) = (kube.clone(), env.keys.clone());
        async move {
            for tick in 1.. {
                secret(&kube, "keys-0", &keys, tick).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(6)).await;
    // The quiet namespace: one Secret, one connection.
    let quiet = "quiet";
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": quiet}});
    Api::<k8s_openapi::api::core::v1::Namespace>::all(kube.clone())
        .create(&PostParams::default(), &serde_json::from_value(ns).unwrap())
        .await
        .unwrap();
    let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "keys"},
        "stringData": {"AWS_ACCESS_KEY_ID": env.keys.access_key_id, "AWS_SECRET_ACCESS_KEY": env.keys.secret_access_key}});
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(kube.clone(), quiet)
        .create(&PostParams::default(), &serde_json::from_value(s).unwrap())
        .await
        .unwrap();
    let api = Api::<S3Connection>::namespaced(kube.clone(), quiet);
    let obj = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "S3Connection", "metadata": {"name": "quiet"},
        "spec": {"uri": "s3://bench-0/data/", "credentials": {"secretRef": {"name": "keys"}}, "endpoint": env.s3, "forcePathStyle": true}});
    let started = Instant::now();
    api.create(&PostParams::default(), &serde_json::from_value(obj).unwrap()).await.unwrap();
    let mut took = None;
    while started.elapsed() < Duration::from_secs(120) {
        if api.get("quiet").await.is_ok_and(|c| ready(&c)) {
            took = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    annotating.abort();
    let after = get(&env.metrics).await;
    let delta = |name: &str| sum(&after, name, &KIND) - sum(&before, name, &KIND);
    let s3 = sum(&after, "s3connect_s3_requests_total", &[]) - sum(&before, "s3connect_s3_requests_total", &[]);
    let (_, _, hwm) = proc_stats(env.operator_pid);
    println!(
        "| {n} on one Secret annotated every 2 s | quiet Ready after {} | {:.0} reconciles and {s3:.0} S3 requests while annotating (the quiet connection's own validation included) | peak RSS {:.1} MiB |",
        took.map_or("(not within 120 s)".to_owned(), |t| format!("{:.2} s", t.as_secs_f64())),
        delta("s3connect_reconciliations_total"),
        hwm as f64 / 1024.0,
    );
}

async fn rotate(n: usize) {
    let (env, kube) = setup().await;
    secret(&kube, "shared", &env.keys, 0).await;
    create_until_ready(&kube, &env, n, |_| "shared".into(), "10m", Duration::from_secs(1800)).await;
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(kube.clone(), NS);
    let before = secrets.get("shared").await.unwrap().metadata.resource_version.unwrap();
    let rotated_at = Instant::now();
    secret(&kube, "shared", &env.keys, 1).await;
    let after = secrets.get("shared").await.unwrap().metadata.resource_version.unwrap();
    assert_ne!(before, after);
    let done = wait_all(
        &kube,
        n,
        move |c| ready(c) && c.status.as_ref().and_then(|s| s.credentials_version.as_deref()) == Some(after.as_str()),
        Duration::from_secs(1800),
    )
    .await;
    let last = done.values().max().copied().unwrap();
    let (user, kernel, hwm) = proc_stats(env.operator_pid);
    let cpu = user + kernel;
    println!(
        "| rotation of one Secret used by {n} | {:.1} s until all {} re-validated | CPU {cpu:.1} s total | peak RSS {:.1} MiB |",
        last.duration_since(rotated_at).as_secs_f64(),
        done.len(),
        hwm as f64 / 1024.0
    );
}

async fn steady(n: usize, minutes: u64) {
    let (env, kube) = setup_with_secrets().await;
    create_until_ready(&kube, &env, n, spread, "1m", Duration::from_secs(600)).await;
    let counters = |text: &str| {
        (sum(text, "s3connect_reconciliations_total", &KIND), sum(text, "s3connect_reconcile_busy_seconds_sum", &KIND))
    };
    let (user0, kernel0, _) = proc_stats(env.operator_pid);
    let (reconciles0, busy0) = counters(&get(&env.metrics).await);
    let api0 = operator_api_requests(&kube).await;
    let mut last = sum(&get(&env.metrics).await, "s3connect_s3_requests_total", &[]);
    let mut per_minute = Vec::new();
    let mut per_10s = Vec::new();
    let mut last_10s = last;
    for tick in 1..=(minutes * 6) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let now = sum(&get(&env.metrics).await, "s3connect_s3_requests_total", &[]);
        per_10s.push(now - last_10s);
        last_10s = now;
        if tick % 6 == 0 {
            per_minute.push(now - last);
            last = now;
        }
    }
    let (user, kernel, hwm) = proc_stats(env.operator_pid);
    let (reconciles, busy) = counters(&get(&env.metrics).await);
    let api = operator_api_requests(&kube).await - api0;
    let revalidations = reconciles - reconciles0;
    let cpu = user + kernel;
    println!("S3 requests per minute, {n} connections at revalidateInterval 1m: {per_minute:?}");
    println!("per 10 s (jitter spreads them): {per_10s:?}");
    println!("operator CPU {cpu:.1} s over the run, peak RSS {:.1} MiB", hwm as f64 / 1024.0);
    println!(
        "{revalidations} re-validations in the {minutes} minutes: CPU {:.2} ms each ({:.2} user + {:.2} kernel, idle time included), busy {:.2} ms each, {:.2} API requests each",
        (cpu - user0 - kernel0) * 1000.0 / revalidations,
        (user - user0) * 1000.0 / revalidations,
        (kernel - kernel0) * 1000.0 / revalidations,
        (busy - busy0) * 1000.0 / revalidations,
        api / revalidations,
    );
}

async fn idle(n: usize, minutes: u64) {
    let (env, kube) = setup_with_secrets().await;
    create_until_ready(&kube, &env, n, spread, "24h", Duration::from_secs(1800)).await;
    tokio::time::sleep(Duration::from_secs(5)).await; // the last events and status writes
    let s3_requests = |text: &str| sum(text, "s3connect_s3_requests_total", &[]);
    let (user0, kernel0, _) = proc_stats(env.operator_pid);
    let s30 = s3_requests(&get(&env.metrics).await);
    let api0 = operator_api_requests(&kube).await;
    tokio::time::sleep(Duration::from_secs(60 * minutes)).await;
    let (user, kernel, hwm) = proc_stats(env.operator_pid);
    let s3 = s3_requests(&get(&env.metrics).await) - s30;
    let api = operator_api_requests(&kube).await - api0;
    let per_minute = |v: f64| v / minutes as f64;
    println!(
        "{n} Ready connections left alone for {minutes} min: operator CPU {:.0} ms in all ({:.0} user + {:.0} kernel; /proc counts in 10 ms ticks), {} S3 and {} API requests per minute, peak RSS {:.1} MiB",
        ((user + kernel - user0 - kernel0) * 1000.0).max(0.0),
        ((user - user0) * 1000.0).max(0.0),
        ((kernel - kernel0) * 1000.0).max(0.0),
        per_minute(s3),
        per_minute(api),
        hwm as f64 / 1024.0,
    );
}

/// CPU per S3 request on one thread (its connection tasks included), over `n` requests
/// after a warm-up: the operator's client (aws-sdk-s3 as `s3::client` configures and
/// caches it, the cache lookup included), aws-sdk-s3 configured as the fixtures' client
/// with retries, stalled-stream monitoring and the identity cache off, with its
/// construction, and the same ListObjectsV2 signed with aws-sigv4 and sent with hyper and
/// nothing else, the floor. versitygw only.
fn s3_overhead(n: u32, operator_alone: bool) {
    use aws_sigv4::http_request::{PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign};
    use aws_smithy_runtime_api::client::identity::Identity;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use s3connect::telemetry::thread_cpu;

    async fn per_call<F: std::future::Future<Output = ()>>(n: u32, mut call: impl FnMut() -> F) -> f64 {
        for _ in 0..50 {
            call().await;
        }
        let start = thread_cpu();
        for _ in 0..n {
            call().await;
        }
        (thread_cpu() - start).as_secs_f64() * 1e6 / f64::from(n)
    }

    fn sdk_as_before(keys: &Keys, target: &Target) -> aws_sdk_s3::Client {
        use aws_sdk_s3::config::{IdentityCache, StalledStreamProtectionConfig, retry::RetryConfig};
        let config = sdk(keys, target)
            .config()
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .identity_cache(IdentityCache::no_cache())
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
        aws_sdk_s3::Client::from_conf(config.build())
    }

    let data = std::env::temp_dir().join(format!("s3connect-bench-s3-{}", std::process::id()));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (vgw, s3, keys) = versitygw(&data).await;
        let _guard = Guard(vec![vgw]);
        let target = target(&s3);

        let operator = per_call(n, || async {
            let client = s3connect::s3::client::client(&keys, &target, "bench/s3");
            let out = client.list_objects_v2().bucket("bench-0").prefix("data/").max_keys(2).send().await.unwrap();
            assert!(!out.contents().is_empty(), "no key listed");
        })
        .await;
        if operator_alone {
            println!("CPU per ListObjectsV2 request, the operator's S3 client alone: {operator:.0} µs");
            return;
        }
        let mut settings = Vec::new();
        for (name, client) in s3connect::s3::client::clients_for_bench(&keys, &target) {
            let cpu = per_call(n, || async {
                let out = client.list_objects_v2().bucket("bench-0").prefix("data/").max_keys(2).send().await.unwrap();
                assert!(!out.contents().is_empty(), "no key listed");
            })
            .await;
            settings.push((name, cpu));
        }

        let sdk_client = sdk_as_before(&keys, &target);
        let sdk_request = per_call(n, || async {
            sdk_client.list_objects_v2().bucket("bench-0").prefix("data/").max_keys(2).send().await.unwrap();
        })
        .await;
        let construction = per_call(n, || async {
            std::hint::black_box(sdk_as_before(&keys, &target));
        })
        .await;

        let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<Full<Bytes>>();
        let identity: Identity =
            aws_credential_types::Credentials::new(&keys.access_key_id, &keys.secret_access_key, None, None, "bench")
                .into();
        let uri = format!("{s3}/bench-0?list-type=2&max-keys=2&prefix=data%2F");
        let floor = per_call(n, || async {
            let mut settings = SigningSettings::default();
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
            let params = aws_sigv4::sign::v4::SigningParams::builder()
                .identity(&identity)
                .region("us-east-1")
                .name("s3")
                .time(std::time::SystemTime::now())
                .settings(settings)
                .build()
                .unwrap()
                .into();
            let signable = SignableRequest::new("GET", &uri, std::iter::empty(), SignableBody::Bytes(&[])).unwrap();
            let (instructions, _) = sign(signable, &params).unwrap().into_parts();
            let mut request = http::Request::get(&uri).body(Full::new(Bytes::new())).unwrap();
            instructions.apply_to_request_http1x(&mut request);
            let response = http.request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert!(body.windows(5).any(|w| w == b"<Key>"), "no key listed");
        })
        .await;
        println!("CPU per ListObjectsV2 request, {n} requests on one thread against versitygw:");
        println!("  the operator's S3 client (aws-sdk-s3, cached): {operator:.0} µs");
        println!("  aws-sdk-s3 client, retries, stalled-stream monitoring and identity cache off: {sdk_request:.0} µs");
        println!("  aws-sdk-s3 client construction: {construction:.0} µs");
        println!("  aws-sigv4 + plain hyper, nothing else (the floor): {floor:.0} µs");
        for (name, cpu) in settings {
            println!("  aws-sdk-s3, {name}: {cpu:.0} µs");
        }
    });
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(100);
    match args.get(1).map(String::as_str) {
        Some("scale") => scale(n).await,
        Some("rotate") => rotate(n).await,
        Some("noisy") => noisy(n).await,
        // Its own single-threaded runtime, on a thread of its own.
        // `s3 N operator`: the operator's client alone, for a profiler.
        Some("s3") => {
            let alone = args.get(3).is_some_and(|a| a == "operator");
            std::thread::spawn(move || s3_overhead(n as u32, alone)).join().unwrap()
        }
        Some("idle") => idle(n, args.get(3).and_then(|v| v.parse().ok()).unwrap_or(2)).await,
        Some("steady") => steady(n, args.get(3).and_then(|v| v.parse().ok()).unwrap_or(10)).await,
        _ => {
            eprintln!("usage: bench scale N | rotate N | noisy N | steady N MINUTES | idle N MINUTES | s3 N [operator]")
        }
    }
}
