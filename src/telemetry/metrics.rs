//! Prometheus metrics, kept in plain maps: a few dozen series, written at most a few
//! times per reconcile, rendered on scrape.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// What the managed-credentials sweep did, by action.
    sweep: Mutex<BTreeMap<&'static str, u64>>,
    /// Per object uid: what the readiness gauges show.
    ready: Mutex<HashMap<String, ObjectState>>,
    pub leader: AtomicBool,
    pub serving: AtomicBool,
    /// Start permits held (or set aside for an object on its way), of `--concurrency`.
    pub permits_in_use: AtomicUsize,
    /// Objects waiting for a start permit.
    pub waiting: AtomicUsize,
    /// Off (`--per-object-metrics=false`): no `s3connect_ready` series, whose labels name
    /// every tenant's objects to whoever can scrape the metrics port.
    pub hide_objects: AtomicBool,
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

/// A map's lock; a panic elsewhere while it was held leaves the counts as they were, so
/// metrics never stop the operator.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A label value as the exposition format wants it.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    *lock(map).entry(key).or_insert(0) += 1;
}

impl Metrics {
    /// A finished reconcile of `kind` whose outcome is `reason` (the Ready reason).
    pub fn reconciled(&self, kind: &'static str, reason: &str, took: Duration) {
        bump(&self.reconciles, (kind, reason.to_owned()));
        let mut d = lock(&self.durations);
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
        let mut map = lock(&self.busy);
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

    /// One IAM user the managed-credentials sweep acted on (or failed to).
    pub fn managed_sweep(&self, action: &'static str) {
        bump(&self.sweep, action);
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
        lock(&self.ready).insert(uid.to_owned(), state);
    }

    pub fn forget(&self, uid: &str) {
        lock(&self.ready).remove(uid);
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.counters(&mut out);
        self.timings(&mut out);
        self.objects(&mut out);
        header(&mut out, "s3connect_build_info", "gauge", "The running build.");
        let _ = writeln!(out, "s3connect_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
        process(&mut out);
        header(&mut out, "s3connect_start_permits_in_use", "gauge", "Start permits held, of --concurrency.");
        let _ = writeln!(out, "s3connect_start_permits_in_use {}", self.permits_in_use.load(Ordering::Relaxed));
        header(&mut out, "s3connect_reconciles_waiting", "gauge", "Objects waiting for a start permit.");
        let _ = writeln!(out, "s3connect_reconciles_waiting {}", self.waiting.load(Ordering::Relaxed));
        header(&mut out, "s3connect_leader", "gauge", "Whether this replica holds the leader lease.");
        let _ = writeln!(out, "s3connect_leader {}", u8::from(self.leader.load(Ordering::Relaxed)));
        out
    }

    fn counters(&self, out: &mut String) {
        fn pairs<A: std::fmt::Display, B: std::fmt::Display>(
            map: &Mutex<BTreeMap<(A, B), u64>>,
            (a, b): (&str, &str),
        ) -> Vec<(String, u64)> {
            let map = lock(map);
            map.iter().map(|((x, y), v)| (format!("{a}=\"{x}\",{b}=\"{y}\""), *v)).collect()
        }
        fn singles<A: std::fmt::Display>(map: &Mutex<BTreeMap<A, u64>>, a: &str) -> Vec<(String, u64)> {
            let map = lock(map);
            map.iter().map(|(x, v)| (format!("{a}=\"{x}\""), *v)).collect()
        }
        let families = [
            (
                "s3connect_reconciliations_total",
                "Reconciles by kind and the reason they ended with.",
                pairs(&self.reconciles, ("kind", "reason")),
            ),
            (
                "s3connect_reconcile_errors_total",
                "Reconciles that failed (Kubernetes API errors), by kind and error.",
                pairs(&self.errors, ("kind", "error")),
            ),
            (
                "s3connect_reconcile_panics_total",
                "Reconciles that panicked, by kind: a bug, caught so that it stays the object's own problem.",
                singles(&self.panics, "kind"),
            ),
            (
                "s3connect_status_write_refusals_total",
                "Status updates the API server refused, by kind.",
                singles(&self.refused_writes, "kind"),
            ),
            (
                "s3connect_s3_requests_total",
                "S3 requests by operation and outcome.",
                pairs(&self.s3, ("operation", "outcome")),
            ),
            (
                "s3connect_platform_requests_total",
                "Labellerr API requests by endpoint and outcome.",
                pairs(&self.platform, ("endpoint", "outcome")),
            ),
            (
                "s3connect_managed_sweep_total",
                "IAM users the managed-credentials sweep acted on, by action: orphan_deleted, orphan_keys_deleted (Retain), uncovered_revoked, failed.",
                singles(&self.sweep, "action"),
            ),
        ];
        for (name, help, rows) in families {
            header(out, name, "counter", help);
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
    }

    /// Reconcile durations (a histogram) and the time reconciles spent computing.
    fn timings(&self, out: &mut String) {
        let name = "s3connect_reconcile_duration_seconds";
        header(out, name, "histogram", "Reconcile durations by kind.");
        for (kind, h) in lock(&self.durations).iter() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "{name}_bucket{{kind=\"{kind}\",le=\"{b}\"}} {}", h.counts[i]);
            }
            let _ = writeln!(out, "{name}_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum{{kind=\"{kind}\"}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{kind=\"{kind}\"}} {}", h.count);
        }
        let name = "s3connect_reconcile_busy_seconds";
        header(out, name, "summary", "Time reconciles spent computing, network waits excluded.");
        for (kind, (count, sum)) in lock(&self.busy).iter() {
            let _ = writeln!(out, "{name}_sum{{kind=\"{kind}\"}} {sum}");
            let _ = writeln!(out, "{name}_count{{kind=\"{kind}\"}} {count}");
        }
    }

