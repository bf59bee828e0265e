//! The S3 clients the probes use: aws-sdk-s3 on the process's one HTTP client
//! (`crate::aws::http_client`, rustls + ring). A client is made once per endpoint, region,
//! addressing style and set of keys and kept in a small bounded cache, so that a
//! validation does not pay for building one. SDK retries are off: every attempt is
//! counted and the probe engine decides when to try again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use aws_sdk_s3::config::{
    BehaviorVersion, ConfigBag, Credentials, IdentityCache, Intercept, Region, RequestChecksumCalculation,
    ResponseChecksumValidation, RuntimeComponents, StalledStreamProtectionConfig,
    interceptors::BeforeDeserializationInterceptorContextMut, retry::RetryConfig, timeout::TimeoutConfig,
};

/// Where a connection's bucket lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub region: String,
    /// An S3-compatible endpoint; `None` means AWS.
    pub endpoint: Option<String>,
    pub force_path_style: bool,
}

/// Access keys read from a Secret. `Debug` never prints the secret parts.
#[derive(Clone)]
pub struct Keys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(** redacted **)")
    }
}

impl Keys {
    /// `text` with every occurrence of these keys replaced, for anything that echoes
    /// what a server said.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        let parts = [Some(&self.access_key_id), Some(&self.secret_access_key), self.session_token.as_ref()];
        for part in parts.into_iter().flatten().filter(|p| p.len() >= 4) {
            out = out.replace(part.as_str(), "[redacted]");
        }
        out
    }

    /// A digest of the keys: what tells one Secret's keys from another's in the cache,
    /// without keeping the keys themselves as its index.
    fn digest(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        for part in [Some(&self.access_key_id), Some(&self.secret_access_key), self.session_token.as_ref()] {
            let part = part.map_or(&[][..], |p| p.as_bytes());
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        hash.finalize().into()
    }
}

/// Counts the requests a validation actually sends (each attempt, as it goes out).
#[derive(Clone, Debug, Default)]
pub struct RequestCounter(Arc<AtomicU32>);

impl RequestCounter {
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// How long a connection may take to open, and a whole request (answer read) to finish.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

/// The most of a response body the operator reads: the probes' answers are a few kilobytes
/// (a one-key listing, a CORS configuration of at most 100 rules, a 1-byte range), and a
/// tenant's endpoint answering a gigabyte must not take the operator's memory.
pub const MAX_RESPONSE_BODY: usize = 1 << 20;

/// AWS's endpoint variants, as the AWS CLI's `use_fips_endpoint` and
/// `use_dualstack_endpoint` (and the `AWS_USE_FIPS_ENDPOINT`, `AWS_USE_DUALSTACK_ENDPOINT`
/// variables) choose them: for buckets on AWS only, since an S3-compatible store's
/// `endpoint` is the address to use as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Variants {
    pub fips: bool,
    pub dual_stack: bool,
}

static VARIANTS: OnceLock<Variants> = OnceLock::new();

/// Sets the endpoint variants for every S3 client from now on; Err if they were set
/// already (or a client was made with those of the environment).
pub fn set_variants(variants: Variants) -> Result<(), Variants> {
    VARIANTS.set(variants).map_err(|_| variants)
}

/// The endpoint variants: as set, or else as the environment says (`true` turns one on).
pub fn variants() -> Variants {
    *VARIANTS.get_or_init(|| {
        let on = |name| std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
        Variants { fips: on("AWS_USE_FIPS_ENDPOINT"), dual_stack: on("AWS_USE_DUALSTACK_ENDPOINT") }
    })
}

/// Refuses a response body past `MAX_RESPONSE_BODY`: at once when its length says so, else
/// as it is read (the body is wrapped before the SDK buffers it to deserialize).
#[derive(Debug)]
struct BoundedBodies;

impl Intercept for BoundedBodies {
    fn name(&self) -> &'static str {
        "BoundedBodies"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let body = context.response_mut().body_mut();
        if let Some(n) = body.content_length().filter(|n| *n > MAX_RESPONSE_BODY as u64) {
            return Err(format!("the answer is {n} bytes, more than the {MAX_RESPONSE_BODY} the operator reads").into());
        }
        let taken = std::mem::replace(body, aws_smithy_types::body::SdkBody::taken());
        *body = aws_smithy_types::body::SdkBody::from_body_1_x(http_body_util::Limited::new(taken, MAX_RESPONSE_BODY));
        Ok(())
    }
}

