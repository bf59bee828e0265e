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
//!
//! A reconcile that finds no permit does not wait inside the controller: it leaves its
//! object's key and a way to wake it here, and returns. When a permit comes free for it,
//! the permit is set aside for that key and the object is reconciled again, and takes it.
//! So the controller holds only the reconciles that run (kube's runner looks at every one
//! it holds each time it is woken: 5,000 waiting there made every event cost 5,000 polls),
//! and a waiting object costs a queue entry.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wakes a waiting object: its reconcile runs again (and takes the permit set aside).
pub type Wake = Box<dyn FnOnce() + Send>;

/// How long a permit set aside for an object waits for its reconcile before it goes to the
/// next (the object was deleted meanwhile, say).
const RESERVED_FOR: Duration = Duration::from_secs(10);

pub struct Slots {
    hold: Duration,
    global: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Start permits not held or set aside.
    free: usize,
    /// Per namespace: reconciles in flight, and the keys waiting for a permit (in order).
    namespaces: HashMap<String, Namespace>,
    /// Orders waiters across namespaces (who waited longest).
    next_ticket: u64,
    /// Waiting keys: how to wake each.
    wakes: HashMap<String, Wake>,
    /// Permits set aside for a key whose reconcile is on its way: its namespace, and since.
    reserved: HashMap<String, (String, Instant)>,
}

#[derive(Default)]
struct Namespace {
    /// Started and not finished, including permits set aside for its keys.
    in_flight: usize,
    waiting: VecDeque<(u64, String)>,
    queued: HashSet<String>,
}

/// A start permit; handed on (to the next waiter, or the pool) when dropped.
struct Start<'a> {
    slots: &'a Slots,
}

impl Drop for Start<'_> {
    fn drop(&mut self) {
        let woken = self.slots.lock().hand_over();
        wake(woken);
    }
}

/// A reconcile in flight, from its start until its work is done (or it is cancelled).
struct InFlight<'a> {
    slots: &'a Slots,
    namespace: &'a str,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut state = self.slots.lock();
        if let Some(ns) = state.namespaces.get_mut(self.namespace) {
            ns.in_flight = ns.in_flight.saturating_sub(1);
        }
        state.tidy(self.namespace);
    }
}

/// The state under its lock; on release, the gauges say what it holds.
struct Locked<'a> {
    state: std::sync::MutexGuard<'a, State>,
    global: usize,
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let metrics = &crate::telemetry::metrics::METRICS;
        metrics.permits_in_use.store(self.global.saturating_sub(self.state.free), Relaxed);
        metrics.waiting.store(self.state.wakes.len(), Relaxed);
    }
}

fn wake(woken: Option<Wake>) {
    if let Some(w) = woken {
        w();
    }
}

impl State {
    /// A permit came free: set aside for the waiting key of the namespace with the fewest
    /// in flight (the longest waiting among equals), whose wake is returned to be called
    /// (outside the lock); or back to the pool.
    fn hand_over(&mut self) -> Option<Wake> {
        loop {
            let next = self
                .namespaces
                .iter()
                .filter_map(|(name, ns)| ns.waiting.front().map(|(ticket, _)| (ns.in_flight, *ticket, name)))
                .min()
                .map(|(_, _, name)| name.clone());
            let Some(name) = next else {
                self.free += 1;
                return None;
            };
            let ns = self.namespaces.get_mut(&name)?;
            let Some((_, key)) = ns.waiting.pop_front() else { continue };
            ns.queued.remove(&key);
            let Some(wake) = self.wakes.remove(&key) else { continue };
            ns.in_flight += 1;
            self.reserved.insert(key, (name, Instant::now()));
            return Some(wake);
        }
    }

    /// Permits set aside for longer than `RESERVED_FOR` go to the next waiter.
    fn reclaim(&mut self) -> Vec<Wake> {
        let expired: Vec<String> =
            self.reserved.iter().filter(|(_, (_, at))| at.elapsed() > RESERVED_FOR).map(|(k, _)| k.clone()).collect();
        let mut woken = Vec::new();
        for key in expired {
            if let Some((namespace, _)) = self.reserved.remove(&key) {
                if let Some(ns) = self.namespaces.get_mut(&namespace) {
                    ns.in_flight = ns.in_flight.saturating_sub(1);
                }
                self.tidy(&namespace);
                woken.extend(self.hand_over());
            }
        }
        woken
    }

    /// An idle namespace is forgotten.
    fn tidy(&mut self, namespace: &str) {
        if self.namespaces.get(namespace).is_some_and(|ns| ns.in_flight == 0 && ns.waiting.is_empty()) {
            self.namespaces.remove(namespace);
        }
    }
}

