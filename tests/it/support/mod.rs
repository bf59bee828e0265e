//! Shared by every integration test: one real test environment per test run (etcd,
//! kube-apiserver, the S3/IAM server), a namespace per test, and S3/IAM fixtures.
//!
//! The environment is started by `testenv/launch.py` on first use. Its stdin is a pipe
//! that this process holds until it exits, so the launcher tears everything down however
//! the run ends (success, panic, Ctrl-C, SIGKILL). Set `S3CONNECT_TESTENV=<env file>` to
//! reuse an environment started by hand instead.

pub mod faults;
pub mod http;
pub mod iam;
pub mod operator;
pub mod platform;
pub mod s3;
pub mod sdk;
pub mod sign;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// What the launcher wrote to its env file.
pub struct TestEnv {
    pub kubeconfig: PathBuf,
    pub apiserver_version: String,
    pub s3_endpoint: String,
    /// testenv/fault_proxy.py in front of the S3 server (see `faults`).
    pub s3_fault_proxy: String,
    pub s3_admin: s3connect::s3::client::Keys,
    /// versitygw: S3 as a browser sees it (CORS per bucket rule, unsigned preflights).
    pub versitygw: String,
    pub versitygw_root: s3connect::s3::client::Keys,
    pub platform_url: String,
    pub platform: s3connect::platform::Credentials,
}

/// Keeps the launcher's stdin open for the life of this process.
static LAUNCHER: Mutex<Option<Child>> = Mutex::new(None);

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The test environment, started on first use.
pub fn env() -> &'static TestEnv {
    static ENV: OnceLock<TestEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let env_file = match std::env::var_os("S3CONNECT_TESTENV") {
            Some(path) => PathBuf::from(path),
            None => launch(),
        };
        let text = std::fs::read_to_string(&env_file)
            .unwrap_or_else(|e| panic!("reading the test environment file {}: {e}", env_file.display()));
        let vars: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let var =
            |k: &str| vars.get(k).unwrap_or_else(|| panic!("{k} missing from {}", env_file.display())).to_string();
        TestEnv {
            kubeconfig: PathBuf::from(var("KUBECONFIG")),
            apiserver_version: var("S3CONNECT_TEST_APISERVER_VERSION"),
            s3_endpoint: var("S3CONNECT_TEST_S3_ENDPOINT"),
            s3_fault_proxy: var("S3CONNECT_TEST_S3_FAULT_PROXY"),
            s3_admin: s3connect::s3::client::Keys {
                access_key_id: var("S3CONNECT_TEST_S3_ADMIN_ACCESS_KEY_ID"),
                secret_access_key: var("S3CONNECT_TEST_S3_ADMIN_SECRET_ACCESS_KEY"),
                session_token: None,
            },
            versitygw: var("S3CONNECT_TEST_VERSITYGW_ENDPOINT"),
            versitygw_root: s3connect::s3::client::Keys {
                access_key_id: var("S3CONNECT_TEST_VERSITYGW_ACCESS_KEY_ID"),
                secret_access_key: var("S3CONNECT_TEST_VERSITYGW_SECRET_ACCESS_KEY"),
                session_token: None,
            },
            platform_url: var("S3CONNECT_TEST_PLATFORM_URL"),
            platform: s3connect::platform::Credentials {
                api_key: var("S3CONNECT_TEST_PLATFORM_API_KEY"),
                api_secret: var("S3CONNECT_TEST_PLATFORM_API_SECRET"),
                client_id: var("S3CONNECT_TEST_PLATFORM_CLIENT_ID"),
                namespace: String::new(),
            },
        }
    })
}

/// A second, private environment (control plane, S3, platform), for a test that must
/// disturb it (restart its API server, say). It goes away when the returned launcher's
/// stdin is closed or this process exits.
pub fn launch_private(extra: &[&str]) -> (Child, PathBuf) {
    // A port the launcher picked may be taken by another test's environment before its
    // server binds it (tests start environments side by side): one more try, then fail.
    match try_launch_private(extra) {
        Ok(launched) => launched,
        Err(first) => {
            eprintln!("a private environment did not come up, trying once more: {first}");
            try_launch_private(extra).unwrap_or_else(|again| panic!("the private environment did not come up: {again}"))
        }
    }
}

