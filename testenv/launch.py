#!/usr/bin/env python3
"""Start a real, local test environment: etcd + kube-apiserver + moto's S3/IAM server +
the Labellerr platform stand-in (testenv/labellerr_standin.py) + versitygw (an S3 server
that answers CORS as S3 does, for the browser test).

Used by the integration tests, by the demo and by hand. It picks free loopback ports,
waits until every component is ready, writes a kubeconfig and an env file, installs the
CRDs, turns IAM enforcement on in the S3 server (with an admin user for fixtures), and
prints `READY <env-file>` on stdout.

It also starts testenv/fault_proxy.py in front of the S3 server, for tests that need a
flaky S3, and restarts kube-apiserver (same port, certificates and data) on SIGUSR1, for
tests of what an operator does when the API server goes away and comes back.

It tears everything down (and removes its run directory) when:
  * stdin reaches EOF, with --until-stdin-closes: the owner process died, however it died
    (exit, panic, SIGKILL), because the kernel closes its end of the pipe;
  * it gets SIGINT or SIGTERM;
  * its parent process goes away.
Each child also gets PR_SET_PDEATHSIG=SIGKILL, so even a SIGKILLed launcher leaves no
process behind.

Standard library only: it must run before any virtualenv exists.
"""

import argparse
import ctypes
import hashlib
import json
import os
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PR_SET_PDEATHSIG = 1


def log(msg):
    print(f"testenv: {msg}", file=sys.stderr, flush=True)


def versions():
    out = {}
    with open(os.path.join(ROOT, "testenv", "versions.env")) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                out[k] = v
    return out


def go_key():
    """The key testenv/setup gives its Go builds: the module (go.mod, go.sum) and its own programs."""
    h = hashlib.sha256()
    for f in ("go.mod", "go.sum", "etcd/main.go", "kstatus/main.go"):
        with open(os.path.join(ROOT, "testenv", "go", f), "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()[:12]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent():
    # Runs in the child between fork and exec: if the launcher dies, so does the child.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Env:
    def __init__(self, run_dir, cache):
        self.run_dir = run_dir
        self.cache = cache
        self.children = []  # (name, Popen)
        self.commands = {}  # name -> (argv, env), for restarts

    def spawn(self, name, argv, env=None):
        self.commands[name] = (argv, env)
        logf = open(os.path.join(self.run_dir, f"{name}.log"), "ab")
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=die_with_parent,
            start_new_session=True,
        )
        self.children.append((name, p))
        return p

    def restart(self, name):
        """Stops the child `name` and starts it again with the same command."""
        for i, (n, p) in enumerate(self.children):
            if n == name:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
                    try:
                        p.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        os.killpg(p.pid, signal.SIGKILL)
                        p.wait()
                del self.children[i]
                break
        argv, env = self.commands[name]
        return self.spawn(name, argv, env)

    def check_alive(self):
        for name, p in self.children:
            if p.poll() is not None:
                tail = self.tail(name)
                raise RuntimeError(f"{name} exited with {p.returncode}; last log lines:\n{tail}")

    def tail(self, name, n=15):
        try:
            with open(os.path.join(self.run_dir, f"{name}.log"), "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        # One at a time, in reverse start order: the API server must not spend its
        # shutdown retrying an etcd that is already gone.
        for _, p in reversed(self.children):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(timeout=10)
                except ProcessLookupError:
                    pass
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        self.children.clear()


def wait_until(what, check, env, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        env.check_alive()
        try:
            if check():
                return
        except Exception as e:  # readiness probes fail in many ways until they don't
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout}s: {last}")


def start_etcd(env, binary):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env.spawn("etcd", [
        binary,
        "--data-dir", os.path.join(env.run_dir, "etcd"),
        "--listen-client-urls", url,
        "--advertise-client-urls", url,
        "--listen-peer-urls", "http://127.0.0.1:0",
        "--unsafe-no-fsync",
        "--log-level", "warn",
    ])
    yield url

    def healthy():
        with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
            return json.load(r).get("health") == "true"

    wait_until("etcd", healthy, env, 30)
    return url


def start_apiserver(env, binary, etcd_url):
    port = free_port()
    cert_dir = os.path.join(env.run_dir, "pki")
    os.makedirs(cert_dir)
    sa_key = os.path.join(cert_dir, "sa.key")
    subprocess.run(["openssl", "genrsa", "-out", sa_key, "2048"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    token = os.urandom(16).hex()
    token_file = os.path.join(cert_dir, "tokens.csv")
    with open(token_file, "w") as f:
        f.write(f'{token},admin,admin-uid,"system:masters"\n')
    os.chmod(token_file, 0o600)
    env.spawn("kube-apiserver", [
        binary,
        "--etcd-servers", etcd_url,
        "--cert-dir", cert_dir,
        "--secure-port", str(port),
        "--bind-address", "127.0.0.1",
        "--advertise-address", "127.0.0.1",
        # Nothing here needs the `kubernetes` Service's endpoints, and 1.37 refuses to
        # reconcile them for a loopback address.
        "--endpoint-reconciler-type", "none",
        "--service-cluster-ip-range", "10.0.0.0/24",
        "--allow-privileged=true",
        "--disable-admission-plugins", "ServiceAccount",
        # As OpenShift does: setting blockOwnerDeletion needs update on the owner's
        # finalizers, so the chart's RBAC is tested for it.
        "--enable-admission-plugins", "OwnerReferencesPermissionEnforcement",
        "--authorization-mode", "RBAC",
        "--token-auth-file", token_file,
        "--service-account-issuer", f"https://127.0.0.1:{port}/",
        "--service-account-key-file", sa_key,
        "--service-account-signing-key-file", sa_key,
        "--v", "0",
    ])
    yield None
    server = f"https://127.0.0.1:{port}"
    ca = os.path.join(cert_dir, "apiserver.crt")

    def ready():
        if not os.path.exists(ca):
            return False
        ctx = ssl.create_default_context(cafile=ca)
        req = urllib.request.Request(f"{server}/readyz", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=2, context=ctx) as r:
            return r.status == 200

    wait_until("kube-apiserver", ready, env, 90)
    env.apiserver_ready = ready
    kubeconfig = os.path.join(env.run_dir, "kubeconfig")
    with open(kubeconfig, "w") as f:
        json.dump({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "testenv", "cluster": {"server": server, "certificate-authority": ca}}],
            "users": [{"name": "admin", "user": {"token": token}}],
            "contexts": [{"name": "testenv", "context": {"cluster": "testenv", "user": "admin", "namespace": "default"}}],
            "current-context": "testenv",
        }, f, indent=2)
    os.chmod(kubeconfig, 0o600)
    return server, kubeconfig


def iam_call(endpoint, params):
    """One IAM Query API call while auth is still off (moto then ignores the signature)."""
    body = urllib.parse.urlencode({**params, "Version": "2010-05-08"}).encode()
    req = urllib.request.Request(endpoint + "/", data=body, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded",
        "Authorization": "AWS4-HMAC-SHA256 Credential=bootstrap/20260101/us-east-1/iam/aws4_request, "
                         "SignedHeaders=host, Signature=0",
    })
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def xml_value(doc, tag):
    start = doc.index(f"<{tag}>") + len(tag) + 2
    return doc[start:doc.index(f"</{tag}>", start)]


