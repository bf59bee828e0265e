//! Intervals, backoff and jitter: how every controller spaces its work.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The first retry after a failure, in milliseconds; it doubles from there. Set once at
/// start (`--retry-base`); ten seconds unless told.
static BASE_BACKOFF_MS: AtomicU64 = AtomicU64::new(10_000);

/// Sets the first retry after a failure (the operator's `--retry-base`), at start.
pub fn set_retry_base(base: Duration) {
    BASE_BACKOFF_MS.store(base.as_millis().clamp(100, 300_000) as u64, Ordering::Relaxed);
}

fn base_backoff() -> Duration {
    Duration::from_millis(BASE_BACKOFF_MS.load(Ordering::Relaxed))
}

/// Parses `revalidateInterval` (`30s`, `10m`, `1h30m`). The schema admits nothing else;
/// anything unparsable falls back to ten minutes rather than a hot loop.
pub fn parse_interval(text: &str) -> Duration {
    let mut total = 0u64;
    let mut number = 0u64;
    let mut digits = false;
    for c in text.chars() {
        match c {
            '0'..='9' => {
                number = number.saturating_mul(10).saturating_add(u64::from(c as u8 - b'0'));
                digits = true;
            }
            's' | 'm' | 'h' if digits => {
                let unit = match c {
                    's' => 1,
                    'm' => 60,
                    _ => 3600,
                };
                total = total.saturating_add(number.saturating_mul(unit));
                number = 0;
                digits = false;
            }
            _ => return Duration::from_secs(600),
        }
    }
    if digits || total == 0 { Duration::from_secs(600) } else { Duration::from_secs(total.clamp(30, 86_400)) }
}

/// A stable fraction in [0, 1) for an object, so its schedule is spread the same way
/// across restarts.
pub fn jitter_fraction(uid: &str) -> f64 {
    // FNV-1a: stable across builds, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in uid.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's high bits barely change between similar uids; a murmur3 finaliser spreads them.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The interval, spread by ±10 %.
pub fn revalidate_after(interval: Duration, jitter: f64) -> Duration {
    interval.mul_f64(0.9 + 0.2 * jitter)
}

/// Backoff after `failures` consecutive failures (1 = the first), capped at `interval`,
/// spread by up to +20 %.
pub fn backoff(failures: u32, interval: Duration, jitter: f64) -> Duration {
    let doubled = base_backoff().saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(interval).mul_f64(1.0 + 0.2 * jitter)
}

/// IAM writes spaced per namespace (a token bucket) and policy changes per connection, so
/// that one tenant's loop (a Secret deleted over and over, a spec toggled) cannot use up
/// the AWS account's IAM rate, which every tenant and the account's own tools share.
/// Counted before the first call of a reconcile; in memory, since IAM's own dates (a key's
/// creation) carry what must survive a restart.
#[derive(Debug)]
pub struct Budget {
    /// IAM writes one namespace may make a minute (and at once, after a quiet minute).
    pub per_minute: u32,
    /// The least time between two changes of one connection's policy.
    pub policy_spacing: Duration,
    state: std::sync::Mutex<BudgetState>,
}

#[derive(Debug, Default)]
struct BudgetState {
    /// Tokens left per namespace, as of an instant.
    namespaces: std::collections::HashMap<String, (f64, std::time::Instant)>,
    /// When each connection's policy last changed.
    policies: std::collections::HashMap<String, std::time::Instant>,
}

impl Budget {
    pub fn new(per_minute: u32, policy_spacing: Duration) -> Budget {
        Budget { per_minute: per_minute.max(1), policy_spacing, state: Default::default() }
    }

    /// Takes `writes` IAM writes for `namespace` (one of them a change of `uid`'s policy
    /// when `policy_change`), or says when they may be made. Nothing is taken on Err.
    pub fn take(
        &self,
        namespace: &str,
        uid: &str,
        writes: usize,
        policy_change: bool,
    ) -> Result<(), k8s_openapi::jiff::Timestamp> {
        self.take_at(namespace, uid, writes, policy_change, std::time::Instant::now()).map_err(|wait| {
            let now = k8s_openapi::jiff::Timestamp::now();
            now.checked_add(wait).unwrap_or(now)
        })
    }

    /// Takes one call for `namespace`, or says how long until one may be made.
    pub fn take_one(&self, namespace: &str) -> Option<Duration> {
        self.take_at(namespace, "", 1, false, std::time::Instant::now()).err()
    }

    fn take_at(
        &self,
        namespace: &str,
        uid: &str,
        writes: usize,
        policy_change: bool,
        now: std::time::Instant,
    ) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if policy_change && let Some(last) = state.policies.get(uid) {
            let since = now.saturating_duration_since(*last);
            if since < self.policy_spacing {
                return Err(self.policy_spacing - since);
            }
        }
        let capacity = f64::from(self.per_minute);
        let rate = capacity / 60.0;
        let (tokens, at) = state.namespaces.get(namespace).copied().unwrap_or((capacity, now));
        let tokens = (tokens + now.saturating_duration_since(at).as_secs_f64() * rate).min(capacity);
        // A reconcile that needs more than a full bucket may go once the bucket is full.
        let wanted = (writes as f64).min(capacity);
        if tokens + 1e-9 < wanted {
            return Err(Duration::from_secs_f64((wanted - tokens) / rate));
        }
        state.namespaces.insert(namespace.to_owned(), ((tokens - wanted).max(0.0), now));
        if policy_change {
            // Bounded: entries past their spacing mean nothing, and go when the map is large.
            if state.policies.len() >= 10_000 {
                let spacing = self.policy_spacing;
                state.policies.retain(|_, t| now.saturating_duration_since(*t) < spacing);
            }
            state.policies.insert(uid.to_owned(), now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iam_writes_are_spaced_per_namespace_and_policy_changes_per_connection() {
        let budget = Budget::new(6, Duration::from_secs(30));
        let t0 = std::time::Instant::now();
        // A quiet namespace may make a burst of its minute's writes at once.
        assert_eq!(budget.take_at("a", "u1", 4, false, t0), Ok(()));
        assert_eq!(budget.take_at("a", "u2", 2, false, t0), Ok(()));
        // Then one every ten seconds; another namespace is not affected.
        let wait = budget.take_at("a", "u1", 1, false, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 10.0).abs() < 0.01, "{wait:?}");
        assert_eq!(budget.take_at("b", "u3", 6, false, t0), Ok(()));
        assert_eq!(budget.take_at("a", "u1", 1, false, t0 + Duration::from_secs(10)), Ok(()));
        // More than a bucket at once goes when the bucket is full, not never.
        assert!(budget.take_at("c", "u4", 50, false, t0).is_ok());
        // A policy change of one connection waits for its spacing, whatever the namespace has.
        let later = t0 + Duration::from_secs(120);
        assert_eq!(budget.take_at("a", "u1", 1, true, later), Ok(()));
        assert_eq!(budget.take_at("a", "u1", 1, true, later + Duration::from_secs(5)), Err(Duration::from_secs(25)));
        assert_eq!(budget.take_at("a", "u2", 1, true, later + Duration::from_secs(5)), Ok(()));
        assert_eq!(budget.take_at("a", "u1", 1, true, later + Duration::from_secs(30)), Ok(()));
    }
}
