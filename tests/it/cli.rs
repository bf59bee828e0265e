//! The operator process and the `check` command, as users run them.

use std::process::Command;
use std::time::Duration;

use kube::api::Api;
use s3connect::api::S3Connection;
use s3connect::s3::policy::{Action, policy};
use s3connect::s3::uri::Location;
use serde_json::Value;

use crate::support::operator::{condition, log_lines, spawn, wait_for};
use crate::support::{self, iam, s3};

fn check(uri: &str, keys: &s3connect::s3::client::Keys, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_s3connect"))
        .args(["check", "--uri", uri, "--endpoint", &support::env().s3_endpoint, "--force-path-style"])
        .args(extra)
        .env("AWS_ACCESS_KEY_ID", &keys.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &keys.secret_access_key)
        .output()
        .expect("running s3connect check");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains(&keys.secret_access_key) && !text.contains(&keys.access_key_id), "check printed a key");
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn check_exits_zero_when_ready_and_one_with_the_reason_when_not() {
    let _timer = crate::timed!();
    let bucket = s3::bucket("check", "us-east-1").await;
    s3::put(&bucket, "images/a.jpg", b"a").await;
    let uri = format!("s3://{bucket}/images/");
    let location = Location::parse(&uri).unwrap();

    let reader = iam::user_with_policy(
        "check-ok",
        &policy(
            &location,
            None,
            &[
                Action::GetBucketLocation,
                Action::ListBucket,
                Action::GetObject,
                Action::GetBucketCors,
                Action::PutBucketCors,
            ],
        ),
    )
    .await;
    // A look changes nothing: the missing CORS rule is reported, not added.
    let (code, table) = check(&uri, &reader, &[]);
    assert_eq!(code, 1, "{table}");
    assert!(
        table.contains("CONDITION") && table.contains("CorsRuleMissing") && table.contains("put-bucket-cors"),
        "{table}"
    );
    let err = s3::admin("us-east-1").get_bucket_cors().bucket(&bucket).send().await.expect_err("still no CORS rules");
    assert_eq!(aws_sdk_s3::error::ProvideErrorMetadata::code(&err), Some("NoSuchCORSConfiguration"));

    let (code, table) = check(&uri, &reader, &["--apply-cors"]);
    assert_eq!(code, 0, "{table}");
    assert!(table.contains("CorsApplied") && table.contains("Validated"), "{table}");
    assert!(table.contains("s3:GetObject") && table.contains("Allowed"), "{table}");

    let lister =
        iam::user_with_policy("check-bad", &policy(&location, None, &[Action::GetBucketLocation, Action::ListBucket]))
            .await;
    let (code, json_text) = check(&uri, &lister, &["--output", "json", "--cors-mode", "ignore"]);
    assert_eq!(code, 1, "{json_text}");
    let report: Value = serde_json::from_str(&json_text).expect("--output json prints JSON");
    assert_eq!(report["ready"], false);
    let ready = report["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!(ready["reason"], "GetObjectDenied");
    assert_eq!(report["missingPolicy"]["Statement"][0]["Action"][0], "s3:GetObject");
    assert!(report["s3Requests"].as_u64().unwrap() <= 7);

    let out = Command::new(env!("CARGO_BIN_EXE_s3connect"))
        .args(["check", "--uri", &uri])
        .env_remove("AWS_ACCESS_KEY_ID")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "no credentials is a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("AWS_ACCESS_KEY_ID"));

    // Bad keys: the remedy points at the variable to fix, not at a Secret.
    let unknown = s3connect::s3::client::Keys {
        access_key_id: "AKIAUNKNOWN000000001".into(),
        secret_access_key: "s".repeat(40),
        session_token: None,
    };
    let (code, table) = check(&uri, &unknown, &[]);
    assert_eq!(code, 1, "{table}");
    assert!(table.contains("InvalidAccessKeyId") && table.contains("the environment (AWS_ACCESS_KEY_ID)"), "{table}");
    assert!(!table.contains("Secret \""), "{table}");
}

#[tokio::test]
async fn a_ready_connection_is_not_validated_or_written_again_until_due() {
    let _timer = crate::timed!();
    let client = support::client().await;
    let ns = support::namespace(&client, "quiet").await;
    let bucket = s3::bucket("quiet", "us-east-1").await;
    s3::put(&bucket, "images/a.jpg", b"a").await;
    let location = Location::parse(&format!("{bucket}/images/")).unwrap();
    let keys = iam::user_with_policy(
        "quiet",
        &policy(
            &location,
            None,
            &s3connect::validation::required(&[s3connect::api::connection::Usage::Import], Default::default()),
        ),
    )
    .await;
    support::keys_secret(&client, &ns, "keys", &keys).await;
    support::s3_connection(&client, &ns, "c", &bucket, "keys", serde_json::json!({})).await;
    let api = Api::<S3Connection>::namespaced(client.clone(), &ns);
    let ready =
        wait_for(&client, &ns, "c", "Ready", |c| condition(c, "Ready").is_some_and(|r| r.status == "True")).await;

    // Its own status write must not trigger another validation: a few seconds later the
    // object is unchanged and it was validated exactly once.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = api.get("c").await.unwrap();
    assert_eq!(later.metadata.resource_version, ready.metadata.resource_version, "status was written again");
    let owner = format!("{ns}/c");
    let validations =
        log_lines().iter().filter(|l| l["connection"] == owner.as_str() && l["message"] == "validated").count();
    assert_eq!(validations, 1);
}

#[test]
fn the_operator_stops_cleanly_on_sigterm() {
    let _timer = crate::timed!();
    let log = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("operator-sigterm-{}.log", std::process::id()));
    // A namespace of its own, so that it does not race the shared operator.
    let mut child = spawn(&log, &["--namespace", &crate::support::operator::private_namespace("sigterm")]);
    let started = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::fs::read_to_string(&log).unwrap_or_default().contains("operator starting")
    });
    assert!(started, "the operator did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
    std::thread::sleep(Duration::from_millis(500));
    drop(child.stdin.take()); // the wrapper sends SIGTERM
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "exit {status}: {text}");
    assert!(text.contains("s3connect operator stopped"), "{text}");
}

