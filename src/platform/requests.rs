//! Every request the client builds, row by row, against the shapes Labellerr's Python SDK
//! sends (shared/docs/labellerr-api.md): method, path, query, headers and body. Each call
//! goes to a local HTTP listener that records it and answers as the platform does, so a
//! drift from the SDK's shape is one failing row. Also how answers are read: a null
//! `response` is "not found", lists are read to their end, error text comes from either
//! field.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// One request as the listener saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    /// JSON bodies as JSON; multipart forms as an object of their fields; else Null.
    body: Value,
}

type Answer = Arc<dyn Fn(&Seen) -> (u16, Value) + Send + Sync>;

/// A listener answering with `answer`; what it saw is in the returned list.
async fn platform(answer: Answer) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (answer, log) = (answer.clone(), log.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(req) = read_request(&mut stream, &mut buf).await else { return };
                    let (status, body) = answer(&req);
                    log.lock().unwrap().push(req);
                    let body = body.to_string();
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    if stream.write_all(format!("{head}{body}").as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let timeouts = Timeouts { call: Duration::from_secs(5), create: Duration::from_secs(5) };
    (Client::with_timeouts(&url, timeouts).unwrap(), seen)
}

async fn read_request(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<Seen> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap().split(' ');
    let (method, target) = (first.next().unwrap().to_owned(), first.next().unwrap().to_owned());
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers.get("content-length").map_or(0, |l| l.parse().unwrap());
    while buf.len() < head_end + 4 + len {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body: Vec<u8> = buf.drain(..head_end + 4 + len).skip(head_end + 4).collect();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), decode(v))
        })
        .collect();
    let content_type = headers.get("content-type").cloned().unwrap_or_default();
    let body = if let Some(boundary) = content_type.strip_prefix("multipart/form-data; boundary=") {
        let text = String::from_utf8(body).unwrap();
        let mut fields = serde_json::Map::new();
        for part in text.split(&format!("--{boundary}")) {
            if let Some((head, value)) = part.split_once("\r\n\r\n")
                && let Some(name) = head.split("name=\"").nth(1).and_then(|n| n.split('"').next())
            {
                fields.insert(name.to_owned(), json!(value.trim_end_matches("\r\n")));
            }
        }
        Value::Object(fields)
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    Some(Seen { method, path: path.to_owned(), query, headers, body })
}

fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// A success as the platform words it.
fn ok(response: Value) -> (u16, Value) {
    (
        200,
        json!({"message": "200: Success", "response": response, "error": null, "tracking_id": "0123456789abcdef0123456789abcdef"}),
    )
}

/// What the platform answers each call of the table with.
fn answers(seen: &Seen) -> (u16, Value) {
    let p = seen.path.as_str();
    match p {
        "/connectors/connections/create" => ok(json!({"connection_id": "c-1"})),
        "/connectors/connections/list" => ok(json!([{"connection_id": "c-1"}])),
        "/connectors/connections/test" => ok(json!({"message": "Connection successful"})),
        "/sdk/export/files" => ok(json!({"report_id": "r-1"})),
        "/exports/status" => {
            (200, json!({"status": [{"report_id": "r-1", "export_status": "Created", "is_completed": true}]}))
        }
        "/datasets/create" => ok(json!({"dataset_id": "d-1"})),
        "/datasets/list" => ok(json!({"datasets": [{"dataset_id": "d-1", "name": "cats"}], "has_more": false})),
        "/annotations/create_template" => ok(json!({"template_id": "t-1"})),
        "/annotations/get_template" => ok(json!({"template_id": "t-1", "template_name": "guide", "questions": []})),
        "/annotations/list_questions_templates" => ok(json!([{"template_id": "t-1", "template_name": "guide"}])),
        "/projects/create" => ok(json!({"project_id": "p-1"})),
        "/project_drafts/projects/detailed_list" => ok(json!({"projects": [{"project_id": "p-1"}]})),
        p if p.ends_with("/details") => ok(json!({"name": "s3connect x", "connector": "s3"})),
        p if p.starts_with("/projects/project/") && seen.method == "GET" => {
            ok(json!({"project_name": "labels", "status_code": 300, "attached_datasets": ["d-1"]}))
        }
        p if p.starts_with("/datasets/d-1") && seen.method == "GET" => {
            ok(json!({"name": "cats", "description": "x", "data_type": "image", "files_count": 3, "status_code": 300}))
        }
        _ => ok(json!({"message": "done"})),
    }
}

