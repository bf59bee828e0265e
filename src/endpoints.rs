//! The endpoint allow-list. `spec.endpoint` makes the operator send signed requests to a
//! place of the user's choosing, so only endpoints an admin allowed are used.
//!
//! A `*` lets a tenant choose a name, and a name can point anywhere: at the node's
//! loopback, the cloud's metadata service, a pod. So an internal address (loopback,
//! private, shared, link-local, unique-local; see [`internal`]) is reached only when an
//! entry names its host exactly (no `*` in the host): an IP literal is checked against the
//! entries, and a name reached through a `*` is screened where it is resolved, so the
//! operator connects only to the addresses it checked (see `aws::Screening`).

use std::net::IpAddr;
use std::sync::OnceLock;

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
        let internal_ip = host_of(endpoint).and_then(ip_literal).is_some_and(internal);
        self.0.iter().any(|p| {
            glob(p.as_bytes(), endpoint.as_bytes()) && (!internal_ip || host_of(p).is_some_and(|h| !h.contains('*')))
        })
    }

    /// Whether `host` (a name, as it is resolved) is reached only through a `*` of some
    /// entry, so that a tenant may have chosen it: then its internal addresses are not
    /// used. A host no entry matches is the admin's own (the platform, IAM, a proxy) and
    /// one an entry names exactly is the admin's choice: neither is screened.
    pub fn screens(&self, host: &str) -> bool {
        let named = |p: &String| host_of(p).is_some_and(|h| !h.contains('*') && h.eq_ignore_ascii_case(host));
        let through_wildcard =
            |p: &String| host_of(p).is_some_and(|h| h.contains('*') && glob(h.as_bytes(), host.as_bytes()));
        !self.0.iter().any(named) && self.0.iter().any(through_wildcard)
    }

    /// Makes this the list every connection the process makes is screened by (set once, at
    /// start; without it nothing is screened, as for `s3connect check` run by hand).
    pub fn screen_connections(self) {
        let _ = SCREEN.set(self);
    }
}

static SCREEN: OnceLock<AllowList> = OnceLock::new();

/// Whether connections to `host` must skip its internal addresses (see [`AllowList::screens`]).
pub fn screened(host: &str) -> bool {
    SCREEN.get().is_some_and(|list| list.screens(host))
}

/// The host of an endpoint URL (or pattern): between `scheme://` and the port or path;
/// an IPv6 literal keeps its brackets.
pub fn host_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if authority.starts_with('[') {
        return authority.find(']').map(|end| &authority[..=end]);
    }
    Some(authority.split(':').next().unwrap_or(authority))
}

fn ip_literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Addresses inside a network rather than on the internet: loopback, unspecified,
/// private (RFC 1918), shared (RFC 6598, carrier-grade NAT and many clusters' pods),
/// link-local (the cloud metadata services), benchmarking, reserved, broadcast; for IPv6
/// loopback, unspecified, unique-local, link-local and IPv4-mapped internal ones.
pub fn internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| internal(IpAddr::V4(v4)))
        }
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

    #[test]
    fn an_internal_address_needs_an_entry_that_names_its_host() {
        let wide = AllowList::new(["http://*:9000", "http://*.*.*.*:9000", "https://*.s3.example.com"]);
        for internal in
            ["http://127.0.0.1:9000", "http://169.254.169.254:9000", "http://10.0.0.7:9000", "http://[::1]:9000"]
        {
            assert!(!wide.allows(internal), "{internal}");
        }
        assert!(wide.allows("http://93.184.216.34:9000"), "a public address through *");
        let named = AllowList::new(["http://10.0.0.7:*", "http://[fd00::1]:9000"]);
        assert!(named.allows("http://10.0.0.7:9000"));
        assert!(named.allows("http://[fd00::1]:9000"));
        assert!(!named.allows("http://10.0.0.8:9000"));
    }

    #[test]
    fn names_reached_through_a_wildcard_are_screened_and_named_ones_are_not() {
        let list = AllowList::new(["http://*:9000", "https://*.s3.example.com", "https://minio.internal:9000"]);
        assert!(list.screens("localhost"));
        assert!(list.screens("team.s3.example.com"));
        assert!(!list.screens("minio.internal"), "named exactly by the admin");
        assert!(!list.screens("api.labellerr.com"), "no entry matches: the admin's own");
        assert!(!list.screens("a.b.s3.example.com"), "* spans no label, so no entry matches");
    }

    #[test]
    fn internal_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "52.216.0.1", "100.128.0.1", "2600:1f18::1"] {
            assert!(!internal(ip.parse().unwrap()), "{ip}");
        }
    }
}
