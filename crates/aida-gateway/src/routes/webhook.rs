//! `POST /api/webhook`: events from other systems, authenticated by an
//! HMAC-SHA256 signature instead of a bearer token.
//!
//! AIDA's own events carry `X-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`,
//! the HMAC over `"{t}.{raw body}"` (as Stripe signs): several `v1` values
//! and several secrets (`AIDA_WEBHOOK_SECRETS`, comma-separated) may be
//! given, so a secret can be rotated without downtime; a timestamp more than
//! `AIDA_WEBHOOK_TOLERANCE_SECS` (300) away is refused, and each event `id`
//! is processed at most once. GitHub's deliveries carry
//! `X-Hub-Signature-256: sha256=<hex>` over the raw body and are identified
//! by `X-GitHub-Delivery`. Every comparison is constant-time.

use aida_core::secret::ExposeSecret;
use aida_proto::auth as pb;
use aida_proto::orchestrator as orch;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::api::{CreateTask, ErrorBody, ExternalStatus, WebhookEvent, WebhookOutcome};
use crate::auth::client_ip;
use crate::error::ApiError;
use crate::state::AppState;

type HmacSha256 = Hmac<Sha256>;

/// The user webhook actions are recorded as.
const WEBHOOK_USER: &str = "system";

/// Receives one event; see the module docs for the signatures.
#[utoipa::path(
    post,
    path = "/api/webhook",
    tag = "webhooks",
    request_body = WebhookEvent,
    params(
        ("X-Signature" = Option<String>, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"{t}.{body}\">"),
        ("X-Hub-Signature-256" = Option<String>, Header, description = "GitHub: sha256=<hex HMAC-SHA256 of the body>"),
        ("X-GitHub-Delivery" = Option<String>, Header, description = "GitHub: the delivery id"),
        ("X-GitHub-Event" = Option<String>, Header, description = "GitHub: the event type"),
    ),
    responses(
        (status = 201, description = "a task was created (an AIDA event, or a GitHub issue) or a status recorded", body = WebhookOutcome),
        (status = 200, description = "a GitHub ping", body = WebhookOutcome),
        (status = 202, description = "a GitHub review sent to the agent as a follow-up, or an event AIDA does not act on (`message` says why)", body = WebhookOutcome),
        (status = 400, body = ErrorBody),
        (status = 401, description = "missing or wrong signature, or a timestamp outside the tolerance", body = ErrorBody),
        (status = 404, description = "webhooks are off (no AIDA_WEBHOOK_SECRETS)", body = ErrorBody),
        (status = 409, description = "this event id was processed already", body = ErrorBody),
        (status = 413, body = ErrorBody),
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let client_addr = client_ip(&request)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    if state.webhook_secrets().is_empty() {
        return Err(ApiError::NotFound(
            "webhooks are off: set AIDA_WEBHOOK_SECRETS on the gateway".into(),
        ));
    }
    let headers = request.headers().clone();
    let limit = state.max_body_bytes();
    let body = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| {
            ApiError::PayloadTooLarge(format!(
                "the request body is larger than the limit ({limit} bytes, AIDA_MAX_BODY_BYTES)"
            ))
        })?;
    let refuse = |reason: String| {
        state.audit(pb::AuditEntry {
            username: WEBHOOK_USER.into(),
            role: "system".into(),
            client_addr: client_addr.clone(),
            action: "webhook.refused".into(),
            object: "webhook".into(),
            result: "denied".into(),
            detail_json: serde_json::json!({ "reason": reason }).to_string(),
            ..Default::default()
        });
        tracing::warn!(reason, "webhook refused");
        ApiError::Unauthenticated(reason)
    };
    if let Some(signature) = header(&headers, "x-hub-signature-256") {
        counted(verify_github(&state, signature, &body)).map_err(refuse)?;
        return github(&state, &headers, &body, &client_addr).await;
    }
    let Some(signature) = header(&headers, "x-signature") else {
        count_signature("missing");
        return Err(refuse(
            "the X-Signature header is missing (t=<unix>,v1=<hex HMAC-SHA256 of \"{t}.{body}\">)"
                .into(),
        ));
    };
    let now = chrono::Utc::now().timestamp();
    counted(verify_aida(&state, signature, &body, now)).map_err(refuse)?;
    aida_event(&state, &body, &client_addr).await
}

