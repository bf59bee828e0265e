//! `S3AccessGrant`: what a cluster admin lets namespaces obtain through managed credentials.
//! Cluster-scoped on purpose (as cert-manager's ClusterIssuer or external-secrets'
//! ClusterSecretStore conditions): a tenant who may create S3Connections in its namespace
//! cannot widen what it is granted, and the chart's aggregated edit/view roles leave it out.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::core::SelectorExt;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::connection::{DeletionPolicy, Usage};

/// Namespaces, and the buckets, prefixes, usages and deletion policies managed credentials
/// may cover in them. A managed S3Connection is served only when one grant covers all of it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "s3connect.io",
    version = "v1alpha1",
    kind = "S3AccessGrant",
    status = "S3AccessGrantStatus",
    shortname = "s3g",
    category = "s3connect",
    doc = "Lets namespaces have the operator make IAM users and keys (spec.credentials.managed) for the buckets and prefixes listed here. Only cluster admins should be able to create it.",
    printcolumn = r#"{"name":"Namespaces","type":"string","jsonPath":".spec.namespaces"}"#,
    printcolumn = r#"{"name":"Connections","type":"integer","jsonPath":".status.connections"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(NAMESPACES_RULE).message(NAMESPACES_MESSAGE).reason(Reason::FieldValueRequired))]
pub struct S3AccessGrantSpec {
    /// Namespaces the grant applies to, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))
    )]
    pub namespaces: Vec<String>,
    /// Namespaces the grant applies to, by label (in addition to `namespaces`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Buckets (and optionally prefixes within them) keys may be made for.
    #[schemars(length(min = 1, max = 64))]
    pub buckets: Vec<GrantedBucket>,
    /// What the keys may be used for (both by default).
    #[serde(default = "all_usages")]
    #[schemars(length(min = 1, max = 2), extend("x-kubernetes-list-type" = "set"))]
    pub usages: Vec<Usage>,
    /// Which `spec.credentials.managed.deletionPolicy` a connection may choose. `Delete` only
    /// by default: `Retain` leaves a live IAM user behind when the connection goes, so an
    /// admin allows it explicitly.
    #[serde(default = "delete_only")]
    #[schemars(length(min = 1, max = 2), extend("x-kubernetes-list-type" = "set"))]
    pub deletion_policies: Vec<DeletionPolicy>,
}

const NAMESPACES_RULE: &str = "(has(self.namespaces) && size(self.namespaces) > 0) || has(self.namespaceSelector)";
const NAMESPACES_MESSAGE: &str =
    "name the namespaces the grant applies to: spec.namespaces and/or spec.namespaceSelector";

/// A bucket, and where in it keys may reach.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantedBucket {
    /// A bucket name, or a pattern: `*` matches any run of characters within one part of
    /// the name (parts are separated by `-` and `.`: `labelling-*` matches
    /// `labelling-cats`, not `labelling-cats-raw`), and `{namespace}` is the connection's
    /// namespace (`labelling-{namespace}`: each namespace its own bucket).
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^([a-z0-9.*-]|\{namespace\})+$"))]
    pub bucket: String,
    /// Key prefixes a connection's prefix must be at or under (`images/`, `{namespace}/`,
    /// where `{namespace}` is the connection's namespace). Empty: the whole bucket. Each
    /// ends with `/`, and has no `*`, `?` or `$` (they are literal here, never wildcards).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(min = 2, max = 512), regex(pattern = r"^[^*?$/\x00-\x1f\x7f][^*?$\x00-\x1f\x7f]*/$"))
    )]
    pub prefixes: Vec<String>,
    /// Whether keys may set the bucket's CORS rule (`Apply`: the key holds
    /// s3:PutBucketCORS, which S3 has only for the whole bucket) or only read it
    /// (`Verify`). `Verify` by default when `prefixes` are set, so that a key limited to a
    /// prefix can never rewrite a shared bucket's CORS; `Apply` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<GrantCors>,
}

/// What a grant lets keys do with a bucket's CORS configuration.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum GrantCors {
    Apply,
    Verify,
}

impl GrantedBucket {
    fn cors(&self) -> GrantCors {
        self.cors.unwrap_or(if self.prefixes.is_empty() { GrantCors::Apply } else { GrantCors::Verify })
    }
}

/// What covers a managed connection: the grant, and what it lets the keys do with CORS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coverage {
    pub grant: String,
    pub cors: GrantCors,
}

impl Coverage {
    /// The spec the minted policy is built from: the connection's, with CORS no wider than
    /// the grant allows (a Verify grant never yields s3:PutBucketCORS).
    pub fn spec(&self, spec: &super::connection::S3ConnectionSpec) -> super::connection::S3ConnectionSpec {
        let mut spec = spec.clone();
        if self.cors == GrantCors::Verify && spec.cors.mode == super::connection::CorsMode::Apply {
            spec.cors.mode = super::connection::CorsMode::Verify;
        }
        spec
    }
}