/// What a cached client was made for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    endpoint: Option<String>,
    region: String,
    force_path_style: bool,
    variants: Variants,
    keys: [u8; 32],
}

/// At most this many clients are kept: the benchmark's 1,000 connections share 10
/// Secrets; past the bound, the client least recently used is dropped.
const MAX_CLIENTS: usize = 64;
/// At most this many connections' key digests are remembered (to drop a client when its
/// Secret changes); past it the memory starts over, which costs at most a stale client
/// that ages out of the cache.
const MAX_OWNERS: usize = 16_384;

#[derive(Default)]
struct Cache {
    clients: HashMap<CacheKey, (aws_sdk_s3::Client, u64)>,
    /// The digest of the keys each connection (`namespace/name`) last used.
    owners: HashMap<String, [u8; 32]>,
    tick: u64,
}

static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(Mutex::default);

/// The client that signs with `keys` and sends to `target`, for the connection `owner`:
/// from the cache, or made and kept. When the connection's keys changed since its last
/// request, the clients of its old keys go, unless another connection uses them too.
pub fn client(keys: &Keys, target: &Target, owner: &str) -> aws_sdk_s3::Client {
    let key = CacheKey {
        endpoint: target.endpoint.clone(),
        region: target.region.clone(),
        force_path_style: target.force_path_style,
        variants: variants(),
        keys: keys.digest(),
    };
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache.tick += 1;
    let tick = cache.tick;
    if cache.owners.len() >= MAX_OWNERS && !cache.owners.contains_key(owner) {
        cache.owners.clear();
    }
    if let Some(old) = cache.owners.insert(owner.to_owned(), key.keys)
        && old != key.keys
        && !cache.owners.values().any(|d| *d == old)
    {
        cache.clients.retain(|k, _| k.keys != old);
    }
    if let Some((client, used)) = cache.clients.get_mut(&key) {
        *used = tick;
        return client.clone();
    }
    if cache.clients.len() >= MAX_CLIENTS
        && let Some(oldest) = cache.clients.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone())
    {
        cache.clients.remove(&oldest);
    }
    let client = aws_sdk_s3::Client::from_conf(config(keys, target, key.variants).build());
    cache.clients.insert(key, (client.clone(), tick));
    client
}

/// How many clients the cache holds (for tests).
#[cfg(test)]
fn cached() -> usize {
    CACHE.lock().unwrap_or_else(|e| e.into_inner()).clients.len()
}

fn config(keys: &Keys, target: &Target, variants: Variants) -> aws_sdk_s3::config::Builder {
    let credentials =
        Credentials::new(&keys.access_key_id, &keys.secret_access_key, keys.session_token.clone(), None, "s3connect");
    let mut config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(crate::aws::http_client())
        .credentials_provider(credentials)
        .region(Region::new(target.region.clone()))
        .force_path_style(target.force_path_style)
        // The probe engine counts and spaces its own attempts.
        .retry_config(RetryConfig::disabled())
        .interceptor(BoundedBodies)
        // Static keys: nothing to refresh, nothing to cache.
        .identity_cache(IdentityCache::no_cache())
        // The probes move a few hundred bytes under an attempt timeout; throughput
        // monitoring of their bodies only costs CPU.
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        // Checksums only where S3 requires them (PutBucketCors): stores that predate the
        // SDK's default integrity checksums (older MinIO, Ceph) refuse or mangle them.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        );
    match &target.endpoint {
        Some(endpoint) => config = config.endpoint_url(endpoint),
        None => config = config.use_fips(variants.fips).use_dual_stack(variants.dual_stack),
    }
    config
}

