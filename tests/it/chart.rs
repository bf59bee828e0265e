//! The Helm chart: it lints, renders, applies to the real API server, and its RBAC is
//! enough for the operator, proven by running the operator as the chart's ServiceAccount.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams, PostParams};
use s3connect::api::connection::Usage;
use s3connect::s3::client::Keys;
use s3connect::s3::policy::policy;
use s3connect::s3::uri::Location;
use s3connect::validation::required;
use serde_json::{Value, json};

use crate::support::operator::{condition, private_namespace, spawn_with, wait_for};
use crate::support::{self, iam, s3};

fn helm(args: &[&str]) -> (bool, String) {
    let cache = std::env::var("S3CONNECT_TESTENV_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| support::repo_root().join(".testenv"));
    let out = Command::new(cache.join("bin/helm"))
        .args(args)
        .current_dir(support::repo_root())
        .output()
        .expect("running helm (testenv/setup builds it)");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// The Helm value that confines the finalizer policy to `ns`: the shared control plane's
/// other tests (and their operators, as other identities) are not its subject.
fn only_in(ns: &str) -> String {
    format!(r#"finalizerPolicy={{"namespaceSelector":{{"matchLabels":{{"kubernetes.io/metadata.name":"{ns}"}}}}}}"#)
}

fn kubectl_apply(ns: &str, manifests: &str) -> (bool, String) {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&support::env().kubeconfig)
        .args(["apply", "-n", ns, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), manifests.as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

async fn create_namespace(client: &kube::Client, ns: &str) {
    support::named_namespace(client, ns).await;
}

#[test]
fn the_chart_lints_and_its_values_are_checked() {
    let _timer = crate::timed!();
    let (ok, out) = helm(&["lint", "--strict", "charts/s3connect"]);
    assert!(ok, "helm lint --strict: {out}");
    let (ok, out) = helm(&["lint", "charts/s3connect", "--set", "logFormat=xml"]);
    assert!(!ok && out.contains("logFormat"), "values.schema.json let logFormat=xml through: {out}");
    let (ok, out) = helm(&["template", "t", "charts/s3connect", "--set", "watchNamespace=team-a"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("kind: Role\n") && !out.contains("kind: ClusterRole\n"),
        "one namespace needs only a Role:\n{out}"
    );
    // A typo is refused, not ignored.
    let (ok, out) = helm(&["lint", "charts/s3connect", "--set", "replicas=3"]);
    assert!(!ok && out.contains("'replicas' not allowed"), "values.schema.json let a typo through: {out}");
    // A CA bundle comes from a ConfigMap or a Secret, not both.
    let (ok, out) = helm(&["lint", "charts/s3connect", "--set", "caBundle.configMap=a", "--set", "caBundle.secret=b"]);
    assert!(!ok && out.contains("caBundle"), "both sources of the CA bundle were accepted: {out}");
    // Managed credentials without a permissions boundary are refused: the operator's own
    // policy could otherwise create a user with any policy.
    let (ok, out) = helm(&["template", "t", "charts/s3connect", "--set", "managedCredentials.enabled=true"]);
    assert!(!ok && out.contains("permissionsBoundary is required"), "{out}");
    // Per-object series on by default; a value hides tenants' object names from scrapers.
    let (_, default) = helm(&["template", "t", "charts/s3connect"]);
    assert!(default.contains("S3CONNECT_PER_OBJECT_METRICS\n              value: \"true\""), "{default}");
    // The probes have their own port.
    assert!(
        default.contains("httpGet: {path: /healthz, port: health}")
            && default.contains("S3CONNECT_HEALTH_ADDR\n              value: \"0.0.0.0:8081\""),
        "{default}"
    );
    let (ok, hidden) = helm(&["template", "t", "charts/s3connect", "--set", "metrics.perObject=false"]);
    assert!(ok && hidden.contains("S3CONNECT_PER_OBJECT_METRICS\n              value: \"false\""), "{hidden}");
    // With a proxy, the cluster's own names and the credential endpoints stay off it by
    // default; without one, no proxy variable is set at all.
    let (_, proxied) = helm(&["template", "t", "charts/s3connect", "--set", "proxy.httpsProxy=http://p:3128"]);
    assert!(
        proxied.contains(
            "NO_PROXY\n              value: \"localhost,127.0.0.1,169.254.169.254,169.254.170.23,.svc,.cluster.local\""
        ),
        "{proxied}"
    );
    assert!(!default.contains("NO_PROXY"), "{default}");
    // Without managed credentials the operator only reads Secrets.
    let (_, default) = helm(&["template", "t", "charts/s3connect"]);
    assert!(default.contains("resources: [secrets]\n    verbs: [get, list, watch]\n"), "{default}");
    // The operator creates events and never patches them: no verb it does not use.
    let (_, default) = helm(&["template", "t", "charts/s3connect"]);
    assert!(default.contains("resources: [events]\n    verbs: [create]"), "{default}");
    // A NetworkPolicy by default, which lets the AWS credential endpoints through.
    assert!(default.contains("kind: NetworkPolicy\n") && default.contains("cidr: 169.254.169.254/32"), "{default}");
    // A ServiceMonitor only where the Prometheus Operator's API exists.
    let sm = ["--set", "metrics.serviceMonitor.enabled=true"];
    let (ok, out) = helm(&["template", "t", "charts/s3connect", sm[0], sm[1]]);
    assert!(ok && !out.contains("kind: ServiceMonitor"), "{out}");
    let (ok, out) = helm(&[
        "template",
        "t",
        "charts/s3connect",
        sm[0],
        sm[1],
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
    ]);
    assert!(ok && out.contains("kind: ServiceMonitor"), "{out}");
    // Alerts likewise, and each names the object through s3connect_ready's labels.
    let pr = ["--set", "metrics.prometheusRule.enabled=true"];
    let (ok, out) = helm(&["template", "t", "charts/s3connect", pr[0], pr[1]]);
    assert!(ok && !out.contains("kind: PrometheusRule"), "{out}");
    let (ok, out) = helm(&[
        "template",
        "t",
        "charts/s3connect",
        pr[0],
        pr[1],
        "--api-versions",
        "monitoring.coreos.com/v1/PrometheusRule",
    ]);
    assert!(ok && out.contains("kind: PrometheusRule"), "{out}");
    for wanted in [
        "expr: s3connect_ready == 0",
        "{{ $labels.namespace }}/{{ $labels.name }}",
        "s3connect_reconcile_panics_total",
        "s3connect_leader",
        // With shards, one without a leader alerts on its own.
        "max by (deployment)",
    ] {
        assert!(out.contains(wanted), "{wanted} not in the rendered rules:\n{out}");
    }
    // The chart README's values table is generated from values.yaml's comments.
    let fresh =
        Command::new("python3").arg(support::repo_root().join("scripts/chart-readme")).arg("--check").output().unwrap();
    assert!(fresh.status.success(), "{}", String::from_utf8_lossy(&fresh.stderr));
    let committed = std::fs::read_to_string(support::repo_root().join("crds/s3connect.yaml")).unwrap();
    let in_chart = std::fs::read_to_string(support::repo_root().join("charts/s3connect/files/crds.yaml")).unwrap();
    assert!(committed == in_chart, "charts/s3connect/files/crds.yaml is stale: run `make crds`");
}

/// A kubeconfig that acts as `user` (through impersonation by the test admin).
fn impersonating(user: &str) -> PathBuf {
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&support::env().kubeconfig).unwrap()).unwrap();
    config["users"][0]["user"]["as"] = json!(user);
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kubeconfig-{}", std::process::id()));
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    path
}

#[tokio::test]
async fn the_operator_works_with_exactly_the_charts_rbac_and_says_when_it_lacks_some() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let ns = private_namespace("rbac");
    create_namespace(&client, &ns).await;
    // The shared control plane has its CRDs already; the RBAC is what this test is about.
    let (ok, rendered) = helm(&[
        "template",
        "t",
        "charts/s3connect",
        "--namespace",
        &ns,
        "--set",
        "crds.install=false",
        "--set-json",
        &only_in(&ns),
    ]);
    assert!(ok, "{rendered}");
    let (ok, out) = kubectl_apply(&ns, &rendered);
    assert!(ok, "the rendered chart does not apply: {out}");

    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("operator-rbac-{}.log", std::process::id()));
    let kubeconfig = impersonating(&format!("system:serviceaccount:{ns}:t-s3connect"));
    let mut operator =
        spawn_with(&log, &kubeconfig, &["--namespace", &ns, "--leader-election", "--lease-namespace", &ns]);

    // Happy path and a key rotation, as the ServiceAccount.
    let bucket = s3::bucket("rbac", "us-east-1").await;
    s3::put(&bucket, "images/a.jpg", b"a").await;
    let location = Location::parse(&format!("{bucket}/images/")).unwrap();
    let good =
        iam::user_with_policy("rbac", &policy(&location, None, &required(&[Usage::Import], Default::default()))).await;
    support::keys_secret(&client, &ns, "keys", &Keys { secret_access_key: "x".repeat(40), ..good.clone() }).await;
    support::s3_connection(&client, &ns, "c", &bucket, "keys", json!({})).await;
    wait_for(&client, &ns, "c", "SignatureDoesNotMatch", |c| {
        condition(c, "CredentialsValid").is_some_and(|x| x.reason == "SignatureDoesNotMatch")
    })
    .await;
    support::keys_secret(&client, &ns, "keys", &good).await;
    wait_for(&client, &ns, "c", "Ready after rotation", |c| condition(c, "Ready").is_some_and(|r| r.status == "True"))
        .await;
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(!events.items.is_empty(), "events were written as the ServiceAccount");

    // Take away `get` on secrets: the next connection says so in status and log.
    let patch = json!({"rules": [
        {"apiGroups": ["s3connect.io"], "resources": ["s3connections"], "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": ["s3connect.io"], "resources": ["datasetexports"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["s3connect.io"], "resources": ["datasets"], "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": ["s3connect.io"], "resources": ["s3connections/status", "datasetexports/status", "datasets/status"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]}]});
    Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(client.clone())
        .patch("t-s3connect", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    // In force once the API server's authorizer says so.
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
        "user": format!("system:serviceaccount:{ns}:t-s3connect"),
        "resourceAttributes": {"namespace": ns, "verb": "get", "resource": "secrets", "name": "keys2"}}});
    let reviews = Api::<k8s_openapi::api::authorization::v1::SubjectAccessReview>::all(client.clone());
    let review: k8s_openapi::api::authorization::v1::SubjectAccessReview = serde_json::from_value(review).unwrap();
    support::wait_for("the narrowed role in force", Duration::from_secs(30), Duration::from_millis(100), || async {
        let answer = reviews.create(&PostParams::default(), &review).await.unwrap();
        if answer.status.is_some_and(|s| s.allowed) { Err("still allowed") } else { Ok(()) }
    })
    .await;
    support::keys_secret(&client, &ns, "keys2", &good).await;
    support::s3_connection(&client, &ns, "c2", &bucket, "keys2", json!({})).await;
    let c = wait_for(&client, &ns, "c2", "SecretForbidden", |c| {
        condition(c, "CredentialsValid").is_some_and(|x| x.reason == "SecretForbidden")
    })
    .await;
    let message = &condition(&c, "Ready").unwrap().message;
    assert!(message.contains("RBAC forbids get on secrets") && message.contains("Helm chart"), "{message}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("RBAC forbids reading the Secret"), "not in the log");

    drop(operator.stdin.take());
    assert!(operator.wait().unwrap().success());
}

#[tokio::test]
async fn every_chart_option_renders_and_the_api_server_accepts_it() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let ns = support::namespace(&client, "chartall").await;
    let values = support::repo_root().join("target").join(format!("chart-values-{}.yaml", std::process::id()));
    std::fs::write(
        &values,
        r#"imagePullSecrets: [{name: regcred}]
priorityClassName: system-cluster-critical
extraEnv: [{name: HTTPS_PROXY, value: "http://proxy:3128"}]
extraVolumes: [{name: ca, configMap: {name: ca-bundle}}]
extraVolumeMounts: [{name: ca, mountPath: /etc/ca, readOnly: true}]
topologySpreadConstraints: [{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app.kubernetes.io/name: s3connect}}}]
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Exists}]
affinity: {podAntiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: [{weight: 1, podAffinityTerm: {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app.kubernetes.io/name: s3connect}}}}]}}
networkPolicy: {enabled: true, egressPorts: [443, 6443, 9000]}
podDisruptionBudget: {enabled: true, minAvailable: 1}
rbac: {aggregateToDefaultRoles: true}
proxy: {httpsProxy: "http://proxy.example.com:3128", noProxy: ".svc,10.0.0.0/8"}
caBundle: {configMap: private-ca, key: ca.pem}
managedCredentials: {enabled: true, permissionsBoundary: "arn:aws:iam::123456789012:policy/s3connect-boundary", grants: [{name: team-a-all, namespaces: [team-a], namespaceSelector: {matchLabels: {team: a}}, buckets: [{bucket: "labelling-*"}, {bucket: team-a-data, prefixes: ["images/", "{namespace}/"]}], usages: [Import], deletionPolicies: [Delete, Retain]}]}
serviceAccount: {annotations: {eks.amazonaws.com/role-arn: "arn:aws:iam::123456789012:role/s3connect"}}
shards: [a, b]
"#,
    )
    .unwrap();
    let name = format!("all-{}", std::process::id());
    let (ok, rendered) =
        helm(&["template", &name, "charts/s3connect", "--namespace", &ns, "-f", values.to_str().unwrap()]);
    assert!(ok, "{rendered}");
    for kind in [
        "Deployment",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ClusterRole",
        "ServiceAccount",
        "Service",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "S3AccessGrant",
    ] {
        assert!(rendered.contains(&format!("kind: {kind}\n")), "no {kind}:\n{rendered}");
    }
    for wanted in [
        "regcred",
        "system-cluster-critical",
        "HTTPS_PROXY",
        "mountPath: /etc/ca",
        "topologySpreadConstraints",
        "aggregate-to-view",
        "aggregate-to-edit",
        "port: 9000",
        "S3CONNECT_MANAGED_CREDENTIALS",
        "S3CONNECT_MANAGED_PERMISSIONS_BOUNDARY",
        "verbs: [get, list, watch, create, patch, delete]",
        "resources: [s3accessgrants]",
        "- '{namespace}/'",
        "eks.amazonaws.com/role-arn",
        "value: \"http://proxy.example.com:3128\"",
        "value: /etc/s3connect/ca/ca.pem",
        "configMap: {name: \"private-ca\"}",
        "mountPath: /etc/s3connect/ca",
        // Shards: one Deployment each, serving its label, on its own lease; the main one
        // serves the rest and alone does the cluster-wide work.
        &*format!("name: {name}-s3connect-shard-a\n"),
        &*format!("name: {name}-s3connect-shard-b\n"),
        "value: \"s3connect.io/shard=b\"",
        "value: \"!s3connect.io/shard\"",
        &*format!("value: \"{name}-s3connect-shard-a\""),
    ] {
        assert!(rendered.contains(wanted), "{wanted} not rendered:\n{rendered}");
    }
    assert_eq!(rendered.matches("kind: Deployment\n").count(), 3, "{rendered}");
    assert_eq!(rendered.matches("name: S3CONNECT_CLUSTER_WIDE\n").count(), 2, "only the shards stand down");
    // The API server validates every object as it would install it.
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&support::env().kubeconfig)
        .args(["apply", "--dry-run=server", "-n", &ns, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), rendered.as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the API server refused the rendered chart: {text}");
}