/// `pattern` (`*` within one `-`/`.`-separated part) matches the whole of `name`.
pub fn bucket_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => {
                // Try every run of n that stays within one part.
                let mut i = 0;
                loop {
                    if go(rest, &n[i..]) {
                        return true;
                    }
                    if i == n.len() || matches!(n[i], b'-' | b'.') {
                        return false;
                    }
                    i += 1;
                }
            }
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

fn all_usages() -> Vec<Usage> {
    vec![Usage::Import, Usage::Export]
}

fn delete_only() -> Vec<DeletionPolicy> {
    vec![DeletionPolicy::Delete]
}

/// What the operator last found about the grant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3AccessGrantStatus {
    /// The generation of the spec this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready: the grant is in force (False with InvalidSelector when its selector cannot be used).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Managed S3Connections this grant serves now.
    #[serde(default)]
    pub connections: i64,
}

/// What a managed connection asks to be covered for.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub namespace: &'a str,
    pub namespace_labels: &'a BTreeMap<String, String>,
    pub bucket: &'a str,
    /// Normalised: empty or ending in `/`.
    pub prefix: &'a str,
    pub usages: &'a [Usage],
    pub deletion_policy: DeletionPolicy,
}

/// The first thing a grant does not cover, in the order a person reads a grant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Gap {
    Namespace,
    Bucket,
    Prefix(Vec<String>),
    Usage(Vec<Usage>),
    DeletionPolicy,
}

impl S3AccessGrantSpec {
    /// Whether the grant applies to `namespace`. A selector that cannot be parsed selects
    /// nothing (and the grant's status says so).
    pub fn selects(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespaces.iter().any(|n| n == namespace)
            || self.namespace_selector.as_ref().is_some_and(|s| {
                kube::core::Selector::try_from(s.clone()).is_ok_and(|sel| !sel.selects_all() && sel.matches(labels))
            })
    }

    /// What CORS the grant allows when it covers everything `req` asks for, else the
    /// first gap.
    pub fn covers(&self, req: &Request) -> Result<GrantCors, Gap> {
        if !self.selects(req.namespace, req.namespace_labels) {
            return Err(Gap::Namespace);
        }
        let buckets: Vec<&GrantedBucket> = self
            .buckets
            .iter()
            .filter(|b| bucket_matches(&b.bucket.replace("{namespace}", req.namespace), req.bucket))
            .collect();
        if buckets.is_empty() {
            return Err(Gap::Bucket);
        }
        let under = |b: &&GrantedBucket| {
            b.prefixes.is_empty()
                || b.prefixes.iter().any(|p| req.prefix.starts_with(&p.replace("{namespace}", req.namespace)))
        };
        let Some(cors) =
            buckets.iter().copied().filter(|b| under(b)).map(|b| b.cors()).min_by_key(|c| *c != GrantCors::Apply)
        else {
            let allowed = buckets
                .iter()
                .flat_map(|b| b.prefixes.iter().map(|p| p.replace("{namespace}", req.namespace)))
                .collect();
            return Err(Gap::Prefix(allowed));
        };
        let missing: Vec<Usage> = req.usages.iter().filter(|u| !self.usages.contains(u)).copied().collect();
        if !missing.is_empty() {
            return Err(Gap::Usage(missing));
        }
        if !self.deletion_policies.contains(&req.deletion_policy) {
            return Err(Gap::DeletionPolicy);
        }
        Ok(cors)
    }
}

