//! Logging. Structured fields throughout; JSON for log pipelines, text for people.

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `RUST_LOG` overrides the default level (`info`).
///
/// Whatever `RUST_LOG` says, the AWS SDK's crates log at `info` at most: at `debug` they
/// print the resolved identity (the access key id) and at `trace` the canonical request
/// (a session token among the signed headers). The operator logs each S3 request's
/// outcome itself, without them.
pub fn init(format: LogFormat) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{FilterExt, filter_fn};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = env.and(filter_fn(|meta| !never_above_info(meta.target()) || *meta.level() <= tracing::Level::INFO));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match format {
        LogFormat::Text => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_filter(filter).boxed(),
    };
    tracing_subscriber::registry().with(layer).init();
}

/// Targets whose debug and trace output carries key material.
fn never_above_info(target: &str) -> bool {
    target.starts_with("aws_")
}

/// Prometheus metrics, kept in plain maps: a few dozen series, written at most a few
/// times per reconcile, rendered on scrape.
pub mod metrics {
    use std::collections::{BTreeMap, HashMap};
    use std::fmt::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{LazyLock, Mutex};
    use std::time::Duration;

    const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

    #[derive(Default)]
    struct Histogram {
        counts: [u64; BUCKETS.len()],
        sum: f64,
        count: u64,
    }

