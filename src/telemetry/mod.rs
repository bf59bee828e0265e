//! Telemetry: logging (structured fields throughout; JSON for log pipelines, text for
//! people), the metrics and health endpoint, and the busy-time measure. Metrics are in
//! `metrics`.

pub mod metrics;

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

/// What a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serves {
    /// /metrics, /healthz and /readyz.
    All,
    /// /healthz and /readyz only: the probes' own port.
    Health,
}

/// Connections the health and metrics server serves at once; more wait in the kernel's
/// backlog, so that a crowd of sockets can neither exhaust the process's file descriptors
/// nor keep a probe waiting longer than one read timeout.
const MAX_CONNECTIONS: usize = 64;
/// How long a connection may take to send its request line.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves `/metrics`, `/healthz` (the process is up) and `/readyz` (watching, as the
/// leader or a standby) on `addr`. A minimal HTTP/1.1 responder: three GET paths need no
/// web framework. An accept that fails (the process out of file descriptors, say) is
/// logged and tried again shortly: a probe must answer again once the pressure is gone,
/// not fail until the kubelet restarts the process.
pub async fn serve(addr: std::net::SocketAddr, serves: Serves) -> std::io::Result<()> {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    match serves {
        Serves::All => tracing::info!(%addr, "serving /metrics, /healthz and /readyz"),
        Serves::Health => tracing::info!(health_addr = %addr, "serving /healthz and /readyz"),
    }
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut last_warned: Option<std::time::Instant> = None;
    loop {
        // Never closed, so this waits for a slot and never fails.
        let Ok(slot) = slots.clone().acquire_owned().await else { continue };
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                if last_warned.is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "the health and metrics server could not accept a connection; trying again");
                    last_warned = Some(std::time::Instant::now());
                }
                drop(slot);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let _slot = slot;
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match path {
                "/metrics" if serves == Serves::All => ("200 OK", metrics::METRICS.render()),
                "/healthz" => ("200 OK", "ok\n".to_owned()),
                "/readyz" if metrics::METRICS.serving.load(Ordering::Relaxed) => ("200 OK", "ok\n".to_owned()),
                "/readyz" => ("503 Service Unavailable", "starting\n".to_owned()),
                _ => ("404 Not Found", "not found\n".to_owned()),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tokio::time::timeout(READ_TIMEOUT, stream.write_all(response.as_bytes())).await;
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
