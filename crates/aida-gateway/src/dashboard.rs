//! The web dashboard: a page shell and its assets (plain ES modules and
//! CSS, no build step; highlight.js vendored for diffs), compiled into the
//! gateway so the pod needs nothing else and nothing is fetched at run
//! time. The page signs in through the REST API and reads everything from
//! it; the shell holds no data, so it is served to anyone, with a strict
//! Content-Security-Policy (only this origin's scripts, styles and calls).

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Every asset: path below `/assets/`, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.css", "text/css", include_str!("../dashboard/app.css")),
    (
        "js/main.js",
        "text/javascript",
        include_str!("../dashboard/js/main.js"),
    ),
    (
        "js/api.js",
        "text/javascript",
        include_str!("../dashboard/js/api.js"),
    ),
    (
        "js/util.js",
        "text/javascript",
        include_str!("../dashboard/js/util.js"),
    ),
    (
        "js/tasks.js",
        "text/javascript",
        include_str!("../dashboard/js/tasks.js"),
    ),
    (
        "js/task.js",
        "text/javascript",
        include_str!("../dashboard/js/task.js"),
    ),
    (
        "js/workers.js",
        "text/javascript",
        include_str!("../dashboard/js/workers.js"),
    ),
    (
        "js/create.js",
        "text/javascript",
        include_str!("../dashboard/js/create.js"),
    ),
    (
        "js/log.js",
        "text/javascript",
        include_str!("../dashboard/js/log.js"),
    ),
    (
        "js/markdown.js",
        "text/javascript",
        include_str!("../dashboard/js/markdown.js"),
    ),
    (
        "vendor/highlight.min.js",
        "text/javascript",
        include_str!("../dashboard/vendor/highlight.min.js"),
    ),
    (
        "vendor/github.min.css",
        "text/css",
        include_str!("../dashboard/vendor/github.min.css"),
    ),
    (
        "vendor/github-dark.min.css",
        "text/css",
        include_str!("../dashboard/vendor/github-dark.min.css"),
    ),
];

const INDEX: &str = include_str!("../dashboard/index.html");

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The page shell, for every page of the dashboard.
pub async fn page() -> Response {
    secured(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response())
}

/// One asset, or 404.
pub async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == path) {
        Some((_, kind, body)) => secured(
            (
                [(header::CONTENT_TYPE, format!("{kind}; charset=utf-8"))],
                *body,
            )
                .into_response(),
        ),
        None => secured((StatusCode::NOT_FOUND, "no such asset").into_response()),
    }
}
