//! The bucket CORS rule the labelling UI needs, and merging it into a bucket's existing
//! rules: PutBucketCors replaces the whole configuration, so other rules are carried over.

use serde_json::{Value, json};

/// One rule of a bucket's CORS configuration, as S3 has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CorsRule {
    pub id: Option<String>,
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    pub allowed_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age_seconds: Option<i32>,
}

/// Every rule s3connect adds has an id that starts like this.
pub const RULE_ID_PREFIX: &str = "s3connect-";
/// S3 refuses a CORS configuration with more rules than this.
pub const MAX_RULES: usize = 100;
const METHODS: [&str; 2] = ["GET", "HEAD"];
const MAX_AGE_SECONDS: i32 = 3600;

/// The id of the rule one connection (`namespace/name`) manages. Each connection has its
/// own, so that connections sharing a bucket with different origins add a rule each
/// instead of replacing one another's on every validation.
pub fn rule_id(owner: &str) -> String {
    format!("{RULE_ID_PREFIX}{}", crate::text::short_hash(owner))
}

/// The rule `id` that lets `origins` GET and HEAD objects.
pub fn managed_rule(id: &str, origins: &[String]) -> CorsRule {
    CorsRule {
        id: Some(id.to_owned()),
        allowed_origins: origins.to_vec(),
        allowed_methods: METHODS.iter().map(|m| m.to_string()).collect(),
        allowed_headers: vec!["*".to_owned()],
        expose_headers: Vec::new(),
        max_age_seconds: Some(MAX_AGE_SECONDS),
    }
}

/// Whether `rules` already let every origin GET and HEAD objects.
pub fn covers(rules: &[CorsRule], origins: &[String]) -> bool {
    origins.iter().all(|origin| {
        rules.iter().any(|rule| {
            METHODS.iter().all(|m| rule.allowed_methods.iter().any(|have| have.eq_ignore_ascii_case(m)))
                && rule.allowed_origins.iter().any(|pattern| origin_matches(pattern, origin))
        })
    })
}

/// S3 matches an allowed origin with at most one `*` case-insensitively. Works on bytes:
/// patterns and origins come from buckets and specs and may hold any character.
fn origin_matches(pattern: &str, origin: &str) -> bool {
    let (pattern, origin) = (pattern.as_bytes(), origin.as_bytes());
    match pattern.iter().position(|&b| b == b'*') {
        None => pattern.eq_ignore_ascii_case(origin),
        Some(star) => {
            let (head, tail) = (&pattern[..star], &pattern[star + 1..]);
            origin.len() >= head.len() + tail.len()
                && origin[..head.len()].eq_ignore_ascii_case(head)
                && origin[origin.len() - tail.len()..].eq_ignore_ascii_case(tail)
        }
    }
}

/// `existing` with the rule `id` replaced (or added); every other rule is kept as it is.
/// Err(count) when that would be more rules than S3 accepts.
pub fn merge(existing: &[CorsRule], id: &str, origins: &[String]) -> Result<Vec<CorsRule>, usize> {
    let mut rules: Vec<CorsRule> = existing.iter().filter(|r| r.id.as_deref() != Some(id)).cloned().collect();
    rules.push(managed_rule(id, origins));
    if rules.len() > MAX_RULES { Err(existing.len()) } else { Ok(rules) }
}

