//! Requests are answered only for the host names the gateway is meant to be
//! reached by (`AIDA_ALLOWED_HOSTS`; the loopback names when it listens on
//! loopback). A web page that rebinds its own DNS name to 127.0.0.1 sends
//! its own name as `Host`, so it is refused: DNS rebinding cannot reach a
//! gateway on a laptop. Cross-origin browser requests are refused unless
//! `AIDA_CORS_ORIGINS` lists the origin.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::ApiError;
use crate::state::AppState;

/// The host names requests may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts {
    /// `None`: any host (a gateway on a non-loopback address with no list).
    names: Option<Vec<String>>,
}

const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

impl AllowedHosts {
    /// From `AIDA_ALLOWED_HOSTS` (comma-separated names, `*` for any) and
    /// the address the gateway listens on.
    pub fn new(list: Option<&str>, bound: SocketAddr) -> Self {
        let names: Vec<String> = list
            .unwrap_or_default()
            .split(',')
            .map(|n| {
                n.trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_ascii_lowercase()
            })
            .filter(|n| !n.is_empty())
            .collect();
        if names.iter().any(|n| n == "*") {
            return AllowedHosts { names: None };
        }
        if !names.is_empty() {
            return AllowedHosts { names: Some(names) };
        }
        if bound.ip().is_loopback() {
            AllowedHosts {
                names: Some(LOOPBACK_NAMES.iter().map(|n| n.to_string()).collect()),
            }
        } else {
            tracing::warn!(
                %bound,
                "AIDA_ALLOWED_HOSTS is not set: requests for any host name are answered; list the gateway's names to stop DNS rebinding"
            );
            AllowedHosts { names: None }
        }
    }

    /// Whether a `Host` header (`name`, `name:port`, `[v6]:port`) is allowed.
    pub fn allows(&self, host: &str) -> bool {
        let Some(names) = &self.names else {
            return true;
        };
        let host = host.trim().to_ascii_lowercase();
        let name = if let Some(rest) = host.strip_prefix('[') {
            rest.split(']').next().unwrap_or_default().to_owned()
        } else {
            match host.rsplit_once(':') {
                Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_owned(),
                _ => host,
            }
        };
        names.contains(&name)
    }
}

/// Refuses requests for a host name not in the list.
pub async fn check_host(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    if !app.hosts().allows(&host) {
        return ApiError::InvalidArgument(format!(
            "host {host:?} is not allowed: the gateway answers only for the names in AIDA_ALLOWED_HOSTS"
        ))
        .into_response();
    }
    next.run(request).await
}

/// The CORS layer for `AIDA_CORS_ORIGINS`, or none: without it browsers
/// refuse cross-origin requests, as the same-origin policy does.
pub fn cors(origins: Option<&str>) -> anyhow::Result<Option<CorsLayer>> {
    let origins: Vec<HeaderValue> = origins
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            HeaderValue::from_str(o)
                .map_err(|_| anyhow::anyhow!("AIDA_CORS_ORIGINS: {o:?} is not a valid origin"))
        })
        .collect::<anyhow::Result<_>>()?;
    if origins.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                header::HeaderName::from_static("idempotency-key"),
                header::HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([header::RETRY_AFTER, header::LOCATION]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_gateways_answer_loopback_names_only() {
        let hosts = AllowedHosts::new(None, "127.0.0.1:8080".parse().unwrap());
        for ok in [
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "LOCALHOST",
            "127.0.0.1",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "",
            "localhost.evil",
        ] {
            assert!(!hosts.allows(bad), "{bad}");
        }
    }

    #[test]
    fn lists_and_wildcards_are_honoured() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(AllowedHosts::new(None, any).allows("anything:1"));
        let listed = AllowedHosts::new(Some("aida.example.com, localhost"), any);
        assert!(listed.allows("aida.example.com:443"));
        assert!(!listed.allows("other.example.com"));
        assert!(AllowedHosts::new(Some("*"), "127.0.0.1:1".parse().unwrap()).allows("x"));
    }
}