    #[derive(Default)]
    pub struct Metrics {
        reconciles: Mutex<BTreeMap<(&'static str, String), u64>>,
        errors: Mutex<BTreeMap<(&'static str, String), u64>>,
        panics: Mutex<BTreeMap<&'static str, u64>>,
        refused_writes: Mutex<BTreeMap<String, u64>>,
        durations: Mutex<BTreeMap<&'static str, Histogram>>,
        /// Per kind: reconciles and the seconds they spent inside polls.
        busy: Mutex<BTreeMap<&'static str, (u64, f64)>>,
        s3: Mutex<BTreeMap<(String, &'static str), u64>>,
        platform: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
        /// Per object uid: what the readiness gauges show.
        ready: Mutex<HashMap<String, ObjectState>>,
        pub leader: AtomicBool,
        pub serving: AtomicBool,
    }

    pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

    /// One object's readiness, for the per-object gauge that lets an alert name it.
    struct ObjectState {
        kind: &'static str,
        namespace: String,
        name: String,
        ready: bool,
        reason: String,
    }

    /// A label value as the exposition format wants it.
    fn label(value: &str) -> String {
        value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
    }

    fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
        *map.lock().expect("not poisoned").entry(key).or_insert(0) += 1;
    }

    impl Metrics {
        /// A finished reconcile of `kind` whose outcome is `reason` (the Ready reason).
        pub fn reconciled(&self, kind: &'static str, reason: &str, took: Duration) {
            bump(&self.reconciles, (kind, reason.to_owned()));
            let mut d = self.durations.lock().expect("not poisoned");
            let h = d.entry(kind).or_default();
            let secs = took.as_secs_f64();
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += secs;
            h.count += 1;
        }

        /// One reconcile of `kind` (of any outcome) that computed for `busy`, waits excluded.
        pub fn reconcile_busy(&self, kind: &'static str, busy: Duration) {
            let mut map = self.busy.lock().expect("not poisoned");
            let entry = map.entry(kind).or_default();
            entry.0 += 1;
            entry.1 += busy.as_secs_f64();
        }

        pub fn reconcile_error(&self, kind: &'static str, error: &str) {
            bump(&self.errors, (kind, error.to_owned()));
        }

        /// A reconcile of `kind` that panicked (and was caught).
        pub fn reconcile_panic(&self, kind: &'static str) {
            bump(&self.panics, kind);
        }

        /// A status write of `kind` that the API server refused.
        pub fn status_write_refused(&self, kind: &str) {
            bump(&self.refused_writes, kind.to_owned());
        }

        pub fn s3_request(&self, operation: &str, outcome: &'static str) {
            bump(&self.s3, (operation.to_owned(), outcome));
        }

        pub fn platform_request(&self, endpoint: &'static str, outcome: &'static str) {
            bump(&self.platform, (endpoint, outcome));
        }

        /// The object `uid` (`kind` `namespace/name`) is Ready or not, for `reason`.
        pub fn set_ready(&self, uid: &str, kind: &'static str, namespace: &str, name: &str, ready: bool, reason: &str) {
            let state = ObjectState {
                kind,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                ready,
                reason: reason.to_owned(),
            };
            self.ready.lock().expect("not poisoned").insert(uid.to_owned(), state);
        }

        pub fn forget(&self, uid: &str) {
            self.ready.lock().expect("not poisoned").remove(uid);
        }

        /// The Prometheus text exposition format.
        pub fn render(&self) -> String {
            let mut out = String::new();
            let mut counter = |name: &str, help: &str, rows: Vec<(String, u64)>| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for (labels, v) in rows {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            };
            counter(
                "s3connect_reconciliations_total",
                "Reconciles by kind and the reason they ended with.",
                self.reconciles
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|((k, r), v)| (format!("kind=\"{k}\",reason=\"{r}\""), *v))
                    .collect(),
            );
            counter(
                "s3connect_reconcile_errors_total",
                "Reconciles that failed (Kubernetes API errors), by kind and error.",
                self.errors
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|((k, e), v)| (format!("kind=\"{k}\",error=\"{e}\""), *v))
                    .collect(),
            );
            counter(
                "s3connect_reconcile_panics_total",
                "Reconciles that panicked, by kind: a bug, caught so that it stays the object's own problem.",
                self.panics.lock().unwrap().iter().map(|(k, v)| (format!("kind=\"{k}\""), *v)).collect(),
            );
            counter(
                "s3connect_status_write_refusals_total",
                "Status updates the API server refused, by kind.",
                self.refused_writes.lock().unwrap().iter().map(|(k, v)| (format!("kind=\"{k}\""), *v)).collect(),
            );
            counter(
                "s3connect_s3_requests_total",
                "S3 requests by operation and outcome.",
                self.s3
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|((o, r), v)| (format!("operation=\"{o}\",outcome=\"{r}\""), *v))
                    .collect(),
            );
            counter(
                "s3connect_platform_requests_total",
                "Labellerr API requests by endpoint and outcome.",
                self.platform
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|((e, r), v)| (format!("endpoint=\"{e}\",outcome=\"{r}\""), *v))
                    .collect(),
            );
            let _ = writeln!(
                out,
                "# HELP s3connect_reconcile_duration_seconds Reconcile durations by kind.\n# TYPE s3connect_reconcile_duration_seconds histogram"
            );
            for (kind, h) in self.durations.lock().unwrap().iter() {
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "s3connect_reconcile_duration_seconds_bucket{{kind=\"{kind}\",le=\"{b}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "s3connect_reconcile_duration_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(out, "s3connect_reconcile_duration_seconds_sum{{kind=\"{kind}\"}} {}", h.sum);
                let _ = writeln!(out, "s3connect_reconcile_duration_seconds_count{{kind=\"{kind}\"}} {}", h.count);
            }
            let _ = writeln!(
                out,
                "# HELP s3connect_reconcile_busy_seconds Time reconciles spent computing, network waits excluded.\n# TYPE s3connect_reconcile_busy_seconds summary"
            );
            for (kind, (count, sum)) in self.busy.lock().unwrap().iter() {
                let _ = writeln!(out, "s3connect_reconcile_busy_seconds_sum{{kind=\"{kind}\"}} {sum}");
                let _ = writeln!(out, "s3connect_reconcile_busy_seconds_count{{kind=\"{kind}\"}} {count}");
            }
            let objects = self.ready.lock().unwrap();
            let mut gauges: BTreeMap<(&str, bool), u64> = BTreeMap::new();
            for o in objects.values() {
                *gauges.entry((o.kind, o.ready)).or_insert(0) += 1;
            }
            let _ = writeln!(
                out,
                "# HELP s3connect_resources Resources by kind and Ready state.\n# TYPE s3connect_resources gauge"
            );
            for ((kind, ready), v) in gauges {
                let _ = writeln!(out, "s3connect_resources{{kind=\"{kind}\",ready=\"{ready}\"}} {v}");
            }
            let _ = writeln!(
                out,
                "# HELP s3connect_ready Whether each object is Ready (1) or not (0), with its Ready reason; one series per object that exists.\n# TYPE s3connect_ready gauge"
            );
            let mut rows: Vec<String> = objects
                .values()
                .map(|o| {
                    format!(
                        "s3connect_ready{{kind=\"{}\",namespace=\"{}\",name=\"{}\",reason=\"{}\"}} {}",
                        o.kind,
                        label(&o.namespace),
                        label(&o.name),
                        label(&o.reason),
                        u8::from(o.ready)
                    )
                })
                .collect();
            drop(objects);
            rows.sort();
            for row in rows {
                let _ = writeln!(out, "{row}");
            }
            let _ = writeln!(
                out,
                "# HELP s3connect_build_info The running build.\n# TYPE s3connect_build_info gauge\ns3connect_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            );
            super::process(&mut out);
            let _ = writeln!(
                out,
                "# HELP s3connect_leader Whether this replica holds the leader lease.\n# TYPE s3connect_leader gauge"
            );
            let _ = writeln!(out, "s3connect_leader {}", u8::from(self.leader.load(Ordering::Relaxed)));
            out
        }
    }
}