/// The grant that covers `req`, or the sentence that says what is missing and who can fix
/// it. Where several cover it, the first that lets keys apply CORS, else the first.
pub fn decide(grants: &[S3AccessGrant], req: &Request) -> Result<Coverage, String> {
    let mut closest: Option<(Gap, &S3AccessGrant)> = None;
    let mut covered: Option<Coverage> = None;
    for grant in grants {
        match grant.spec.covers(req) {
            Ok(cors) => {
                let coverage = Coverage { grant: grant.metadata.name.clone().unwrap_or_default(), cors };
                if cors == GrantCors::Apply {
                    return Ok(coverage);
                }
                covered.get_or_insert(coverage);
            }
            Err(gap) => {
                if closest.as_ref().is_none_or(|(g, _)| gap > *g) {
                    closest = Some((gap, grant));
                }
            }
        }
    }
    if let Some(coverage) = covered {
        return Ok(coverage);
    }
    let fallback = "or use spec.credentials.secretRef with keys you provide";
    let location = format!("s3://{}/{}", req.bucket, req.prefix);
    Err(match closest {
        None | Some((Gap::Namespace, _)) => format!(
            "No S3AccessGrant lets namespace {:?} have managed credentials: ask a cluster admin for one that covers {location}, {fallback}.",
            req.namespace
        ),
        Some((Gap::Bucket, _)) => format!(
            "No S3AccessGrant for namespace {:?} covers bucket {:?}: ask a cluster admin to grant it, {fallback}.",
            req.namespace, req.bucket
        ),
        Some((Gap::Prefix(allowed), g)) => format!(
            "S3AccessGrant {:?} covers bucket {:?} only under {}: set spec.uri at or under one of them, or ask a cluster admin to grant {location}.",
            g.metadata.name.as_deref().unwrap_or_default(),
            req.bucket,
            allowed.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>().join(", ")
        ),
        Some((Gap::Usage(missing), g)) => format!(
            "S3AccessGrant {:?} does not allow usage {}: remove it from spec.usage, or ask a cluster admin to add it to the grant's spec.usages.",
            g.metadata.name.as_deref().unwrap_or_default(),
            missing.iter().map(|u| format!("{u:?}")).collect::<Vec<_>>().join(", ")
        ),
        Some((Gap::DeletionPolicy, g)) => format!(
            "S3AccessGrant {:?} does not allow deletionPolicy {:?}: set spec.credentials.managed.deletionPolicy to Delete, or ask a cluster admin to add it to the grant's spec.deletionPolicies.",
            g.metadata.name.as_deref().unwrap_or_default(),
            req.deletion_policy
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(name: &str, spec: serde_json::Value) -> S3AccessGrant {
        let spec: S3AccessGrantSpec = serde_json::from_value(spec).unwrap();
        let mut g = S3AccessGrant::new(name, spec);
        g.metadata.name = Some(name.into());
        g
    }

    fn req<'a>(ns: &'a str, labels: &'a BTreeMap<String, String>, bucket: &'a str, prefix: &'a str) -> Request<'a> {
        Request {
            namespace: ns,
            namespace_labels: labels,
            bucket,
            prefix,
            usages: &[Usage::Import],
            deletion_policy: DeletionPolicy::Delete,
        }
    }

    #[test]
    fn a_grant_covers_its_namespaces_buckets_and_prefixes_only() {
        let none = BTreeMap::new();
        let g = grant(
            "team-a",
            serde_json::json!({"namespaces": ["team-a"], "buckets": [
                {"bucket": "labelling-team-a"},
                {"bucket": "shared-*", "prefixes": ["images/", "{namespace}/"]}]}),
        );
        let grants = [g];
        let name = |r: Result<Coverage, String>| r.map(|c| c.grant);
        assert_eq!(name(decide(&grants, &req("team-a", &none, "labelling-team-a", ""))), Ok("team-a".into()));
        assert_eq!(name(decide(&grants, &req("team-a", &none, "shared-x", "images/cats/"))), Ok("team-a".into()));
        assert_eq!(name(decide(&grants, &req("team-a", &none, "shared-x", "team-a/"))), Ok("team-a".into()));
        // Another team's bucket, prefix or namespace.
        let b = decide(&grants, &req("team-b", &none, "labelling-team-a", "")).unwrap_err();
        assert!(b.contains("namespace \"team-b\"") && b.contains("cluster admin"), "{b}");
        let other = decide(&grants, &req("team-a", &none, "labelling-team-b", "")).unwrap_err();
        assert!(other.contains("bucket \"labelling-team-b\""), "{other}");
        let p = decide(&grants, &req("team-a", &none, "shared-x", "team-b/")).unwrap_err();
        assert!(p.contains("\"images/\", \"team-a/\"") && p.contains("spec.uri"), "{p}");
        // The whole bucket is not "under" a prefix; nor is a sibling that shares its start.
        assert!(decide(&grants, &req("team-a", &none, "shared-x", "")).is_err());
        assert!(decide(&grants, &req("team-a", &none, "shared-x", "images-private/")).is_err());
        assert!(decide(&[], &req("team-a", &none, "labelling-team-a", "")).is_err());
    }

    #[test]
    fn usages_and_deletion_policies_are_the_admins_choice() {
        let none = BTreeMap::new();
        let import_only =
            grant("ro", serde_json::json!({"namespaces": ["a"], "buckets": [{"bucket": "b"}], "usages": ["Import"]}));
        let both = [Usage::Import, Usage::Export];
        let r = Request { usages: &both, ..req("a", &none, "b", "") };
        let e = decide(std::slice::from_ref(&import_only), &r).unwrap_err();
        assert!(e.contains("usage Export") && e.contains("spec.usage"), "{e}");
        let retain = Request { deletion_policy: DeletionPolicy::Retain, ..req("a", &none, "b", "") };
        let e = decide(std::slice::from_ref(&import_only), &retain).unwrap_err();
        assert!(e.contains("deletionPolicy Retain") && e.contains("Delete"), "{e}");
        let allows = grant(
            "keep",
            serde_json::json!({"namespaces": ["a"], "buckets": [{"bucket": "b"}], "deletionPolicies": ["Delete", "Retain"]}),
        );
        assert_eq!(decide(&[import_only, allows], &retain).map(|c| c.grant), Ok("keep".into()));
    }

    #[test]
    fn a_prefix_grant_lets_keys_only_verify_cors_unless_it_says_otherwise() {
        let none = BTreeMap::new();
        let g = grant(
            "g",
            serde_json::json!({"namespaces": ["a"], "buckets": [
                {"bucket": "whole"},
                {"bucket": "shared", "prefixes": ["a/"]},
                {"bucket": "trusted", "prefixes": ["a/"], "cors": "Apply"},
                {"bucket": "strict", "cors": "Verify"}]}),
        );
        let grants = [g];
        let cors = |bucket: &str, prefix: &str| decide(&grants, &req("a", &none, bucket, prefix)).map(|c| c.cors);
        assert_eq!(cors("whole", ""), Ok(GrantCors::Apply));
        assert_eq!(cors("shared", "a/x/"), Ok(GrantCors::Verify));
        assert_eq!(cors("trusted", "a/"), Ok(GrantCors::Apply));
        assert_eq!(cors("strict", ""), Ok(GrantCors::Verify));
        // The policy minted under a Verify grant holds no s3:PutBucketCORS.
        let spec: crate::api::connection::S3ConnectionSpec =
            serde_json::from_value(serde_json::json!({"uri": "s3://shared/a/", "credentials": {"managed": {}}}))
                .unwrap();
        let verify = Coverage { grant: "g".into(), cors: GrantCors::Verify };
        let policy = crate::validation::least_privilege(&verify.spec(&spec)).unwrap().to_string();
        assert!(!policy.contains("PutBucketCORS") && policy.contains("GetBucketCORS"), "{policy}");
        let apply = Coverage { grant: "g".into(), cors: GrantCors::Apply };
        assert!(crate::validation::least_privilege(&apply.spec(&spec)).unwrap().to_string().contains("PutBucketCORS"));
    }

    #[test]
    fn bucket_patterns_match_within_one_part_and_name_the_namespace() {
        assert!(bucket_matches("labelling-*", "labelling-cats"));
        assert!(!bucket_matches("labelling-*", "labelling-cats-raw"), "* spans a -");
        assert!(!bucket_matches("labelling-*", "labelling-cats.raw"), "* spans a .");
        assert!(!bucket_matches("labelling-*", "other-labelling-cats"));
        assert!(bucket_matches("team-*-data", "team-x-data"));
        assert!(!bucket_matches("team-*-data", "team-x-y-data"));
        assert!(bucket_matches("*", "anything") && !bucket_matches("*", "any-thing"));
        assert!(bucket_matches("a*", "a") && !bucket_matches("", "a"));
        let none = BTreeMap::new();
        let g = grant(
            "own",
            serde_json::json!({"namespaceSelector": {"matchExpressions": [{"key": "t", "operator": "Exists"}]},
                "buckets": [{"bucket": "labelling-{namespace}"}]}),
        );
        let labels = BTreeMap::from([("t".to_owned(), "x".to_owned())]);
        let grants = [g];
        assert!(decide(&grants, &req("team-a", &labels, "labelling-team-a", "")).is_ok());
        assert!(decide(&grants, &req("team-a", &labels, "labelling-team-b", "")).is_err());
        assert!(decide(&grants, &req("team", &labels, "labelling-team-a", "")).is_err());
        assert!(decide(&grants, &req("team-a", &none, "labelling-team-a", "")).is_err());
    }

    #[test]
    fn selectors_choose_namespaces_by_label_and_an_empty_one_chooses_none() {
        let labels = BTreeMap::from([("team".to_owned(), "a".to_owned())]);
        let none = BTreeMap::new();
        let g = grant(
            "sel",
            serde_json::json!({"namespaceSelector": {"matchLabels": {"team": "a"}}, "buckets": [{"bucket": "b"}]}),
        );
        assert!(g.spec.selects("anything", &labels));
        assert!(!g.spec.selects("anything", &none));
        let everything = grant("all", serde_json::json!({"namespaceSelector": {}, "buckets": [{"bucket": "b"}]}));
        assert!(!everything.spec.selects("x", &labels), "an empty selector must not grant every namespace");
        let bad = grant(
            "bad",
            serde_json::json!({"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Bogus"}]}, "buckets": [{"bucket": "b"}]}),
        );
        assert!(!bad.spec.selects("x", &labels));
    }
}

crate::api::conditions::reasons! {
    /// The reasons of an S3AccessGrant's Ready besides Validated.
    pub enum GrantReason {
        /// Its namespaceSelector cannot be used.
        InvalidSelector,
    }
}
