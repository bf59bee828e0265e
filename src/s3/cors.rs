//! The bucket CORS rule the labelling UI needs, and merging it into a bucket's existing
//! rules: PutBucketCors replaces the whole configuration, so other rules are carried over.

use aws_sdk_s3::types::CorsRule;
use serde_json::{Value, json};

/// The id of the rule s3connect manages.
pub const RULE_ID: &str = "s3connect-labellerr";
const METHODS: [&str; 2] = ["GET", "HEAD"];
const MAX_AGE_SECONDS: i32 = 3600;

/// The managed rule for `origins`.
pub fn managed_rule(origins: &[String]) -> CorsRule {
    CorsRule::builder()
        .id(RULE_ID)
        .set_allowed_origins(Some(origins.to_vec()))
        .set_allowed_methods(Some(METHODS.iter().map(|m| m.to_string()).collect()))
        .allowed_headers("*")
        .max_age_seconds(MAX_AGE_SECONDS)
        .build()
        .expect("origins and methods are set")
}

/// Whether `rules` already let every origin GET and HEAD objects.
pub fn covers(rules: &[CorsRule], origins: &[String]) -> bool {
    origins.iter().all(|origin| {
        rules.iter().any(|rule| {
            METHODS.iter().all(|m| rule.allowed_methods().iter().any(|have| have.eq_ignore_ascii_case(m)))
                && rule.allowed_origins().iter().any(|pattern| origin_matches(pattern, origin))
        })
    })
}

/// S3 allows at most one `*` in an allowed origin.
fn origin_matches(pattern: &str, origin: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern.eq_ignore_ascii_case(origin),
        Some((head, tail)) => {
            origin.len() >= head.len() + tail.len()
                && origin[..head.len()].eq_ignore_ascii_case(head)
                && origin[origin.len() - tail.len()..].eq_ignore_ascii_case(tail)
        }
    }
}

/// `existing` with the managed rule replaced (or added): other rules are kept as they are.
pub fn merge(existing: &[CorsRule], origins: &[String]) -> Vec<CorsRule> {
    let mut rules: Vec<CorsRule> = existing.iter().filter(|r| r.id() != Some(RULE_ID)).cloned().collect();
    rules.push(managed_rule(origins));
    rules
}

/// The configuration as `aws s3api put-bucket-cors --cors-configuration` takes it, for
/// users who set it by hand.
pub fn to_json(rules: &[CorsRule]) -> Value {
    let rules: Vec<Value> = rules
        .iter()
        .map(|r| {
            let mut v = json!({
                "AllowedOrigins": r.allowed_origins(),
                "AllowedMethods": r.allowed_methods(),
            });
            if let Some(id) = r.id() {
                v["ID"] = json!(id);
            }
            if !r.allowed_headers().is_empty() {
                v["AllowedHeaders"] = json!(r.allowed_headers());
            }
            if !r.expose_headers().is_empty() {
                v["ExposeHeaders"] = json!(r.expose_headers());
            }
            if let Some(age) = r.max_age_seconds() {
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
        CorsRule::builder()
            .set_id(id.map(str::to_owned))
            .set_allowed_origins(Some(origins.iter().map(|s| s.to_string()).collect()))
            .set_allowed_methods(Some(methods.iter().map(|s| s.to_string()).collect()))
            .build()
            .unwrap()
    }

    fn ui() -> Vec<String> {
        vec!["https://pro.labellerr.com".to_owned()]
    }

    #[test]
    fn a_rule_covers_when_it_allows_get_and_head_for_every_origin() {
        assert!(covers(&[managed_rule(&ui())], &ui()));
        assert!(covers(&[rule(None, &["*"], &["GET", "HEAD", "PUT"])], &ui()));
        assert!(covers(&[rule(None, &["https://*.labellerr.com"], &["get", "head"])], &ui()));
        assert!(!covers(&[rule(None, &["https://pro.labellerr.com"], &["GET"])], &ui()), "HEAD missing");
        assert!(!covers(&[rule(None, &["https://app.example.com"], &["GET", "HEAD"])], &ui()));
        assert!(!covers(&[], &ui()));
        let two = vec!["https://a.example".to_owned(), "https://b.example".to_owned()];
        assert!(!covers(&[rule(None, &["https://a.example"], &["GET", "HEAD"])], &two), "b not covered");
    }

    #[test]
    fn merging_keeps_foreign_rules_and_replaces_only_the_managed_one() {
        let foreign = rule(Some("website"), &["https://www.example.com"], &["GET", "PUT"]);
        let old_managed = rule(Some(RULE_ID), &["https://old.example"], &["GET"]);
        let merged = merge(&[foreign.clone(), old_managed], &ui());
        assert_eq!(merged, vec![foreign, managed_rule(&ui())]);
    }

    #[test]
    fn the_json_is_what_the_aws_cli_takes() {
        assert_eq!(
            to_json(&[managed_rule(&ui())]),
            json!({"CORSRules": [{
                "ID": "s3connect-labellerr",
                "AllowedOrigins": ["https://pro.labellerr.com"],
                "AllowedMethods": ["GET", "HEAD"],
                "AllowedHeaders": ["*"],
                "MaxAgeSeconds": 3600,
            }]})
        );
    }
}
