"""A local stand-in for the Labellerr platform API, for tests and the demo.

It serves every call Labellerr's own Python SDK makes for connections, datasets,
templates, projects and exports, in the shapes the SDK sends and reads (shared/docs
labellerr-api.md), and refuses what the SDK contradicts: a call without `origin`, a drawing
question without its colour option, a dataset or sync path not in the `s3://bucket/prefix/`
form. Success bodies are the platform's `{"message": "200: Success", "response": ...,
"error": null, "tracking_id": ...}`. It is not a fake of calls: its connection test really probes
S3 with the given credentials, and an export really writes its file (json, coco_json,
csv, png) to the connection's bucket and folder with the connection's credentials, so
tests check objects in S3.

Test control lives under /_admin (no auth): seed projects, read state (with every call's
headers and body under `requests`), switch modes (`POST /_admin/modes`: `unknown_as_null`,
ids unknown answered 200 with a null response; `split_text`, different text in `message`
and `error`; `processing_seconds`, a new project stays processing that long before 300;
`page_size`, lists answered a page at a time; `project_list`, "object" or "list"), inject faults
(per endpoint: an HTTP status, a count, a delay, "accept then delay the answer"
(`delay_after`), or "act, then answer with an error" (`after_status`, `after_count`);
optionally only for one project_id, connection_id, connection path or connection name).

Not part of the operator: a development tool only.
"""

import argparse
import csv
import io
import json
import threading
import time
import uuid

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from flask import Flask, jsonify, request
from werkzeug.serving import WSGIRequestHandler

app = Flask(__name__)
LOCK = threading.Lock()
STATE = {
    "auth": {},
    "s3_endpoint": None,
    "projects": {},     # project_id -> [{"file_id", "name", "status", "annotations"}]
    "connections": {},  # connection_id -> {...}
    "exports": {},      # report_id -> {...}
    "datasets": {},     # dataset_id -> {...}
    "faults": {},       # endpoint name -> [{"status", "count", "delay", "delay_after", scope}]
    "calls": [],        # (endpoint, uuid) of every authenticated call
    "held": [],         # answers being held (`delay_after`): {"endpoint", "id", scope...}
    "templates": {},    # template_id -> {"template_id", "template_name", "data_type", "questions"}
    "annotation_projects": {},  # project_id -> {...}
    "requests": [],     # every authenticated call: endpoint, method, path, query, headers, body
    "modes": {"unknown_as_null": False, "split_text": False, "processing_seconds": 0, "page_size": 0,
              "project_list": "object"},
}
# The export guide's fourteen workflow statuses.
FILE_STATUSES = {"assigned", "review", "r_assigned", "client_review", "cr_assigned", "accepted", "rejected",
                 "client_rejected", "skipped", "r_skipped", "cr_skipped", "critical", "r_critical", "cr_critical"}
ORIGIN = "https://pro.labellerr.com"
MAX_RECORDED = 20000
# Calls the SDK sends with the `email_id` header (the api key).
EMAIL_ID_CALLS = {"connections/test", "connections/create", "connections/delete", "connections/list",
                  "projects/delete", "projects/archive", "projects/unarchive"}
REASONS = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 500: "Internal Server Error"}
FORMATS = {"json": "json", "coco_json": "json", "csv": "csv", "png": "zip"}


def scope_key(f):
    return (f.get("project_id"), f.get("connection_id"), f.get("path"), f.get("name"), f.get("project_name"),
            f.get("template_name"))


def matching_fault(name):
    """The first fault for `name` whose scope covers this request (call with LOCK held)."""
    for f in STATE["faults"].get(name, []):
        if in_scope(f):
            return f
    return None


def fault(name):
    """Applies an injected fault for `name`; returns a response to send instead, or None."""
    with LOCK:
        f = matching_fault(name)
        if not f or f.get("count", 0) == 0:
            return None
        f["count"] -= 1
        f = dict(f)
    if f.get("delay"):
        time.sleep(f["delay"])
    status = f.get("status")
    if not status:
        return None
    if status >= 500:
        return jsonify({"error": "Internal server error", "message": "Something went wrong", "tracking_id": tracking()}), status
    return jsonify({"error": f.get("error", "Bad request"), "message": f.get("message", "rejected by the stand-in"),
                    "tracking_id": tracking()}), status


def in_scope(f):
    """A fault may be limited to one project or one connection, so that tests running at
    the same time do not trip over each other's faults."""
    if f.get("project_id") and request.args.get("project_id") != f["project_id"]:
        return False
    body = request.get_json(silent=True) or {}
    if f.get("connection_id") and body.get("connection_id") != f["connection_id"]:
        return False
    if f.get("path") and request.form.get("path") != f["path"]:
        return False
    if f.get("project_name") and body.get("project_name") != f["project_name"]:
        return False
    if f.get("template_name") and not str(body.get("templateName", "")).startswith(f["template_name"]):
        return False
    if f.get("name") and not request.form.get("name", "").startswith(f["name"]):
        return False
    return True