#[test]
fn helm_installs_upgrades_and_uninstalls_the_crds_with_the_release() {
    let _timer = crate::timed!();
    // A private control plane without CRDs: the chart installs them.
    let (mut launcher, env_file) = support::launch_private(&["--crds", ""]);
    let vars = std::fs::read_to_string(&env_file).unwrap();
    let kubeconfig = vars.lines().find_map(|l| l.strip_prefix("KUBECONFIG=")).unwrap().to_owned();
    let kubectl = |args: &[&str]| {
        let out = Command::new("kubectl").arg("--kubeconfig").arg(&kubeconfig).args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let helm_at = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", kubeconfig.as_str()];
        all.extend_from_slice(args);
        helm(&all)
    };
    let (ok, out) = helm_at(&["install", "s3c", "charts/s3connect", "--namespace", "default"]);
    assert!(ok, "helm install: {out}");
    for crd in [
        "s3connections.s3connect.io",
        "datasetexports.s3connect.io",
        "datasets.s3connect.io",
        "s3accessgrants.s3connect.io",
    ] {
        let (ok, out) = kubectl(&["get", "crd", crd]);
        assert!(ok, "{crd} not installed: {out}");
    }

    // A chart whose CRD changed: the upgrade updates it in the cluster.
    let changed = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("chart-changed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&changed);
    let copy = Command::new("cp")
        .args(["-r", "charts/s3connect"])
        .arg(&changed)
        .current_dir(support::repo_root())
        .status()
        .unwrap();
    assert!(copy.success());
    let crds = changed.join("files/crds.yaml");
    let text = std::fs::read_to_string(&crds).unwrap();
    let marker = "An S3 bucket/prefix that the Labellerr platform reads";
    assert!(text.contains(marker), "the CRD description to change is not there");
    std::fs::write(&crds, text.replace(marker, "UPGRADED: An S3 bucket/prefix that the Labellerr platform reads"))
        .unwrap();
    let (ok, out) = helm_at(&["upgrade", "s3c", changed.to_str().unwrap(), "--namespace", "default"]);
    assert!(ok, "helm upgrade: {out}");
    let (_, out) = kubectl(&[
        "get",
        "crd",
        "s3connections.s3connect.io",
        "-o",
        "jsonpath={.spec.versions[0].schema.openAPIV3Schema.description}",
    ]);
    assert!(out.starts_with("UPGRADED:"), "the upgrade did not update the CRD: {out}");

    // Uninstalling keeps the CRDs (and so every s3connect resource) by default.
    let (ok, out) = helm_at(&["uninstall", "s3c", "--namespace", "default"]);
    assert!(ok, "helm uninstall: {out}");
    let (ok, out) = kubectl(&["get", "crd", "datasets.s3connect.io"]);
    assert!(ok, "the CRD went with the release: {out}");
    let (ok, _) = kubectl(&["get", "deployment", "s3c-s3connect", "-n", "default"]);
    assert!(!ok, "the release's Deployment is still there");
    drop(launcher.stdin.take());
    let _ = launcher.wait();
}

/// A client that acts as `user`, through impersonation by the test admin.
async fn client_as(user: &str) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(&support::env().kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    config.auth_info.impersonate = Some(user.to_owned());
    kube::Client::try_from(config).unwrap()
}

fn secret(name: &str, type_: &str, owned: bool) -> k8s_openapi::api::core::v1::Secret {
    let mut s = json!({"apiVersion": "v1", "kind": "Secret", "type": type_, "metadata": {"name": name,
        "annotations": {"kubernetes.io/service-account.name": "default"}}, "stringData": {"AWS_ACCESS_KEY_ID": "x"}});
    if owned {
        s["metadata"]["labels"] = json!({"app.kubernetes.io/managed-by": "s3connect"});
        s["metadata"]["ownerReferences"] = json!([{"apiVersion": "s3connect.io/v1alpha1", "kind": "S3Connection",
            "name": "c", "uid": "00000000-0000-0000-0000-000000000001", "controller": true}]);
    }
    serde_json::from_value(s).unwrap()
}

/// The error message of a refused request, or None when it was admitted.
fn refusal<T>(result: Result<T, kube::Error>) -> Option<String> {
    match result {
        Ok(_) => None,
        Err(kube::Error::Api(s)) => Some(format!("{} {}", s.code, s.message)),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn with_managed_credentials_the_operator_may_write_only_the_secrets_it_owns() {
    let _timer = crate::timed!();
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{DeleteParams, PostParams};
    let client = support::client().await;
    let ns = private_namespace("vap");
    create_namespace(&client, &ns).await;
    let (ok, rendered) = helm(&[
        "template",
        "vap",
        "charts/s3connect",
        "--namespace",
        &ns,
        "--set",
        "crds.install=false",
        "--set",
        "managedCredentials.enabled=true",
        "--set",
        "managedCredentials.permissionsBoundary=arn:aws:iam::123456789012:policy/s3connect-boundary",
        "--set-json",
        &only_in(&ns),
    ]);
    assert!(ok, "{rendered}");
    // Tenants' default roles never include grants: only cluster admins make them.
    for doc in rendered.split("\n---").filter(|d| d.contains("aggregate-to-")) {
        assert!(!doc.contains("s3accessgrants"), "an aggregated role includes S3AccessGrants:\n{doc}");
    }
    let (ok, out) = kubectl_apply(&ns, &rendered);
    assert!(ok, "the rendered chart does not apply: {out}");
    let operator = client_as(&format!("system:serviceaccount:{ns}:vap-s3connect")).await;
    let mine = Api::<Secret>::namespaced(operator.clone(), &ns);
    let post = PostParams::default();

    // The policy is in force once an unlabelled Secret is refused (the API server loads it
    // within seconds); each probe that got through is removed again.
    let mut refused = None;
    for n in 0..100 {
        let name = format!("probe-{n}");
        match refusal(mine.create(&post, &secret(&name, "Opaque", false)).await) {
            Some(message) => {
                refused = Some(message);
                break;
            }
            None => {
                Api::<Secret>::namespaced(client.clone(), &ns).delete(&name, &DeleteParams::default()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let refused = refused.expect("the ValidatingAdmissionPolicy never took effect");
    assert!(refused.contains("managed-by=s3connect") && refused.contains("S3Connection"), "{refused}");

    // RBAC lets the operator create Secrets anywhere; the policy refuses what would make its
    // token cluster-admin in effect: a service-account-token Secret, here or in kube-system.
    let system = Api::<Secret>::namespaced(operator.clone(), "kube-system");
    let token = refusal(system.create(&post, &secret("stolen", "kubernetes.io/service-account-token", false)).await);
    assert!(token.as_deref().is_some_and(|m| m.contains("Opaque")), "{token:?}");
    let dressed = refusal(mine.create(&post, &secret("dressed", "kubernetes.io/service-account-token", true)).await);
    assert!(dressed.as_deref().is_some_and(|m| m.contains("Opaque")), "{dressed:?}");
    assert!(Api::<Secret>::namespaced(client.clone(), "kube-system").get_opt("stolen").await.unwrap().is_none());

    // A Secret someone else owns: not changed, not deleted.
    let theirs = Api::<Secret>::namespaced(client.clone(), &ns);
    theirs.create(&post, &secret("theirs", "Opaque", false)).await.unwrap();
    let patch = json!({"stringData": {"AWS_ACCESS_KEY_ID": "changed"}});
    let changed = refusal(mine.patch("theirs", &PatchParams::default(), &Patch::Merge(&patch)).await);
    assert!(changed.is_some(), "the operator changed a Secret it does not own");
    let adopt = json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": "s3connect"},
        "ownerReferences": [{"apiVersion": "s3connect.io/v1alpha1", "kind": "S3Connection", "name": "c", "uid": "00000000-0000-0000-0000-000000000001"}]}});
    let adopted = refusal(mine.patch("theirs", &PatchParams::default(), &Patch::Merge(&adopt)).await);
    assert!(adopted.is_some(), "the operator took a Secret over by labelling it");
    assert!(
        refusal(mine.delete("theirs", &DeleteParams::default()).await).is_some(),
        "the operator deleted a Secret it does not own"
    );

    // Its own: made, changed, deleted; but never stripped of what marks it.
    let own = "c-s3connect-keys";
    assert_eq!(refusal(mine.create(&post, &secret(own, "Opaque", true)).await), None);
    assert_eq!(refusal(mine.patch(own, &PatchParams::default(), &Patch::Merge(&patch)).await), None);
    let strip = json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}});
    assert!(refusal(mine.patch(own, &PatchParams::default(), &Patch::Merge(&strip)).await).is_some());
    // Nothing but the two key values, and never a key of another name.
    let extra = json!({"stringData": {"token": "x"}});
    let extra = refusal(mine.patch(own, &PatchParams::default(), &Patch::Merge(&extra)).await);
    assert!(extra.as_deref().is_some_and(|m| m.contains("AWS_SECRET_ACCESS_KEY")), "{extra:?}");
    assert_eq!(refusal(mine.delete(own, &DeleteParams::default()).await), None);
    // Dressed as its own, but not named as its own, not its controller's, or in kube-system.
    let named = refusal(mine.create(&post, &secret("own", "Opaque", true)).await);
    assert!(named.as_deref().is_some_and(|m| m.contains("-s3connect-keys")), "{named:?}");
    let mut uncontrolled = secret("u-s3connect-keys", "Opaque", true);
    uncontrolled.metadata.owner_references.as_mut().unwrap()[0].controller = None;
    assert!(refusal(mine.create(&post, &uncontrolled).await).is_some(), "an ownerReference that is not the controller");
    let system_own = refusal(system.create(&post, &secret("c-s3connect-keys", "Opaque", true)).await);
    assert!(system_own.as_deref().is_some_and(|m| m.contains("kube-system")), "{system_own:?}");

    // A tenant (here: anyone but the operator and cluster admins) cannot take the
    // operator's finalizer off, so an IAM user or a platform object never outlives its
    // object through a script; the operator can.
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let role: Role = serde_json::from_value(json!({"metadata": {"name": "tenant"}, "rules": [
        {"apiGroups": ["s3connect.io"], "resources": ["s3connections"], "verbs": ["*"]}]}))
    .unwrap();
    Api::<Role>::namespaced(client.clone(), &ns).create(&post, &role).await.unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "tenant"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "tenant"}]}))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), &ns).create(&post, &binding).await.unwrap();
    let conn: s3connect::api::S3Connection = serde_json::from_value(json!({"metadata": {"name": "held",
        "finalizers": ["s3connect.io/iam-user", "example.com/theirs"]},
        "spec": {"uri": "s3://bucket-b/", "credentials": {"managed": {}}}}))
    .unwrap();
    let conns = Api::<s3connect::api::S3Connection>::namespaced(client.clone(), &ns);
    conns.create(&post, &conn).await.unwrap();
    let tenant = Api::<s3connect::api::S3Connection>::namespaced(client_as("tenant").await, &ns);
    let strip = json!({"metadata": {"finalizers": null}});
    // The API server takes up a new policy binding and RoleBinding a moment after they are
    // made: dry runs (which admission policies judge too) until both are in force, then
    // the request itself.
    let dry_run = PatchParams { dry_run: true, ..PatchParams::default() };
    support::wait_for("the finalizer policy in force", Duration::from_secs(20), Duration::from_millis(200), || async {
        match refusal(tenant.patch("held", &dry_run, &Patch::Merge(&strip)).await) {
            Some(m) if m.starts_with("403") && m.contains("finalizers") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let stripped = refusal(tenant.patch("held", &PatchParams::default(), &Patch::Merge(&strip)).await)
        .expect("a tenant took the operator's finalizer off");
    assert!(stripped.starts_with("403") && stripped.contains("finalizers"), "{stripped}");
    assert!(stripped.contains("only the s3connect operator"), "{stripped}");
    // Its own finalizer of another name the tenant may take off; the operator may take off ours.
    let theirs = json!({"metadata": {"finalizers": ["s3connect.io/iam-user"]}});
    assert_eq!(refusal(tenant.patch("held", &PatchParams::default(), &Patch::Merge(&theirs)).await), None);
    let as_operator = Api::<s3connect::api::S3Connection>::namespaced(
        client_as(&format!("system:serviceaccount:{ns}:vap-s3connect")).await,
        &ns,
    );
    assert_eq!(refusal(as_operator.patch("held", &PatchParams::default(), &Patch::Merge(&strip)).await), None);
    conns.delete("held", &DeleteParams::default()).await.unwrap();

    // The operator checks the policy is in force before it manages credentials: as its
    // ServiceAccount it starts; as an identity the policy does not confine, it refuses.
    let managed = ["--namespace", ns.as_str(), "--lease-namespace", ns.as_str(), "--managed-credentials"];
    let aws = [("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"), ("AWS_SECRET_ACCESS_KEY", "x"), ("AWS_REGION", "us-east-1")];
    let unconfined =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("operator-vap-{}.log", std::process::id()));
    let mut refused = crate::support::operator::spawn_with_env(&unconfined, &managed, &aws);
    let said = support::log_says(&unconfined, "managed credentials are refused", |l| {
        l.contains("managed credentials are not switched on")
    })
    .await;
    assert!(said.contains("was admitted") && said.contains("ValidatingAdmissionPolicies"), "{said}");
    drop(refused.stdin.take());
    assert!(!refused.wait().unwrap().success(), "managed credentials without the admission policy");
    let keys = iam::user_with_policy("vap-operator", &iam::allow(&["iam:*"], &["*".to_owned()])).await;
    let aws = [
        ("AWS_ACCESS_KEY_ID", keys.access_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", keys.secret_access_key.as_str()),
        ("AWS_ENDPOINT_URL_IAM", support::env().s3_endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
    ];
    let confined =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("operator-vap-sa-{}.log", std::process::id()));
    let kubeconfig = impersonating(&format!("system:serviceaccount:{ns}:vap-s3connect"));
    let mut started = crate::support::operator::spawn_env_with(&confined, &kubeconfig, &managed, &aws);
    let said = support::log_says(&confined, "whether managed credentials are on", |l| {
        l.contains("managed credentials enabled") || l.contains("not switched on")
    })
    .await;
    assert!(said.contains("managed credentials enabled") && !said.contains("not switched on"), "{said}");
    // As that ServiceAccount, under OwnerReferencesPermissionEnforcement, it mints a key
    // into a Secret whose ownerReference blocks the connection's deletion.
    let bucket = s3::bucket("vap", "us-east-1").await;
    s3::put(&bucket, "images/a.jpg", b"a").await;
    let grant = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "S3AccessGrant", "metadata": {"name": format!("{ns}-mint")},
        "spec": {"namespaces": [ns], "buckets": [{"bucket": bucket}]}});
    Api::<s3connect::api::S3AccessGrant>::all(client.clone())
        .create(&post, &serde_json::from_value(grant).unwrap())
        .await
        .unwrap();
    let mint: s3connect::api::S3Connection = serde_json::from_value(json!({"metadata": {"name": "mint"},
        "spec": {"uri": format!("s3://{bucket}/images/"), "credentials": {"managed": {}},
            "endpoint": support::env().s3_endpoint, "forcePathStyle": true}}))
    .unwrap();
    conns.create(&post, &mint).await.unwrap();
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let minted = support::wait_for("the key Secret", Duration::from_secs(30), Duration::from_millis(200), || async {
        secrets.get_opt("mint-s3connect-keys").await.unwrap().ok_or_else(|| std::fs::read_to_string(&confined).unwrap())
    })
    .await;
    let owner = &minted.metadata.owner_references.unwrap()[0];
    assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
    conns.delete("mint", &DeleteParams::default()).await.unwrap();
    support::wait_for(
        "the managed connection deleted",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            match conns.get_opt("mint").await.unwrap() {
                None => Ok(()),
                Some(c) => Err(format!("{:?}", c.status)),
            }
        },
    )
    .await;
    drop(started.stdin.take());
    assert!(started.wait().unwrap().success(), "{}", std::fs::read_to_string(&confined).unwrap_or_default());

    // And it cannot grant itself (or anyone) a bucket.
    let g = json!({"apiVersion": "s3connect.io/v1alpha1", "kind": "S3AccessGrant", "metadata": {"name": format!("{ns}-self")},
        "spec": {"namespaces": [ns], "buckets": [{"bucket": "*"}]}});
    let grant = refusal(
        Api::<s3connect::api::S3AccessGrant>::all(operator).create(&post, &serde_json::from_value(g).unwrap()).await,
    );
    assert!(grant.as_deref().is_some_and(|m| m.starts_with("403")), "{grant:?}");
}
