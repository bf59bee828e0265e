"""Network fixtures for the tests of proxies and private CAs.

  net_fixtures.py proxy --port P --log FILE
      A forward HTTP proxy: CONNECT tunnels and absolute-form requests (GET http://...),
      each logged as one line to FILE ("CONNECT host:port" or "GET host:port").
  net_fixtures.py tls-front --port P --upstream HOST:PORT --ca-out FILE
      TLS in front of a plain TCP server, with a certificate for 127.0.0.1 signed by a CA
      made on the spot (its certificate written to FILE): an HTTPS S3 endpoint with a
      private CA. Bytes pass through unchanged, so SigV4 signatures stay valid.

Both print READY on stdout once listening, and run until killed. Needs `cryptography`
(the test virtualenv has it) for tls-front only.
"""

import argparse
import datetime
import ipaddress
import os
import select
import socket
import ssl
import sys
import tempfile
import threading
import urllib.parse

LOG_LOCK = threading.Lock()


def pump(a, b):
    """Copies bytes both ways until either side closes."""
    try:
        while True:
            ready, _, _ = select.select([a, b], [], [], 60)
            if not ready:
                return
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                # TLS may hold decrypted bytes select() cannot see.
                while isinstance(s, ssl.SSLSocket) and s.pending():
                    data += s.recv(s.pending())
                (b if s is a else a).sendall(data)
    except OSError:
        return
    finally:
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass


def read_head(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def serve_proxy(conn, log):
    head, rest = read_head(conn)
    if head is None:
        conn.close()
        return
    lines = head.split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    if method == "CONNECT":
        host, port = target.rsplit(":", 1)
        with LOG_LOCK, open(log, "a") as f:
            f.write(f"CONNECT {host}:{port}\n")
        upstream = socket.create_connection((host, int(port)), timeout=10)
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if rest:
            upstream.sendall(rest)
        pump(conn, upstream)
        return
    url = urllib.parse.urlsplit(target)
    host, port = url.hostname, url.port or 80
    with LOG_LOCK, open(log, "a") as f:
        f.write(f"{method} {host}:{port}\n")
    path = url.path + (f"?{url.query}" if url.query else "")
    # One request per connection: the client is told so, and the upstream sees origin-form.
    kept = [l for l in lines[1:] if not l.lower().startswith(("proxy-connection:", "connection:", "keep-alive:"))]
    upstream = socket.create_connection((host, port), timeout=10)
    upstream.sendall(("\r\n".join([f"{method} {path} {version}", *kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1") + rest)
    pump(conn, upstream)


def proxy(args):
    listener = socket.create_server(("127.0.0.1", args.port))
    print("READY", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve_proxy, args=(conn, args.log), daemon=True).start()


def certificates(ca_out):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    valid = lambda b: b.not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "s3connect test CA")])
    ca = (valid(x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
                .serial_number(x509.random_serial_number()))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (valid(x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
                  .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number()))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    with open(ca_out, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    folder = tempfile.mkdtemp(prefix="s3connect-tls-")
    cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


def tls_front(args):
    cert, key = certificates(args.ca_out)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    host, port = args.upstream.rsplit(":", 1)
    listener = socket.create_server(("127.0.0.1", args.port))
    print("READY", flush=True)

    def serve(conn):
        try:
            tls = context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            conn.close()  # a client that does not trust the CA hangs up here
            return
        upstream = socket.create_connection((host, int(port)), timeout=10)
        pump(tls, upstream)

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("proxy")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", required=True)
    t = sub.add_parser("tls-front")
    t.add_argument("--port", type=int, required=True)
    t.add_argument("--upstream", required=True)
    t.add_argument("--ca-out", required=True)
    args = ap.parse_args()
    (proxy if args.command == "proxy" else tls_front)(args)


if __name__ == "__main__":
    sys.exit(main())
