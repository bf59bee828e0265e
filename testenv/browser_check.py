"""Load images from S3 in headless Chromium as a labelling interface does, and say what the
browser allowed.

A page is served from a local origin (plain HTTP on 127.0.0.1, or HTTPS under a given host
name that Chromium maps to it with a test certificate it is told to trust). The page, for
each presigned URL it is given:
  fetch      fetch() of a presigned GET URL (a CORS request with no preflight)
  canvas     an <img crossOrigin="anonymous"> drawn on a canvas and one pixel read back
             (the browser refuses getImageData on an image loaded without CORS)
  preflight  fetch() with a header that is not CORS-safelisted, so the browser sends an
             OPTIONS preflight first
and posts what happened back to this script, which prints it as one JSON object:
  {"origin": "...", "fetch": {"ok": bool, "detail": "..."}, "canvas": ..., "preflight": ...}

Exit status 3 (and a message) when Chromium is not installed: testenv/setup installs it.
"""

import argparse
import base64
import datetime
import hashlib
import http.server
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading

PAGE = """<!doctype html><meta charset="utf-8"><title>s3connect browser check</title>
<body><pre id="out">running</pre><script>
const URLS = %s;
async function attempt(fn) {
  try { return {ok: true, detail: String(await fn())}; }
  catch (e) { return {ok: false, detail: String(e)}; }
}
async function body(r) {
  if (!r.ok) throw new Error('HTTP ' + r.status);
  return (await r.arrayBuffer()).byteLength + ' bytes';
}
function pixel(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.crossOrigin = 'anonymous';
    img.onload = () => {
      try {
        const c = document.createElement('canvas');
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const g = c.getContext('2d');
        g.drawImage(img, 0, 0);
        resolve(Array.from(g.getImageData(0, 0, 1, 1).data).join(','));
      } catch (e) { reject(e); }
    };
    img.onerror = () => reject(new Error('the image did not load (refused by CORS or missing)'));
    img.src = url;
  });
}
(async () => {
  const r = {origin: location.origin};
  r.fetch = await attempt(async () => body(await fetch(URLS.fetch, {cache: 'no-store'})));
  r.canvas = await attempt(() => pixel(URLS.canvas));
  r.preflight = await attempt(async () =>
    body(await fetch(URLS.preflight, {cache: 'no-store', headers: {'X-Annotation-Tool': 's3connect-test'}})));
  document.getElementById('out').textContent = JSON.stringify(r);
  await fetch('/result', {method: 'POST', body: JSON.stringify(r)});
})();
</script>
"""


def test_certificate(host, folder):
    """A self-signed certificate for `host`, and the base64 SHA-256 of its public key (what
    Chromium's --ignore-certificate-errors-spki-list takes)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert_path, key_path, base64.b64encode(hashlib.sha256(spki).digest()).decode()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fetch", required=True, help="presigned URL for the plain fetch")
    ap.add_argument("--canvas", required=True, help="presigned URL of an image for the canvas read")
    ap.add_argument("--preflight", required=True, help="presigned URL for the preflighted fetch")
    ap.add_argument("--https-host", help="serve the page as https://HOST (e.g. pro.labellerr.com)")
    ap.add_argument("--port", type=int, default=0, help="the page server's port on 127.0.0.1 (default: any)")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--chromium", default=os.environ.get("S3CONNECT_CHROMIUM", "chromium"))
    args = ap.parse_args()

    chromium = shutil.which(args.chromium)
    if chromium is None:
        print(f"{args.chromium} is not installed: run testenv/setup, which installs Debian's chromium package",
              file=sys.stderr)
        return 3

    page = (PAGE % json.dumps({"fetch": args.fetch, "canvas": args.canvas, "preflight": args.preflight})).encode()
    result = {}
    done = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            result.update(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()
            done.set()

        def log_message(self, *_):
            pass

    work = tempfile.mkdtemp(prefix="s3connect-browser-")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    port = server.server_address[1]
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-default-apps", "--disable-extensions", f"--user-data-dir={work}/profile"]
    if args.https_host:
        cert, key, spki = test_certificate(args.https_host, work)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
        server.socket = tls.wrap_socket(server.socket, server_side=True)
        # The host name resolves to this server; only this test certificate is trusted
        # beyond the usual ones.
        flags += [f"--host-resolver-rules=MAP {args.https_host}:443 127.0.0.1:{port}",
                  f"--ignore-certificate-errors-spki-list={spki}"]
        url = f"https://{args.https_host}/"
    else:
        url = f"http://127.0.0.1:{port}/"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = subprocess.Popen([chromium, *flags, url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if not done.wait(args.timeout):
            browser.kill()
            err = browser.stderr.read().decode(errors="replace")[-2000:]
            print(f"the page at {url} did not report within {args.timeout} s; Chromium said:\n{err}", file=sys.stderr)
            return 1
    finally:
        browser.kill()
        browser.wait()
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
