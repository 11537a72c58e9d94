//! Who gets in, checked on the real router without an orchestrator: every
//! route of the route table against no token and each role's token, forged
//! access tokens, host names, CORS, body and rate limits, and the settings
//! the gateway refuses to start with. A request that passes the gate meets
//! the unreachable orchestrator (503) or a bad-input check (400), never
//! 401 or 403.

use std::net::SocketAddr;

use aida_core::auth::Role;
use aida_core::secret::SecretString;
use aida_gateway::auth::Permission;
use aida_gateway::{AppState, Config, app};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine;
use serde_json::{Value, json};
use tower::ServiceExt;

const KEY: &str = "access-test-signing-key-0123456789";

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
            jwt_secret: Some(SecretString::from(KEY)),
            webhook_secrets: Vec::new(),
        },
        ..Config::default()
    }
}

fn bound() -> SocketAddr {
    "127.0.0.1:8080".parse().unwrap()
}

struct Gateway {
    state: AppState,
    router: axum::Router,
}

impl Gateway {
    fn with(config: Config) -> Gateway {
        let state = AppState::from_config(&config, bound()).unwrap();
        let router = app(state.clone(), config.cors_origins.as_deref()).unwrap();
        Gateway { state, router }
    }

    fn new() -> Gateway {
        Self::with(config())
    }

    fn token(&self, role: Role) -> String {
        self.state
            .jwt()
            .unwrap()
            .issue("someone", role, "s")
            .unwrap()
    }

