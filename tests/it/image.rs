//! The container image as it ships: built by scripts/image (buildah, no container engine)
//! from this build's binary, unpacked, and its entrypoint run in a chroot of its root
//! filesystem as 65532:65532 with nothing writable at all (the root read-only, /tmp a
//! read-only tmpfs holding only the kubeconfig), as the chart runs it
//! (readOnlyRootFilesystem, no volume), against the test API server and S3 server: no
//! shell and nothing from the host.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::support::operator::{private_namespace, wait_for};
use crate::support::{self, iam, s3};

fn blob(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

fn json_blob(dir: &Path, digest: &str) -> Value {
    serde_json::from_slice(&std::fs::read(blob(dir, digest)).unwrap()).unwrap()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The paths in a layer tar, without directories.
fn files(layer: &Path) -> Vec<String> {
    let list = run(Command::new("tar").arg("-tf").arg(layer));
    list.lines().filter(|l| !l.ends_with('/')).map(|l| l.trim_start_matches("./").to_owned()).collect()
}

/// The Dockerfile's final stage: the files it adds on top of its base (COPY destinations).
fn dockerfile_last_layer() -> Vec<String> {
    let text = std::fs::read_to_string(support::repo_root().join("Dockerfile")).unwrap();
    let last_stage = text.rsplit("\nFROM ").next().unwrap();
    last_stage
        .lines()
        .filter(|l| l.starts_with("COPY "))
        .map(|l| l.split_whitespace().last().unwrap().trim_start_matches('/').to_owned())
        .collect()
}

/// The operator of the image, in a private mount namespace: the unpacked root bound
/// read-only, a tmpfs on /tmp with the kubeconfig (then read-only too), then chroot as
/// 65532:65532.
fn start_in_chroot(rootfs: &Path, kubeconfig_dir: &Path, args: &[String], env: &[(&str, &str)]) -> std::process::Child {
    let script = r#"set -e
root=$1; config=$2; shift 2
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t tmpfs -o mode=1777,size=16m tmpfs "$root/tmp"
cp "$config"/* "$root/tmp/"
chmod 0644 "$root"/tmp/*
mount -o remount,ro "$root/tmp"
exec chroot --userspec=65532:65532 "$root" /usr/local/bin/s3connect "$@"
"#;
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", script, "image"])
        .arg(rootfs)
        .arg(kubeconfig_dir)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("KUBECONFIG", "/tmp/kubeconfig")
        .env("HOME", "/home/nonroot")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("unshare")
}

#[tokio::test]
async fn the_image_runs_its_entrypoint_as_65532_on_a_read_only_root_without_the_host() {
    let _timer = crate::timed!();
    assert_eq!(
        run(Command::new("id").arg("-u")).trim(),
        "0",
        "the image test needs root (buildah's storage, chroot and a private mount namespace), as on CI"
    );
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // This build's binary, without its debug sections (what the image carries of it is what
    // the release carries: the same libraries, ldd says).
    let binary = dir.join("s3connect");
    run(Command::new("strip").arg("-o").arg(&binary).arg(env!("CARGO_BIN_EXE_s3connect")));
    let archive = dir.join("image.tar");
    run(Command::new(support::repo_root().join("scripts/image"))
        .arg("--binary")
        .arg(&binary)
        .arg("--output")
        .arg(&archive));

    // Unpack the OCI archive: index -> manifest -> config and layers.
    let oci = dir.join("oci");
    std::fs::create_dir_all(&oci).unwrap();
    run(Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(&oci));
    let index: Value = serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    let manifest = json_blob(&oci, index["manifests"][0]["digest"].as_str().unwrap());
    let config = json_blob(&oci, manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(config["config"]["User"], "65532:65532", "{config:#}");
    assert_eq!(config["config"]["Entrypoint"], json!(["/usr/local/bin/s3connect"]));
    assert_eq!(config["config"]["Cmd"], json!(["operator", "--leader-election"]));
    let annotations = &manifest["annotations"];
    assert_eq!(annotations["org.opencontainers.image.version"], env!("CARGO_PKG_VERSION"), "{annotations:#}");
    let revision = run(Command::new("git").arg("-C").arg(support::repo_root()).args(["rev-parse", "HEAD"]));
    assert_eq!(annotations["org.opencontainers.image.revision"], revision.trim());
    assert!(annotations["org.opencontainers.image.source"].as_str().is_some_and(|s| s.starts_with("https://")));

    let layers: Vec<PathBuf> =
        manifest["layers"].as_array().unwrap().iter().map(|l| blob(&oci, l["digest"].as_str().unwrap())).collect();
    // The last layer is the binary alone, as the Dockerfile's last stage adds it.
    assert_eq!(
        files(layers.last().unwrap()),
        dockerfile_last_layer(),
        "the image's last layer and the Dockerfile's differ"
    );
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    for layer in &layers {
        run(Command::new("tar").arg("-xf").arg(layer).arg("-C").arg(&rootfs));
    }
    // Nothing but what it runs: no shell, no package manager.
    for absent in ["bin/sh", "usr/bin/sh", "bin/bash", "usr/bin/apt-get"] {
        assert!(!rootfs.join(absent).exists(), "{absent} is in the image");
    }
    let mut all: Vec<String> =
        layers.iter().flat_map(|l| files(l)).filter(|f| !f.starts_with("usr/share/zoneinfo/")).collect();
    all.sort();
    assert_eq!(
        all,
        [
            "etc/group",
            "etc/passwd",
            "etc/ssl/certs/ca-certificates.crt",
            "lib/x86_64-linux-gnu/libc.so.6",
            "lib/x86_64-linux-gnu/libgcc_s.so.1",
            "lib/x86_64-linux-gnu/libm.so.6",
            "lib64/ld-linux-x86-64.so.2",
            "usr/local/bin/s3connect",
        ],
        "the image's files (time zones aside)"
    );

    // The kubeconfig, with its CA, for /tmp inside.
    let host = support::env();
    let kube_dir = dir.join("kube");
    std::fs::create_dir_all(&kube_dir).unwrap();
    let mut kubeconfig: Value = serde_json::from_str(&std::fs::read_to_string(&host.kubeconfig).unwrap()).unwrap();
    let ca = kubeconfig["clusters"][0]["cluster"]["certificate-authority"].as_str().unwrap().to_owned();
    std::fs::copy(&ca, kube_dir.join("ca.crt")).unwrap();
    kubeconfig["clusters"][0]["cluster"]["certificate-authority"] = json!("/tmp/ca.crt");
    std::fs::write(kube_dir.join("kubeconfig"), kubeconfig.to_string()).unwrap();

    let ns = private_namespace("image");
    let client = support::client().await;
    support::named_namespace(&client, &ns).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let args: Vec<String> = [
        "operator",
        "--namespace",
        &ns,
        "--allowed-endpoints",
        "http://127.0.0.1:*",
        "--platform-url",
        &host.platform_url,
        "--metrics-addr",
        &format!("127.0.0.1:{port}"),
        "--log-format",
        "json",
    ]
    .map(str::to_owned)
    .to_vec();

    // Without a CA bundle the operator refuses to start: the run below proves it found the
    // image's own.
    let mut no_ca = start_in_chroot(&rootfs, &kube_dir, &args, &[("SSL_CERT_FILE", "/nonexistent.pem")]);
    let status = no_ca.wait().unwrap();
    let mut err = String::new();
    no_ca.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!status.success() && err.contains("no CA certificates"), "{status}: {err}");

    let mut operator = start_in_chroot(&rootfs, &kube_dir, &args, &[]);
    let bucket = s3::bucket("image", "us-east-1").await;
    s3::put(&bucket, "images/a.jpg", b"a").await;
    let location = s3connect::s3::uri::Location::parse(&format!("{bucket}/images/")).unwrap();
    let actions = s3connect::validation::required(&[s3connect::api::connection::Usage::Import], Default::default());
    let keys = iam::user_with_policy("image", &s3connect::s3::policy::policy(&location, None, &actions)).await;
    support::keys_secret(&client, &ns, "keys", &keys).await;
    support::s3_connection(&client, &ns, "in-image", &bucket, "keys", json!({})).await;
    let ready = wait_for(&client, &ns, "in-image", "Ready from the image's operator", |c| {
        crate::support::operator::condition(c, "Ready").is_some_and(|r| r.status == "True")
    })
    .await;
    assert!(ready.status.is_some());
    // The chart's probes (/healthz, /readyz) and the metrics answer.
    for (path, expect) in [("healthz", "ok"), ("readyz", "ok"), ("metrics", "s3connect_reconciliations_total")] {
        let out = run(Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{port}/{path}")]));
        assert!(out.contains(expect), "/{path}: {out}");
    }
    assert!(operator.try_wait().unwrap().is_none(), "the operator in the image exited");
    // It runs as 65532 (the process's ids, from the host's view): unshare, sh and chroot
    // each exec the next, so the child is the operator itself.
    let proc_dir = format!("/proc/{}", operator.id());
    let cmdline = std::fs::read_to_string(format!("{proc_dir}/cmdline")).unwrap();
    assert!(cmdline.starts_with("/usr/local/bin/s3connect\0operator"), "{cmdline:?}");
    let status = std::fs::read_to_string(format!("{proc_dir}/status")).unwrap();
    for key in ["Uid:", "Gid:"] {
        let ids = status.lines().find(|l| l.starts_with(key)).unwrap().to_owned();
        assert!(ids.split_whitespace().skip(1).all(|u| u == "65532"), "{ids}");
    }
    // Nothing is writable: its root and /tmp are read-only (as its own mount table says).
    let mounts = std::fs::read_to_string(format!("{proc_dir}/mounts")).unwrap();
    let option = |point: &str| {
        mounts.lines().rev().find(|l| l.split_whitespace().nth(1) == Some(point)).map(|l| {
            let options = l.split_whitespace().nth(3).unwrap_or_default().to_owned();
            options.split(',').next().unwrap_or_default().to_owned()
        })
    };
    assert_eq!((option("/"), option("/tmp")), (Some("ro".into()), Some("ro".into())), "{mounts}");
    let _ = operator.kill();
    let _ = operator.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