def start_moto(env, venv):
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    child_env = dict(os.environ)
    # Fixtures are made by an admin IAM user; the server itself must not pick up keys
    # from the caller's environment.
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        child_env.pop(k, None)
    # moto otherwise answers every request with CORS headers allowing any origin, bucket
    # rule or not, so no CORS behaviour seen through it would mean anything.
    child_env["MOTO_DISABLE_GLOBAL_CORS"] = "1"
    # moto's own server, through a wrapper that matches IAM action names case-insensitively
    # as AWS does (see testenv/moto_server.py).
    env.spawn("moto", [os.path.join(venv, "bin", "python"), os.path.join(ROOT, "testenv", "moto_server.py"),
                       "-H", "127.0.0.1", "-p", str(port)], env=child_env)
    yield endpoint

    def up():
        with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=1) as r:
            return r.status == 200

    wait_until("moto", up, env, 60)

    # An admin user for fixtures, then IAM enforcement on: from here on only IAM users'
    # keys are accepted and every S3 action is checked against their policies.
    iam_call(endpoint, {"Action": "CreateUser", "UserName": "testenv-admin"})
    iam_call(endpoint, {
        "Action": "PutUserPolicy", "UserName": "testenv-admin", "PolicyName": "admin",
        "PolicyDocument": json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
    })
    key = iam_call(endpoint, {"Action": "CreateAccessKey", "UserName": "testenv-admin"})
    admin = (xml_value(key, "AccessKeyId"), xml_value(key, "SecretAccessKey"))
    req = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                 headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()
    return endpoint, admin