def after(name):
    """After the endpoint acted: hold the answer (`delay_after`, once), and/or replace it with
    an error (`after_status`, for `after_count` calls). Returns the error response or None."""
    with LOCK:
        f = matching_fault(name) or {}
        seconds = f.pop("delay_after", 0)
        status = None
        if f.get("after_status") and f.get("after_count", 0) > 0:
            f["after_count"] -= 1
            status = f["after_status"]
    if seconds:
        # Shown while held, so that a test waits for the answer instead of sleeping past it.
        held = {"endpoint": name, "id": uuid.uuid4().hex, **{k: f.get(k) for k in ("project_id", "connection_id", "path", "name")}}
        with LOCK:
            STATE["held"].append(held)
        try:
            time.sleep(seconds)
        finally:
            with LOCK:
                STATE["held"] = [h for h in STATE["held"] if h["id"] != held["id"]]
    if status:
        return jsonify({"error": "Internal server error", "message": "Something went wrong", "tracking_id": tracking()}), status
    return None


def tracking():
    """The server's own tracking id, which every answer carries (32 hex digits)."""
    return uuid.uuid4().hex


def ok(response):
    """A success as the platform words it."""
    return jsonify({"message": "200: Success", "response": response, "error": None, "tracking_id": tracking()})


def recorded_body():
    if request.form:
        return {k: ("[credentials]" if k == "credentials" else v) for k, v in request.form.items()}
    return request.get_json(silent=True)


def authenticated(name):
    """Checks the SDK's headers and the tracking id, and records the call; returns an error
    response or None."""
    a = STATE["auth"]
    # werkzeug shows `api_key` as `Api-Key`: recorded under the names the SDK sends.
    underscored = ("api-key", "api-secret", "client-id", "email-id")
    headers = {(k.lower().replace("-", "_") if k.lower() in underscored else k.lower()): v
               for k, v in request.headers.items()}
    with LOCK:
        del STATE["requests"][:-MAX_RECORDED]
        STATE["requests"].append({
            "endpoint": name, "method": request.method, "path": request.path, "query": dict(request.args),
            "headers": {k: ("[redacted]" if k == "api_secret" else v) for k, v in headers.items()},
            "body": recorded_body(),
        })
    if (headers.get("api_key"), headers.get("api_secret"), headers.get("client_id")) != (
        a["api_key"], a["api_secret"], a["client_id"],
    ):
        return bad("Invalid api_key, api_secret or client_id", 401)
    if headers.get("origin") != ORIGIN:
        return bad(f"origin must be {ORIGIN}")
    if name in EMAIL_ID_CALLS and headers.get("email_id") != a["api_key"]:
        return bad("email_id is required")
    # The SDK sends no uuid with an export's create; every other call carries one.
    if not request.args.get("uuid") and name != "export/create":
        return bad("uuid is required")
    with LOCK:
        STATE["calls"].append([name, request.args.get("uuid"), request.args.get("project_id")])
    return fault(name)


def not_found(message):
    """An id the platform does not know: a 404, or (mode `unknown_as_null`) a 200 whose
    response is null, as the real platform often answers."""
    if STATE["modes"].get("unknown_as_null"):
        return ok(None)
    return bad(message, 404)


def page(items, key, cursor):
    """`items` as the list endpoints answer them: all at once, or (mode `page_size`) a page
    at a time after the `cursor` query parameter, with `has_more` and the last id."""
    size = STATE["modes"].get("page_size") or 0
    asked = request.args.get("page_size")
    if asked and asked.isdigit() and key == "datasets":
        size = min(size, int(asked)) if size else int(asked)
    if not size:
        return None
    after_id = request.args.get(cursor)
    ids = [i[key[:-1] + "_id"] for i in items]
    if after_id:
        items = items[ids.index(after_id) + 1:] if after_id in ids else []
    chunk = items[:size]
    more = len(items) > size
    return ok({key: chunk, "has_more": more, cursor: chunk[-1][key[:-1] + "_id"] if chunk else None})


