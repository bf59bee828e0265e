//! The endpoint allow-list. `spec.endpoint` makes the operator send signed requests to a
//! place of the user's choosing, so only endpoints an admin allowed are used.

/// Endpoints AWS serves S3 from; allowed unless the admin replaces the list.
pub const AWS_DEFAULTS: &[&str] = &[
    "https://s3.amazonaws.com",
    "https://s3.*.amazonaws.com",
    "https://s3-*.amazonaws.com",
    "https://s3.*.amazonaws.com.cn",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowList(Vec<String>);

impl AllowList {
    /// Patterns are endpoint URLs in which `*` stands for any run of characters other than
    /// `. / : @ ? #`, so a wildcard matches within one DNS label (or a port) and never
    /// spans a label, port, path or user info: `https://*.s3.example.com` is not
    /// `https://anything.internal.s3.example.com`.
    pub fn new(patterns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        AllowList(patterns.into_iter().map(|p| p.into().trim_end_matches('/').to_owned()).collect())
    }

    pub fn allows(&self, endpoint: &str) -> bool {
        let endpoint = endpoint.trim_end_matches('/');
        self.0.iter().any(|p| glob(p.as_bytes(), endpoint.as_bytes()))
    }
}

impl std::fmt::Display for AllowList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// `*` matches any run of characters other than `. / : @ ? #` (so within one DNS label or
/// port, never across a label, port or path), case-insensitively.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => {
            let run = text.iter().take_while(|c| !b"./:@?#".contains(c)).count();
            (0..=run).any(|n| glob(rest, &text[n..]))
        }
        Some((c, rest)) => text.first().is_some_and(|t| t.eq_ignore_ascii_case(c)) && glob(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_defaults_allow_regional_endpoints_only() {
        let aws = AllowList::new(AWS_DEFAULTS.iter().copied());
        for ok in
            ["https://s3.amazonaws.com", "https://s3.eu-west-1.amazonaws.com/", "https://s3-us-west-2.amazonaws.com"]
        {
            assert!(aws.allows(ok), "{ok}");
        }
        for bad in [
            "http://s3.amazonaws.com",
            "https://s3.evil.com",
            "https://s3.x.amazonaws.com.evil.com",
            "https://s3.a:1.amazonaws.com",
            "https://minio.internal:9000",
        ] {
            assert!(!aws.allows(bad), "{bad}");
        }
    }

    #[test]
    fn a_wildcard_matches_within_one_dns_label() {
        let store = AllowList::new(["https://*.s3.example.com"]);
        assert!(store.allows("https://minio.s3.example.com"));
        assert!(!store.allows("https://kubelet.internal.s3.example.com"), "* spans a label");
        assert!(!store.allows("https://s3.example.com"));
        let aws = AllowList::new(AWS_DEFAULTS.iter().copied());
        assert!(!aws.allows("https://s3.my-service.my-namespace.amazonaws.com"), "* spans labels");
    }

    #[test]
    fn a_wildcard_port_matches_digits_but_not_another_host() {
        let local = AllowList::new(["http://127.0.0.1:*"]);
        assert!(local.allows("http://127.0.0.1:9000"));
        assert!(!local.allows("http://127.0.0.1.evil.com:9000"));
        assert!(!local.allows("http://localhost:9000"));
        assert!(!AllowList::new(Vec::<String>::new()).allows("http://127.0.0.1:9000"));
    }
}
