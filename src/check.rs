//! `s3connect check` and `s3connect policy`: the controller's probes and decision, outside
//! Kubernetes, for a terminal or a CI job.

use serde_json::json;

use crate::api::S3ConnectionSpec;
use crate::api::connection::{CorsMode, S3Connection};
use crate::s3::client::Keys;
use crate::s3::probe::{self, Probe, Report};
use crate::s3::uri::Location;
use crate::validation::{Blocker, KeysFrom, Subject, Verdict, decide};

/// Reads the first S3Connection from a YAML stream (other documents, such as the Secret
/// next to it, are skipped).
pub fn spec_from_manifest(yaml: &str) -> Result<S3ConnectionSpec, String> {
    specs_from_manifest(yaml)?
        .into_iter()
        .next()
        .map(|(_, spec)| spec)
        .ok_or_else(|| "no S3Connection in the manifest".to_owned())
}

/// Every S3Connection in a YAML stream, with its name, in order. A field the API server
/// would refuse as unknown (`usge:`) is refused here too, naming it.
pub fn specs_from_manifest(yaml: &str) -> Result<Vec<(String, S3ConnectionSpec)>, String> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml).map_err(|e| format!("not YAML: {e}"))?;
    let schema = spec_schema();
    let mut out = Vec::new();
    for doc in docs.into_iter().filter(|d| d["kind"] == "S3Connection") {
        let name = doc["metadata"]["name"].as_str().unwrap_or("(unnamed)").to_owned();
        let mut unknown = Vec::new();
        unknown_fields(&doc["spec"], &schema, "spec", &mut unknown);
        if !unknown.is_empty() {
            return Err(format!(
                "S3Connection {name:?}: unknown field {} (the API server would refuse it)",
                unknown.join(", ")
            ));
        }
        let spec = serde_json::from_value::<S3Connection>(doc)
            .map(|c| c.spec)
            .map_err(|e| format!("S3Connection {name:?} is not valid: {e}"))?;
        out.push((name, spec));
    }
    if out.is_empty() {
        return Err("no S3Connection in the manifest".to_owned());
    }
    Ok(out)
}

