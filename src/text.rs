//! Small text helpers shared by every layer.

/// A short, stable hash of `text` (FNV-1a, 8 hex digits), for names derived from longer ones.
pub fn short_hash(text: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}