fn creds() -> Credentials {
    Credentials {
        api_key: "key-1".into(),
        api_secret: "secret-1".into(),
        client_id: "42".into(),
        namespace: "team".into(),
    }
}

/// A row: what the SDK sends for one call.
struct Row {
    call: &'static str,
    method: &'static str,
    path: &'static str,
    /// The query besides `client_id` and `uuid` (which every call carries).
    query: &'static [(&'static str, &'static str)],
    /// The SDK's `email_id` header (the api key).
    email_id: bool,
    body: Value,
}

#[tokio::test]
async fn every_request_has_the_sdks_shape() {
    let (client, seen) = platform(Arc::new(answers)).await;
    let c = creds();
    let keys = Keys { access_key_id: "AKIA1".into(), secret_access_key: "s3-secret".into(), session_token: None };
    let form =
        ConnectionForm { keys: &keys, path: "bkt/images/".into(), connection_type: "import", data_type: "image" };
    let location = Location::parse("bkt/images/cats").unwrap();
    let q = |t: &'static str, o: Vec<&'static str>| TemplateQuestion {
        number: 1,
        id: "q-1".into(),
        question: "Where?",
        option_type: t,
        required: true,
        options: o,
        color: Some("#FF0000"),
    };
    let mut calls: Vec<&str> = Vec::new();
    client.test_connection(&c, &form).await.unwrap();
    calls.push("test_connection");
    client.create_connection(&c, &form, "s3connect ns/images", "made").await.unwrap();
    calls.push("create_connection");
    client.find_connections(&c, "import", |_| true).await.unwrap();
    calls.extend(["find_connections (list)", "find_connections (details)"]);
    client.delete_connection(&c, "c-1").await.unwrap();
    calls.push("delete_connection");
    let export = ExportRequest {
        name: "e",
        updated_after: None,
        description: "d",
        format: "coco_json",
        statuses: vec!["accepted"],
        connection_id: "c-2",
        folder_path: "bkt/exports/".into(),
    };
    client.create_export(&c, "p-1", &export, &uuid4()).await.unwrap();
    calls.push("create_export");
    client.export_status(&c, "p-1", "r-1").await.unwrap();
    calls.push("export_status");
    let dataset = DatasetRequest {
        name: "cats",
        description: "d",
        data_type: "image",
        connection_id: "c-1",
        path: folder_path(&location),
        multimodal_indexing: false,
    };
    client.create_dataset(&c, &dataset, &uuid4()).await.unwrap();
    calls.push("create_dataset");
    client.get_dataset(&c, "d-1").await.unwrap();
    calls.push("get_dataset");
    client.find_datasets(&c, "image", "cats").await.unwrap();
    calls.push("find_datasets");
    client.delete_dataset(&c, "d-1").await.unwrap();
    calls.push("delete_dataset");
    client.sync_dataset(&c, "p-1", "d-1", "c-1", &folder_path(&location), "image").await.unwrap();
    calls.push("sync_dataset");
    let questions = [q("BoundingBox", vec![]), TemplateQuestion { color: None, ..q("radio", vec!["cat", "dog"]) }];
    client.create_template(&c, "image", "guide", &questions, &uuid4()).await.unwrap();
    calls.push("create_template");
    client.get_template(&c, "t-1").await.unwrap();
    calls.push("get_template");
    client.list_templates(&c, "image").await.unwrap();
    calls.push("list_templates");
    let project = ProjectRequest {
        name: "labels",
        datasets: &["d-1".to_owned()],
        data_type: "image",
        template_id: "t-1",
        rotations: [1, 1, 1],
        use_ai: false,
        created_by: None,
    };
    client.create_project(&c, &project, &uuid4()).await.unwrap();
    calls.push("create_project");
    client.get_project(&c, "p-1").await.unwrap();
    calls.push("get_project");
    client.list_projects(&c).await.unwrap();
    calls.push("list_projects");
    client.delete_project(&c, "p-1").await.unwrap();
    calls.push("delete_project");
    client.archive_project(&c, "p-1").await.unwrap();
    calls.push("archive_project");
    client.set_rotations(&c, "p-1", [1, 2, 1]).await.unwrap();
    calls.push("set_rotations");
    client.change_datasets(&c, "p-1", &["d-2".to_owned()], false, &uuid4()).await.unwrap();
    calls.push("attach_datasets");
    client.change_datasets(&c, "p-1", &["d-2".to_owned()], true, &uuid4()).await.unwrap();
    calls.push("detach_datasets");

    let rotations =
        json!({"annotation_rotation_count": 1, "review_rotation_count": 2, "client_review_rotation_count": 1});
    let creds_json = json!({"access_key_id": "AKIA1", "secret_access_key": "s3-secret"}).to_string();
    let table = [
        Row {
            call: "test_connection",
            method: "POST",
            path: "/connectors/connections/test",
            query: &[],
            email_id: true,
            body: json!({"credentials": creds_json, "connector": "s3", "path": "bkt/images/",
                "connection_type": "import", "data_type": "image"}),
        },
        Row {
            call: "create_connection",
            method: "POST",
            path: "/connectors/connections/create",
            query: &[],
            email_id: true,
            // No data_type: the SDK's create sends none.
            body: json!({"client_id": "42", "connector": "s3", "name": "s3connect ns/images", "description": "made",
                "connection_type": "import", "credentials": creds_json}),
        },
        Row {
            call: "find_connections (list)",
            method: "GET",
            path: "/connectors/connections/list",
            query: &[("connector", "s3"), ("connection_type", "import")],
            email_id: true,
            body: Value::Null,
        },
        Row {
            call: "find_connections (details)",
            method: "GET",
            path: "/connectors/connections/c-1/details",
            query: &[],
            email_id: false,
            body: Value::Null,
        },
        Row {
            call: "delete_connection",
            method: "POST",
            path: "/connectors/connections/delete",
            query: &[],
            email_id: true,
            body: json!({"connection_id": "c-1"}),
        },
        Row {
            call: "create_export",
            method: "POST",
            path: "/sdk/export/files",
            query: &[("project_id", "p-1")],
            email_id: false,
            body: json!({"export_name": "e", "export_description": "d", "export_format": "coco_json",
                "statuses": ["accepted"], "export_destination": "s3", "connection_id": "c-2",
                "export_folder_path": "bkt/exports/", "question_ids": ["all"]}),
        },
        Row {
            call: "export_status",
            method: "POST",
            path: "/exports/status",
            query: &[("project_id", "p-1")],
            email_id: false,
            body: json!({"report_ids": ["r-1"]}),
        },
        Row {
            call: "create_dataset",
            method: "POST",
            path: "/datasets/create",
            query: &[],
            email_id: false,
            body: json!({"dataset_name": "cats", "dataset_description": "d", "data_type": "image",
                "connection_id": "c-1", "path": "s3://bkt/images/cats/", "client_id": "42",
                "es_multimodal_index": false}),
        },
        Row {
            call: "get_dataset",
            method: "GET",
            path: "/datasets/d-1",
            query: &[],
            email_id: false,
            body: Value::Null,
        },
        Row {
            call: "find_datasets",
            method: "GET",
            path: "/datasets/list",
            query: &[("data_type", "image"), ("permission_level", "client"), ("page_size", "100")],
            email_id: false,
            body: Value::Null,
        },
        Row {
            call: "delete_dataset",
            method: "DELETE",
            path: "/datasets/d-1/delete",
            query: &[],
            email_id: false,
            body: Value::Null,
        },
        Row {
            call: "sync_dataset",
            method: "POST",
            path: "/connectors/datasets/sync",
            query: &[],
            email_id: false,
            body: json!({"client_id": "42", "project_id": "p-1", "dataset_id": "d-1", "path": "s3://bkt/images/cats/",
                "data_type": "image", "email_id": "key-1", "connection_id": "c-1"}),
        },
        Row {
            call: "create_template",
            method: "POST",
            path: "/annotations/create_template",
            query: &[("data_type", "image")],
            email_id: false,
            // A drawing question's colour is its option too.
            body: json!({"templateName": "guide", "questions": [
                {"question_number": 1, "question": "Where?", "question_id": "q-1", "option_type": "BoundingBox",
                 "required": true, "options": [{"option_name": "#FF0000"}], "color": "#FF0000"},
                {"question_number": 1, "question": "Where?", "question_id": "q-1", "option_type": "radio",
                 "required": true, "options": [{"option_name": "cat"}, {"option_name": "dog"}]}]}),
        },
        Row {
            call: "get_template",
            method: "GET",
            path: "/annotations/get_template",
            query: &[("template_id", "t-1")],
            email_id: false,
            body: Value::Null,
        },
        Row {
            call: "list_templates",
            method: "GET",
            path: "/annotations/list_questions_templates",
            query: &[("data_type", "image")],
            email_id: false,
            body: Value::Null,
        },
        Row {
            call: "create_project",
            method: "POST",
            path: "/projects/create",
            query: &[],
            email_id: false,
            body: json!({"project_name": "labels", "attached_datasets": ["d-1"], "data_type": "image",
                "annotation_template_id": "t-1", "rotations": {"annotation_rotation_count": 1,
                "review_rotation_count": 1, "client_review_rotation_count": 1}, "use_ai": false}),
        },
        Row {
            call: "get_project",
            method: "GET",
            path: "/projects/project/p-1",
            query: &[],
            email_id: false,
            body: Value::Null,
        },
        Row {
            call: "list_projects",
            method: "GET",
            path: "/project_drafts/projects/detailed_list",
            query: &[],
            email_id: false,
            body: Value::Null,
        },
        Row {
            call: "delete_project",
            method: "DELETE",
            path: "/projects/project/p-1",
            query: &[],
            email_id: true,
            body: Value::Null,
        },
        Row {
            call: "archive_project",
            method: "POST",
            path: "/projects/archive",
            query: &[],
            email_id: true,
            body: json!({"project_id": "p-1"}),
        },
        Row {
            call: "set_rotations",
            method: "POST",
            path: "/projects/rotations/add",
            query: &[("project_id", "p-1")],
            email_id: false,
            body: rotations,
        },
        Row {
            call: "attach_datasets",
            method: "POST",
            path: "/actions/jobs/add_datasets_to_project",
            query: &[("project_id", "p-1")],
            email_id: false,
            body: json!({"attached_datasets": ["d-2"]}),
        },
        Row {
            call: "detach_datasets",
            method: "POST",
            path: "/actions/jobs/delete_datasets_from_project",
            query: &[("project_id", "p-1")],
            email_id: false,
            body: json!({"attached_datasets": ["d-2"]}),
        },
    ];
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        calls.len(),
        "one request per call: {:#?}",
        seen.iter().map(|s| &s.path).collect::<Vec<_>>()
    );
    assert_eq!(table.len(), calls.len(), "a row for every call the client makes");
    let mut drift = Vec::new();
    for ((row, seen), call) in table.iter().zip(&seen).zip(&calls) {
        assert_eq!(row.call, *call, "the table is in the order of the calls");
        let mut problems = Vec::new();
        if seen.method != row.method || seen.path != row.path {
            problems.push(format!("sent {} {}, the SDK {} {}", seen.method, seen.path, row.method, row.path));
        }
        let mut query = seen.query.clone();
        let (uuid, client_id) = (query.remove("uuid").unwrap_or_default(), query.remove("client_id"));
        if uuid.len() != 36 || &uuid[14..15] != "4" || client_id.as_deref() != Some("42") {
            problems.push(format!("query without a uuid4 and client_id: {:?}", seen.query));
        }
        let want: BTreeMap<String, String> = row.query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        if query != want {
            problems.push(format!("query {query:?}, the SDK {want:?}"));
        }
        let h = |k: &str| seen.headers.get(k).map(String::as_str);
        for (k, v) in [("api_key", "key-1"), ("api_secret", "secret-1"), ("client_id", "42"), ("origin", ORIGIN)] {
            if h(k) != Some(v) {
                problems.push(format!("header {k} is {:?}, the SDK sends {v:?}", h(k)));
            }
        }
        if h("source").is_none_or(str::is_empty) {
            problems.push("no source header".into());
        }
        if h("email_id").is_some() != row.email_id || (row.email_id && h("email_id") != Some("key-1")) {
            problems.push(format!(
                "email_id header {:?}, the SDK {}",
                h("email_id"),
                if row.email_id { "the api key" } else { "none" }
            ));
        }
        if seen.body != row.body {
            problems.push(format!("body {}, the SDK {}", seen.body, row.body));
        }
        if !problems.is_empty() {
            drift.push(format!("{}: {}", row.call, problems.join("; ")));
        }
    }
    assert!(drift.is_empty(), "requests that differ from the SDK's:\n{}", drift.join("\n"));
}