fn try_launch_private(extra: &[&str]) -> Result<(Child, PathBuf), String> {
    let script = repo_root().join("testenv/launch.py");
    // What the launcher says goes to a file, shown should it not come up.
    let said = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("launcher-{}.log", unique("private")));
    let stderr = std::fs::File::create(&said).expect("a launcher log file");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg("--until-stdin-closes")
        // No test of a private environment uses versitygw: it starts faster without.
        .arg("--without-versitygw")
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", script.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let line = BufReader::new(stdout).lines().next().and_then(Result::ok);
    match line.as_deref().and_then(|l| l.strip_prefix("READY ")) {
        Some(env_file) => Ok((child, PathBuf::from(env_file))),
        None => {
            // Closing its stdin tears down whatever it started.
            drop(child.stdin.take());
            let _ = child.wait();
            Err(format!("{line:?}; the launcher said: {}", std::fs::read_to_string(&said).unwrap_or_default()))
        }
    }
}

/// A private control plane (see `launch_private`) and an admin client for it.
pub struct Private {
    /// Closing its stdin tears the environment down.
    pub launcher: Child,
    pub kubeconfig: PathBuf,
    /// The launcher's run directory (its pid file, the API server's certificates).
    pub run_dir: PathBuf,
    pub client: kube::Client,
}

/// Starts a private control plane and connects to it as the admin.
pub async fn private(extra: &[&str]) -> Private {
    let (launcher, env_file) = launch_private(extra);
    let vars = std::fs::read_to_string(&env_file).unwrap();
    let var = |k: &str| vars.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap().to_owned();
    let (kubeconfig, run_dir) = (PathBuf::from(var("KUBECONFIG")), PathBuf::from(var("S3CONNECT_TEST_RUN_DIR")));
    let config = kube::Config::from_custom_kubeconfig(Kubeconfig::read_from(&kubeconfig).unwrap(), &Default::default())
        .await
        .expect("a valid private kubeconfig");
    let client = kube::Client::try_from(config).expect("a client for the private API server");
    Private { launcher, kubeconfig, run_dir, client }
}

fn launch() -> PathBuf {
    let script = repo_root().join("testenv/launch.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg("--until-stdin-closes")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", script.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut ready = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("reading the launcher's output");
        if let Some(path) = line.strip_prefix("READY ") {
            ready = Some(PathBuf::from(path));
            break;
        }
    }
    let Some(env_file) = ready else {
        let status = child.wait().expect("waiting for the launcher");
        panic!("the test environment did not start ({status}); run testenv/setup, and see the lines above");
    };
    *LAUNCHER.lock().unwrap() = Some(child);
    env_file
}

/// A client for the test API server, as the cluster admin.
pub async fn client() -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(&env().kubeconfig).expect("reading the test kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a valid test kubeconfig");
    kube::Client::try_from(config).expect("a client for the test API server")
}

/// A short name unique within this test run: `<prefix>-<pid>-<n>`, valid as a
/// namespace, bucket or IAM user name.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A fresh namespace for one test. Namespaces are not deleted: the whole control plane
/// goes away at the end of the run.
pub async fn namespace(client: &kube::Client, hint: &str) -> String {
    let name = unique(&format!("t-{hint}"));
    let ns =
        Namespace { metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() }, ..Default::default() };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    name
}

/// Runs kubectl against the test API server and returns (success, stdout + stderr).
/// Creates the namespace `name` exactly (one a private operator serves, say).
pub async fn named_namespace(client: &kube::Client, name: &str) {
    let obj = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &serde_json::from_value(obj).unwrap())
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
}

pub fn kubectl(args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&env().kubeconfig)
        .args(args)
        .output()
        .expect("running kubectl");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Creates or updates Secret `name` in `ns` with `keys` under the default key names.
pub async fn keys_secret(client: &kube::Client, ns: &str, name: &str, keys: &s3connect::s3::client::Keys) {
    let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "stringData": {"AWS_ACCESS_KEY_ID": keys.access_key_id, "AWS_SECRET_ACCESS_KEY": keys.secret_access_key}});
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .patch(name, &kube::api::PatchParams::apply("test").force(), &kube::api::Patch::Apply(&secret))
        .await
        .unwrap_or_else(|e| panic!("applying Secret {ns}/{name}: {e}"));
}

/// Applies the platform Secret `labellerr` in `ns`: the test platform's API key, secret
/// and client id, under the key names a connection's `platform.secretRef` defaults to.
pub async fn platform_secret(client: &kube::Client, ns: &str) {
    let p = &env().platform;
    let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "labellerr"},
        "stringData": {"LABELLERR_API_KEY": p.api_key, "LABELLERR_API_SECRET": p.api_secret, "LABELLERR_CLIENT_ID": p.client_id}});
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .patch("labellerr", &kube::api::PatchParams::apply("test").force(), &kube::api::Patch::Apply(&secret))
        .await
        .unwrap_or_else(|e| panic!("applying Secret {ns}/labellerr: {e}"));
}