/// The configuration as `aws s3api put-bucket-cors --cors-configuration` takes it, for
/// users who set it by hand.
pub fn to_json(rules: &[CorsRule]) -> Value {
    let rules: Vec<Value> = rules
        .iter()
        .map(|r| {
            let mut v = json!({
                "AllowedOrigins": r.allowed_origins,
                "AllowedMethods": r.allowed_methods,
            });
            if let Some(id) = &r.id {
                v["ID"] = json!(id);
            }
            if !r.allowed_headers.is_empty() {
                v["AllowedHeaders"] = json!(r.allowed_headers);
            }
            if !r.expose_headers.is_empty() {
                v["ExposeHeaders"] = json!(r.expose_headers);
            }
            if let Some(age) = r.max_age_seconds {
                v["MaxAgeSeconds"] = json!(age);
            }
            v
        })
        .collect();
    json!({"CORSRules": rules})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: Option<&str>, origins: &[&str], methods: &[&str]) -> CorsRule {
        CorsRule {
            id: id.map(str::to_owned),
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_methods: methods.iter().map(|s| s.to_string()).collect(),
            ..CorsRule::default()
        }
    }

    fn ui() -> Vec<String> {
        vec!["https://pro.labellerr.com".to_owned()]
    }

    const ID: &str = "s3connect-0000abcd";

    #[test]
    fn a_rule_covers_when_it_allows_get_and_head_for_every_origin() {
        assert!(covers(&[managed_rule(ID, &ui())], &ui()));
        assert!(covers(&[rule(None, &["*"], &["GET", "HEAD", "PUT"])], &ui()));
        assert!(covers(&[rule(None, &["https://*.labellerr.com"], &["get", "head"])], &ui()));
        assert!(!covers(&[rule(None, &["https://pro.labellerr.com"], &["GET"])], &ui()), "HEAD missing");
        assert!(!covers(&[rule(None, &["https://app.example.com"], &["GET", "HEAD"])], &ui()));
        assert!(!covers(&[], &ui()));
        let two = vec!["https://a.example".to_owned(), "https://b.example".to_owned()];
        assert!(!covers(&[rule(None, &["https://a.example"], &["GET", "HEAD"])], &two), "b not covered");
    }

    #[test]
    fn merging_keeps_foreign_rules_and_replaces_only_this_connections_rule() {
        let foreign = rule(Some("website"), &["https://www.example.com"], &["GET", "PUT"]);
        let other_connection = rule(Some("s3connect-99999999"), &["https://b.example"], &["GET", "HEAD"]);
        let old_managed = rule(Some(ID), &["https://old.example"], &["GET"]);
        let merged = merge(&[foreign.clone(), other_connection.clone(), old_managed], ID, &ui()).unwrap();
        assert_eq!(merged, vec![foreign, other_connection, managed_rule(ID, &ui())]);
    }

    #[test]
    fn each_connection_has_its_own_stable_rule_id() {
        assert_eq!(rule_id("ns/a"), rule_id("ns/a"));
        assert_ne!(rule_id("ns/a"), rule_id("ns/b"));
        assert!(rule_id("ns/a").starts_with(RULE_ID_PREFIX) && rule_id("ns/a").len() == RULE_ID_PREFIX.len() + 8);
    }

    #[test]
    fn a_merge_past_the_s3_rule_limit_is_refused() {
        let full: Vec<CorsRule> =
            (0..MAX_RULES).map(|i| rule(Some(&format!("r{i}")), &["https://x.example"], &["PUT"])).collect();
        assert_eq!(merge(&full, ID, &ui()), Err(MAX_RULES));
        assert_eq!(merge(&full[1..], ID, &ui()).unwrap().len(), MAX_RULES);
        // Replacing this connection's own rule never grows the list.
        let mut own = full[1..].to_vec();
        own.push(rule(Some(ID), &["https://old.example"], &["GET"]));
        assert_eq!(merge(&own, ID, &ui()).unwrap().len(), MAX_RULES);
    }

    #[test]
    fn origins_match_on_bytes_whatever_the_characters() {
        // Once a panic: a `*` pattern against an origin with multi-byte characters.
        assert!(!origin_matches("https://a*", "https://\u{e9}x.com"));
        assert!(origin_matches("https://*x.com", "https://\u{e9}x.com"));
        assert!(!origin_matches("https://\u{e9}*", "https://e"));
        assert!(origin_matches("*", ""));
        assert!(!origin_matches("a*b*c", "ab"));
        assert!(origin_matches("HTTPS://A.example", "https://a.EXAMPLE"));
    }

    #[test]
    fn the_json_is_what_the_aws_cli_takes() {
        assert_eq!(
            to_json(&[managed_rule(ID, &ui())]),
            json!({"CORSRules": [{
                "ID": ID,
                "AllowedOrigins": ["https://pro.labellerr.com"],
                "AllowedMethods": ["GET", "HEAD"],
                "AllowedHeaders": ["*"],
                "MaxAgeSeconds": 3600,
            }]})
        );
    }
}