#[tokio::test]
async fn a_null_response_for_an_id_is_not_found_like_a_404() {
    let (client, _) =
        platform(Arc::new(|_: &Seen| (200, json!({"message": "200: Success", "response": null, "error": null})))).await;
    let c = creds();
    assert_eq!(client.get_project(&c, "p-gone").await, Ok(None));
    assert_eq!(client.get_dataset(&c, "d-gone").await, Ok(None));
    assert_eq!(client.get_template(&c, "t-gone").await, Ok(None));
    assert_eq!(client.connection_name(&c, "c-gone").await, Ok(None));
    // Also with the platform's "not found" text beside it.
    let (client, _) =
        platform(Arc::new(|_: &Seen| (200, json!({"response": null, "error": "Project not found"})))).await;
    assert_eq!(client.get_project(&c, "p-gone").await, Ok(None));
    let (client, _) = platform(Arc::new(|_: &Seen| (404, json!({"error": "not found"})))).await;
    assert_eq!(client.get_project(&c, "p-gone").await, Ok(None));
}

#[tokio::test]
async fn lists_are_read_to_their_end_or_absence_is_not_proven() {
    // Two pages: the second one asked for with the first one's cursor.
    let two_pages = |seen: &Seen| match seen.query.get("last_connection_id").map(String::as_str) {
        None => ok(
            json!({"connections": [{"connection_id": "c-1", "name": "a"}], "has_more": true, "last_connection_id": "c-1"}),
        ),
        Some("c-1") => ok(json!({"connections": [{"connection_id": "c-2", "name": "b"}], "has_more": false})),
        Some(other) => (400, json!({"error": format!("unknown cursor {other}")})),
    };
    let (client, seen) = platform(Arc::new(two_pages)).await;
    let c = creds();
    let found = client.find_connections(&c, "import", |n| n == "b").await.unwrap();
    assert_eq!(found, [Registered { id: "c-2".into(), name: "b".into() }]);
    assert_eq!(seen.lock().unwrap().len(), 2);
    // "More follow" with no way to ask for them: not proven absent.
    let endless = |_: &Seen| ok(json!({"projects": [{"project_id": "p-1"}], "has_more": true}));
    let (client, _) = platform(Arc::new(endless)).await;
    assert!(matches!(client.list_projects(&c).await, Err(PlatformError::Incomplete { .. })));
    // A cursor that never moves is no end either.
    let stuck = |_: &Seen| ok(json!({"templates": [], "has_more": true, "last_template_id": "t-1"}));
    let (client, seen) = platform(Arc::new(stuck)).await;
    assert!(matches!(client.list_templates(&c, "image").await, Err(PlatformError::Incomplete { .. })));
    assert_eq!(seen.lock().unwrap().len(), 2);
    // The project list both as {projects: [...]} and as a list.
    let (client, _) = platform(Arc::new(|_: &Seen| ok(json!([{"project_id": "p-9"}])))).await;
    assert_eq!(client.list_projects(&c).await.unwrap(), ["p-9"]);
}

