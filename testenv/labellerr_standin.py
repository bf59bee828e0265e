"""A local stand-in for the Labellerr platform API, for tests and the demo.

It behaves like the API as the operator's platform client knows it (README, "The
Labellerr API"): auth headers, `uuid` tracking ids, `{"response": ...}` bodies, multipart connection
calls, JSON export calls. It is not a fake of calls: its connection test really probes
S3 with the given credentials, and an export really writes its file (json, coco_json,
csv, png) to the connection's bucket and folder with the connection's credentials, so
tests check objects in S3.

Test control lives under /_admin (no auth): seed projects, read state, inject faults
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
}
FILE_STATUSES = {"review", "r_assigned", "client_review", "cr_assigned", "accepted"}
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
    tracking = request.args.get("uuid")
    if status >= 500:
        return jsonify({"error": "Internal server error", "message": "Something went wrong", "tracking_id": tracking}), status
    return jsonify({"error": f.get("error", "Bad request"), "message": f.get("message", "rejected by the stand-in")}), status


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
        tracking = request.args.get("uuid")
        return jsonify({"error": "Internal server error", "message": "Something went wrong", "tracking_id": tracking}), status
    return None


def authenticated(name):
    """Checks the auth headers and the tracking id; returns an error response or None."""
    a = STATE["auth"]
    if (request.headers.get("api_key"), request.headers.get("api_secret"), request.headers.get("client_id")) != (
        a["api_key"], a["api_secret"], a["client_id"],
    ):
        return jsonify({"error": "Unauthorized", "message": "Invalid api_key, api_secret or client_id"}), 401
    if not request.args.get("uuid"):
        return jsonify({"error": "Bad request", "message": "uuid is required"}), 400
    with LOCK:
        STATE["calls"].append([name, request.args.get("uuid"), request.args.get("project_id")])
    return fault(name)


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
    return jsonify({"error": message, "message": message}), status


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
    return jsonify({"response": {"message": "Connection successful"}})


@app.post("/connectors/connections/create")
def create_connection():
    err = authenticated("connections/create")
    if err:
        return err
    form = request.form
    creds = form_credentials()
    if creds is None:
        return bad("credentials must be a JSON string")
    for field in ("client_id", "connector", "name", "connection_type", "data_type"):
        if not form.get(field):
            return bad(f"{field} is required")
    connection_id = uuid.uuid4().hex
    with LOCK:
        STATE["connections"][connection_id] = {
            "connection_id": connection_id,
            "name": form["name"],
            "description": form.get("description", ""),
            "connection_type": form["connection_type"],
            "data_type": form["data_type"],
            "credentials": creds,
        }
    return after("connections/create") or jsonify({"response": {"connection_id": connection_id}})


@app.post("/connectors/connections/delete")
def delete_connection():
    err = authenticated("connections/delete")
    if err:
        return err
    connection_id = (request.get_json(silent=True) or {}).get("connection_id")
    with LOCK:
        if STATE["connections"].pop(connection_id, None) is None:
            return bad("Connection not found", 404)
    return jsonify({"response": {"message": "Connection deleted"}})


@app.get("/connectors/connections/list")
def list_connections():
    """Like the platform's list as the SDK reads it: ids (and types) only; names come from
    the details endpoint."""
    err = authenticated("connections/list")
    if err:
        return err
    kind = request.args.get("connection_type")
    if kind not in ("import", "export"):
        return bad("connection_type must be import or export")
    with LOCK:
        items = [{"connection_id": c["connection_id"], "connection_type": c["connection_type"]}
                 for c in STATE["connections"].values() if c["connection_type"] == kind]
    return jsonify({"response": items})


@app.get("/connectors/connections/<connection_id>/details")
def connection_details(connection_id):
    err = authenticated("connections/details")
    if err:
        return err
    with LOCK:
        c = STATE["connections"].get(connection_id)
        if c is None:
            return bad("Connection not found", 404)
        return jsonify({"response": {k: v for k, v in c.items() if k != "credentials"}})


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
        return bad("statuses must be a non-empty list of review, r_assigned, client_review, cr_assigned, accepted")
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
    return after("export/create") or jsonify({"response": {"report_id": report_id}})


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
    return jsonify({"status": items, "response": items})


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
    return after("datasets/create") or jsonify({"response": {"dataset_id": dataset_id}})


@app.get("/datasets/list")
def list_datasets():
    err = authenticated("datasets/list")
    if err:
        return err
    data_type = request.args.get("data_type")
    size = max(1, min(int(request.args.get("page_size", "10") or 10), 100))
    after_id = request.args.get("last_dataset_id")
    with LOCK:
        items = [{"dataset_id": d["dataset_id"], "name": d["name"], "data_type": d["data_type"]}
                 for d in STATE["datasets"].values() if not data_type or d["data_type"] == data_type]
    if after_id:
        ids = [i["dataset_id"] for i in items]
        items = items[ids.index(after_id) + 1:] if after_id in ids else []
    page = items[:size]
    more = len(items) > size
    return jsonify({"response": {"datasets": page, "has_more": more,
                                 "last_dataset_id": page[-1]["dataset_id"] if page else None}})


@app.get("/datasets/<dataset_id>")
def get_dataset(dataset_id):
    err = authenticated("datasets/get")
    if err:
        return err
    with LOCK:
        d = STATE["datasets"].get(dataset_id)
        if d is None:
            return bad("Dataset not found", 404)
        return jsonify({"response": {k: d[k] for k in ("name", "description", "data_type", "files_count",
                                                      "status_code", "created_at", "created_by")}})


@app.delete("/datasets/<dataset_id>/delete")
def delete_dataset(dataset_id):
    err = authenticated("datasets/delete")
    if err:
        return err
    with LOCK:
        if STATE["datasets"].pop(dataset_id, None) is None:
            return bad("Dataset not found", 404)
    return jsonify({"response": {"message": "Dataset deleted"}})


@app.post("/connectors/datasets/sync")
def sync_dataset():
    err = authenticated("datasets/sync")
    if err:
        return err
    body = request.get_json(silent=True) or {}
    for field in ("project_id", "dataset_id", "path", "connection_id"):
        if not body.get(field):
            return bad(f"{field} is required")
    with LOCK:
        d = STATE["datasets"].get(body["dataset_id"])
        conn = STATE["connections"].get(body["connection_id"])
    if d is None or conn is None:
        return bad("Dataset or connection not found", 404)
    code, count = scan(conn["credentials"], body["path"])
    with LOCK:
        d["status_code"], d["files_count"] = code, count
        d["synced_project"] = body["project_id"]
    return jsonify({"response": {"message": "Sync completed", "files_count": count}})


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
        if kind not in DRAWING and kind != "input" and not q.get("options"):
            return bad(f"question {q.get('question_number')}: options are required for {kind}")
        if not q.get("question_id"):
            return bad("question_id is required")
    template_id = uuid.uuid4().hex
    with LOCK:
        STATE["templates"][template_id] = {"template_id": template_id, "template_name": body["templateName"],
                                           "data_type": data_type, "questions": questions}
    return after("templates/create") or jsonify({"response": {"template_id": template_id}})


@app.get("/annotations/list_questions_templates")
def list_templates():
    err = authenticated("templates/list")
    if err:
        return err
    data_type = request.args.get("data_type")
    with LOCK:
        items = [{"template_id": t["template_id"], "template_name": t["template_name"]}
                 for t in STATE["templates"].values() if not data_type or t["data_type"] == data_type]
    return jsonify({"response": items})


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
        STATE["annotation_projects"][project_id] = {
            "project_id": project_id, "project_name": body["project_name"], "data_type": body["data_type"],
            "annotation_template_id": body["annotation_template_id"], "attached_datasets": list(ids),
            "rotations": body.get("rotations"), "use_ai": bool(body.get("use_ai")),
            "created_by": body.get("created_by"), "status_code": 300, "archived": False,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        # A stand-in's shortcut: the project's files start annotated and accepted, so that
        # the whole pipeline (dataset -> project -> export) can run end to end.
        STATE["projects"][project_id] = [
            {"file_id": f"{d}-{i}", "name": f"{d}-{i}.jpg", "status": "accepted", "annotations": [{"bbox": [1, 2, 3, 4]}],
             "updated_at": now_ms()}
            for d in ids for i in range(STATE["datasets"][d]["files_count"])
        ]
    return after("projects/create") or jsonify({"response": {"project_id": project_id}})


@app.get("/projects/project/<project_id>")
def get_project(project_id):
    err = authenticated("projects/get")
    if err:
        return err
    with LOCK:
        p = STATE["annotation_projects"].get(project_id)
        if p is None:
            return bad("Project not found", 404)
        return jsonify({"response": dict(p)})


@app.delete("/projects/project/<project_id>")
def delete_project(project_id):
    err = authenticated("projects/delete")
    if err:
        return err
    with LOCK:
        if STATE["annotation_projects"].pop(project_id, None) is None:
            return bad("Project not found", 404)
    return jsonify({"response": {"message": "Project deleted"}})


@app.post("/projects/archive")
def archive_project():
    err = authenticated("projects/archive")
    if err:
        return err
    body = request.get_json(silent=True) or {}
    with LOCK:
        p = STATE["annotation_projects"].get(body.get("project_id"))
        if p is None:
            return bad("Project not found", 404)
        p["archived"] = True
    return jsonify({"response": {"message": "Project archived"}})


@app.get("/project_drafts/projects/detailed_list")
def list_projects():
    err = authenticated("projects/list")
    if err:
        return err
    with LOCK:
        items = [{"project_id": p["project_id"], "project_name": p["project_name"]}
                 for p in STATE["annotation_projects"].values()]
    return jsonify({"response": {"projects": items}})


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
    return after("projects/rotations") or jsonify({"response": {"message": "Rotations updated"}})


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
    return after(name) or jsonify({"response": {"job_id": uuid.uuid4().hex}})


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