    async fn send(&self, mut request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
        request
            .headers_mut()
            .entry(header::HOST)
            .or_insert("localhost:8080".parse().unwrap());
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

/// A request for `route` with its path parameters filled in.
fn request_for(method: &Method, path: &str, bearer: Option<&str>) -> Request<Body> {
    let path = path
        .replace("{id}", "0190f3c2-7f4e-7c2a-9b1e-4a7d2c9e8f10")
        .replace("{name}", "somebody")
        .replace("{key}", "api-url");
    let mut builder = Request::builder().method(method.clone()).uri(path);
    if let Some(token) = bearer {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if [Method::POST, Method::PUT, Method::PATCH].contains(method) {
        builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap()
    } else {
        builder.body(Body::empty()).unwrap()
    }
}

#[tokio::test]
async fn every_route_answers_401_without_a_token_and_403_to_roles_without_its_permission() {
    let gateway = Gateway::new();
    let table = aida_gateway::routes::table();
    let open: Vec<(String, &str)> = table
        .iter()
        .filter(|(r, _)| r.permission.is_open())
        .map(|(r, _)| (r.method.to_string(), r.path))
        .collect();
    assert_eq!(
        open,
        [
            ("POST".to_owned(), "/api/auth/login"),
            ("POST".to_owned(), "/api/auth/refresh"),
            ("GET".to_owned(), "/api/health"),
            ("GET".to_owned(), "/metrics"),
            ("GET".to_owned(), "/healthz"),
            ("GET".to_owned(), "/readyz"),
            ("POST".to_owned(), "/api/webhook"),
            ("GET".to_owned(), "/"),
            ("GET".to_owned(), "/tasks/{id}"),
            ("GET".to_owned(), "/workers"),
            ("GET".to_owned(), "/new"),
            ("GET".to_owned(), "/assets/{*path}"),
        ],
        "only health, metrics (with their own token when set), signing in, the signed webhook and the dashboard's shell are open"
    );
    // The dashboard's open routes serve the page shell and its assets:
    // never data, and only under a policy that runs this origin's scripts.
    for path in [
        "/",
        "/tasks/0190f3c2-7f4e-7c2a-9b1e-4a7d2c9e8f10",
        "/assets/js/main.js",
    ] {
        let (status, headers, _) = gateway.send(request_for(&Method::GET, path, None)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(policy.contains("script-src 'self'"), "{path}: {policy}");
    }
    let (status, _, _) = gateway
        .send(request_for(&Method::GET, "/assets/../Cargo.toml", None))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for (route, _) in &table {
        let what = format!("{} {}", route.method, route.path);
        let (status, _, body) = gateway
            .send(request_for(&route.method, route.path, None))
            .await;
        if route.permission.is_open() {
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
            continue;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(body["error"]["code"], "unauthenticated", "{what}");

        for role in Role::USER_ROLES {
            let token = gateway.token(role);
            let (status, _, body) = gateway
                .send(request_for(&route.method, route.path, Some(&token)))
                .await;
            if route.permission.allowed_for(role) {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{what} as {role}: {status} {body}"
                );
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{what} as {role}: {body}");
                assert_eq!(body["error"]["code"], "permission_denied");
            }
        }
    }
}

#[test]
fn the_permission_matrix_is_the_seeds() {
    use Permission::*;
    let can = |role: Role| -> Vec<Permission> {
        [
            TaskRead,
            TaskCreate,
            TaskControl,
            ContextRead,
            ContextWrite,
            SystemRead,
            WorkerAdmin,
            UserAdmin,
            TokenAdmin,
            AuditRead,
            Maintenance,
        ]
        .into_iter()
        .filter(|p| p.allowed_for(role))
        .collect()
    };
    assert_eq!(can(Role::Viewer), [TaskRead, ContextRead, SystemRead]);
    assert_eq!(
        can(Role::Operator),
        [
            TaskRead,
            TaskCreate,
            TaskControl,
            ContextRead,
            ContextWrite,
            SystemRead
        ]
    );
    assert_eq!(can(Role::Admin).len(), 11);
    assert!(!can(Role::System).contains(&UserAdmin));
    assert!(can(Role::System).contains(&TaskCreate));
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn sign(alg: jsonwebtoken::Algorithm, key: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn expired_foreign_unsigned_and_doctored_access_tokens_are_refused() {
    let gateway = Gateway::new();
    let now = jsonwebtoken::get_current_timestamp();
    let claims = |exp: u64, iss: &str, aud: &str| {
        json!({"sub": "alice", "role": "admin", "iss": iss, "aud": aud, "exp": exp,
               "nbf": now - 5, "iat": now - 5, "jti": "j", "sid": "s"})
    };
    let good = claims(now + 300, "aida", "aida-api");
    let valid = sign(jsonwebtoken::Algorithm::HS256, KEY, &good);
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(good.to_string().as_bytes())
    );
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    let mut elevated = good.clone();
    elevated["sub"] = json!("mallory");
    parts[1] = b64(elevated.to_string().as_bytes());
    let tampered = parts.join(".");

    let cases = [
        (
            "expired",
            sign(
                jsonwebtoken::Algorithm::HS256,
                KEY,
                &claims(now - 120, "aida", "aida-api"),
            ),
        ),
        (
            "another key",
            sign(
                jsonwebtoken::Algorithm::HS256,
                "some-other-key-0123456789abcdefgh",
                &good,
            ),
        ),
        ("alg none", unsigned),
        ("HS512", sign(jsonwebtoken::Algorithm::HS512, KEY, &good)),
        (
            "wrong aud",
            sign(
                jsonwebtoken::Algorithm::HS256,
                KEY,
                &claims(now + 300, "aida", "elsewhere"),
            ),
        ),
        (
            "wrong iss",
            sign(
                jsonwebtoken::Algorithm::HS256,
                KEY,
                &claims(now + 300, "evil", "aida-api"),
            ),
        ),
        ("tampered", tampered),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (what, token) in cases {
        let (status, headers, body) = gateway
            .send(request_for(&Method::GET, "/api/tasks", Some(&token)))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer", "{what}");
    }
    let (status, _, body) = gateway
        .send(request_for(&Method::GET, "/api/tasks", Some(&valid)))
        .await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a valid token passes: {body}"
    );
}

#[tokio::test]
async fn requests_for_other_host_names_are_refused() {
    let gateway = Gateway::new();
    let token = gateway.token(Role::Admin);
    let mut request = request_for(&Method::GET, "/api/health", Some(&token));
    request
        .headers_mut()
        .insert(header::HOST, "attacker.example:8080".parse().unwrap());
    let (status, _, body) = gateway.send(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("attacker.example") && message.contains("AIDA_ALLOWED_HOSTS"),
        "{message}"
    );

    let listed = Gateway::with(Config {
        allowed_hosts: Some("aida.example.com".into()),
        ..config()
    });
    let mut request = request_for(&Method::GET, "/api/health", None);
    request
        .headers_mut()
        .insert(header::HOST, "aida.example.com".parse().unwrap());
    let (status, _, _) = listed.send(request).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "health, past the host check"
    );
}

async fn preflight(gateway: &Gateway, origin: &str) -> Option<String> {
    let request = Request::builder()
        .method(Method::OPTIONS)
        .uri("/api/tasks")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type",
        )
        .body(Body::empty())
        .unwrap();
    let (_, headers, _) = gateway.send(request).await;
    headers
        .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn cross_origin_requests_are_closed_unless_the_origin_is_listed() {
    assert_eq!(
        preflight(&Gateway::new(), "https://dash.example").await,
        None
    );
    let open = Gateway::with(Config {
        cors_origins: Some("https://dash.example".into()),
        ..config()
    });
    assert_eq!(
        preflight(&open, "https://dash.example").await.as_deref(),
        Some("https://dash.example")
    );
    assert_eq!(preflight(&open, "https://evil.example").await, None);
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413() {
    let gateway = Gateway::with(Config {
        max_body_bytes: 1024,
        ..config()
    });
    let token = gateway.token(Role::Operator);
    let body = json!({"repo": "/tmp/r", "description": "x".repeat(4096)}).to_string();
    let request = Request::post("/api/tasks")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    let (status, _, body) = gateway.send(request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn past_a_rate_limit_requests_get_429_with_retry_after() {
    let gateway = Gateway::with(Config {
        rate_limit_per_minute: 60,
        rate_limit_burst: 3,
        client_rate_limit_per_minute: 60,
        client_rate_limit_burst: 5,
        ..config()
    });
    // Per user: the fourth request in a burst of three waits.
    let token = gateway.token(Role::Viewer);
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..4 {
        let (status, headers, _) = gateway
            .send(request_for(&Method::GET, "/api/workers", Some(&token)))
            .await;
        statuses.push(status);
        retry_after = headers.get(header::RETRY_AFTER).cloned();
    }
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    assert!(
        statuses[..3]
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE)
    );
    let wait: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");

    // Per client address, signed in or not.
    let addr: SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let mut last = StatusCode::OK;
    for _ in 0..6 {
        let mut request = request_for(&Method::GET, "/api/health", None);
        request.extensions_mut().insert(ConnectInfo(addr));
        last = gateway.send(request).await.0;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn the_gateway_refuses_to_start_without_a_safe_secret_or_with_auth_off_in_the_open() {
    let err = |config: Config, bound: &str| {
        AppState::from_config(&config, bound.parse().unwrap())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let mut no_secret = config();
    no_secret.secrets.jwt_secret = None;
    assert!(err(no_secret, "127.0.0.1:8080").contains("AIDA_JWT_SECRET"));
    let mut short = config();
    short.secrets.jwt_secret = Some(SecretString::from("too-short"));
    assert!(err(short, "127.0.0.1:8080").contains("at least 32 bytes"));
    let off = Config {
        auth: "off".into(),
        ..config()
    };
    assert!(err(off.clone(), "0.0.0.0:8080").contains("AIDA_AUTH=off"));
    assert!(AppState::from_config(&off, bound()).is_ok());
}