/// The standard process metrics (CPU, memory, start time, open files), from /proc.
fn process(out: &mut String) {
    use std::fmt::Write;
    // SAFETY: sysconf only reads a configuration value.
    let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse::<f64>().ok())));
    if ticks > 0 {
        let t = ticks as f64;
        // utime and stime are fields 14 and 15 of stat, starttime 22 (11, 12 and 19 here).
        if let (Some(u), Some(s)) = (field(11), field(12)) {
            let _ =
                writeln!(out, "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {}", (u + s) / t);
        }
        if let (Some(start), Some(boot)) = (field(19), boot) {
            let _ = writeln!(
                out,
                "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {}",
                boot + start / t
            );
        }
    }
    if let Some(rss) = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
    {
        let _ = writeln!(
            out,
            "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}",
            rss * page as f64
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(out, "# TYPE process_open_fds gauge\nprocess_open_fds {}", fds.count());
    }
}

/// Runs `fut`, returning its output and the CPU time this thread spent inside its polls:
/// the work it did, without the waits between (for the network, mostly).
pub async fn busy<F: std::future::Future>(fut: F) -> (F::Output, std::time::Duration) {
    let mut fut = std::pin::pin!(fut);
    let mut busy = std::time::Duration::ZERO;
    let out = std::future::poll_fn(|cx| {
        let start = thread_cpu();
        let poll = fut.as_mut().poll(cx);
        busy += thread_cpu().saturating_sub(start);
        poll
    })
    .await;
    (out, busy)
}

/// CPU time of the calling thread (wall time would count preemption on a busy machine).
pub fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant libc defines.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// Serves `/metrics`, `/healthz` (the process is up) and `/readyz` (watching, as the
/// leader or a standby) on `addr`. A minimal HTTP/1.1 responder: three GET paths need no
/// web framework.
pub async fn serve(addr: std::net::SocketAddr) -> std::io::Result<()> {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    loop {
        let (mut stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match path {
                "/metrics" => ("200 OK", metrics::METRICS.render()),
                "/healthz" => ("200 OK", "ok\n".to_owned()),
                "/readyz" if metrics::METRICS.serving.load(Ordering::Relaxed) => ("200 OK", "ok\n".to_owned()),
                "/readyz" => ("503 Service Unavailable", "starting\n".to_owned()),
                _ => ("404 Not Found", "not found\n".to_owned()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[tokio::test]
    async fn busy_time_counts_the_work_and_not_the_waits() {
        let (out, busy) = super::busy(async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            // 20 ms of this thread's CPU, however long the machine makes that take.
            let start = super::thread_cpu();
            while super::thread_cpu() - start < Duration::from_millis(20) {
                std::hint::spin_loop();
            }
            7
        })
        .await;
        assert_eq!(out, 7);
        assert!(busy >= Duration::from_millis(20), "the work was not counted: {busy:?}");
        assert!(busy < Duration::from_millis(150), "the sleep was counted: {busy:?}");
    }
}

#[cfg(test)]
mod dashboard_tests {
    /// The Grafana dashboard in docs/grafana and the chart's alerts only use metrics the
    /// operator exports.
    #[test]
    fn the_dashboard_and_the_alerts_query_metrics_that_exist() {
        let m = super::metrics::Metrics::default();
        m.reconciled("S3Connection", "Validated", std::time::Duration::from_millis(5));
        m.reconcile_panic("S3Connection");
        m.status_write_refused("S3Connection");
        m.s3_request("ListObjectsV2", "ok");
        m.platform_request("/exports/status", "ok");
        m.set_ready("uid", "S3Connection", "ns", "c", true, "Validated");
        let rendered = m.render();
        let exported: std::collections::BTreeSet<String> = rendered
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(|n| n.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count").to_owned())
            .collect();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let dashboard = std::fs::read_to_string(root.join("docs/grafana/s3connect-dashboard.json")).unwrap();
        let rules = std::fs::read_to_string(root.join("charts/s3connect/templates/service.yaml")).unwrap();
        let _: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
        let mut used = std::collections::BTreeSet::new();
        for text in [&dashboard, &rules] {
            for (i, _) in text.match_indices("s3connect_") {
                let name: String = text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                used.insert(name.trim_end_matches("_bucket").to_owned());
            }
            for (i, _) in text.match_indices("process_") {
                let name: String = text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                used.insert(name);
            }
        }
        // Names in the chart that are not metrics (the template's helper names).
        used.retain(|n| n.len() > "s3connect_".len() && !n.starts_with("s3connect_labels"));
        assert!(used.len() >= 10, "too few metrics found to prove anything: {used:?}");
        let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(missing.is_empty(), "queried but not exported: {missing:?}\nexported: {exported:?}");
    }
}
