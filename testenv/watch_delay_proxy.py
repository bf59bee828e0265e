"""An HTTPS proxy in front of kube-apiserver that delays watch streams, for tests of an
operator whose watch cache lags behind the API server (as after an API server restart, or
on a loaded control plane).

Every request is passed to the API server as it came (the bearer token included); the
answer of a watch (`?watch=true`) is passed back line by line, each watch event `--delay`
seconds after it arrived, in order; every other answer at once. So a client's reads are
fresh while its cache is behind: exactly the situation in which a controller must not
decide from the cache alone.

It serves the API server's own certificate (kube-apiserver writes apiserver.crt and
apiserver.key into its --cert-dir), so a kubeconfig that trusts the API server trusts the
proxy too. While the API server is down, requests are answered 503.

Standard library only. Prints the port it listens on to stdout, then serves until killed
or until its stdin closes.
"""

import argparse
import http.client
import http.server
import queue
import ssl
import sys
import threading
import time
import urllib.parse

HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
       "transfer-encoding", "upgrade", "content-length"}
UPSTREAM = None
UPSTREAM_CTX = None
DELAY = 2.0


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.forward()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPSConnection(UPSTREAM.hostname, UPSTREAM.port, context=UPSTREAM_CTX, timeout=600)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
        except OSError:
            conn.close()
            message = b'{"kind":"Status","apiVersion":"v1","status":"Failure","message":"the API server is down","code":503}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(message)))
            self.end_headers()
            self.wfile.write(message)
            return
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        watch = query.get("watch", [""])[0] in ("true", "1")
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in HOP:
                self.send_header(k, v)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if watch:
                self.relay_delayed(resp)
            else:
                while True:
                    data = resp.read1(65536)
                    if not data:
                        break
                    self.chunk(data)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (OSError, http.client.HTTPException):
            self.close_connection = True
        finally:
            conn.close()

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def relay_delayed(self, resp):
        """Each line goes out DELAY seconds after it arrived, in order."""
        lines = queue.Queue()

        def read():
            try:
                while True:
                    line = resp.readline()
                    if not line:
                        break
                    lines.put((time.monotonic() + DELAY, line))
            except (OSError, http.client.HTTPException):
                pass
            lines.put((time.monotonic() + DELAY, None))

        threading.Thread(target=read, daemon=True).start()
        while True:
            due, line = lines.get()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if line is None:
                return
            self.chunk(line)


def main():
    global UPSTREAM, UPSTREAM_CTX, DELAY
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", required=True, help="the API server, https://127.0.0.1:PORT")
    ap.add_argument("--cert-dir", required=True, help="the API server's --cert-dir")
    ap.add_argument("--delay", type=float, default=2.0, help="seconds each watch event is held back")
    args = ap.parse_args()
    UPSTREAM = urllib.parse.urlsplit(args.upstream)
    UPSTREAM_CTX = ssl.create_default_context(cafile=f"{args.cert_dir}/apiserver.crt")
    DELAY = args.delay
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(f"{args.cert_dir}/apiserver.crt", f"{args.cert_dir}/apiserver.key")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # Ends with the test that started it.
    sys.stdin.read()


if __name__ == "__main__":
    main()