/// For the benchmark (`bench s3`): the operator's client, and clients that differ from a
/// bare one (no retries, no identity cache, no stalled-stream monitoring) in one of the
/// operator's settings each, so that each setting's CPU per request can be seen.
#[doc(hidden)]
pub fn clients_for_bench(keys: &Keys, target: &Target) -> Vec<(&'static str, aws_sdk_s3::Client)> {
    let endpoint = target.endpoint.clone().unwrap_or_default();
    let bare = || {
        let credentials = Credentials::new(&keys.access_key_id, &keys.secret_access_key, None, None, "bench");
        aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(crate::aws::http_client())
            .credentials_provider(credentials)
            .region(Region::new(target.region.clone()))
            .force_path_style(target.force_path_style)
            .retry_config(RetryConfig::disabled())
            .identity_cache(IdentityCache::no_cache())
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
    };
    let timeouts =
        TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).operation_attempt_timeout(ATTEMPT_TIMEOUT).build();
    let build = |b: aws_sdk_s3::config::Builder| aws_sdk_s3::Client::from_conf(b.build());
    vec![
        ("the operator's client", build(config(keys, target, Variants::default()))),
        ("bare", build(bare().endpoint_url(&endpoint))),
        ("bare + connect and attempt timeouts", build(bare().endpoint_url(&endpoint).timeout_config(timeouts))),
        (
            "bare + checksums when required",
            build(
                bare()
                    .endpoint_url(&endpoint)
                    .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                    .response_checksum_validation(ResponseChecksumValidation::WhenRequired),
            ),
        ),
        ("bare + the 1 MiB answer bound", build(bare().endpoint_url(&endpoint).interceptor(BoundedBodies))),
    ]
}

/// The base URL requests for `bucket` go to (shown in the status, and checked against
/// the operator's allow list), as the SDK's endpoint rules pick it: virtual-hosted
/// addressing wherever it can be, not with an IP address as the host, nor for a bucket
/// name with dots (which no TLS wildcard covers); AWS's FIPS and dual-stack host names
/// when those are on.
pub fn contacted_url(endpoint: Option<&str>, force_path_style: bool, bucket: &str, region: &str) -> String {
    url_with(endpoint, force_path_style, bucket, region, variants())
}

