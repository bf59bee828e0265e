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