/// The CRD's schema of an S3Connection's spec.
fn spec_schema() -> serde_json::Value {
    let crd = serde_json::to_value(<S3Connection as kube::CustomResourceExt>::crd()).unwrap_or_default();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

/// The fields of `value` that `schema` does not declare, as `path.field`.
fn unknown_fields(value: &serde_json::Value, schema: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(fields) => {
            let Some(known) = schema.get("properties").and_then(|p| p.as_object()) else { return };
            for (k, v) in fields {
                match known.get(k) {
                    None => out.push(format!("{path}.{k}")),
                    Some(child) => unknown_fields(v, child, &format!("{path}.{k}"), out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    unknown_fields(v, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

pub struct Checked {
    pub location: Option<Location>,
    pub report: Option<Report>,
    pub verdict: Verdict,
}

/// Probes `spec` with `keys` exactly as the controller does, for at most `deadline`.
pub async fn check(spec: &S3ConnectionSpec, keys: &Keys, deadline: std::time::Duration) -> Checked {
    let subject = Subject { spec, name: "(local)", namespace: "(local)", keys_from: KeysFrom::Environment };
    let location = match Location::parse(&spec.uri) {
        Ok(l) => l,
        Err(e) => {
            let verdict = decide(&subject, Err(&Blocker::InvalidUri(e.to_string())));
            return Checked { location: None, report: None, verdict };
        }
    };
    let probe = Probe { deadline, ..crate::validation::probe_for(spec, &location, "s3connect check") };
    let report = probe::run(&probe, keys).await;
    let verdict = decide(&subject, Ok((&location, &report)));
    Checked { location: Some(location), report: Some(report), verdict }
}

/// A condition message as a person at a terminal needs it: `check` runs once, so the
/// operator's "retrying with backoff" becomes what to do.
fn for_terminal(message: &str) -> String {
    message
        .replace("; retrying with backoff.", "; run check again in a moment.")
        .replace(" Retrying with backoff.", " Run check again in a moment.")
        .replace(" Re-checking with backoff.", "")
        .replace(", retrying with backoff", "")
        .replace("; retrying with backoff", "")
}

impl Checked {
    pub fn ready(&self) -> bool {
        self.verdict.ready().is_true()
    }

    /// The spec itself is wrong (an invalid uri): bad input, not a finding about S3.
    pub fn bad_input(&self) -> bool {
        self.location.is_none()
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "ready": self.ready(),
            "location": self.location.as_ref().map(|l| l.to_string()),
            "region": self.report.as_ref().map(|r| r.region_used.clone()),
            "s3Requests": self.report.as_ref().map_or(0, |r| r.requests),
            "conditions": self.verdict.conditions.iter().map(|c| json!({
                "type": c.type_, "status": c.status.as_str(), "reason": c.reason.as_str(), "message": for_terminal(&c.message),
            })).collect::<Vec<_>>(),
            "permissions": self.verdict.permissions,
            "missingPolicy": self.verdict.missing_policy.as_deref().map(|p| serde_json::from_str::<serde_json::Value>(p).ok()),
        })
    }

    pub fn to_table(&self) -> String {
        let mut out = String::new();
        if let (Some(l), Some(r)) = (&self.location, &self.report) {
            out.push_str(&format!("{l} in {} ({} S3 requests)\n\n", r.region_used, r.requests));
        }
        let width = self.verdict.conditions.iter().map(|c| c.type_.len()).max().unwrap_or(0).max(9);
        out.push_str(&format!("{:width$}  {:7}  {:24}  MESSAGE\n", "CONDITION", "STATUS", "REASON"));
        for c in &self.verdict.conditions {
            out.push_str(&format!(
                "{:width$}  {:7}  {:24}  {}\n",
                c.type_,
                c.status.as_str(),
                c.reason.as_str(),
                for_terminal(&c.message)
            ));
        }
        out.push_str("\nPERMISSION              RESULT\n");
        for p in &self.verdict.permissions {
            out.push_str(&format!("{:22}  {:?}\n", p.action, p.result));
        }
        if let Some(policy) = &self.verdict.missing_policy {
            out.push_str("\nAdd these statements to the IAM policy of these credentials:\n");
            out.push_str(policy);
            out.push('\n');
        }
        out
    }
}

/// `check` never changes the bucket's CORS configuration unless asked: Apply becomes
/// Verify, so a read-only look stays read-only (the Export probe still writes and deletes
/// its probe object, which is what it checks).
pub fn check_cors_mode(mode: CorsMode, apply: bool) -> CorsMode {
    if mode == CorsMode::Apply && !apply { CorsMode::Verify } else { mode }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::connection::Usage;

    #[test]
    fn the_manifest_s3connection_is_found_among_other_documents() {
        let yaml = "apiVersion: v1\nkind: Secret\nmetadata: {name: keys}\n---\napiVersion: s3connect.io/v1alpha1\nkind: S3Connection\nmetadata: {name: c}\nspec:\n  uri: s3://data/images/\n  usage: [Import, Export]\n  credentials: {secretRef: {name: keys}}\n";
        let spec = spec_from_manifest(yaml).unwrap();
        assert_eq!(spec.usage, [Usage::Import, Usage::Export]);
        assert_eq!(spec.cors.mode, CorsMode::Apply, "defaults apply");
        assert!(spec_from_manifest("kind: Secret\n").unwrap_err().contains("no S3Connection"));
    }

    #[test]
    fn every_s3connection_of_a_manifest_is_read_and_unknown_fields_are_refused() {
        let yaml = "kind: S3Connection\nmetadata: {name: a}\nspec: {uri: s3://data/a/, credentials: {secretRef: {name: k}}}\n---\nkind: Secret\nmetadata: {name: k}\n---\nkind: S3Connection\nmetadata: {name: b}\nspec: {uri: s3://data/b/, credentials: {secretRef: {name: k}}, cors: {mode: Verify}}\n";
        let all = specs_from_manifest(yaml).unwrap();
        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(all[1].1.cors.mode, CorsMode::Verify);
        let typo = "kind: S3Connection\nmetadata: {name: a}\nspec: {uri: s3://data/a/, usge: [Export], credentials: {secretRef: {name: k, keyy: x}}}\n";
        let err = specs_from_manifest(typo).unwrap_err();
        assert!(err.contains("spec.usge") && err.contains("spec.credentials.secretRef.keyy"), "{err}");
    }

    #[test]
    fn messages_at_a_terminal_say_what_to_do_not_that_the_operator_retries() {
        let said = "Could not reach http://x (refused): check spec.endpoint; retrying with backoff.";
        assert_eq!(
            for_terminal(said),
            "Could not reach http://x (refused): check spec.endpoint; run check again in a moment."
        );
        let said = "S3 answered the s3:ListBucket probe with InternalError; retrying with backoff.";
        assert!(!for_terminal(said).contains("backoff"));
        assert!(!for_terminal("The store refused it: check the proxy. Re-checking with backoff.").contains("backoff"));
    }

    #[test]
    fn check_only_applies_cors_when_asked() {
        assert_eq!(check_cors_mode(CorsMode::Apply, false), CorsMode::Verify);
        assert_eq!(check_cors_mode(CorsMode::Apply, true), CorsMode::Apply);
        assert_eq!(check_cors_mode(CorsMode::Ignore, false), CorsMode::Ignore);
    }
}