fn url_with(endpoint: Option<&str>, force_path_style: bool, bucket: &str, region: &str, v: Variants) -> String {
    let dotted = bucket.contains('.');
    if let (None, Ok(ap)) = (endpoint, super::uri::AccessPoint::parse(bucket)) {
        // An access point's own host, in the ARN's region.
        let domain = if ap.partition == "aws-cn" { "amazonaws.com.cn" } else { "amazonaws.com" };
        let fips = if v.fips { "-fips" } else { "" };
        let dual_stack = if v.dual_stack { ".dualstack" } else { "" };
        return format!("https://{}-{}.s3-accesspoint{fips}{dual_stack}.{}.{domain}", ap.name, ap.account, ap.region);
    }
    let Some(endpoint) = endpoint else {
        // The China regions are a partition of their own.
        let domain = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
        let service = match (v.fips, v.dual_stack) {
            (false, false) => "s3",
            (true, false) => "s3-fips",
            (false, true) => "s3.dualstack",
            (true, true) => "s3-fips.dualstack",
        };
        return if force_path_style || dotted {
            format!("https://{service}.{region}.{domain}")
        } else {
            format!("https://{bucket}.{service}.{region}.{domain}")
        };
    };
    let endpoint = endpoint.trim_end_matches('/');
    let Some((scheme, host)) = endpoint.split_once("://") else { return endpoint.to_owned() };
    let name =
        host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    let ip = name.starts_with('[') || name.parse::<std::net::Ipv4Addr>().is_ok();
    if force_path_style || ip || dotted || host.contains('/') {
        endpoint.to_owned()
    } else {
        format!("{scheme}://{bucket}.{host}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contacted_url_follows_the_addressing_style() {
        let url = |e, path, bucket| contacted_url(e, path, bucket, "eu-west-1");
        assert_eq!(url(None, false, "b"), "https://b.s3.eu-west-1.amazonaws.com");
        assert_eq!(url(None, true, "b"), "https://s3.eu-west-1.amazonaws.com");
        assert_eq!(url(None, false, "a.b"), "https://s3.eu-west-1.amazonaws.com");
        assert_eq!(contacted_url(None, false, "b", "cn-north-1"), "https://b.s3.cn-north-1.amazonaws.com.cn");
        assert_eq!(url(Some("http://minio.local:9000/"), false, "b"), "http://b.minio.local:9000");
        assert_eq!(url(Some("http://minio.local:9000"), true, "b"), "http://minio.local:9000");
        assert_eq!(url(Some("http://127.0.0.1:9000"), false, "b"), "http://127.0.0.1:9000");
        assert_eq!(url(Some("http://[::1]:9000"), false, "b"), "http://[::1]:9000");
        assert_eq!(url(Some("https://s3.example.com"), false, "a.b"), "https://s3.example.com");
    }

    #[test]
    fn the_contacted_url_is_where_the_sdk_sends_fips_and_dual_stack_requests() {
        use aws_sdk_s3::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
        for (fips, dual_stack) in [(false, false), (true, false), (false, true), (true, true)] {
            for (bucket, path_style) in [("data", false), ("data", true)] {
                let params = Params::builder()
                    .bucket(bucket)
                    .region("us-west-2")
                    .force_path_style(path_style)
                    .use_fips(fips)
                    .use_dual_stack(dual_stack)
                    .accelerate(false)
                    .build()
                    .unwrap();
                let rules = DefaultResolver::new();
                let endpoint = futures::executor::block_on(rules.resolve_endpoint(&params)).unwrap();
                let shown = url_with(None, path_style, bucket, "us-west-2", Variants { fips, dual_stack });
                let sent = endpoint.url().trim_end_matches(&format!("/{bucket}")).to_owned();
                assert_eq!(shown, sent, "fips {fips}, dual-stack {dual_stack}, path style {path_style}");
            }
        }
    }

    #[test]
    fn the_contacted_url_is_where_the_sdk_sends_access_point_requests() {
        use aws_sdk_s3::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
        for arn in [
            "arn:aws:s3:eu-west-1:123456789012:accesspoint/team-a",
            "arn:aws-cn:s3:cn-north-1:123456789012:accesspoint/ap1",
        ] {
            let region = arn.split(':').nth(3).unwrap();
            for (fips, dual_stack) in [(false, false), (true, false), (false, true), (true, true)] {
                if fips && region.starts_with("cn-") {
                    continue; // no FIPS endpoints in China
                }
                let params = Params::builder()
                    .bucket(arn)
                    .region(region)
                    .use_fips(fips)
                    .use_dual_stack(dual_stack)
                    .build()
                    .unwrap();
                let endpoint = futures::executor::block_on(DefaultResolver::new().resolve_endpoint(&params))
                    .unwrap_or_else(|e| panic!("{arn}: {e}"));
                let shown = url_with(None, false, arn, region, Variants { fips, dual_stack });
                assert_eq!(shown, endpoint.url(), "{arn}: fips {fips}, dual-stack {dual_stack}");
            }
        }
    }

    #[test]
    fn debug_and_redact_never_show_the_keys() {
        let keys = Keys {
            access_key_id: "AKIAEXAMPLEKEY123456".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: Some("FwoGZXIvYXdzEXAMPLETOKEN".into()),
        };
        assert_eq!(format!("{keys:?}"), "Keys(** redacted **)");
        let said =
            "key AKIAEXAMPLEKEY123456 secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY token FwoGZXIvYXdzEXAMPLETOKEN";
        assert_eq!(keys.redact(said), "key [redacted] secret [redacted] token [redacted]");
    }

    #[test]
    fn clients_are_reused_per_keys_and_target_and_dropped_when_the_keys_change() {
        let keys = |secret: &str| Keys {
            access_key_id: "AKIACACHETEST".into(),
            secret_access_key: secret.into(),
            session_token: None,
        };
        let target = |region: &str| Target {
            region: region.into(),
            endpoint: Some("http://cache.test.invalid:9000".into()),
            force_path_style: true,
        };
        let owners = ["cache/a", "cache/b"];
        let before = cached();
        client(&keys("one"), &target("us-east-1"), owners[0]);
        client(&keys("one"), &target("us-east-1"), owners[1]);
        client(&keys("one"), &target("us-east-1"), owners[0]);
        assert_eq!(cached(), before + 1, "one client for the same keys and target");
        client(&keys("one"), &target("eu-west-1"), owners[0]);
        assert_eq!(cached(), before + 2, "a client per region");
        // One connection's Secret changes: its other user keeps the old keys' clients.
        client(&keys("two"), &target("us-east-1"), owners[0]);
        assert_eq!(cached(), before + 3);
        // Then the other's: nobody uses the old keys, their clients go.
        client(&keys("two"), &target("us-east-1"), owners[1]);
        assert_eq!(cached(), before + 1);
        assert_ne!(keys("one").digest(), keys("two").digest());
    }
}
