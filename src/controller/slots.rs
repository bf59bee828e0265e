//! Who may talk to the outside (S3, the platform) at once, so that no namespace holds the
//! others hostage.
//!
//! Two bounds, the namespace's first. Each namespace has at most `per_namespace` reconciles
//! in flight (waiting for a start permit, running, or waiting on a slow store); the rest
//! of that namespace queue behind them, in order, and hold nothing anyone else needs. Of
//! all in flight, at most `global` *start* at once: each holds a start permit until its work
//! is done or has waited `hold` on the network, whichever comes first; slow work then gives
//! the permit up and finishes in the background, bounded by the validation's deadline, still
//! holding its namespace's slot. So however many objects one namespace has, and however
//! hung their endpoints, another namespace's reconcile waits behind at most `per_namespace`
//! of them per busy namespace, each for at most `hold`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Slots {
    global: Semaphore,
    hold: Duration,
    per_namespace: usize,
    namespaces: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A namespace's slot, held while its reconcile is in flight; the namespace's entry goes
/// when its last slot does, so that the map is bounded by the namespaces busy now.
struct InFlight<'a> {
    slots: &'a Slots,
    namespace: &'a str,
    semaphore: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut namespaces = self.slots.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        drop(self.permit.take());
        // Only the map and this guard hold it, and nobody holds a permit: idle.
        if Arc::strong_count(&self.semaphore) == 2 && self.semaphore.available_permits() == self.slots.per_namespace {
            namespaces.remove(self.namespace);
        }
    }
}

impl Slots {
    pub fn new(global: usize, per_namespace: usize, hold: Duration) -> Self {
        Slots {
            global: Semaphore::new(global.max(1)),
            hold,
            per_namespace: per_namespace.max(1),
            namespaces: Mutex::default(),
        }
    }

    /// Reconciles of `namespace` in flight now.
    pub fn in_flight(&self, namespace: &str) -> usize {
        let namespaces = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        namespaces.get(namespace).map_or(0, |s| self.per_namespace - s.available_permits())
    }

    /// Runs the work `start` makes, for `namespace`: once the namespace has a free slot,
    /// then once a start permit is free, keeping the permit until the work is done or has
    /// run for `hold`. The work is made only then, on the heap: a reconcile waiting for its
    /// turn is a few bytes, not the whole state of a validation.
    pub async fn run<F: Future>(&self, namespace: &str, start: impl FnOnce() -> F) -> F::Output {
        let semaphore = {
            let mut namespaces = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
            namespaces
                .entry(namespace.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_namespace)))
                .clone()
        };
        let mut in_flight = InFlight { slots: self, namespace, semaphore: semaphore.clone(), permit: None };
        // Neither semaphore is ever closed, so acquiring only fails if it were; then run anyway.
        in_flight.permit = semaphore.acquire_owned().await.ok();
        let permit = self.global.acquire().await.ok();
        let mut work = Box::pin(start());
        tokio::select! {
            out = &mut work => return out,
            () = tokio::time::sleep(self.hold) => {}
        }
        drop(permit);
        work.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    #[tokio::test]
    async fn a_namespace_full_of_hung_work_holds_its_own_slots_and_no_one_elses() {
        let slots = Arc::new(Slots::new(2, 3, Duration::from_millis(200)));
        let hung: Vec<_> = (0..50)
            .map(|_| {
                let slots = slots.clone();
                tokio::spawn(async move { slots.run("noisy", std::future::pending::<()>).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(slots.in_flight("noisy"), 3, "the namespace's bound");
        let started = tokio::time::Instant::now();
        slots.run("quiet", || async {}).await;
        let waited = started.elapsed();
        // Behind at most the noisy namespace's three, each for at most the hold.
        assert!(waited < Duration::from_secs(2), "waited {waited:?}");
        assert_eq!(slots.in_flight("quiet"), 0);
        tokio::time::sleep(Duration::from_millis(400)).await;
        // Slow by now: their start permits are back, and quiet starts at once.
        let started = tokio::time::Instant::now();
        slots.run("quiet", || async {}).await;
        assert!(started.elapsed() < Duration::from_millis(100), "waited {:?}", started.elapsed());
        for h in hung {
            h.abort();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(slots.in_flight("noisy"), 0);
        assert!(slots.namespaces.lock().unwrap().is_empty(), "idle namespaces are forgotten");
    }

    #[tokio::test]
    async fn fast_work_keeps_both_bounds() {
        let slots = Arc::new(Slots::new(4, 2, Duration::from_secs(60)));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (slots, running, most) = (slots.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    let ns = if i % 2 == 0 { "a" } else { "b" };
                    slots
                        .run(ns, || async {
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
        // Two namespaces of two each: four at once, which is also the global bound.
        assert_eq!(most.load(SeqCst), 4);
    }
}