def s3_client(credentials):
    return boto3.client(
        "s3",
        aws_access_key_id=credentials["access_key_id"],
        aws_secret_access_key=credentials["secret_access_key"],
        region_name="us-east-1",
        endpoint_url=STATE["s3_endpoint"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def split_path(path):
    path = path[len("s3://"):] if path.startswith("s3://") else path
    bucket, _, prefix = path.partition("/")
    return bucket, prefix


def bad(message, status=400):
    """A refusal: the text in both fields, or (mode `split_text`) the status line in
    `message` and the text in `error`, as real answers often are."""
    if STATE["modes"].get("split_text"):
        return jsonify({"message": f"{status}: {REASONS.get(status, 'Error')}", "error": message, "response": None,
                        "tracking_id": tracking()}), status
    return jsonify({"error": message, "message": message, "response": None, "tracking_id": tracking()}), status


def s3_path(path):
    """The dataset and sync path form s3connect decided on: `s3://bucket/prefix/`."""
    return isinstance(path, str) and path.startswith("s3://") and len(path) > len("s3://") and path.endswith("/")


def form_credentials():
    """The `credentials` form field: a JSON string with the S3 keys, or None."""
    try:
        return json.loads(request.form.get("credentials", ""))
    except ValueError:
        return None


@app.post("/connectors/connections/test")
def test_connection():
    err = authenticated("connections/test")
    if err:
        return err
    form = request.form
    if form.get("connection_id"):
        # Testing an existing connection (the SDK's `connection.test`): its own keys.
        with LOCK:
            c = STATE["connections"].get(form["connection_id"])
        if c is None:
            return not_found("Connection not found")
        creds = c["credentials"]
    else:
        creds = form_credentials()
    if creds is None:
        return bad("credentials must be a JSON string")
    if form.get("connector") != "s3":
        return bad("connector must be s3")
    kind = form.get("connection_type")
    if kind not in ("import", "export"):
        return bad("connection_type must be import or export")
    if form.get("data_type") not in ("image", "video", "audio", "document", "text"):
        return bad("data_type is invalid")
    bucket, prefix = split_path(form.get("path", ""))
    s3 = s3_client(creds)
    try:
        s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        if kind == "export":
            key = f"{prefix}.labellerr-connection-test"
            s3.put_object(Bucket=bucket, Key=key, Body=b"connection test")
            s3.delete_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError) as e:
        code = getattr(e, "response", {}).get("Error", {}).get("Code", type(e).__name__)
        return bad(f"Connection test failed: {code}")
    return ok({"message": "Connection successful"})


@app.post("/connectors/connections/create")
def create_connection():
    err = authenticated("connections/create")
    if err:
        return err
    form = request.form
    creds = form_credentials()
    if creds is None:
        return bad("credentials must be a JSON string")
    # The SDK's create sends no data_type (an older one did: both are taken).
    for field in ("client_id", "connector", "name", "connection_type"):
        if not form.get(field):
            return bad(f"{field} is required")
    if form["connection_type"] not in ("import", "export"):
        return bad("connection_type must be import or export")
    connection_id = uuid.uuid4().hex
    with LOCK:
        STATE["connections"][connection_id] = {
            "connection_id": connection_id,
            "name": form["name"],
            "description": form.get("description", ""),
            "connection_type": form["connection_type"],
            "connector": form["connector"],
            "data_type": form.get("data_type"),
            "credentials": creds,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "created_by": request.headers.get("email_id", ""),
        }
    return after("connections/create") or ok({"connection_id": connection_id})


@app.post("/connectors/connections/delete")
def delete_connection():
    err = authenticated("connections/delete")
    if err:
        return err
    connection_id = (request.get_json(silent=True) or {}).get("connection_id")
    with LOCK:
        gone = STATE["connections"].pop(connection_id, None) is None
    if gone:
        return not_found("Connection not found")
    return ok({"message": "Connection deleted"})


@app.get("/connectors/connections/list")
def list_connections():
    """Like the platform's list as the SDK reads it: ids (and types) only; names come from
    the details endpoint. `connection_type` may be left out (every type)."""
    err = authenticated("connections/list")
    if err:
        return err
    kind = request.args.get("connection_type")
    if kind not in (None, "import", "export"):
        return bad("connection_type must be import or export")
    connector = request.args.get("connector")
    with LOCK:
        items = [{"connection_id": c["connection_id"], "connection_type": c["connection_type"]}
                 for c in STATE["connections"].values()
                 if kind in (None, c["connection_type"]) and connector in (None, c["connector"])]
    return page(items, "connections", "last_connection_id") or ok(items)


@app.get("/connectors/connections/<connection_id>/details")
def connection_details(connection_id):
    err = authenticated("connections/details")
    if err:
        return err
    with LOCK:
        c = STATE["connections"].get(connection_id)
        details = None if c is None else {k: v for k, v in c.items() if k != "credentials"}
    if details is None:
        return not_found("Connection not found")
    return ok(details)


def render(fmt, files):
    if fmt == "json":
        return json.dumps([{"file_name": f["name"], "status": f["status"], "annotations": f.get("annotations", [])} for f in files], indent=2).encode()
    if fmt == "coco_json":
        images = [{"id": i + 1, "file_name": f["name"]} for i, f in enumerate(files)]
        annotations = [
            {"id": n + 1, "image_id": i + 1, "category_id": 1, "bbox": a.get("bbox", [0, 0, 1, 1])}
            for i, f in enumerate(files) for n, a in enumerate(f.get("annotations", []))
        ]
        return json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}).encode()
    if fmt == "csv":
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(["file_name", "status", "annotations"])
        for f in files:
            w.writerow([f["name"], f["status"], json.dumps(f.get("annotations", []))])
        return out.getvalue().encode()
    # png: masks in a zip in the real product; a manifest stands in for them here.
    return json.dumps({"masks": [f["name"] for f in files]}).encode()