#[tokio::test]
async fn error_text_is_read_from_both_fields_and_the_servers_tracking_id_is_kept() {
    let c = creds();
    let no_files = |_: &Seen| {
        (
            400,
            json!({"message": "400: Bad Request", "error": "No files found with the given status", "tracking_id": "feed"}),
        )
    };
    let (client, _) = platform(Arc::new(no_files)).await;
    let export = ExportRequest {
        name: "e",
        updated_after: None,
        description: "d",
        format: "json",
        statuses: vec!["accepted"],
        connection_id: "c",
        folder_path: "b/f/".into(),
    };
    assert!(matches!(
        client.create_export(&c, "p", &export, "u-1").await,
        Err(PlatformError::NoFilesWithStatus { message }) if message.contains("No files found")
    ));
    let refused = |_: &Seen| {
        (400, json!({"message": "Invalid request", "error": "path must start with s3://", "tracking_id": "feed"}))
    };
    let (client, _) = platform(Arc::new(refused)).await;
    match client.delete_dataset(&c, "d-1").await {
        Err(PlatformError::Rejected { message, tracking_id, .. }) => {
            assert_eq!(message, "Invalid request: path must start with s3://");
            assert_eq!(tracking_id.server.as_deref(), Some("feed"));
            assert_eq!(tracking_id.request.len(), 36);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_connection_test_that_fails_in_a_2xx_body_is_a_failure() {
    let c = creds();
    let keys = Keys { access_key_id: "AKIA1".into(), secret_access_key: "s3-secret".into(), session_token: None };
    let form = ConnectionForm { keys: &keys, path: "bkt/".into(), connection_type: "import", data_type: "image" };
    for body in [
        json!({"message": "200: Success", "response": null, "error": "Access Denied on s3://bkt/"}),
        json!({"message": "200: Success", "response": {"status": "failed", "message": "Access Denied"}, "error": null}),
    ] {
        let (client, _) = platform(Arc::new(move |_: &Seen| (200, body.clone()))).await;
        assert!(
            matches!(client.test_connection(&c, &form).await, Err(PlatformError::Rejected { status: 200, message, .. }) if message.contains("Access Denied"))
        );
    }
}

#[tokio::test]
async fn one_namespaces_burst_waits_for_its_own_budget_and_no_other() {
    let (client, seen) = platform(Arc::new(answers)).await;
    let client = Arc::new(client.with_namespace_budget(2));
    let noisy = Credentials { namespace: "noisy".into(), ..creds() };
    let quiet = Credentials { namespace: "quiet".into(), ..creds() };
    for _ in 0..2 {
        client.get_dataset(&noisy, "d-1").await.unwrap();
    }
    // Its third call waits for the budget to refill (30 s at two a minute)...
    let (c, n) = (client.clone(), noisy.clone());
    let third = tokio::spawn(async move { c.get_dataset(&n, "d-1").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen.lock().unwrap().len(), 2, "the third call went out");
    assert!(!third.is_finished());
    // ...while another namespace's goes at once.
    client.get_dataset(&quiet, "d-1").await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 3);
    third.abort();
}
