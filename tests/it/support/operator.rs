//! The real `s3connect operator` binary, started once per test run against the test
//! environment, watching every namespace, logging JSON to a file the tests can scan.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use kube::api::{Api, ListParams};
use s3connect::api::S3Connection;
use serde_json::Value;

use super::env;

/// Endpoints the shared operator accepts: the test S3 server, its fault proxy and
/// unreachable ports on loopback, and one name (never resolved) for the test of
/// virtual-hosted addressing. `localhost` is left out on purpose, for the allow-list test.
pub const ALLOWED_ENDPOINTS: &str = "http://127.0.0.1:*,http://s3-virtual.localhost:*";

static OPERATOR: Mutex<Option<Child>> = Mutex::new(None);

/// The purposes of the namespaces that tests give an operator of their own: the shared
/// operator leaves them alone, or two operators would fight over their objects' status.
const PRIVATE: [&str; 29] = [
    "restart",
    "sigterm",
    "leader",
    "rbac",
    "log-debug",
    "log-trace",
    "regkill",
    "dskill",
    "managed",
    "mgda",
    "mgdb",
    "mgdt",
    "mgdid",
    "vap",
    "down",
    "spacing",
    "netca",
    "netnoca",
    "image",
    "projkill",
    "slow",
    "nofiles",
    "poke",
    "internal",
    "dsspace",
    "shard",
    "permits",
    "crowd",
    "healthport",
];

#[test]
fn every_private_namespace_is_left_alone_by_the_shared_operator() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it");
    let mut used = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for part in text.split("private_namespace(\"").skip(1) {
            used.push(part.split('"').next().unwrap().to_owned());
        }
    }
    assert!(used.len() > 20, "found only {used:?}");
    let missing: Vec<_> = used.iter().filter(|p| !PRIVATE.contains(&p.as_str())).collect();
    assert!(missing.is_empty(), "the shared operator would also serve the private namespaces {missing:?}");
}

/// Starts the shared operator on first use and returns its log file.
pub fn shared() -> &'static PathBuf {
    static LOG: OnceLock<PathBuf> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("operator-{}.log", std::process::id()));
        let ignore = PRIVATE.map(private_namespace).join(",");
        let child = spawn(&log, &["--ignore-namespaces", &ignore]);
        *OPERATOR.lock().unwrap() = Some(child);
        log
    })
}

/// Where a test's own operator logs: `operator-<purpose>-<pid>.log` in the test target dir.
pub fn log_path(purpose: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("operator-{purpose}-{}.log", std::process::id()))
}

/// A namespace the shared operator leaves alone, for a test that runs its own.
pub fn private_namespace(purpose: &str) -> String {
    format!("t-{purpose}-{}", std::process::id())
}

/// Starts an operator with `extra` arguments, logging to `log`. It stops when this test
/// process exits, however it exits: a shell holds it and kills it when our end of its
/// stdin pipe closes. The operator's own pid goes to `<log>.pid`.
pub fn spawn(log: &PathBuf, extra: &[&str]) -> Child {
    spawn_with(log, &env().kubeconfig, extra)
}

/// Like `spawn`, with another kubeconfig (one that impersonates a ServiceAccount, say).
pub fn spawn_with(log: &PathBuf, kubeconfig: &std::path::Path, extra: &[&str]) -> Child {
    spawn_full(log, kubeconfig, "info,s3connect=debug", extra)
}

/// Like `spawn`, with `RUST_LOG` set to `level`.
pub fn spawn_with_log_level(log: &PathBuf, level: &str, extra: &[&str]) -> Child {
    spawn_full(log, &env().kubeconfig, level, extra)
}

/// Like `spawn`, with extra environment variables (an AWS identity, say).
pub fn spawn_with_env(log: &PathBuf, extra: &[&str], vars: &[(&str, &str)]) -> Child {
    spawn_env(log, &env().kubeconfig, "info,s3connect=debug", extra, vars)
}

/// Like `spawn_with`, with extra environment variables.
pub fn spawn_env_with(log: &PathBuf, kubeconfig: &std::path::Path, extra: &[&str], vars: &[(&str, &str)]) -> Child {
    spawn_env(log, kubeconfig, "info,s3connect=debug", extra, vars)
}