/// Why a signature was refused: `(result label, reason for the caller)`.
type Refusal = (&'static str, String);

/// Counts a signature check by its result; the reason when refused.
fn counted(checked: Result<(), Refusal>) -> Result<(), String> {
    match checked {
        Ok(()) => {
            count_signature("valid");
            Ok(())
        }
        Err((result, reason)) => {
            count_signature(result);
            Err(reason)
        }
    }
}

fn count_signature(result: &'static str) {
    metrics::counter!(aida_core::metrics::names::WEBHOOK_SIGNATURES, "result" => result)
        .increment(1);
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Whether `mac` over `parts` with any secret equals `expected`.
fn any_secret_matches(state: &AppState, parts: &[&[u8]], expected: &[u8]) -> bool {
    state.webhook_secrets().iter().any(|secret| {
        let Ok(mut mac) = HmacSha256::new_from_slice(secret.expose_secret().as_bytes()) else {
            return false;
        };
        for part in parts {
            mac.update(part);
        }
        // verify_slice compares in constant time.
        mac.verify_slice(expected).is_ok()
    })
}

/// Checks `X-Signature: t=<unix>,v1=<hex>...` against `body` at `now`.
fn verify_aida(state: &AppState, signature: &str, body: &[u8], now: i64) -> Result<(), Refusal> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for item in signature.split(',') {
        match item.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.trim().parse::<i64>().ok(),
            Some(("v1", hex)) => candidates.push(hex.trim()),
            _ => {}
        }
    }
    let invalid = |reason: &str| ("invalid", reason.to_owned());
    let t = timestamp.ok_or_else(|| invalid("X-Signature has no valid t=<unix seconds>"))?;
    let tolerance = state.webhook_tolerance().as_secs() as i64;
    if (now - t).abs() > tolerance {
        return Err((
            "expired",
            format!(
                "the X-Signature timestamp is {} s away from now; at most {tolerance} s are accepted",
                (now - t).abs()
            ),
        ));
    }
    if candidates.is_empty() {
        return Err(invalid("X-Signature has no v1=<hex> signature"));
    }
    let stamp = t.to_string();
    let matched = candidates.iter().any(|hex| {
        hex::decode(hex).is_ok_and(|expected| {
            any_secret_matches(state, &[stamp.as_bytes(), b".", body], &expected)
        })
    });
    if matched {
        Ok(())
    } else {
        Err(invalid("the X-Signature does not match the body"))
    }
}

/// Checks `X-Hub-Signature-256: sha256=<hex>` against `body`.
fn verify_github(state: &AppState, signature: &str, body: &[u8]) -> Result<(), Refusal> {
    let invalid = |reason: &str| ("invalid", reason.to_owned());
    let expected = signature
        .strip_prefix("sha256=")
        .and_then(|hex| hex::decode(hex).ok())
        .ok_or_else(|| invalid("X-Hub-Signature-256 is not sha256=<hex>"))?;
    if any_secret_matches(state, &[body], &expected) {
        Ok(())
    } else {
        Err(invalid("the X-Hub-Signature-256 does not match the body"))
    }
}

fn system_actor(client_addr: &str) -> aida_proto::common::Actor {
    aida_proto::common::Actor {
        username: WEBHOOK_USER.into(),
        role: "system".into(),
        client_addr: client_addr.to_owned(),
        via: "webhook".into(),
    }
}

fn check_event_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
        return Err(ApiError::InvalidArgument(
            "the event \"id\" must be 1 to 200 printable characters".into(),
        ));
    }
    Ok(())
}

/// A replayed id is a conflict, named as such.
fn replayed(id: &str) -> impl Fn(tonic::Status) -> ApiError + '_ {
    move |status| match status.code() {
        tonic::Code::AlreadyExists => {
            ApiError::AlreadyExists(format!("webhook event {id:?} was already processed"))
        }
        _ => ApiError::from(status),
    }
}