def start_versitygw(env, binary):
    """versitygw over a folder of the run, with one root user and its own IAM (accounts made
    through its admin API, granted per action by bucket policies): S3 as browsers see it
    (CORS answered per bucket rule, preflights unsigned) and a second S3 implementation that
    checks every signature, for the failure-mode tests."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    keys = ("vgwroot" + os.urandom(4).hex(), os.urandom(20).hex())
    data = os.path.join(env.run_dir, "versitygw")
    iam = os.path.join(env.run_dir, "versitygw-iam")
    os.makedirs(data, exist_ok=True)
    os.makedirs(iam, exist_ok=True)
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ROOT_"))}
    env.spawn("versitygw", [binary, "--access", keys[0], "--secret", keys[1], "--keep-alive",
                            "--iam-dir", iam, "--port", f"127.0.0.1:{port}", "posix", data],
              env=child_env)
    yield None

    def up():
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    wait_until("versitygw", up, env, 30)
    return endpoint, keys


def start_fault_proxy(env, s3_endpoint):
    """testenv/fault_proxy.py in front of the S3 server."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env.spawn("fault-proxy", [sys.executable, os.path.join(ROOT, "testenv", "fault_proxy.py"),
                              "--port", str(port), "--upstream", s3_endpoint])
    yield None

    def up():
        with urllib.request.urlopen(f"{url}/_faults", timeout=1) as r:
            return r.status == 200

    wait_until("fault proxy", up, env, 30)
    return url