impl Slots {
    pub fn new(global: usize, hold: Duration) -> Self {
        let global = global.max(1);
        Slots { hold, global, state: Mutex::new(State { free: global, ..State::default() }) }
    }

    /// The state, whose gauges are published when the guard goes.
    fn lock(&self) -> Locked<'_> {
        Locked { state: self.state.lock().unwrap_or_else(|e| e.into_inner()), global: self.global }
    }

    /// Reconciles of `namespace` in flight now (started and not finished).
    pub fn in_flight(&self, namespace: &str) -> usize {
        self.lock().namespaces.get(namespace).map_or(0, |ns| ns.in_flight)
    }

    /// Keys waiting for a permit, in all.
    pub fn waiting(&self) -> usize {
        self.lock().wakes.len()
    }

    /// Hands on the permits set aside for objects that did not come for them in time. The
    /// controllers call it on a period: when every other object waits, no call of `run`
    /// comes to do it.
    pub fn reclaim_expired(&self) {
        let woken = self.lock().reclaim();
        woken.into_iter().for_each(|w| w());
    }

    /// The object `key` is gone: it waits no more, and a permit set aside for it goes on.
    pub fn forget(&self, key: &str) {
        let woken = {
            let mut state = self.lock();
            state.wakes.remove(key);
            let mut woken = None;
            if let Some((namespace, _)) = state.reserved.remove(key) {
                if let Some(ns) = state.namespaces.get_mut(&namespace) {
                    ns.in_flight = ns.in_flight.saturating_sub(1);
                }
                state.tidy(&namespace);
                woken = state.hand_over();
            }
            woken
        };
        wake(woken);
    }

    /// Runs the work `start` makes, for the object `key` of `namespace`, if a start permit
    /// is free for it now (or was set aside for it), keeping the permit until the work is
    /// done or has run for `hold`. Otherwise the key waits here and None is returned at
    /// once: `wake` is called when a permit is set aside for it (a later call with the
    /// same key replaces the wake). The work is made only when it runs.
    pub async fn run<F: Future>(
        &self,
        namespace: &str,
        key: &str,
        wake_me: impl FnOnce() + Send + 'static,
        start: impl FnOnce() -> F,
    ) -> Option<F::Output> {
        let woken = {
            let mut state = self.lock();
            let woken = state.reclaim();
            let started = if state.reserved.remove(key).is_some() {
                // Counted in flight when it was set aside.
                true
            } else if state.free > 0 && state.wakes.is_empty() {
                state.free -= 1;
                state.namespaces.entry(namespace.to_owned()).or_default().in_flight += 1;
                true
            } else {
                let ticket = state.next_ticket;
                state.next_ticket += 1;
                let ns = state.namespaces.entry(namespace.to_owned()).or_default();
                if ns.queued.insert(key.to_owned()) {
                    ns.waiting.push_back((ticket, key.to_owned()));
                }
                state.wakes.insert(key.to_owned(), Box::new(wake_me));
                false
            };
            (started, woken)
        };
        let (started, woken) = woken;
        woken.into_iter().for_each(|w| w());
        if !started {
            return None;
        }
        // Declared first, dropped last: the work leaves its namespace's count before its
        // permit is handed on, so the hand-over sees the namespace as it now is.
        let permit = Start { slots: self };
        let _in_flight = InFlight { slots: self, namespace };
        let mut work = Box::pin(start());
        tokio::select! {
            out = &mut work => return Some(out),
            () = tokio::time::sleep(self.hold) => {}
        }
        drop(permit);
        Some(work.await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    /// A controller in miniature: runs `key`'s work whenever it is woken, until it ran.
    fn reconcile<F, Fut>(
        slots: &Arc<Slots>,
        namespace: &'static str,
        key: String,
        work: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let slots = slots.clone();
        tokio::spawn(async move {
            loop {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                let ran = slots.run(namespace, &key, move || _ = tx.send(()), &work).await;
                if ran.is_some() {
                    return;
                }
                if rx.await.is_err() {
                    return;
                }
            }
        })
    }

    /// The only permit of `slots`, held by namespace "a" until `gate` is notified.
    async fn holding(slots: &Arc<Slots>) -> (Arc<tokio::sync::Notify>, tokio::task::JoinHandle<()>) {
        let gate = Arc::new(tokio::sync::Notify::new());
        let g = gate.clone();
        let holder = reconcile(slots, "a", "h".into(), move || {
            let g = g.clone();
            async move { g.notified().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        (gate, holder)
    }

    #[tokio::test]
    async fn a_namespace_full_of_hung_work_delays_another_by_one_hand_over_at_most() {
        let slots = Arc::new(Slots::new(4, Duration::from_millis(200)));
        let hung: Vec<_> =
            (0..200).map(|i| reconcile(&slots, "noisy", format!("n{i}"), std::future::pending::<()>)).collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Alone, it has every permit; the rest wait outside, as keys.
        assert_eq!(slots.in_flight("noisy"), 4);
        assert_eq!(slots.waiting(), 196);
        let started = tokio::time::Instant::now();
        reconcile(&slots, "quiet", "q".into(), || async {}).await.unwrap();
        let waited = started.elapsed();
        // The next permit that comes free is quiet's: within one hold.
        assert!(waited < Duration::from_millis(300), "waited {waited:?}");
        assert_eq!(slots.in_flight("quiet"), 0);
        for h in hung {
            h.abort();
        }
    }

    #[tokio::test]
    async fn a_namespace_alone_uses_every_permit_and_never_more() {
        let slots = Arc::new(Slots::new(4, Duration::from_secs(60)));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (running, most) = (running.clone(), most.clone());
                reconcile(&slots, "alone", format!("k{i}"), move || {
                    let (running, most) = (running.clone(), most.clone());
                    async move {
                        let now = running.fetch_add(1, SeqCst) + 1;
                        most.fetch_max(now, SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        running.fetch_sub(1, SeqCst);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(most.load(SeqCst), 4, "work-conserving: all four permits, not a namespace's share");
        let state = slots.lock();
        assert!(state.namespaces.is_empty() && state.wakes.is_empty() && state.reserved.is_empty());
        assert_eq!(state.free, 4, "every permit came back");
    }

    #[tokio::test]
    async fn when_several_wait_the_one_with_fewest_in_flight_goes_next() {
        let slots = Arc::new(Slots::new(2, Duration::from_secs(60)));
        let order = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        // Busy holds both permits for a moment, with more of its own waiting.
        for i in 0..6 {
            let (order, gate) = (order.clone(), gate.clone());
            tasks.push(reconcile(&slots, "busy", format!("b{i}"), move || {
                let (order, gate) = (order.clone(), gate.clone());
                async move {
                    if i < 2 {
                        gate.notified().await;
                    }
                    order.lock().unwrap().push(format!("busy-{i}"));
                }
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let o = order.clone();
        tasks.push(reconcile(&slots, "other", "o".into(), move || {
            let o = o.clone();
            async move { o.lock().unwrap().push("other".into()) }
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
    async fn a_key_asked_again_while_it_waits_waits_once() {
        let slots = Arc::new(Slots::new(1, Duration::from_secs(60)));
        let (gate, holder) = holding(&slots).await;
        for _ in 0..3 {
            assert!(slots.run("b", "w", || {}, || async {}).await.is_none());
        }
        assert_eq!(slots.lock().namespaces["b"].waiting.len(), 1);
        // Gone while it waited: nothing is set aside for it, and the permit returns.
        slots.forget("w");
        gate.notify_waiters();
        holder.await.unwrap();
        let state = slots.lock();
        assert_eq!(state.free, 1, "{:?}", state.reserved.keys().collect::<Vec<_>>());
        assert!(state.wakes.is_empty());
    }

    #[tokio::test]
    async fn a_permit_set_aside_for_an_object_that_never_comes_goes_to_the_next() {
        let slots = Arc::new(Slots::new(1, Duration::from_secs(60)));
        let (gate, holder) = holding(&slots).await;
        // "lost" waits and, when woken, never comes back for its permit.
        assert!(slots.run("b", "lost", || {}, || async {}).await.is_none());
        gate.notify_waiters();
        holder.await.unwrap();
        assert!(slots.lock().reserved.contains_key("lost"));
        // Long after, the next object takes the permit.
        slots.lock().reserved.get_mut("lost").unwrap().1 -= RESERVED_FOR + Duration::from_secs(1);
        let ran = slots.run("c", "next", || {}, || async { 7 }).await;
        assert_eq!(ran, Some(7));
        assert!(slots.lock().reserved.is_empty());
    }

    #[tokio::test]
    async fn an_expired_permit_goes_on_with_no_other_call() {
        let slots = Arc::new(Slots::new(1, Duration::from_secs(60)));
        let (gate, holder) = holding(&slots).await;
        assert!(slots.run("b", "ghost", || {}, || async {}).await.is_none());
        let real = reconcile(&slots, "c", "real".into(), || async {});
        gate.notify_waiters();
        holder.await.unwrap();
        // Set aside for the ghost, which never comes; nothing else calls `run`.
        slots.lock().reserved.get_mut("ghost").unwrap().1 -= RESERVED_FOR + Duration::from_secs(1);
        slots.reclaim_expired();
        tokio::time::timeout(Duration::from_secs(1), real).await.expect("the waiter was never woken").unwrap();
    }
}
