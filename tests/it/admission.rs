//! Bad manifests are refused by the real API server at admission, with a message that
//! says what is wrong; good ones get the documented defaults.

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use s3connect::api::{DatasetExport, S3Connection};
use serde_json::{Value, json};

use crate::support;

fn connection(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "S3Connection", "metadata": {"name": name}, "spec": spec})
}

fn valid_connection_spec() -> Value {
    json!({"uri": "s3://my-bucket/images/", "credentials": {"secretRef": {"name": "s3-keys"}}})
}

fn export(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "DatasetExport", "metadata": {"name": name}, "spec": spec})
}

fn valid_export_spec() -> Value {
    json!({
        "connectionRef": {"name": "exports"},
        "projectId": "proj-1",
        "format": "coco_json",
        "statuses": ["review", "accepted"],
        "folder": "exports/run-1/",
    })
}

/// Returns a spec with `field` set to `value`.
fn with(mut spec: Value, field: &str, value: Value) -> Value {
    spec[field] = value;
    spec
}

async fn api<K: kube::Resource<DynamicType = ()>>(ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(support::client().await, ns, &ApiResource::erase::<K>(&()))
}

/// Creates the object and returns the API server's error message, or panics if it was
/// accepted.
async fn rejected(api: &Api<DynamicObject>, object: Value) -> String {
    let object: DynamicObject = serde_json::from_value(object).expect("a well-formed object");
    match api.create(&PostParams::default(), &object).await {
        Ok(created) => panic!("accepted, but should have been refused: {:?}", created.data["spec"]),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "expected 422 Invalid, got {status:?}");
            status.message
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

async fn accepted(api: &Api<DynamicObject>, object: Value) -> DynamicObject {
    let object: DynamicObject = serde_json::from_value(object).expect("a well-formed object");
    api.create(&PostParams::default(), &object).await.unwrap_or_else(|e| panic!("refused: {e}"))
}

#[tokio::test]
async fn malformed_uris_are_refused_with_the_accepted_forms() {
    let _timer = crate::timed!();
    let ns = support::namespace(&support::client().await, "uri").await;
    let api = api::<S3Connection>(&ns).await;
    for (i, uri) in [
        "S3://Bucket/images/",
        "s3://ab",
        "my-bucket//images/",
        "s3://my_bucket/",
        "https://my-bucket/",
        "-bucket-",
        "",
    ]
    .into_iter()
    .enumerate()
    {
        let message =
            rejected(&api, connection(&format!("bad-{i}"), with(valid_connection_spec(), "uri", json!(uri)))).await;
        assert!(message.contains("spec.uri"), "{uri:?}: message does not name the field: {message}");
        assert!(
            message.contains("uri must be s3://bucket/prefix/, bucket/prefix/ or bucket")
                || message.contains("at least 3 chars"),
            "{uri:?}: message does not say what a uri looks like: {message}"
        );
    }
    for (i, uri) in ["s3://my-bucket/images/", "my-bucket/images/", "my-bucket", "my.bucket/a/b", "s3://abc/"]
        .into_iter()
        .enumerate()
    {
        accepted(&api, connection(&format!("good-{i}"), with(valid_connection_spec(), "uri", json!(uri)))).await;
    }
}

#[tokio::test]
async fn an_access_point_arn_stands_for_a_bucket_on_aws_with_keys_given_and_cors_not_applied() {
    let _timer = crate::timed!();
    let ns = support::namespace(&support::client().await, "accesspoint").await;
    let api = api::<S3Connection>(&ns).await;
    let arn = "arn:aws:s3:eu-west-1:123456789012:accesspoint/team-a";
    let spec = |extra: Value| {
        let mut spec = with(valid_connection_spec(), "uri", json!(format!("s3://{arn}/images/")));
        spec["cors"] = json!({"mode": "Verify"});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        spec
    };
    accepted(&api, connection("ap", spec(json!({})))).await;
    accepted(&api, connection("ap-bare", with(spec(json!({})), "uri", json!(arn)))).await;
    for (i, (extra, words)) in [
        (json!({"cors": {"mode": "Apply"}}), "set cors.mode to Verify"),
        (json!({"endpoint": "https://s3.example.com"}), "remove endpoint and forcePathStyle"),
        (json!({"forcePathStyle": true}), "remove endpoint and forcePathStyle"),
        (json!({"credentials": {"managed": {}}}), "credentials.secretRef"),
        (json!({"platform": {"secretRef": {"name": "labellerr"}}}), "leave out platform"),
    ]
    .into_iter()
    .enumerate()
    {
        let message = rejected(&api, connection(&format!("ap-bad-{i}"), spec(extra.clone()))).await;
        assert!(message.contains(words), "{extra}: {message}");
    }
    for (i, uri) in [
        "s3://arn:aws:s3:eu-west-1:1234:accesspoint/team-a/",
        "s3://arn:aws:s3:eu-west-1:123456789012:bucket/team-a/",
        "s3://arn:aws:iam::123456789012:accesspoint/team-a/",
    ]
    .into_iter()
    .enumerate()
    {
        let message =
            rejected(&api, connection(&format!("ap-uri-{i}"), with(spec(json!({})), "uri", json!(uri)))).await;
        assert!(message.contains("access point ARN, arn:aws:s3:"), "{uri}: {message}");
    }
}

#[tokio::test]
async fn unknown_usage_is_refused_naming_the_supported_values() {
    let _timer = crate::timed!();
    let ns = support::namespace(&support::client().await, "usage").await;
    let api = api::<S3Connection>(&ns).await;
    let message =
        rejected(&api, connection("c", with(valid_connection_spec(), "usage", json!(["Import", "Delete"])))).await;
    assert!(message.contains(r#"Unsupported value: "Delete""#), "{message}");
    assert!(message.contains(r#""Import", "Export""#), "supported values missing: {message}");

    let message =
        rejected(&api, connection("c", with(valid_connection_spec(), "usage", json!(["Import", "Import"])))).await;
    assert!(message.contains("Duplicate value"), "{message}");
}

#[tokio::test]
async fn bad_interval_endpoint_and_origin_are_refused() {
    let _timer = crate::timed!();
    let ns = support::namespace(&support::client().await, "fields").await;
    let api = api::<S3Connection>(&ns).await;
    for interval in ["5s", "25h", "10x", "soon"] {
        let message =
            rejected(&api, connection("c", with(valid_connection_spec(), "revalidateInterval", json!(interval)))).await;
        assert!(message.contains("revalidateInterval must be a duration"), "{interval}: {message}");
    }
    for endpoint in ["s3.example.com", "https://user:pw@s3.example.com", "https://s3.example.com/path"] {
        let message = rejected(&api, connection("c", with(valid_connection_spec(), "endpoint", json!(endpoint)))).await;
        assert!(message.contains("endpoint must be http(s)://host[:port]"), "{endpoint}: {message}");
    }
    // Credentials in an endpoint URL are refused, so they are never stored. (The API
    // server echoes the refused value to whoever sent it; that is upstream behaviour.)
    assert!(api.get_opt("c").await.expect("GET").is_none(), "a refused object was stored");
    let message = rejected(
        &api,
        connection("c", with(valid_connection_spec(), "cors", json!({"allowedOrigins": ["pro.labellerr.com"]}))),
    )
    .await;
    assert!(message.contains("spec.cors.allowedOrigins[0]"), "{message}");
    let message = rejected(&api, connection("c", with(valid_connection_spec(), "dataType", json!("pdf")))).await;
    assert!(message.contains(r#"Unsupported value: "pdf""#), "{message}");
}

#[tokio::test]
async fn credentials_are_either_a_secret_or_managed_never_both_or_neither() {
    let _timer = crate::timed!();
    let ns = support::namespace(&support::client().await, "creds").await;
    let api = api::<S3Connection>(&ns).await;
    let both = json!({"secretRef": {"name": "keys"}, "managed": {}});
    for credentials in [both, json!({})] {
        let message =
            rejected(&api, connection("c", with(valid_connection_spec(), "credentials", credentials.clone()))).await;
        assert!(message.contains("exactly one of secretRef"), "{credentials}: {message}");
    }
    for interval in ["90", "0d", "1w", "12h"] {
        let managed = json!({"managed": {"rotationInterval": interval}});
        let message = rejected(&api, connection("c", with(valid_connection_spec(), "credentials", managed))).await;
        assert!(message.contains("spec.credentials.managed.rotationInterval"), "{interval}: {message}");
    }
    let managed = json!({"managed": {"deletionPolicy": "Orphan"}});
    let message = rejected(&api, connection("c", with(valid_connection_spec(), "credentials", managed))).await;
    assert!(message.contains(r#"Unsupported value: "Orphan""#), "{message}");
    // The defaults a person reads back: 90 days, deleted with the connection.
    let created =
        accepted(&api, connection("m", with(valid_connection_spec(), "credentials", json!({"managed": {}})))).await;
    assert_eq!(
        created.data["spec"]["credentials"]["managed"],
        json!({"rotationInterval": "90d", "deletionPolicy": "Delete"})
    );
}

#[tokio::test]
async fn a_minimal_connection_gets_the_documented_defaults() {
    let _timer = crate::timed!();
    let ns = support::namespace(&support::client().await, "defaults").await;
    let api = api::<S3Connection>(&ns).await;
    let created = accepted(&api, connection("minimal", valid_connection_spec())).await;
    let spec = &created.data["spec"];
    assert_eq!(spec["usage"], json!(["Import"]));
    assert_eq!(spec["cors"], json!({"mode": "Apply", "allowedOrigins": ["https://pro.labellerr.com"]}));
    assert_eq!(spec["dataType"], json!("image"));
    assert_eq!(spec["revalidateInterval"], json!("10m"));
    assert_eq!(spec["forcePathStyle"], json!(false));
    assert_eq!(
        spec["credentials"]["secretRef"],
        json!({"name": "s3-keys", "accessKeyIdKey": "AWS_ACCESS_KEY_ID", "secretAccessKeyKey": "AWS_SECRET_ACCESS_KEY", "sessionTokenKey": "AWS_SESSION_TOKEN"})
    );
    // And the typed API reads what the server stored.
    let typed: S3Connection =
        serde_json::from_value(serde_json::to_value(&created).unwrap()).expect("typed S3Connection");
    assert_eq!(typed.spec.usage, vec![s3connect::api::connection::Usage::Import]);
}

#[tokio::test]
async fn export_statuses_must_be_known_non_empty_and_unique() {
    let _timer = crate::timed!();
    let ns = support::namespace(&support::client().await, "statuses").await;
    let api = api::<DatasetExport>(&ns).await;

    let message = rejected(&api, export("e", with(valid_export_spec(), "statuses", json!([])))).await;
    assert!(message.contains("spec.statuses"), "{message}");
    assert!(message.contains("should have at least 1 items"), "{message}");

    let message = rejected(&api, export("e", with(valid_export_spec(), "statuses", json!(["review", "done"])))).await;
    assert!(message.contains(r#"Unsupported value: "done""#), "{message}");
    assert!(message.contains(r#""review", "r_assigned", "client_review", "cr_assigned", "accepted""#), "{message}");

    let message = rejected(&api, export("e", with(valid_export_spec(), "statuses", json!(["review", "review"])))).await;
    assert!(message.contains("Duplicate value"), "{message}");
}

#[tokio::test]
async fn unknown_export_format_and_bad_folder_are_refused() {
    let _timer = crate::timed!();
    let ns = support::namespace(&support::client().await, "format").await;
    let api = api::<DatasetExport>(&ns).await;
    let message = rejected(&api, export("e", with(valid_export_spec(), "format", json!("xml")))).await;
    assert!(message.contains(r#"Unsupported value: "xml""#), "{message}");
    assert!(message.contains(r#""json", "coco_json", "csv", "png""#), "{message}");

    for folder in ["/abs/", "a//b/", "../up/", "a/./b"] {
        let message = rejected(&api, export("e", with(valid_export_spec(), "folder", json!(folder)))).await;
        assert!(message.contains("folder must be a relative path"), "{folder}: {message}");
    }
    accepted(&api, export("e", valid_export_spec())).await;
}

#[tokio::test]
async fn export_spec_is_immutable() {
    let _timer = crate::timed!();
    let ns = support::namespace(&support::client().await, "immutable").await;
    let api = api::<DatasetExport>(&ns).await;
    accepted(&api, export("once", valid_export_spec())).await;
    for (field, value) in
        [("folder", json!("exports/other/")), ("format", json!("csv")), ("statuses", json!(["accepted"]))]
    {
        let patch = json!({"spec": {field: value}});
        let err = api
            .patch("once", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect_err("changing the spec of a DatasetExport must be refused");
        let kube::Error::Api(status) = err else { panic!("unexpected error: {err}") };
        assert!(status.message.contains("spec is immutable"), "{field}: {}", status.message);
        assert!(status.message.contains("delete and re-create"), "no remedy: {}", status.message);
    }
    // Metadata is not part of the spec: labelling an export stays possible.
    let patch = json!({"metadata": {"labels": {"team": "vision"}}});
    api.patch("once", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("labels can change");
}

#[tokio::test]
async fn control_characters_dot_segments_and_origins_s3_refuses_never_get_in() {
    let _timer = crate::timed!();
    let ns = support::namespace(&support::client().await, "hostile").await;
    let conns = api::<S3Connection>(&ns).await;
    // Once admitted, each of these made every status write fail (the API server's YAML
    // parser refuses control characters) or sent '.'/'..' to S3 literally.
    for (i, uri) in
        ["s3://my-bucket/ima\u{7f}ges/", "my-bucket/a\nb/", "my-bucket/./x/", "my-bucket/a/../b/", "s3://my-bucket/.."]
            .into_iter()
            .enumerate()
    {
        let message =
            rejected(&conns, connection(&format!("u{i}"), with(valid_connection_spec(), "uri", json!(uri)))).await;
        assert!(message.contains("uri must be") && message.contains("'..' segments"), "{uri:?}: {message}");
    }
    for (i, origin) in
        ["https://\u{e9}x.com", "https://a*b*.example", "https://a.example\u{7f}", "http://a b"].into_iter().enumerate()
    {
        let cors = json!({"allowedOrigins": [origin]});
        let message = rejected(&conns, connection(&format!("o{i}"), with(valid_connection_spec(), "cors", cors))).await;
        assert!(message.contains("spec.cors.allowedOrigins[0]"), "{origin:?}: {message}");
    }
    for endpoint in ["http://s3\u{7f}.example.com", "https://s3.example.com\n"] {
        let message =
            rejected(&conns, connection("e", with(valid_connection_spec(), "endpoint", json!(endpoint)))).await;
        assert!(message.contains("endpoint must be http(s)://host[:port]"), "{endpoint:?}: {message}");
    }
    for key in ["AWS/KEY", "AWS KEY", "KEY\u{7f}"] {
        let creds = json!({"secretRef": {"name": "s3-keys", "accessKeyIdKey": key}});
        let message = rejected(&conns, connection("k", with(valid_connection_spec(), "credentials", creds))).await;
        assert!(message.contains("spec.credentials.secretRef.accessKeyIdKey"), "{key:?}: {message}");
    }
    for (i, origin) in
        ["*", "https://*.labellerr.com", "http://127.0.0.1:8080", "https://[::1]:443"].into_iter().enumerate()
    {
        let cors = json!({"allowedOrigins": [origin]});
        accepted(&conns, connection(&format!("ok-{i}"), with(valid_connection_spec(), "cors", cors))).await;
    }

    let exports = api::<DatasetExport>(&ns).await;
    for (field, value) in [
        ("projectId", "proj\u{7f}1"),
        ("folder", "exports/\u{7f}/"),
        ("folder", "exports/a\nb/"),
        ("name", "export\u{1}"),
        ("description", "two\nlines"),
    ] {
        let message = rejected(&exports, export("e", with(valid_export_spec(), field, json!(value)))).await;
        assert!(message.contains(&format!("spec.{field}")), "{field} {value:?}: {message}");
    }
}

#[tokio::test]
async fn datasets_refuse_bad_paths_and_changes_the_platform_cannot_make() {
    let _timer = crate::timed!();
    let ns = support::namespace(&support::client().await, "dsadmit").await;
    let api = api::<s3connect::api::Dataset>(&ns).await;
    let dataset = |name: &str, spec: Value| json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "Dataset", "metadata": {"name": name}, "spec": spec});
    for path in ["/abs/", "a//b/", "../up/", "a/./b", "a\u{7f}b/"] {
        let spec = json!({"connectionRef": {"name": "images"}, "path": path});
        let message = rejected(&api, dataset("d", spec)).await;
        assert!(message.contains("spec.path"), "{path:?}: {message}");
    }
    for interval in ["1m", "25h", "soon"] {
        let spec = json!({"connectionRef": {"name": "images"}, "sync": {"projectId": "p", "interval": interval}});
        let message = rejected(&api, dataset("d", spec)).await;
        assert!(message.contains("sync.interval must be a duration"), "{interval}: {message}");
    }
    let created = accepted(&api, dataset("d", json!({"connectionRef": {"name": "images"}, "path": "cats/"}))).await;
    assert_eq!(created.data["spec"]["deletionPolicy"], "Retain", "the default keeps the platform's dataset");
    for change in [json!({"path": "dogs/"}), json!({"displayName": "other"}), json!({"multimodalIndexing": true})] {
        let err = api.patch("d", &PatchParams::default(), &Patch::Merge(&json!({"spec": change}))).await.unwrap_err();
        assert!(err.to_string().contains("immutable"), "{change}: {err}");
    }
    for change in [json!({"deletionPolicy": "Delete"}), json!({"sync": {"projectId": "p", "interval": "2h"}})] {
        api.patch("d", &PatchParams::default(), &Patch::Merge(&json!({"spec": change})))
            .await
            .unwrap_or_else(|e| panic!("{change}: {e}"));
    }
}
