//! Who may talk to the outside (S3, the platform) at once, so that no namespace holds the
//! others hostage.
//!
//! At most `global` validations *start* at once: each holds a start permit until its work
//! is done or has waited `hold` on the network, whichever comes first. Fast work (the
//! common case) is bounded by `global`, whatever its namespace. Work that waits longer is
//! slow: it gives its permit up and finishes in the background of the others, bounded by
//! the validation's deadline, and it counts against its namespace. A namespace with
//! `per_namespace` slow validations in flight (its endpoints hang, say) gets no new ones
//! until some finish: a reconcile of it gives its controller slot back at once and comes
//! back a moment later. So a namespace full of hung endpoints holds at most
//! `per_namespace` plus the validations it started before they turned slow.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Semaphore;

pub struct Slots {
    global: Semaphore,
    hold: Duration,
    per_namespace: usize,
    slow: Mutex<HashMap<String, usize>>,
}

/// Counts one slow validation of a namespace until dropped.
struct Slow<'a> {
    slots: &'a Slots,
    namespace: &'a str,
}

impl Drop for Slow<'_> {
    fn drop(&mut self) {
        let mut slow = self.slots.slow.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = slow.get_mut(self.namespace) {
            *n -= 1;
            if *n == 0 {
                slow.remove(self.namespace);
            }
        }
    }
}

impl Slots {
    pub fn new(global: usize, per_namespace: usize, hold: Duration) -> Self {
        Slots {
            global: Semaphore::new(global.max(1)),
            hold,
            per_namespace: per_namespace.max(1),
            slow: Mutex::default(),
        }
    }

    /// Whether `namespace` may start outside work now: false while it already has its
    /// share of slow work in flight.
    pub fn admits(&self, namespace: &str) -> bool {
        self.slow.lock().unwrap_or_else(|e| e.into_inner()).get(namespace).copied().unwrap_or(0) < self.per_namespace
    }

    /// Runs the work `start` makes, for `namespace`, once a start permit is free, keeping
    /// the permit until the work is done or has run for `hold`; past that it counts as
    /// slow. The work is made only once the permit is held, on the heap: a reconcile
    /// waiting for its turn is a few bytes, not the whole state of a validation.
    pub async fn run<F: Future>(&self, namespace: &str, start: impl FnOnce() -> F) -> F::Output {
        // The semaphore is never closed, so acquiring only fails if it were; then run anyway.
        let permit = self.global.acquire().await.ok();
        let mut work = Box::pin(start());
        tokio::select! {
            out = &mut work => return out,
            () = tokio::time::sleep(self.hold) => {}
        }
        drop(permit);
        *self.slow.lock().unwrap_or_else(|e| e.into_inner()).entry(namespace.to_owned()).or_insert(0) += 1;
        let _slow = Slow { slots: self, namespace };
        work.await
    }

    /// How long a reconcile whose namespace is not admitted waits before it tries again.
    pub fn retry_delay() -> Duration {
        Duration::from_millis(500 + fastrand::u64(..1500))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    #[tokio::test]
    async fn hung_work_gives_its_start_permit_up_and_counts_against_its_namespace() {
        let slots = Arc::new(Slots::new(1, 2, Duration::from_millis(300)));
        let hung: Vec<_> = (0..2)
            .map(|_| {
                let slots = slots.clone();
                tokio::spawn(async move { slots.run("a", std::future::pending::<()>).await })
            })
            .collect();
        // Let both start (and take the one start permit in turn).
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(slots.admits("a"), "nothing is slow yet");
        let started = tokio::time::Instant::now();
        slots.run("b", || async {}).await;
        let waited = started.elapsed();
        // Behind both hung ones' holds at most; the upper bound says it did not wait for them.
        assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(5), "waited {waited:?}");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!slots.admits("a"), "a has its two slow validations");
        assert!(slots.admits("b"), "b is not a's");
        hung[0].abort();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(slots.admits("a"), "a got one back when a slow one ended");
        hung[1].abort();
    }

    #[tokio::test]
    async fn fast_work_keeps_the_global_bound_and_never_counts_as_slow() {
        let slots = Arc::new(Slots::new(2, 1, Duration::from_secs(60)));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (slots, running, most) = (slots.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    slots
                        .run("a", || async {
                            let now = running.fetch_add(1, SeqCst) + 1;
                            most.fetch_max(now, SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            running.fetch_sub(1, SeqCst);
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(most.load(SeqCst), 2);
        assert!(slots.admits("a"));
    }
}