    /// Objects by kind and Ready state, and one readiness series per object.
    fn objects(&self, out: &mut String) {
        let objects = lock(&self.ready);
        let mut gauges: BTreeMap<(&str, bool), u64> = BTreeMap::new();
        for o in objects.values() {
            *gauges.entry((o.kind, o.ready)).or_insert(0) += 1;
        }
        header(out, "s3connect_resources", "gauge", "Resources by kind and Ready state.");
        for ((kind, ready), v) in gauges {
            let _ = writeln!(out, "s3connect_resources{{kind=\"{kind}\",ready=\"{ready}\"}} {v}");
        }
        if self.hide_objects.load(Ordering::Relaxed) {
            return;
        }
        header(
            out,
            "s3connect_ready",
            "gauge",
            "Whether each object is Ready (1) or not (0), with its Ready reason; one series per object that exists.",
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
    }
}

/// A metric family's HELP and TYPE lines.
fn header(out: &mut String, name: &str, type_: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {type_}");
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

#[cfg(test)]
mod tests {
    #[test]
    fn per_object_series_can_be_switched_off() {
        let m = super::Metrics::default();
        m.set_ready("uid", "S3Connection", "team-a", "secret-project", true, "Validated");
        assert!(m.render().contains("name=\"secret-project\""));
        m.hide_objects.store(true, std::sync::atomic::Ordering::Relaxed);
        let rendered = m.render();
        assert!(!rendered.contains("secret-project") && !rendered.contains("team-a"), "{rendered}");
        assert!(rendered.contains("s3connect_resources{kind=\"S3Connection\",ready=\"true\"} 1"), "{rendered}");
    }
}

#[cfg(test)]
mod dashboard_tests {
    /// The Grafana dashboard in docs/grafana and the chart's alerts only use metrics the
    /// operator exports.
    #[test]
    fn the_dashboard_and_the_alerts_query_metrics_that_exist() {
        let m = super::Metrics::default();
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