def start_platform(env, venv, s3_endpoint):
    """The Labellerr API stand-in, with fresh credentials for this run."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    auth = {"api_key": os.urandom(8).hex(), "api_secret": os.urandom(16).hex(), "client_id": str(1000 + port)}
    auth_file = os.path.join(env.run_dir, "platform-auth.json")
    with open(auth_file, "w") as f:
        json.dump(auth, f)
    os.chmod(auth_file, 0o600)
    env.spawn("platform", [
        os.path.join(venv, "bin", "python"), os.path.join(ROOT, "testenv", "labellerr_standin.py"),
        "--port", str(port), "--s3-endpoint", s3_endpoint, "--auth-file", auth_file,
    ])
    yield None

    def up():
        with urllib.request.urlopen(f"{url}/_admin/health", timeout=1) as r:
            return r.status == 200

    wait_until("platform stand-in", up, env, 30)
    return url, auth


def begin(start):
    """Runs a start_* step up to its spawn; returns what it yields then (an address the
    next steps need) and a function that waits for it to be up and returns its result.
    Every component is spawned from this (the main) thread, as PR_SET_PDEATHSIG ties a
    child to the thread that made it; the waits then overlap."""
    early = next(start)

    def finish():
        try:
            next(start)
        except StopIteration as done:
            return done.value
        raise RuntimeError("a start step yielded twice")

    return early, finish


def apply_crds(kubeconfig, crds):
    if not crds:
        return
    kubectl = ["kubectl", "--kubeconfig", kubeconfig]
    subprocess.run(kubectl + ["apply", "--server-side", "--field-manager=testenv", "-f", crds],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(kubectl + ["wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"],
                   check=True, stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--until-stdin-closes", action="store_true",
                    help="tear down when stdin reaches EOF (how tests tie the environment to their process)")
    ap.add_argument("--crds", default=os.path.join(ROOT, "crds"),
                    help="CRD file or folder to apply once the API server is up ('' for none)")
    ap.add_argument("--run-dir", help="where state and logs go (default: a new folder under the cache)")
    ap.add_argument("--keep", action="store_true", help="keep the run folder (logs) after teardown")
    ap.add_argument("--without-versitygw", action="store_true",
                    help="do not start versitygw (the demo installs only what it runs)")
    args = ap.parse_args()

    v = versions()
    cache = os.environ.get("S3CONNECT_TESTENV_CACHE", os.path.join(ROOT, ".testenv"))
    # The binaries as testenv/setup names them: version and the Go module's content, so a
    # changed pin is "missing: run testenv/setup" rather than an old build.
    def built(name, version):
        return os.path.join(cache, "bin", f"{name}-{version}-{go_key()}")

    apiserver = built("kube-apiserver", v["KUBERNETES_VERSION"])
    etcd_bin = built("etcd", v["ETCD_VERSION"])
    venv = os.path.join(cache, "venv")
    versitygw = built("versitygw", v["VERSITYGW_VERSION"])
    needed = [apiserver, etcd_bin, os.path.join(venv, "bin", "moto_server")]
    if not args.without_versitygw:
        needed.append(versitygw)
    for path in needed:
        if not os.path.exists(path):
            log(f"{path} is missing: run testenv/setup first")
            return 2

    os.makedirs(os.path.join(cache, "run"), exist_ok=True)
    run_dir = args.run_dir or tempfile.mkdtemp(prefix="env-", dir=os.path.join(cache, "run"))
    os.makedirs(run_dir, exist_ok=True)
    env = Env(run_dir, cache)
    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    restart = {"asked": False}
    signal.signal(signal.SIGUSR1, lambda *_: restart.update(asked=True))
    parent = os.getppid()
    started = time.monotonic()
    try:
        # Everything starts at once (kube-apiserver waits for etcd by itself), then each is
        # waited for: the slowest sets the pace, not the sum.
        etcd_url, etcd_up = begin(start_etcd(env, etcd_bin))
        _, apiserver_up = begin(start_apiserver(env, apiserver, etcd_url))
        s3, moto_up = begin(start_moto(env, venv))
        _, platform_up = begin(start_platform(env, venv, s3))
        _, fault_proxy_up = begin(start_fault_proxy(env, s3))
        vgw_up = None if args.without_versitygw else begin(start_versitygw(env, versitygw))[1]
        etcd_up()
        server, kubeconfig = apiserver_up()
        s3, admin = moto_up()
        platform, platform_auth = platform_up()
        fault_proxy = fault_proxy_up()
        vgw, vgw_keys = ("", ("", "")) if vgw_up is None else vgw_up()
        apply_crds(kubeconfig, args.crds)
        version = subprocess.run([apiserver, "--version"], capture_output=True, text=True).stdout.strip()
        env_file = os.path.join(run_dir, "env")
        values = {
            "KUBECONFIG": kubeconfig,
            "S3CONNECT_TEST_APISERVER": server,
            "S3CONNECT_TEST_APISERVER_VERSION": version.replace("Kubernetes ", ""),
            "S3CONNECT_TEST_ETCD_VERSION": v["ETCD_VERSION"],
            "S3CONNECT_TEST_S3_ENDPOINT": s3,
            "S3CONNECT_TEST_S3_FAULT_PROXY": fault_proxy,
            "S3CONNECT_TEST_S3_ADMIN_ACCESS_KEY_ID": admin[0],
            "S3CONNECT_TEST_S3_ADMIN_SECRET_ACCESS_KEY": admin[1],
            "S3CONNECT_TEST_VERSITYGW_ENDPOINT": vgw,
            "S3CONNECT_TEST_VERSITYGW_ACCESS_KEY_ID": vgw_keys[0],
            "S3CONNECT_TEST_VERSITYGW_SECRET_ACCESS_KEY": vgw_keys[1],
            "S3CONNECT_TEST_PLATFORM_URL": platform,
            "S3CONNECT_TEST_PLATFORM_API_KEY": platform_auth["api_key"],
            "S3CONNECT_TEST_PLATFORM_API_SECRET": platform_auth["api_secret"],
            "S3CONNECT_TEST_PLATFORM_CLIENT_ID": platform_auth["client_id"],
            "S3CONNECT_TEST_RUN_DIR": run_dir,
        }
        with open(env_file, "w") as f:
            for k, val in values.items():
                f.write(f"{k}={val}\n")
        os.chmod(env_file, 0o600)
        with open(os.path.join(run_dir, "launcher.pid"), "w") as f:
            f.write(f"{os.getpid()}\n")
        with open(os.path.join(run_dir, "pids"), "w") as f:
            f.write("".join(f"{name} {p.pid}\n" for name, p in env.children))
        log(f"up in {time.monotonic() - started:.1f}s: {version}, etcd {v['ETCD_VERSION']}, "
            f"S3 (moto {v['MOTO_VERSION']}) at {s3}, platform stand-in at {platform}; logs in {run_dir}")
        if not args.until_stdin_closes:
            log(f"use it with: source {env_file}; export KUBECONFIG   (Ctrl-C stops it)")
        print(f"READY {env_file}", flush=True)

        sel = selectors.DefaultSelector()
        if args.until_stdin_closes:
            sel.register(sys.stdin, selectors.EVENT_READ)
        while True:
            for key, _ in sel.select(timeout=1.0):
                if not os.read(key.fileobj.fileno(), 4096):
                    log("stdin closed: tearing down")
                    return 0
            if restart["asked"]:
                restart["asked"] = False
                log("SIGUSR1: restarting kube-apiserver")
                env.restart("kube-apiserver")
                wait_until("kube-apiserver", env.apiserver_ready, env, 90)
                log("kube-apiserver is back")
            env.check_alive()
            if os.getppid() != parent:
                log("parent went away: tearing down")
                return 0
    except KeyboardInterrupt:
        log(f"signal {stop['signal'] or 'SIGINT'}: tearing down")
        return 0
    except Exception as e:
        log(f"failed: {e}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        env.stop()
        if not args.keep and not args.run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