fn spawn_full(log: &PathBuf, kubeconfig: &std::path::Path, rust_log: &str, extra: &[&str]) -> Child {
    spawn_env(log, kubeconfig, rust_log, extra, &[])
}

fn spawn_env(
    log: &PathBuf,
    kubeconfig: &std::path::Path,
    rust_log: &str,
    extra: &[&str],
    vars: &[(&str, &str)],
) -> Child {
    let file = std::fs::File::create(log).expect("creating the operator log");
    let pid_file = log.with_extension("pid");
    let _ = std::fs::remove_file(&pid_file);
    Command::new("sh")
        .arg("-c")
        .arg(concat!(
            r#"pidfile=$1; shift; "$@" </dev/null & pid=$!; echo $pid > "$pidfile"; cat >/dev/null; "#,
            // SIGTERM, and SIGKILL if that is not enough within 20 s.
            r#"kill -TERM $pid 2>/dev/null; (sleep 20; kill -KILL $pid 2>/dev/null) & killer=$!; "#,
            r#"wait $pid; status=$?; kill $killer 2>/dev/null; exit $status"#
        ))
        .arg("s3connect-operator")
        .arg(&pid_file)
        .arg(env!("CARGO_BIN_EXE_s3connect"))
        .args(["operator", "--log-format", "json", "--allowed-endpoints", ALLOWED_ENDPOINTS])
        .args(["--platform-url", &env().platform_url, "--metrics-addr", "127.0.0.1:0"])
        // A platform slow to accept a create is tested against 10 s, not the default 120 s,
        // and a Secret that is late against 4 s, not 120 s, unless the test says otherwise.
        .args(
            [["--platform-create-timeout", "10"], ["--secret-grace", "4"]]
                .into_iter()
                .filter(|[flag, _]| !extra.contains(flag))
                .flatten(),
        )
        .args(extra)
        // Tests ask for validations back to back; the spacing is tested on its own.
        .env("S3CONNECT_MIN_VALIDATION_SPACING", "0")
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", rust_log)
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("starting the operator")
}

/// The pid of the operator `spawn` started with `log`.
pub fn operator_pid(log: &std::path::Path) -> u32 {
    for _ in 0..100 {
        if let Some(pid) = std::fs::read_to_string(log.with_extension("pid")).ok().and_then(|p| p.trim().parse().ok()) {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no pid file for {}", log.display());
}

/// Every JSON log line the shared operator wrote so far.
pub fn log_lines() -> Vec<Value> {
    std::fs::read_to_string(shared()).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Polls the connection until `done` holds, or panics with its last status.
pub async fn wait_for(
    client: &kube::Client,
    ns: &str,
    name: &str,
    what: &str,
    done: impl Fn(&S3Connection) -> bool,
) -> S3Connection {
    shared();
    let api = Api::<S3Connection>::namespaced(client.clone(), ns);
    super::wait_for(format!("{ns}/{name}: {what}"), Duration::from_secs(60), Duration::from_millis(200), || async {
        match api.get_opt(name).await.expect("GET S3Connection") {
            Some(c) if done(&c) => Ok(c),
            c => Err(serde_json::to_string_pretty(&c.and_then(|c| c.status)).unwrap()),
        }
    })
    .await
}

/// The condition of `type_`, if any.
pub fn condition<'a>(
    c: &'a S3Connection,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    c.status.as_ref()?.conditions.iter().find(|x| x.type_ == type_)
}

/// Everything the operator showed about `ns`: statuses, events and its log, as text.
pub async fn everything_shown(client: &kube::Client, ns: &str) -> String {
    let mut text = String::new();
    let conns = Api::<S3Connection>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap();
    text.push_str(&serde_json::to_string(&conns.items).unwrap());
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    text.push_str(&serde_json::to_string(&events.items).unwrap());
    let core_events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    text.push_str(&serde_json::to_string(&core_events.items).unwrap());
    text.push_str(&std::fs::read_to_string(shared()).unwrap_or_default());
    text
}
