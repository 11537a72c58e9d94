//! The REST API without an orchestrator: everything the gateway answers on
//! its own (malformed requests, health when the orchestrator is down, the
//! OpenAPI document) and the error it gives when the orchestrator is
//! unreachable. Requests carry an admin's access token signed with the
//! test's key, as a logged-in user's would.

use aida_core::auth::Role;
use aida_core::secret::SecretString;
use aida_gateway::{AppState, Config, app};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

/// An address nothing listens on: bound, then released.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

fn config() -> Config {
    Config {
        orchestrator_addr: closed_port(),
        security: aida_core::grpc::Security::with_token(SecretString::from(
            aida_core::secret::random_hex(32),
        )),
        secrets: aida_gateway::Secrets {
            jwt_secret: Some(SecretString::from("test-signing-key-".repeat(3))),
            webhook_secrets: Vec::new(),
        },
        ..Config::default()
    }
}

fn state() -> AppState {
    AppState::from_config(&config(), "127.0.0.1:8080".parse().unwrap()).unwrap()
}

/// Adds what a logged-in client on this machine sends: the Host header
/// and an admin's access token.
fn signed_in(mut request: Request<Body>, state: &AppState) -> Request<Body> {
    let headers = request.headers_mut();
    if !headers.contains_key(header::HOST) {
        headers.insert(header::HOST, "localhost:8080".parse().unwrap());
    }
    if !headers.contains_key(header::AUTHORIZATION) {
        let token = state
            .jwt()
            .unwrap()
            .issue("root", Role::Admin, "s")
            .unwrap();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
    }
    request
}

