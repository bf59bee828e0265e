//! Property tests: arbitrary strings and bytes through everything that parses or matches
//! tenant input (uri, Secret values, CORS origins, endpoints, policies, server answers).
//! None may panic. Bounded (a few thousand cases each, a fixed seed per run printed on
//! failure) so that `make test` stays fast.

use crate::api::conditions::printable;
use crate::credentials::credential_text;
use crate::endpoints::AllowList;
use crate::s3::client::contacted_url;
use crate::s3::cors;
use crate::s3::error::classify_parts;
use crate::s3::policy::{Action, policy};
use crate::s3::uri::Location;
use crate::timing::parse_interval;

const CASES: usize = 4000;

/// Pieces that tend to find edge cases: separators, wildcards, dots, control characters,
/// multi-byte characters, and plain text.
const PIECES: [&str; 24] = [
    "s3://", "/", "//", ".", "..", "*", "**", "-", "a", "bucket", "é", "日本", "\u{7f}", "\n", "\0", "\u{1}", " ",
    "https://", ":", "[::1]", "%", "\u{feff}", "AKIA", "?#@",
];

fn rng() -> fastrand::Rng {
    let seed =
        std::env::var("S3CONNECT_PROPTEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    eprintln!("property seed {seed} (set S3CONNECT_PROPTEST_SEED to replay)");
    fastrand::Rng::with_seed(seed)
}

fn text(rng: &mut fastrand::Rng) -> String {
    let mut s = String::new();
    for _ in 0..rng.usize(0..12) {
        match rng.u8(0..4) {
            0 => s.push(rng.char(..)),
            1 => s.push(char::from(rng.u8(0..128))),
            _ => s.push_str(PIECES[rng.usize(..PIECES.len())]),
        }
    }
    s
}

fn bytes(rng: &mut fastrand::Rng) -> Vec<u8> {
    if rng.bool() {
        return text(rng).into_bytes();
    }
    (0..rng.usize(0..40)).map(|_| rng.u8(..)).collect()
}

#[test]
fn uris_parse_or_fail_without_panicking_and_what_parses_is_sound() {
    let mut rng = rng();
    for _ in 0..CASES {
        let uri = text(&mut rng);
        if let Ok(l) = Location::parse(&uri) {
            assert!(l.prefix.is_empty() || l.prefix.ends_with('/'), "{uri:?} -> {l:?}");
            assert!(!l.prefix.chars().any(char::is_control), "{uri:?} -> {l:?}");
            assert!(!l.prefix.split('/').any(|s| s == "." || s == ".."), "{uri:?} -> {l:?}");
            let region = if rng.bool() { None } else { Some("cn-north-1") };
            let p = policy(&l, region, &[Action::ListBucket, Action::GetObject, Action::PutBucketCors]);
            assert!(serde_json::to_string(&p).is_ok());
            let _ = contacted_url(Some("http://s3.local:9000"), rng.bool(), &l.bucket, "us-east-1");
        }
    }
}

#[test]
fn secret_values_are_visible_ascii_or_refused() {
    let mut rng = rng();
    for _ in 0..CASES {
        let value = bytes(&mut rng);
        if let Ok(v) = credential_text(&value) {
            assert!(!v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()), "{value:?} -> {v:?}");
        }
    }
    for bad in [&b"AKIA\nX"[..], b"AKIA\x01", b"AKIA\x7f", b"\xff\xfe", "AKIAé".as_bytes(), b"AK IA"] {
        assert!(credential_text(bad).is_err(), "{bad:?}");
    }
    assert_eq!(credential_text(b"  AKIAOK\n").unwrap(), "AKIAOK");
}

#[test]
fn cors_matching_and_merging_never_panic() {
    use crate::s3::cors::CorsRule;
    let mut rng = rng();
    for _ in 0..CASES {
        let rules: Vec<CorsRule> = (0..rng.usize(0..4))
            .map(|_| CorsRule {
                id: rng.bool().then(|| text(&mut rng)),
                allowed_origins: (0..rng.usize(0..3)).map(|_| text(&mut rng)).collect(),
                allowed_methods: vec!["GET".into(), "HEAD".into()],
                ..CorsRule::default()
            })
            .collect();
        let origins: Vec<String> = (0..rng.usize(1..3)).map(|_| text(&mut rng)).collect();
        let covered = cors::covers(&rules, &origins);
        let id = cors::rule_id(&text(&mut rng));
        let merged = cors::merge(&rules, &id, &origins).expect("far below the limit");
        assert!(cors::covers(&merged, &origins), "the merged rules cover {origins:?}");
        if covered {
            assert!(cors::covers(&rules, &origins));
        }
        let _ = cors::to_json(&merged);
    }
}

#[test]
fn endpoints_intervals_messages_and_server_answers_never_panic() {
    let mut rng = rng();
    let allow = AllowList::new(["http://127.0.0.1:*", "https://*.example.com", "https://s3.*.amazonaws.com"]);
    for _ in 0..CASES {
        let t = text(&mut rng);
        let _ = allow.allows(&t);
        let _ = contacted_url(Some(&t), rng.bool(), "bucket", "us-east-1");
        let _ = parse_interval(&t);
        let shown = printable(&t);
        assert!(!shown.chars().any(char::is_control), "{t:?} -> {shown:?}");
        let code = text(&mut rng);
        let f = classify_parts(rng.bool().then_some(code.as_str()), Some(&t), rng.u16(..), Some(&text(&mut rng)));
        assert!(f.code.bytes().all(|b| b.is_ascii_graphic()), "{f:?}");
    }
}

#[test]
fn whatever_a_server_calls_a_region_is_signed_only_if_it_can_be_one() {
    use crate::s3::error::looks_like_region;
    let mut rng = rng();
    for _ in 0..CASES {
        let t = text(&mut rng);
        if looks_like_region(&t) {
            // A region goes into host names and the signature's scope.
            assert!(format!("https://s3.{t}.amazonaws.com/").parse::<http::Uri>().is_ok(), "{t:?}");
            assert!(!t.chars().any(|c| c.is_control() || c.is_whitespace() || c == '/'), "{t:?}");
        }
    }
}