#[tokio::test]
async fn check_reads_every_connection_of_a_file_and_exits_with_the_worst() {
    let _timer = crate::timed!();
    let bucket = s3::bucket("checkall", "us-east-1").await;
    s3::put(&bucket, "images/a.jpg", b"a").await;
    let location = Location::parse(&format!("{bucket}/images/")).unwrap();
    let reader = iam::user_with_policy(
        "checkall",
        &policy(&location, None, &[Action::GetBucketLocation, Action::ListBucket, Action::GetObject]),
    )
    .await;
    let endpoint = &support::env().s3_endpoint;
    let doc = |name: &str, uri: &str, extra: &str| {
        format!(
            "apiVersion: s3connect.io/v1alpha1\nkind: S3Connection\nmetadata: {{name: {name}}}\nspec: {{uri: \"{uri}\", endpoint: \"{endpoint}\", forcePathStyle: true, credentials: {{secretRef: {{name: k}}}}, cors: {{mode: Ignore}}{extra}}}\n"
        )
    };
    let dir = std::env::temp_dir().join(format!("s3connect-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |file: &str, content: String, extra: &[&str]| {
        let path = dir.join(file);
        std::fs::write(&path, content).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_s3connect"))
            .args(["check", "-f", path.to_str().unwrap()])
            .args(extra)
            .env("AWS_ACCESS_KEY_ID", &reader.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &reader.secret_access_key)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let ok = doc("readable", &format!("s3://{bucket}/images/"), "");
    let empty = doc("empty", &format!("s3://{bucket}/nothing/"), "");
    let (code, out, err) = run("two.yaml", format!("{ok}---\nkind: Secret\nmetadata: {{name: k}}\n---\n{empty}"), &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("S3Connection readable:") && out.contains("S3Connection empty:") && out.contains("NoObjects"),
        "{out}"
    );
    let (code, out, _) = run("one.yaml", ok.clone(), &["-o", "yaml"]);
    assert_eq!(code, 0, "{out}");
    let parsed: Value = serde_saphyr::from_str(&out).expect("-o yaml prints YAML");
    assert_eq!((parsed["ready"].as_bool(), parsed["name"].as_str()), (Some(true), Some("readable")));

    let (code, _, err) = run("typo.yaml", doc("typo", &format!("s3://{bucket}/images/"), ", usge: [Export]"), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("spec.usge"), "{err}");
    let (code, out, err) = run("bad-uri.yaml", doc("bad", "s3://Bad_Bucket/", ""), &[]);
    assert_eq!(code, 2, "an invalid uri is bad input: {out}{err}");

    // A store that never answers: progress on stderr, then unreachable within --timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let hung = doc("hung", &format!("s3://{bucket}/images/"), "")
        .replace(endpoint.as_str(), &format!("http://127.0.0.1:{port}"));
    let started = std::time::Instant::now();
    let (code, out, err) = run("hung.yaml", hung, &["--timeout", "3"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    assert!(err.contains("still probing"), "{err}");
    assert!(out.contains("EndpointUnreachable"), "{out}");
}

/// `s3connect check` with only the files and variables given: a scratch HOME, no keys in
/// the environment, instance metadata off.
fn check_with_aws_files(
    dir: &std::path::Path,
    args: &[impl AsRef<std::ffi::OsStr>],
    vars: &[(&str, &str)],
) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_s3connect"))
        .arg("check")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("AWS_CONFIG_FILE", dir.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(vars.iter().copied())
        .output()
        .expect("running s3connect check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn check_takes_credentials_from_profiles_and_the_endpoint_from_the_environment() {
    let _timer = crate::timed!();
    let bucket = s3::bucket("chain", "us-east-1").await;
    s3::put(&bucket, "images/a.jpg", b"a").await;
    let uri = format!("s3://{bucket}/images/");
    let location = Location::parse(&uri).unwrap();
    let actions = [Action::GetBucketLocation, Action::ListBucket, Action::GetObject];
    let reader = iam::user_with_policy("chain", &policy(&location, None, &actions)).await;
    // A user that may only assume a role, and the role, trusting that user, that may read.
    let (assumer, assumer_name) =
        iam::user_with_policy_named("chain-assumer", &iam::allow(&["sts:AssumeRole"], &["*".to_owned()])).await;
    let role = support::unique("chain-role");
    let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::123456789012:user/{assumer_name}")}, "Action": "sts:AssumeRole"}]});
    let created =
        iam::call(&[("Action", "CreateRole"), ("RoleName", &role), ("AssumeRolePolicyDocument", &trust.to_string())])
            .await;
    let role_arn = created.split("<Arn>").nth(1).and_then(|s| s.split('<').next()).expect("the role's ARN").to_owned();
    iam::call(&[
        ("Action", "PutRolePolicy"),
        ("RoleName", &role),
        ("PolicyName", "read"),
        ("PolicyDocument", &policy(&location, None, &actions).to_string()),
    ])
    .await;

    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(support::unique("aws-files"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("credentials"),
        format!(
            "[labelling]\naws_access_key_id = {}\naws_secret_access_key = {}\n\n[base]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            reader.access_key_id, reader.secret_access_key, assumer.access_key_id, assumer.secret_access_key
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("config"),
        format!(
            "[profile labelling]\nregion = us-east-1\n\n[profile base]\nregion = us-east-1\n\n[profile assumed]\nrole_arn = {role_arn}\nsource_profile = base\nregion = us-east-1\n\n[profile process]\ncredential_process = cat {}\n",
            dir.join("process.json").display()
        ),
    )
    .unwrap();
    // What a credential_process prints (a vault helper, say): here, the reader's keys.
    let process = serde_json::json!({"Version": 1, "AccessKeyId": reader.access_key_id, "SecretAccessKey": reader.secret_access_key});
    std::fs::write(dir.join("process.json"), process.to_string()).unwrap();
    let endpoint = support::env().s3_endpoint.clone();
    let base = ["--uri", uri.as_str(), "--force-path-style", "--cors-mode", "ignore"];
    let with = |extra: &[&str]| -> Vec<String> { base.iter().chain(extra).map(|s| s.to_string()).collect() };

    // A static-key profile, by flag and by AWS_PROFILE; the endpoint from AWS_ENDPOINT_URL_S3.
    let s3_endpoint = [("AWS_ENDPOINT_URL_S3", endpoint.as_str())];
    let (code, text) = check_with_aws_files(&dir, &with(&["--profile", "labelling"]), &s3_endpoint);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&endpoint), "the endpoint from the environment was not the one used: {text}");
    let (code, text) = check_with_aws_files(&dir, &base, &[s3_endpoint[0], ("AWS_PROFILE", "labelling")]);
    assert_eq!(code, 0, "{text}");
    // A credential_process profile.
    let (code, text) = check_with_aws_files(&dir, &with(&["--profile", "process"]), &s3_endpoint);
    assert_eq!(code, 0, "{text}");
    // An assume-role profile: STS (the global AWS_ENDPOINT_URL) hands out the role's keys.
    let (code, text) =
        check_with_aws_files(&dir, &with(&["--profile", "assumed"]), &[("AWS_ENDPOINT_URL", endpoint.as_str())]);
    assert_eq!(code, 0, "{text}");
    // The base profile alone may not read the bucket: the role's keys were really used.
    let (code, text) =
        check_with_aws_files(&dir, &with(&["--profile", "base"]), &[("AWS_ENDPOINT_URL", endpoint.as_str())]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("ListBucketDenied") || text.contains("GetBucketLocationDenied"), "{text}");
    // Explicit flags win: --endpoint over the environment's (an unreachable one here).
    let (code, text) = check_with_aws_files(
        &dir,
        &with(&["--profile", "labelling", "--endpoint", endpoint.as_str()]),
        &[("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")],
    );
    assert_eq!(code, 0, "{text}");
    // No credentials anywhere: exit 2, saying where they may come from.
    let (code, text) = check_with_aws_files(&dir, &with(&["--profile", "nobody"]), &s3_endpoint);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--profile") && text.contains("AWS_ACCESS_KEY_ID"), "{text}");
    for keys in [&reader, &assumer] {
        assert!(!text.contains(&keys.secret_access_key));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// versitygw checks every signature: a prefix and a key with spaces, `+`, `%`, `=`, `~`
/// and a non-ASCII letter are listed, read, written and deleted, and the CORS rule is
/// added, each request signed as the store computes it.
#[tokio::test]
async fn check_is_ready_on_versitygw_whatever_the_characters_of_prefix_and_key() {
    let _timer = crate::timed!();
    let env = support::env();
    let target = s3connect::s3::client::Target {
        region: "us-east-1".into(),
        endpoint: Some(env.versitygw.clone()),
        force_path_style: true,
    };
    let admin = support::sdk::sdk(&env.versitygw_root, &target);
    let bucket = support::unique("vgw-chars");
    admin.create_bucket().bucket(&bucket).send().await.expect("creating a bucket on versitygw");
    let prefix = "in put+%=~\u{e9}/";
    let key = format!("{prefix}a b+c%d=e~f \u{fc}.jpg");
    admin.put_object().bucket(&bucket).key(&key).body(b"a".to_vec().into()).send().await.unwrap();

    let uri = format!("s3://{bucket}/{prefix}");
    let out = Command::new(env!("CARGO_BIN_EXE_s3connect"))
        .args(["check", "--uri", &uri, "--endpoint", &env.versitygw, "--force-path-style"])
        .args(["--usage", "import", "--usage", "export", "--apply-cors", "-o", "json"])
        .env("AWS_ACCESS_KEY_ID", &env.versitygw_root.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &env.versitygw_root.secret_access_key)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("running s3connect check");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains("SignatureDoesNotMatch"), "{text}");
    // The key was found and read (not an empty prefix passing for Ready).
    let listed = admin.list_objects_v2().bucket(&bucket).prefix(prefix).send().await.unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, [key.as_str()], "the probe object was left behind or the key is gone");
    let cors = admin.get_bucket_cors().bucket(&bucket).send().await.expect("the CORS rule was added");
    assert_eq!(cors.cors_rules().len(), 1);
}
