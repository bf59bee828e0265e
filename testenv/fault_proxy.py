"""A fault-injecting HTTP proxy in front of the test S3 server, for tests of a flaky network.

Every request is passed to the upstream server unchanged (Host header included, so SigV4
signatures stay valid), except that for the buckets a test names, a share of requests is
answered with an S3 error (a status and code, such as 500 InternalError or 503 SlowDown)
or is accepted and never answered ("hang"). Faults are scoped to a bucket (the first path
segment: clients use path-style addressing) so that tests running at the same time do not
see each other's faults.

A fault can be narrowed to one S3 operation by its method and a query parameter it
carries ("method": "GET", "query": "cors" for GetBucketCors, "location" for
GetBucketLocation), and can answer with a body of its own ("body", "content_type")
instead of an S3 error: what a TLS-inspecting proxy or a misbehaving store might answer.
"headers" are added to the answer either way (an S3 request id, say).

Query-protocol calls (IAM, STS: POST / with an Action) are under the bucket "" and can be
narrowed to one action; "lose_answer" passes the request on and then hangs up without the
answer (the call happened, the caller cannot know), "count" limits how many. Faults for
one IAM user's calls go under "iam:<user>" (the call's UserName) and are counted there:
tests run side by side, and another test's operator must neither take nor clear them.

Control (no auth, loopback only):
  POST /_faults  {"bucket": b, "share": 0.15, "status": 500, "code": "InternalError"}
                 {"bucket": b, "hang": true}      {"bucket": b}  (clears)
                 {"bucket": "iam:u", "action": "CreateAccessKey", "lose_answer": true, "count": 1}
                 {"bucket": b, "every": 2, "status": 503, "code": "SlowDown"}  (every 2nd request)
                 {"bucket": b, "method": "GET", "query": "cors", "status": 200,
                  "body": "<html>...</html>", "content_type": "text/html"}
                 {"bucket": b, "status": 500, "code": "InternalError",
                  "headers": {"x-amz-request-id": "ID", "x-amz-id-2": "EXTENDED"}}
  GET  /_faults  -> {bucket: {"requests": n, "injected": n}}

Standard library only.
"""

import argparse
import http.client
import http.server
import json
import random
import threading
import time
import urllib.parse

LOCK = threading.Lock()
FAULTS = {}  # bucket -> settings
STATS = {}  # bucket -> {"requests", "injected"}
UPSTREAM = None


def error_body(code, message):
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
    ).encode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status, body, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def control(self, body):
        if self.command == "POST":
            settings = json.loads(body or b"{}")
            bucket = settings.pop("bucket")
            with LOCK:
                if settings:
                    FAULTS[bucket] = settings
                else:
                    FAULTS.pop(bucket, None)
            return self.reply(200, b'{"ok": true}', [("Content-Type", "application/json")])
        with LOCK:
            out = json.dumps(STATS).encode()
        return self.reply(200, out, [("Content-Type", "application/json")])

    def handle_any(self):
        body = self.body()
        split = urllib.parse.urlsplit(self.path)
        path = split.path
        query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        if path.rstrip("/") == "/_faults":
            return self.control(body)
        bucket = path.lstrip("/").split("/", 1)[0]
        form = urllib.parse.parse_qs(body.decode("latin-1")) if bucket == "" else {}
        action, user = form.get("Action", [None])[0], form.get("UserName", [None])[0]
        with LOCK:
            if bucket == "" and user and f"iam:{user}" in FAULTS:
                bucket = f"iam:{user}"
            fault = dict(FAULTS.get(bucket) or {})
            stats = STATS.setdefault(bucket, {"requests": 0, "injected": 0})
            stats["requests"] += 1
            if "every" in fault:  # deterministic: every n-th request of the bucket
                inject = stats["requests"] % int(fault["every"]) == 0
            else:
                inject = bool(fault) and random.random() < float(fault.get("share", 1.0))
            if fault.get("action") and fault["action"] != action:
                inject = False
            if fault.get("method") and fault["method"] != self.command:
                inject = False
            if fault.get("query") and fault["query"] not in query:
                inject = False
            if inject and "count" in fault:
                left = int(FAULTS[bucket]["count"])
                inject = left > 0
                FAULTS[bucket]["count"] = left - 1
            if inject:
                stats["injected"] += 1
        if inject and fault.get("hang"):
            # Accept and never answer, until the client gives up (or 10 minutes pass).
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                time.sleep(1)
            self.close_connection = True
            return None
        if inject and fault.get("lose_answer"):
            conn = http.client.HTTPConnection(UPSTREAM[0], UPSTREAM[1], timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "content-length")}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                conn.getresponse().read()  # it happened upstream; the caller never hears of it
            finally:
                conn.close()
            self.close_connection = True
            return None
        if inject:
            status = int(fault.get("status", 500))
            extra = list((fault.get("headers") or {}).items())
            if "body" in fault:
                return self.reply(status, fault["body"].encode(),
                                  [("Content-Type", fault.get("content_type", "text/html"))] + extra)
            return self.reply(status, error_body(fault.get("code", "InternalError"), "injected by the test proxy"),
                              [("Content-Type", "application/xml")] + extra)
        conn = http.client.HTTPConnection(UPSTREAM[0], UPSTREAM[1], timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "content-length")}
            headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            passed = [(k, v) for k, v in response.getheaders()
                      if k.lower() not in ("content-length", "transfer-encoding", "connection")]
            return self.reply(response.status, data, passed)
        finally:
            conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = handle_any


def main():
    global UPSTREAM
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="http://host:port of the S3 server")
    args = ap.parse_args()
    up = urllib.parse.urlsplit(args.upstream)
    UPSTREAM = (up.hostname, up.port)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