/// Asks `check` every `every` until it answers `Ok`, at most `timeout` long, and returns
/// what it gave; otherwise fails the test, saying `what` did not happen and what `check`
/// last saw (its `Err`). One place for the waiting every test does, so that a slow
/// condition fails with a message rather than hanging.
pub async fn wait_for<T, L, Fut>(
    what: impl std::fmt::Display,
    timeout: std::time::Duration,
    every: std::time::Duration,
    mut check: impl FnMut() -> Fut,
) -> T
where
    L: std::fmt::Display,
    Fut: std::future::Future<Output = Result<T, L>>,
{
    let tries = (timeout.as_millis() / every.as_millis().max(1)).max(1);
    let mut last = None;
    for _ in 0..tries {
        match check().await {
            Ok(done) => return done,
            Err(seen) => last = Some(seen),
        }
        tokio::time::sleep(every).await;
    }
    let last = last.map(|l| l.to_string()).unwrap_or_default();
    panic!("{what} did not happen within {} s; last seen: {last}", timeout.as_secs())
}

/// Waits until the log file at `path` says `what` (`done` looks for it; at most 30 s), and
/// returns all it says.
pub async fn log_says(path: &std::path::Path, what: &str, done: impl Fn(&str) -> bool) -> String {
    let what = format!("{} saying {what}", path.display());
    wait_for(what, std::time::Duration::from_secs(30), std::time::Duration::from_millis(200), || async {
        let said = std::fs::read_to_string(path).unwrap_or_default();
        if done(&said) { Ok(said) } else { Err(said) }
    })
    .await
}

/// Creates S3Connection `name` for `s3://<bucket>/images/` on the test S3 server with the
/// keys in Secret `secret`; `extra` fields replace the spec's.
pub async fn s3_connection(
    client: &kube::Client,
    ns: &str,
    name: &str,
    bucket: &str,
    secret: &str,
    extra: serde_json::Value,
) {
    let mut spec = serde_json::json!({"uri": format!("s3://{bucket}/images/"), "credentials": {"secretRef": {"name": secret}},
        "endpoint": env().s3_endpoint, "forcePathStyle": true});
    for (k, v) in extra.as_object().expect("an object of spec fields") {
        spec[k] = v.clone();
    }
    let conn = serde_json::json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "S3Connection", "metadata": {"name": name}, "spec": spec});
    Api::<s3connect::api::S3Connection>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &serde_json::from_value(conn).unwrap())
        .await
        .unwrap_or_else(|e| panic!("creating S3Connection {ns}/{name}: {e}"));
}

/// Restarts the kube-apiserver of the environment in `run_dir` (the launcher does it on
/// SIGUSR1) and returns once it was seen down and then answering again.
pub async fn restart_apiserver(run_dir: &std::path::Path, client: &kube::Client) {
    let launcher = std::fs::read_to_string(run_dir.join("launcher.pid")).unwrap();
    let signalled = std::process::Command::new("kill").args(["-USR1", launcher.trim()]).status().unwrap();
    assert!(signalled.success(), "signalling the launcher");
    for (up, what, seconds) in [(false, "go down", 30), (true, "come back", 90)] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
        while client.apiserver_version().await.is_ok() != up {
            assert!(std::time::Instant::now() < deadline, "the API server did not {what} within {seconds} s");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// A measured figure a test prints instead of asserting a time (a stopwatch flakes on a
/// shared machine): to stderr, and to `S3CONNECT_TEST_FIGURES` for the suite's summary.
pub fn figure(what: &str, took: std::time::Duration) {
    use std::io::Write;
    let line = format!("{:.2} s: {what}\n", took.as_secs_f64());
    eprint!("figure: {line}");
    if let Some(path) = std::env::var_os("S3CONNECT_TEST_FIGURES")
        && let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Records how long a test took (see `timed!`).
pub struct Timer {
    name: &'static str,
    started: std::time::Instant,
}

impl Timer {
    pub fn start(name: &'static str) -> Self {
        let name = name.strip_prefix("it::").unwrap_or(name);
        // An async test's body is a closure inside it.
        let name = name.trim_end_matches("::{{closure}}");
        Timer { name, started: std::time::Instant::now() }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        use std::io::Write;
        let Some(path) = std::env::var_os("S3CONNECT_TEST_TIMES") else { return };
        let outcome = if std::thread::panicking() { "failed" } else { "ok" };
        let line = format!("{:.1} {} {outcome}\n", self.started.elapsed().as_secs_f64(), self.name);
        // One short append per test: lines from tests running at once do not interleave.
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = f.write_all(line.as_bytes());
        }
    }
}
