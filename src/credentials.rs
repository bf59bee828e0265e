//! Credentials read from Secrets: what makes a value a credential, and how a bad one is
//! named (never shown).

/// What is wrong with a value read from a Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadValue {
    /// The key is not there, or its value is blank.
    Missing,
    /// The value has a byte that no key, secret or token has: a control character, a
    /// space inside it, or non-ASCII. Such a value would also break the HTTP header it is
    /// sent in, so it is refused before any request is built.
    Invalid,
}

/// A Secret's value at `key`, trimmed of the whitespace that copy-paste and `echo` leave
/// (a trailing newline otherwise shows up as SignatureDoesNotMatch). Credentials are
/// visible ASCII; anything else is `Invalid`, and the value itself is never returned in
/// an error.
pub fn secret_value(secret: &k8s_openapi::api::core::v1::Secret, key: &str) -> Result<String, BadValue> {
    let value = secret.data.as_ref().and_then(|d| d.get(key)).ok_or(BadValue::Missing)?;
    credential_text(&value.0)
}

/// `bytes` as a credential: trimmed, non-empty, visible ASCII only.
pub fn credential_text(bytes: &[u8]) -> Result<String, BadValue> {
    let trimmed = bytes.trim_ascii();
    if trimmed.is_empty() {
        return Err(BadValue::Missing);
    }
    if !trimmed.iter().all(|b| b.is_ascii_graphic()) {
        return Err(BadValue::Invalid);
    }
    // Visible ASCII is UTF-8.
    String::from_utf8(trimmed.to_vec()).map_err(|_| BadValue::Invalid)
}

/// A Secret's key names (never its values), for messages about a missing key.
pub fn secret_keys(secret: &k8s_openapi::api::core::v1::Secret) -> Vec<String> {
    secret.data.as_ref().map(|d| d.keys().cloned().collect()).unwrap_or_default()
}

/// Names the Secret and key of a value that is not visible ASCII, never the value.
pub fn invalid_value_message(secret: &str, key: &str) -> String {
    format!(
        "The value of key {key:?} in Secret {secret:?} has characters no credential has (a control character, a line break or space inside it, or non-ASCII): paste the value again, exactly as issued, without quotes."
    )
}
