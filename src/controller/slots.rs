//! Who may talk to the outside (S3, the platform) at once, so that no namespace holds the
//! others hostage.
//!
//! Two limits. Per namespace, at most `per_namespace` reconciles do outside work at a
//! time; one that finds its namespace full gives its controller slot back at once and
//! comes back a moment later, so a namespace full of hung endpoints can fill neither the
//! controller's slots nor anyone's queue. Across the operator, at most `global` of them
//! *start* at once: each holds a start permit until its work is done or has waited
//! `hold` on the network, whichever comes first. Fast work (the common case) is bounded
//! by `global` as before; work that hangs gives its permit up after `hold` and finishes
//! in the background of the others, bounded by the validation's deadline.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

pub struct Slots {
    global: Arc<Semaphore>,
    hold: Duration,
    per_namespace: usize,
    busy: Mutex<HashMap<String, usize>>,
}

/// A namespace's slot, given back when dropped.
pub struct NamespaceSlot<'a> {
    slots: &'a Slots,
    namespace: String,
}

impl Drop for NamespaceSlot<'_> {
    fn drop(&mut self) {
        let mut busy = self.slots.busy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = busy.get_mut(&self.namespace) {
            *n -= 1;
            if *n == 0 {
                busy.remove(&self.namespace);
            }
        }
    }
}

impl Slots {
    pub fn new(global: usize, per_namespace: usize, hold: Duration) -> Self {
        Slots {
            global: Arc::new(Semaphore::new(global.max(1))),
            hold,
            per_namespace: per_namespace.max(1),
            busy: Mutex::default(),
        }
    }

    /// A slot in `namespace`, or None when the namespace already has all of its own.
    pub fn enter(&self, namespace: &str) -> Option<NamespaceSlot<'_>> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let n = busy.entry(namespace.to_owned()).or_insert(0);
        if *n >= self.per_namespace {
            return None;
        }
        *n += 1;
        Some(NamespaceSlot { slots: self, namespace: namespace.to_owned() })
    }

    /// Runs `work` once a start permit is free, keeping the permit until `work` is done or
    /// has run for `hold`.
    pub async fn run<F: Future>(&self, work: F) -> F::Output {
        // The semaphore is never closed, so acquiring only fails if it were; then run anyway.
        let permit = self.global.acquire().await.ok();
        let mut work = std::pin::pin!(work);
        tokio::select! {
            out = &mut work => return out,
            () = tokio::time::sleep(self.hold) => {}
        }
        drop(permit);
        work.await
    }

    /// How long a reconcile that found its namespace full waits before it tries again.
    pub fn retry_delay() -> Duration {
        Duration::from_millis(500 + fastrand::u64(..1500))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_gets_at_most_its_share_and_gets_it_back() {
        let slots = Slots::new(4, 2, Duration::from_secs(1));
        let a1 = slots.enter("a").unwrap();
        let _a2 = slots.enter("a").unwrap();
        assert!(slots.enter("a").is_none(), "a is full");
        assert!(slots.enter("b").is_some(), "b is not a's");
        drop(a1);
        assert!(slots.enter("a").is_some(), "a got one back");
    }

    #[tokio::test]
    async fn hung_work_gives_its_start_permit_up_after_the_hold() {
        let slots = Arc::new(Slots::new(1, 10, Duration::from_millis(300)));
        let hung = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.run(std::future::pending::<()>()).await })
        };
        tokio::task::yield_now().await;
        let started = tokio::time::Instant::now();
        slots.run(async {}).await;
        let waited = started.elapsed();
        // At least the hold; the upper bound only says it did not wait for the hung work.
        assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(5), "waited {waited:?}");
        hung.abort();
    }

    #[tokio::test]
    async fn fast_work_keeps_the_bound() {
        let slots = Arc::new(Slots::new(2, 10, Duration::from_secs(60)));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (slots, running, most) = (slots.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    slots
                        .run(async {
                            let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                            most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