def run_export(report_id):
    time.sleep(0.3)
    with LOCK:
        e = STATE["exports"][report_id]
        conn = STATE["connections"].get(e["connection_id"])
    try:
        if conn is None:
            raise RuntimeError("connection deleted")
        bucket, folder = split_path(e["export_folder_path"])
        key = f"{folder}{e['export_name']}.{FORMATS[e['export_format']]}"
        s3_client(conn["credentials"]).put_object(Bucket=bucket, Key=key, Body=render(e["export_format"], e["files"]))
        status = "Created"
    except Exception as err:  # the export fails, as on the platform
        status, e["error"] = "failed", str(err)
    with LOCK:
        e["export_status"], e["is_completed"] = status, True


@app.post("/sdk/export/files")
def create_export():
    err = authenticated("export/create")
    if err:
        return err
    project_id = request.args.get("project_id")
    body = request.get_json(silent=True) or {}
    with LOCK:
        project = STATE["projects"].get(project_id)
    if project is None:
        return bad(f"Project {project_id} not found", 404)
    statuses = body.get("statuses") or []
    if not statuses or any(s not in FILE_STATUSES for s in statuses):
        return bad("statuses must be a non-empty list of " + ", ".join(sorted(FILE_STATUSES)))
    if body.get("export_format") not in FORMATS:
        return bad("export_format must be one of json, coco_json, csv, png")
    if body.get("export_destination") == "s3":
        if not body.get("connection_id"):
            return bad("connection_id is required")
        with LOCK:
            if body["connection_id"] not in STATE["connections"]:
                return bad("Connection not found", 404)
        if not str(body.get("export_folder_path", "")).endswith("/"):
            return bad("export_folder_path must end with /")
    # Since December 2025: only the files updated after this time (Unix milliseconds).
    updated_after = body.get("updated_after_timestamp")
    if updated_after is not None and (not isinstance(updated_after, int) or isinstance(updated_after, bool) or updated_after < 0):
        return bad("updated_after_timestamp must be Unix milliseconds")
    files = [f for f in project if f["status"] in statuses
             and (updated_after is None or f.get("updated_at", 0) > updated_after)]
    if not files:
        return bad("No files found with the given status")
    report_id = uuid.uuid4().hex
    with LOCK:
        STATE["exports"][report_id] = {
            "report_id": report_id,
            "project_id": project_id,
            "export_name": body.get("export_name", report_id),
            "export_format": body["export_format"],
            "statuses": statuses,
            "connection_id": body.get("connection_id"),
            "export_folder_path": body.get("export_folder_path"),
            "files": files,
            "updated_after_timestamp": updated_after,
            "export_status": "Pending",
            "is_completed": False,
        }
    threading.Thread(target=run_export, args=(report_id,), daemon=True).start()
    return after("export/create") or ok({"report_id": report_id})


@app.post("/exports/status")
def export_status():
    err = authenticated("export/status")
    if err:
        return err
    ids = (request.get_json(silent=True) or {}).get("report_ids") or []
    with LOCK:
        items = [
            {"report_id": r, "export_status": STATE["exports"][r]["export_status"], "is_completed": STATE["exports"][r]["is_completed"]}
            for r in ids if r in STATE["exports"]
        ]
    return jsonify({"message": "200: Success", "status": items, "response": items, "error": None,
                    "tracking_id": tracking()})


@app.get("/exports/download")
def download_export():
    """The SDK's last step for a local export: a signed URL to the file."""
    err = authenticated("export/download")
    if err:
        return err
    report_id = request.args.get("report_id")
    with LOCK:
        e = STATE["exports"].get(report_id)
        done = e is not None and e["is_completed"] and e["export_status"] == "Created"
    if e is None or e["project_id"] != request.args.get("project_id"):
        return not_found("Report not found")
    if not done:
        return bad("The export is not ready yet")
    return ok({"url": f"{STATE['s3_endpoint']}/signed/{report_id}", "report_id": report_id})