async fn send(request: Request<Body>) -> (StatusCode, Option<String>, Value) {
    let state = state();
    let request = signed_in(request, &state);
    let response = app(state, None).unwrap().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|err| {
        panic!(
            "body is not JSON ({err}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, content_type, body)
}

async fn post_json(path: &str, body: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let (status, content_type, body) = send(request).await;
    assert_eq!(content_type.as_deref(), Some("application/json"));
    (status, body)
}

async fn get(path: &str) -> (StatusCode, Value) {
    let (status, _, body) = send(Request::get(path).body(Body::empty()).unwrap()).await;
    (status, body)
}

fn error_message(body: &Value, code: &str) -> String {
    assert_eq!(body["error"]["code"], code, "body: {body}");
    body["error"]["message"]
        .as_str()
        .expect("a message")
        .to_owned()
}

const VALID: &str =
    r#"{"repo": "/tmp/r", "description": "d", "agent": {"kind": "command", "command": ["true"]}}"#;

#[tokio::test]
async fn malformed_json_is_a_400_with_a_json_error() {
    for path in ["/api/tasks", "/api/orchestrate"] {
        let (status, body) = post_json(path, r#"{"repo": "/tmp/r", "#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let message = error_message(&body, "invalid_argument");
        assert!(message.contains("EOF"), "{message}");
    }
}

#[tokio::test]
async fn unknown_fields_are_rejected_by_name() {
    let (status, body) = post_json(
        "/api/tasks",
        r#"{"repo": "/tmp/r", "description": "d", "colour": "blue"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&body, "invalid_argument").contains("unknown field `colour`"));

    // Also inside a subtask.
    let (status, body) = post_json(
        "/api/tasks",
        r#"{"repo": "/tmp/r", "description": "d", "subtasks": [{"name": "a", "prompt": "p", "deps": []}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&body, "invalid_argument").contains("unknown field `deps`"));
}

#[tokio::test]
async fn wrong_types_and_missing_fields_name_the_field() {
    let (status, body) = post_json(
        "/api/tasks",
        r#"{"repo": "/tmp/r", "description": "d", "priority": "high"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = error_message(&body, "invalid_argument");
    assert!(message.contains("priority"), "{message}");

    let (status, body) = post_json("/api/tasks", r#"{"description": "d"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&body, "invalid_argument").contains("missing field `repo`"));
}

#[tokio::test]
async fn a_body_without_json_content_type_gets_a_json_error() {
    let request = Request::post("/api/tasks").body(Body::from(VALID)).unwrap();
    let (status, _, body) = send(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&body, "invalid_argument").contains("Content-Type"));
}

#[tokio::test]
async fn task_ids_that_are_not_uuids_are_a_400_naming_them() {
    for (method, path) in [
        (Method::GET, "/api/tasks/not-a-uuid"),
        (Method::POST, "/api/tasks/not-a-uuid/cancel"),
        (Method::GET, "/api/tasks/not-a-uuid/report"),
        (Method::GET, "/api/tasks/not-a-uuid/events"),
        (Method::GET, "/api/events?task=not-a-uuid"),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let (status, _, body) = send(request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert!(
            error_message(&body, "invalid_argument").contains("not-a-uuid"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn bad_query_values_are_a_400() {
    let (status, body) = get("/api/tasks?limit=many").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&body, "invalid_argument").contains("limit"));

    let request = Request::get("/api/events")
        .header("Last-Event-ID", "yesterday")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&body, "invalid_argument").contains("yesterday"));
}

#[tokio::test]
async fn an_unreachable_orchestrator_is_a_503() {
    let (status, body) = post_json("/api/tasks", VALID).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        error_message(&body, "unavailable"),
        "orchestrator unavailable"
    );

    for path in [
        "/api/tasks",
        "/api/workers",
        "/api/tasks/0190f3c2-7f4e-7c2a-9b1e-4a7d2c9e8f10",
    ] {
        let (status, body) = get(path).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        error_message(&body, "unavailable");
    }
}

#[tokio::test]
async fn health_is_unhealthy_naming_the_orchestrator_when_none_listens() {
    for path in ["/api/health", "/readyz"] {
        let (status, content_type, body) =
            send(Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(content_type.as_deref(), Some("application/json"));
        assert_eq!(body["status"], "unhealthy", "{path}: {body}");
        let orchestrator = &body["components"]["orchestrator"];
        assert_eq!(orchestrator["status"], "unhealthy", "{body}");
        assert!(
            orchestrator["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("unreachable")),
            "{body}"
        );
    }
    // Alive all the same.
    let (status, _, body) = send(Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "alive");
}

#[tokio::test]
async fn openapi_lists_every_route() {
    let (status, doc) = get("/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    // The document and the route table name the same routes.
    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|m| ["get", "post", "put", "patch", "delete"].contains(&m.as_str()))
                .map(|m| (m.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    // Every API route; the dashboard's page routes are not API.
    let mut routed: Vec<(String, String)> = aida_gateway::routes::table()
        .into_iter()
        .filter(|(route, _)| route.path.starts_with("/api/"))
        .map(|(route, _)| (route.method.to_string(), route.path.to_owned()))
        .collect();
    documented.sort();
    routed.sort();
    assert_eq!(documented, routed);
    assert!(routed.contains(&("POST".into(), "/api/tasks".into())));
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for schema in [
        "CreateTask",
        "Task",
        "Subtask",
        "TaskStatus",
        "ErrorBody",
        "Worker",
        "Event",
        "TokenPair",
        "User",
        "ApiToken",
        "AuditEntry",
        "WebhookEvent",
    ] {
        assert!(schemas.contains_key(schema), "schema {schema} missing");
    }
}

#[tokio::test]
async fn run_serves_on_the_given_listener_and_stops_on_shutdown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config {
        gateway_listen_addr: addr.to_string(),
        ..config()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(aida_gateway::run(config, listener, async {
        let _ = stopped.await;
    }));

    let response = reqwest::get(format!("http://{addr}/api/health"))
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let body: aida_gateway::api::Health = response.json().await.unwrap();
    assert_eq!(body.status, "unhealthy");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(
        reqwest::get(format!("http://{addr}/api/health"))
            .await
            .is_err()
    );
}
