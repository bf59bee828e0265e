//! Who may talk to the outside (S3, the platform) at once, so that no namespace holds the
//! others hostage, and none waits while there is room.
//!
//! At most `global` reconciles *start* at once: each holds a start permit until its work is
//! done or has waited `hold` on the network, whichever comes first; slow work then gives
//! the permit up and finishes in the background, bounded by the validation's deadline. The
//! permits are handed out work-conservingly: a namespace alone may use all of them, and
//! when several wait, the next free permit goes to the waiting namespace with the fewest
//! reconciles in flight (started and not finished), the one that waited longest among
//! equals. So however many objects one namespace has, and however hung their endpoints,
//! another namespace's reconcile gets the next permit that comes free: within `hold`, and
//! with `global` permits held by hung work, within about `hold / global` on average.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

pub struct Slots {
    hold: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Start permits not held by anyone.
    free: usize,
    /// Per namespace: reconciles in flight, and those waiting for a permit (in order).
    namespaces: HashMap<String, Namespace>,
    /// Orders waiters across namespaces (who waited longest).
    next_ticket: u64,
}

#[derive(Default)]
struct Namespace {
    in_flight: usize,
    waiting: VecDeque<(u64, oneshot::Sender<()>)>,
}

/// A start permit; given back (to the next waiter, or the pool) when dropped.
struct Start<'a> {
    slots: &'a Slots,
}

impl Drop for Start<'_> {
    fn drop(&mut self) {
        let mut state = self.slots.state.lock().unwrap_or_else(|e| e.into_inner());
        state.hand_over();
    }
}

/// A reconcile in flight, from its start until its work is done (or it is cancelled), or
/// waiting for a permit (`waiting`).
struct InFlight<'a> {
    slots: &'a Slots,
    namespace: &'a str,
    /// Counted in its namespace's in-flight number.
    started: bool,
    waiting: Option<oneshot::Receiver<()>>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut state = self.slots.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut leaving = self.started;
        if let Some(mut rx) = self.waiting.take() {
            // Under the lock, so that no permit is handed over between these two lines.
            rx.close();
            if rx.try_recv().is_ok() {
                // Handed a permit, then cancelled before using it: it goes on at once.
                leaving = true;
                state.hand_over();
            }
        }
        if let Some(ns) = state.namespaces.get_mut(self.namespace) {
            if leaving {
                ns.in_flight = ns.in_flight.saturating_sub(1);
            }
            ns.waiting.retain(|(_, tx)| !tx.is_closed());
            if ns.in_flight == 0 && ns.waiting.is_empty() {
                state.namespaces.remove(self.namespace);
            }
        }
    }
}

impl State {
    /// A permit came free: to the waiting namespace with the fewest in flight (the longest
    /// waiting among equals), or back to the pool.
    fn hand_over(&mut self) {
        loop {
            let next = self
                .namespaces
                .iter()
                .filter_map(|(name, ns)| ns.waiting.front().map(|(ticket, _)| (ns.in_flight, *ticket, name.clone())))
                .min();
            let Some((_, _, name)) = next else {
                self.free += 1;
                return;
            };
            let Some(ns) = self.namespaces.get_mut(&name) else { continue };
            let Some((_, tx)) = ns.waiting.pop_front() else { continue };
            // The waiter counts as in flight from the moment it is handed the permit.
            ns.in_flight += 1;
            if tx.send(()).is_ok() {
                return;
            }
            // It was cancelled meanwhile: not in flight after all; try the next.
            ns.in_flight -= 1;
        }
    }
}

impl Slots {
    pub fn new(global: usize, hold: Duration) -> Self {
        Slots { hold, state: Mutex::new(State { free: global.max(1), ..State::default() }) }
    }

    /// Reconciles of `namespace` in flight now (started and not finished).
    pub fn in_flight(&self, namespace: &str) -> usize {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.namespaces.get(namespace).map_or(0, |ns| ns.in_flight)
    }