async fn aida_event(
    state: &AppState,
    body: &Bytes,
    client_addr: &str,
) -> Result<Response, ApiError> {
    let event: WebhookEvent = serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidArgument(format!("the webhook body is not an event: {e}")))?;
    check_event_id(&event.id)?;
    let delivery = format!("aida:{}", event.id);
    match event.kind.as_str() {
        "task.create" => {
            let task: CreateTask = serde_json::from_value(event.data)
                .map_err(|e| ApiError::InvalidArgument(format!("\"data\" is not a task: {e}")))?;
            let mut request = orch::CreateTaskRequest::from(task);
            request.actor = Some(system_actor(client_addr));
            request.webhook_delivery = delivery;
            let task = state
                .orchestrator()
                .create_task(request)
                .await
                .map_err(replayed(&event.id))?
                .into_inner();
            tracing::info!(task_id = %task.id, event = %event.id, "task created by webhook");
            Ok((
                StatusCode::CREATED,
                Json(WebhookOutcome {
                    id: event.id,
                    outcome: "task_created".into(),
                    task_id: Some(task.id),
                    event_id: None,
                    message: None,
                }),
            )
                .into_response())
        }
        "task.external_status" => {
            let status: ExternalStatus = serde_json::from_value(event.data).map_err(|e| {
                ApiError::InvalidArgument(format!("\"data\" is not an external status: {e}"))
            })?;
            let task_id = aida_core::ids::TaskId::parse(&status.task_id)?;
            let recorded = state
                .orchestrator()
                .record_external_status(orch::ExternalStatusRequest {
                    task_id: task_id.to_string(),
                    state: status.state,
                    description: status.description,
                    url: status.url,
                    context: status.context,
                    actor: Some(system_actor(client_addr)),
                    webhook_delivery: delivery,
                })
                .await
                .map_err(replayed(&event.id))?
                .into_inner();
            Ok((
                StatusCode::CREATED,
                Json(WebhookOutcome {
                    id: event.id,
                    outcome: "status_recorded".into(),
                    task_id: Some(task_id.to_string()),
                    event_id: Some(recorded.id),
                    message: None,
                }),
            )
                .into_response())
        }
        other => Err(ApiError::InvalidArgument(format!(
            "unknown event type {other:?}: use \"task.create\" or \"task.external_status\""
        ))),
    }
}

/// A verified GitHub delivery, handed to the orchestrator, which acts on it
/// at most once: an issue labeled or commented on with `/aida` on a mapped
/// repository starts a task, a review of AIDA's pull request follows up,
/// and anything else is acknowledged with the reason.
async fn github(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
    client_addr: &str,
) -> Result<Response, ApiError> {
    let id = header(headers, "x-github-delivery")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ApiError::InvalidArgument("X-GitHub-Delivery is missing".into()))?
        .to_owned();
    check_event_id(&id)?;
    let event = header(headers, "x-github-event")
        .filter(|e| !e.is_empty())
        .ok_or_else(|| ApiError::InvalidArgument("X-GitHub-Event is missing".into()))?
        .to_owned();
    let outcome = state
        .orchestrator()
        .handle_git_hub_event(orch::GitHubEventRequest {
            event: event.clone(),
            delivery: id.clone(),
            payload: body.to_vec(),
            actor: Some(system_actor(client_addr)),
        })
        .await
        .map_err(replayed(&id))?
        .into_inner();
    let status = match outcome.outcome.as_str() {
        "task_created" => StatusCode::CREATED,
        "follow_up" => StatusCode::ACCEPTED,
        "pong" => StatusCode::OK,
        _ => StatusCode::ACCEPTED,
    };
    Ok((
        status,
        Json(WebhookOutcome {
            id,
            outcome: outcome.outcome,
            task_id: (!outcome.task_id.is_empty()).then_some(outcome.task_id),
            event_id: None,
            message: (!outcome.message.is_empty()).then_some(outcome.message),
        }),
    )
        .into_response())
}
