//! The committed CRDs are what `s3connect crd` prints, the API reference is what they say,
//! and they install and explain themselves in the real API server.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;

use crate::support;

#[test]
fn committed_crds_are_fresh() {
    let _timer = crate::timed!();
    let path = support::repo_root().join("crds/s3connect.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == s3connect::api::crds_yaml(),
        "{} is stale: regenerate it with `make crds` and commit it",
        path.display()
    );
    // Kubernetes knows int32 and int64; any other integer format is warned about on every
    // apply (schemars writes uint32 for a u32: give such fields `with = "i32"`).
    let unknown: Vec<&str> = committed.lines().filter(|l| l.trim().starts_with("format: uint")).collect();
    assert!(unknown.is_empty(), "formats Kubernetes does not know: {unknown:?}");
}

#[test]
fn api_reference_is_fresh() {
    let _timer = crate::timed!();
    // docs/api.md is generated from the committed CRDs, which the test above holds to the types.
    let fresh = std::process::Command::new("python3")
        .arg(support::repo_root().join("scripts/api-reference"))
        .arg("--check")
        .output()
        .unwrap();
    assert!(fresh.status.success(), "{}", String::from_utf8_lossy(&fresh.stderr));
}

#[tokio::test]
async fn crds_are_established_with_status_subresource_and_printer_columns() {
    let _timer = crate::timed!();
    let crds = Api::<CustomResourceDefinition>::all(support::client().await);
    for (name, columns) in [
        (
            "s3connections.s3connect.io",
            vec!["Bucket", "Region", "Ready", "Reason", "Age", "URI", "Usage", "Last Validated", "Message"],
        ),
        (
            "datasetexports.s3connect.io",
            vec![
                "Connection",
                "Format",
                "Phase",
                "Ready",
                "Reason",
                "Age",
                "Report",
                "Schedule",
                "Next run",
                "Message",
            ],
        ),
        (
            "annotationprojects.s3connect.io",
            vec!["Datasets", "Phase", "Ready", "Reason", "Age", "Project", "Template", "Message"],
        ),
        (
            "datasets.s3connect.io",
            vec!["Connection", "Files", "Phase", "Ready", "Reason", "Age", "Path", "Dataset", "Message"],
        ),
    ] {
        let crd = crds.get(name).await.unwrap_or_else(|e| panic!("{name} is not installed: {e}"));
        let established = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True"));
        assert!(established, "{name} is not Established");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
            "{name} has no status subresource"
        );
        let got: Vec<&str> = version.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
        assert_eq!(got, columns, "{name} printer columns");
        // `get` shows the short set; `-o wide` adds the rest.
        let wide: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .filter(|c| c.priority == Some(1))
            .map(|c| c.name.as_str())
            .collect();
        assert!(wide.contains(&"Message"), "{name}: no wide Message column");
        assert_eq!(crd.spec.scope, "Namespaced");
    }
}

/// `kubectl explain`, retried for a few seconds: right after the CRDs are installed, the
/// API server may not publish their OpenAPI yet.
async fn explain(what: &str) -> String {
    let every = std::time::Duration::from_millis(200);
    support::wait_for(format!("kubectl explain {what}"), std::time::Duration::from_secs(10), every, || async {
        match support::kubectl(&["explain", what]) {
            (true, out) => Ok(out),
            (false, out) => Err(out),
        }
    })
    .await
}

#[tokio::test]
async fn kubectl_explain_describes_the_spec() {
    let _timer = crate::timed!();
    let out = explain("s3connection.spec").await;
    for field in [
        "uri",
        "usage",
        "credentials",
        "region",
        "endpoint",
        "forcePathStyle",
        "cors",
        "dataType",
        "revalidateInterval",
        "platform",
    ] {
        assert!(out.contains(field), "kubectl explain s3connection.spec does not list {field}:\n{out}");
    }
    assert!(out.contains("s3://bucket/prefix/"), "the uri field is not described:\n{out}");

    let out = explain("datasetexport.spec.statuses").await;
    assert!(out.contains("workflow statuses"), "statuses is not described:\n{out}");

    let out = explain("dataset.spec").await;
    for field in [
        "connectionRef",
        "path",
        "dataType",
        "displayName",
        "description",
        "multimodalIndexing",
        "sync",
        "deletionPolicy",
    ] {
        assert!(out.contains(field), "kubectl explain dataset.spec does not list {field}:\n{out}");
    }
}