    /// Runs the work `start` makes, for `namespace`, once it is handed a start permit,
    /// keeping the permit until the work is done or has run for `hold`. The work is made
    /// only then, on the heap: a reconcile waiting for its turn is a few bytes, not the
    /// whole state of a validation.
    pub async fn run<F: Future>(&self, namespace: &str, start: impl FnOnce() -> F) -> F::Output {
        let mut in_flight = InFlight { slots: self, namespace, started: false, waiting: None };
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let nobody_waits = state.namespaces.values().all(|ns| ns.waiting.is_empty());
            if state.free > 0 && nobody_waits {
                state.free -= 1;
                state.namespaces.entry(namespace.to_owned()).or_default().in_flight += 1;
                in_flight.started = true;
            } else {
                let (tx, rx) = oneshot::channel();
                let ticket = state.next_ticket;
                state.next_ticket += 1;
                state.namespaces.entry(namespace.to_owned()).or_default().waiting.push_back((ticket, tx));
                in_flight.waiting = Some(rx);
            }
        }
        if let Some(rx) = in_flight.waiting.as_mut() {
            // The sender is dropped only after a send, or with the whole Slots: run anyway.
            let _ = rx.await;
            in_flight.waiting = None;
            // hand_over counted it in flight when it handed the permit.
            in_flight.started = true;
        }
        let permit = Start { slots: self };
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
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    #[tokio::test]
    async fn a_namespace_full_of_hung_work_delays_another_by_one_hand_over_at_most() {
        let slots = Arc::new(Slots::new(4, Duration::from_millis(200)));
        let hung: Vec<_> = (0..200)
            .map(|_| {
                let slots = slots.clone();
                tokio::spawn(async move { slots.run("noisy", std::future::pending::<()>).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Alone, it has every permit.
        assert_eq!(slots.in_flight("noisy"), 4);
        let started = tokio::time::Instant::now();
        slots.run("quiet", || async {}).await;
        let waited = started.elapsed();
        // The next permit that comes free is quiet's: within one hold.
        assert!(waited < Duration::from_millis(300), "waited {waited:?}");
        assert_eq!(slots.in_flight("quiet"), 0);
        for h in hung {
            h.abort();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(slots.in_flight("noisy"), 0);
        assert!(slots.state.lock().unwrap().namespaces.is_empty(), "idle namespaces are forgotten");
        assert_eq!(slots.state.lock().unwrap().free, 4, "every permit came back");
    }

    #[tokio::test]
    async fn a_namespace_alone_uses_every_permit_and_never_more() {
        let slots = Arc::new(Slots::new(4, Duration::from_secs(60)));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (slots, running, most) = (slots.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    slots
                        .run("alone", || async {
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
        assert_eq!(most.load(SeqCst), 4, "work-conserving: all four permits, not a namespace's share");
    }

    #[tokio::test]
    async fn when_several_wait_the_one_with_fewest_in_flight_goes_next() {
        let slots = Arc::new(Slots::new(2, Duration::from_secs(60)));
        let order = Arc::new(Mutex::new(Vec::new()));
        // Busy holds both permits for a moment, with more of its own queued.
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for i in 0..6 {
            let (slots, order, gate) = (slots.clone(), order.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                slots
                    .run("busy", || async move {
                        if i < 2 {
                            gate.notified().await;
                        }
                        order.lock().unwrap().push(format!("busy-{i}"));
                    })
                    .await
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (s, o) = (slots.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            s.run("other", || async move { o.lock().unwrap().push("other".into()) }).await
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.notify_waiters();
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        let other = order.iter().position(|e| e == "other").unwrap();
        // The first permit freed goes to "other" (none in flight), ahead of busy's queue.
        assert!(other <= 2, "{order:?}");
    }

    #[tokio::test]
    async fn a_cancelled_waiter_gives_its_turn_away() {
        let slots = Arc::new(Slots::new(1, Duration::from_secs(60)));
        let gate = Arc::new(tokio::sync::Notify::new());
        let (s, g) = (slots.clone(), gate.clone());
        let holder = tokio::spawn(async move { s.run("a", || async move { g.notified().await }).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let s = slots.clone();
        let cancelled = tokio::spawn(async move { s.run("b", || async {}).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        cancelled.abort();
        tokio::time::sleep(Duration::from_millis(10)).await;
        gate.notify_waiters();
        holder.await.unwrap();
        // The permit was not lost to the cancelled waiter.
        tokio::time::timeout(Duration::from_secs(1), slots.run("c", || async {})).await.expect("a permit");
        assert_eq!(slots.state.lock().unwrap().free, 1);
    }
}