DATA_TYPES = ("image", "video", "audio", "document", "text")
# Objects the platform would not count as files: probes and folder markers.
NOT_FILES = ("~s3connect-write-probe", ".labellerr-connection-test")


def scan(credentials, path):
    """Reads the folder as the platform does, with the connection's own keys: the status
    code and the number of files. A folder the keys cannot list or read fails (500)."""
    bucket, prefix = split_path(path)
    s3 = s3_client(credentials)
    keys = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                name = o["Key"].rsplit("/", 1)[-1]
                if name and not name.startswith(NOT_FILES):
                    keys.append(o["Key"])
        if keys:
            try:
                s3.get_object(Bucket=bucket, Key=keys[0], Range="bytes=0-0")
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") != "InvalidRange":
                    raise
    except (ClientError, BotoCoreError):
        return 500, 0
    return 300, len(keys)


def process_dataset(dataset_id, delay=0.5):
    time.sleep(delay)
    with LOCK:
        d = STATE["datasets"].get(dataset_id)
        conn = STATE["connections"].get(d["connection_id"]) if d else None
    if d is None:
        return
    code, count = scan(conn["credentials"], d["path"]) if conn else (500, 0)
    with LOCK:
        d["status_code"], d["files_count"] = code, count


@app.post("/datasets/create")
def create_dataset():
    err = authenticated("datasets/create")
    if err:
        return err
    body = request.get_json(silent=True) or {}
    for field in ("dataset_name", "data_type", "connection_id", "path"):
        if not body.get(field):
            return bad(f"{field} is required")
    if body["data_type"] not in DATA_TYPES:
        return bad("data_type is invalid")
    if not s3_path(body["path"]):
        return bad("path must be s3://bucket/prefix/")
    with LOCK:
        conn = STATE["connections"].get(body["connection_id"])
    if conn is None:
        return bad("Connection not found", 404)
    if conn["connection_type"] != "import":
        return bad("connection_id must be an import connection")
    dataset_id = uuid.uuid4().hex
    with LOCK:
        STATE["datasets"][dataset_id] = {
            "dataset_id": dataset_id,
            "name": body["dataset_name"],
            "description": body.get("dataset_description", ""),
            "data_type": body["data_type"],
            "connection_id": body["connection_id"],
            "path": body["path"],
            "es_multimodal_index": bool(body.get("es_multimodal_index")),
            "files_count": 0,
            "status_code": 100,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "created_by": request.headers.get("api_key", "")[:4] + "...",
        }
    threading.Thread(target=process_dataset, args=(dataset_id,), daemon=True).start()
    return after("datasets/create") or ok({"dataset_id": dataset_id})


@app.get("/datasets/list")
def list_datasets():
    err = authenticated("datasets/list")
    if err:
        return err
    data_type = request.args.get("data_type")
    if request.args.get("permission_level") not in (None, "client", "project", "global"):
        return bad("permission_level is invalid")
    with LOCK:
        items = [{"dataset_id": d["dataset_id"], "name": d["name"], "data_type": d["data_type"]}
                 for d in STATE["datasets"].values() if not data_type or d["data_type"] == data_type]
    return page(items, "datasets", "last_dataset_id") or ok({"datasets": items, "has_more": False,
                                                              "last_dataset_id": None})


@app.get("/datasets/<dataset_id>")
def get_dataset(dataset_id):
    err = authenticated("datasets/get")
    if err:
        return err
    with LOCK:
        d = STATE["datasets"].get(dataset_id)
        shown = None if d is None else {k: d[k] for k in ("name", "description", "data_type", "files_count",
                                                           "status_code", "created_at", "created_by")}
    if shown is None:
        return not_found("Dataset not found")
    return ok(shown)


@app.delete("/datasets/<dataset_id>/delete")
def delete_dataset(dataset_id):
    err = authenticated("datasets/delete")
    if err:
        return err
    with LOCK:
        gone = STATE["datasets"].pop(dataset_id, None) is None
    if gone:
        return not_found("Dataset not found")
    return ok({"message": "Dataset deleted"})


@app.post("/connectors/datasets/sync")
def sync_dataset():
    err = authenticated("datasets/sync")
    if err:
        return err
    body = request.get_json(silent=True) or {}
    for field in ("project_id", "dataset_id", "path", "connection_id"):
        if not body.get(field):
            return bad(f"{field} is required")
    if not s3_path(body["path"]):
        return bad("path must be s3://bucket/prefix/")
    with LOCK:
        d = STATE["datasets"].get(body["dataset_id"])
        conn = STATE["connections"].get(body["connection_id"])
    if d is None or conn is None:
        return bad("Dataset or connection not found", 404)
    code, count = scan(conn["credentials"], body["path"])
    with LOCK:
        d["status_code"], d["files_count"] = code, count
        d["synced_project"] = body["project_id"]
    return ok({"message": "Sync completed", "files_count": count})


# Annotation projects: templates, projects, rotations and dataset changes, validated as
# the vendor's SDK and platform do (one data type; no empty dataset; question rules).
DRAWING = {"BoundingBox", "polygon", "polyline", "dot"}
OPTION_TYPES = DRAWING | {"input", "radio", "boolean", "select", "dropdown", "stt", "imc"}


@app.post("/annotations/create_template")
def create_template():
    err = authenticated("templates/create")
    if err:
        return err
    body = request.get_json(silent=True) or {}
    data_type = request.args.get("data_type")
    if data_type not in DATA_TYPES:
        return bad("data_type is invalid")
    if not body.get("templateName"):
        return bad("templateName is required")
    questions = body.get("questions") or []
    if not questions:
        return bad("questions are required")
    for q in questions:
        kind = q.get("option_type")
        if kind not in OPTION_TYPES:
            return bad(f"option_type {kind!r} is invalid")
        if kind in DRAWING and not q.get("color"):
            return bad(f"question {q.get('question_number')}: color is required for {kind}")
        # Every SDK version sends a drawing question's colour as its option too.
        if kind in DRAWING and {"option_name": q["color"]} not in (q.get("options") or []):
            return bad(f"question {q.get('question_number')}: options must name the color of a {kind} question")
        if kind not in DRAWING and kind != "input" and not q.get("options"):
            return bad(f"question {q.get('question_number')}: options are required for {kind}")
        if not q.get("question_id"):
            return bad("question_id is required")
    template_id = uuid.uuid4().hex
    with LOCK:
        STATE["templates"][template_id] = {"template_id": template_id, "template_name": body["templateName"],
                                           "data_type": data_type, "questions": questions,
                                           "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                           "created_by": request.headers.get("api_key", "")[:4] + "..."}
    return after("templates/create") or ok({"template_id": template_id})


@app.get("/annotations/get_template")
def get_template():
    """What the SDK reads back after creating a template."""
    err = authenticated("templates/get")
    if err:
        return err
    with LOCK:
        t = STATE["templates"].get(request.args.get("template_id"))
        shown = None if t is None else dict(t)
    if shown is None:
        return not_found("Template not found")
    return ok(shown)


@app.get("/annotations/list_questions_templates")
def list_templates():
    err = authenticated("templates/list")
    if err:
        return err
    data_type = request.args.get("data_type")
    with LOCK:
        items = [{k: t.get(k) for k in ("template_id", "template_name", "questions", "created_at", "created_by")}
                 for t in STATE["templates"].values() if not data_type or t["data_type"] == data_type]
    return page(items, "templates", "last_template_id") or ok(items)


def rotations_ok(r):
    keys = ("annotation_rotation_count", "review_rotation_count", "client_review_rotation_count")
    if not isinstance(r, dict) or any(not isinstance(r.get(k), int) or r[k] < 1 for k in keys):
        return "every rotation count must be an integer >= 1"
    if STATE.get("plan") == "free" and any(r[k] != 1 for k in keys):
        return "Your plan allows only 1 annotation, 1 review and 1 client review rotation"
    return None


def datasets_ok(ids, data_type):
    for d in ids:
        ds = STATE["datasets"].get(d)
        if ds is None:
            return f"Dataset {d} not found"
        if ds["data_type"] != data_type:
            return f"Dataset {d} is of type {ds['data_type']}, not {data_type}"
        if ds["files_count"] == 0:
            return f"Dataset {d} has no files"
    return None


@app.post("/projects/create")
def create_project():
    err = authenticated("projects/create")
    if err:
        return err
    body = request.get_json(silent=True) or {}
    for field in ("project_name", "data_type", "annotation_template_id"):
        if not body.get(field):
            return bad(f"{field} is required")
    ids = body.get("attached_datasets") or []
    with LOCK:
        if not ids:
            return bad("attached_datasets must name at least one dataset")
        problem = datasets_ok(ids, body["data_type"]) or rotations_ok(body.get("rotations"))
        template = STATE["templates"].get(body["annotation_template_id"])
        if problem:
            return bad(problem)
        if template is None:
            return bad("Template not found", 404)
        if template["data_type"] != body["data_type"]:
            return bad("The template's data type differs from the project's")
        project_id = uuid.uuid4().hex
        modes = STATE["modes"]
        # Mode `processing_seconds` (optionally only for names starting with
        # `processing_name`): processing for a while, as real projects are after create.
        processing = modes.get("processing_seconds") or 0
        if modes.get("processing_name") and not body["project_name"].startswith(modes["processing_name"]):
            processing = 0
        STATE["annotation_projects"][project_id] = {
            "project_id": project_id, "project_name": body["project_name"], "data_type": body["data_type"],
            "annotation_template_id": body["annotation_template_id"], "attached_datasets": list(ids),
            "rotations": body.get("rotations"), "use_ai": bool(body.get("use_ai")),
            "created_by": body.get("created_by"), "status_code": 300, "archived": False,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "origin": request.headers.get("origin"), "processing_until": time.time() + processing,
        }
        # A stand-in's shortcut: the project's files start annotated and accepted, so that
        # the whole pipeline (dataset -> project -> export) can run end to end.
        STATE["projects"][project_id] = [
            {"file_id": f"{d}-{i}", "name": f"{d}-{i}.jpg", "status": "accepted", "annotations": [{"bbox": [1, 2, 3, 4]}],
             "updated_at": now_ms()}
            for d in ids for i in range(STATE["datasets"][d]["files_count"])
        ]
    return after("projects/create") or ok({"project_id": project_id})


@app.get("/projects/project/<project_id>")
def get_project(project_id):
    err = authenticated("projects/get")
    if err:
        return err
    with LOCK:
        p = STATE["annotation_projects"].get(project_id)
        shown = None if p is None else {k: v for k, v in p.items() if k != "processing_until"}
    if shown is None:
        return not_found("Project not found")
    if time.time() < p.get("processing_until", 0):
        # Still processing: no status code yet.
        shown.pop("status_code", None)
    shown["total_files"] = len(STATE["projects"].get(project_id, []))
    return ok(shown)


def delete_project(project_id):
    err = authenticated("projects/delete")
    if err:
        return err
    with LOCK:
        gone = STATE["annotation_projects"].pop(project_id, None) is None
    if gone:
        return not_found("Project not found")
    return ok({"message": "Project deleted"})


@app.delete("/projects/project/<project_id>")
def delete_project_old(project_id):
    return delete_project(project_id)


@app.post("/projects/delete/<project_id>")
def delete_project_new(project_id):
    """The newer SDK's delete."""
    return delete_project(project_id)


def set_archived(name, archived):
    err = authenticated(name)
    if err:
        return err
    body = request.get_json(silent=True) or {}
    with LOCK:
        p = STATE["annotation_projects"].get(body.get("project_id"))
        if p is not None:
            p["archived"] = archived
    if p is None:
        return not_found("Project not found")
    return ok({"message": "Project archived" if archived else "Project unarchived"})


@app.post("/projects/archive")
def archive_project():
    return set_archived("projects/archive", True)


@app.post("/projects/unarchive")
def unarchive_project():
    return set_archived("projects/unarchive", False)


@app.get("/project_drafts/projects/detailed_list")
def list_projects():
    err = authenticated("projects/list")
    if err:
        return err
    with LOCK:
        items = [{"project_id": p["project_id"], "project_name": p["project_name"]}
                 for p in STATE["annotation_projects"].values()]
    paged = page(items, "projects", "last_project_id")
    if paged:
        return paged
    # Older SDKs read {"projects": [...]}, newer ones a list (mode `project_list`).
    return ok(items if STATE["modes"].get("project_list") == "list" else {"projects": items})


@app.post("/projects/rotations/add")
def set_rotations():
    err = authenticated("projects/rotations")
    if err:
        return err
    body = request.get_json(silent=True) or {}
    with LOCK:
        p = STATE["annotation_projects"].get(request.args.get("project_id"))
        if p is None:
            return bad("Project not found", 404)
        problem = rotations_ok(body)
        if problem:
            return bad(problem)
        p["rotations"] = body
    return after("projects/rotations") or ok({"message": "Rotations updated"})


def change_datasets(name, attach):
    err = authenticated(name)
    if err:
        return err
    body = request.get_json(silent=True) or {}
    ids = body.get("attached_datasets") or []
    with LOCK:
        p = STATE["annotation_projects"].get(request.args.get("project_id"))
        if p is None:
            return bad("Project not found", 404)
        if attach:
            problem = datasets_ok(ids, p["data_type"])
            if problem:
                return bad(problem)
            p["attached_datasets"] += [d for d in ids if d not in p["attached_datasets"]]
        else:
            p["attached_datasets"] = [d for d in p["attached_datasets"] if d not in ids]
        p.setdefault("jobs", []).append({"attach" if attach else "detach": ids, "uuid": request.args.get("uuid")})
    return after(name) or ok({"job_id": uuid.uuid4().hex})


@app.post("/actions/jobs/add_datasets_to_project")
def attach_datasets():
    return change_datasets("projects/attach", True)


@app.post("/actions/jobs/delete_datasets_from_project")
def detach_datasets():
    return change_datasets("projects/detach", False)


def now_ms():
    return int(time.time() * 1000)


@app.post("/_admin/projects")
def admin_project():
    body = request.get_json()
    with LOCK:
        STATE["projects"][body["project_id"]] = [{"updated_at": now_ms(), **f} for f in body["files"]]
    return jsonify({"ok": True})


@app.post("/_admin/projects/<project_id>/files")
def admin_update_files(project_id):
    """Files annotated or reviewed on the platform: each named file gets the given status
    (added if new), and its update time is now."""
    body = request.get_json()
    with LOCK:
        files = STATE["projects"].setdefault(project_id, [])
        for change in body["files"]:
            f = next((f for f in files if f["name"] == change["name"]), None)
            if f is None:
                f = {"file_id": uuid.uuid4().hex, "name": change["name"], "annotations": [{"bbox": [1, 2, 3, 4]}]}
                files.append(f)
            f["status"], f["updated_at"] = change["status"], now_ms()
    return jsonify({"ok": True})


@app.post("/_admin/annotation_projects")
def admin_annotation_project():
    """A project as a person makes it in the platform's UI: its own template (no s3connect
    identity), over the given datasets."""
    body = request.get_json()
    template_id, project_id = uuid.uuid4().hex, uuid.uuid4().hex
    with LOCK:
        STATE["templates"][template_id] = {"template_id": template_id, "template_name": body["template_name"],
                                           "data_type": body["data_type"], "questions": []}
        STATE["annotation_projects"][project_id] = {
            "project_id": project_id, "project_name": body["project_name"], "data_type": body["data_type"],
            "annotation_template_id": template_id, "attached_datasets": list(body["attached_datasets"]),
            "rotations": {"annotation_rotation_count": 1, "review_rotation_count": 1, "client_review_rotation_count": 1},
            "use_ai": False, "created_by": None, "status_code": 300, "archived": False,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        STATE["projects"][project_id] = []
    return jsonify({"project_id": project_id, "template_id": template_id})


@app.post("/_admin/annotation_projects/<project_id>")
def admin_update_annotation_project(project_id):
    """The platform changing a project by itself (say its status code, when it fails)."""
    with LOCK:
        STATE["annotation_projects"][project_id].update(request.get_json())
    return jsonify({"ok": True})


@app.delete("/_admin/annotation_projects/<project_id>")
def admin_delete_annotation_project(project_id):
    """A project deleted in the platform's UI, outside Git."""
    with LOCK:
        gone = STATE["annotation_projects"].pop(project_id, None)
    return jsonify({"deleted": gone is not None})


@app.post("/_admin/modes")
def admin_modes():
    """Switches modes on or off (only the ones named); answers all of them."""
    with LOCK:
        STATE["modes"].update(request.get_json())
        return jsonify(dict(STATE["modes"]))


@app.post("/_admin/faults")
def admin_faults():
    body = request.get_json()
    with LOCK:
        faults = STATE["faults"].setdefault(body.pop("endpoint"), [])
        faults[:] = [f for f in faults if scope_key(f) != scope_key(body)] + [body]
    return jsonify({"ok": True})


@app.get("/_admin/state")
def admin_state():
    with LOCK:
        return jsonify({
            "connections": [{k: v for k, v in c.items() if k != "credentials"} for c in STATE["connections"].values()],
            "exports": [{k: v for k, v in e.items() if k != "files"} for e in STATE["exports"].values()],
            "datasets": list(STATE["datasets"].values()),
            "calls": STATE["calls"],
            "faults": STATE["faults"],
            "held": STATE["held"],
            "templates": list(STATE["templates"].values()),
            "annotation_projects": list(STATE["annotation_projects"].values()),
            # Every call's headers and body, when asked for (`?requests=1`): tests poll the
            # state often, and the record of a whole run is large.
            **({"requests": STATE["requests"]} if request.args.get("requests") else {}),
            "modes": STATE["modes"],
        })


@app.get("/_admin/health")
def health():
    return jsonify({"ok": True})


class KeepUnderscoreHeaders(WSGIRequestHandler):
    """The platform's auth headers are `api_key`, `api_secret`, `client_id`; werkzeug's
    server drops headers with underscores (against spoofing behind proxies), so put them back."""

    def make_environ(self):
        environ = super().make_environ()
        for key, value in self.headers.items():
            if "_" in key:
                environ["HTTP_" + key.upper()] = value
        return environ


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--s3-endpoint", required=True)
    ap.add_argument("--auth-file", required=True, help="JSON with api_key, api_secret, client_id")
    args = ap.parse_args()
    with open(args.auth_file) as f:
        STATE["auth"] = json.load(f)
    STATE["s3_endpoint"] = args.s3_endpoint
    app.run(host="127.0.0.1", port=args.port, threaded=True, request_handler=KeepUnderscoreHeaders)


if __name__ == "__main__":
    main()
