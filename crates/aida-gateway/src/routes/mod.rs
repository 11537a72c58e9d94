//! HTTP handlers, grouped by what they are about, and the route table: the
//! one place where every route declares the permission it needs. The router
//! is built from the table only, so a route without a permission cannot
//! exist; a test walks the table against the real router.

pub mod audit;
pub mod auth;
pub mod context;
pub mod events;
pub mod maintenance;
pub mod system;
pub mod tasks;
pub mod tokens;
pub mod users;
pub mod webhook;
pub mod workflows;

use axum::Router;
use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, patch, post, put};

use crate::auth::{GateState, Permission, gate};
use crate::state::AppState;

/// One route: method, path (axum syntax) and what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub permission: Permission,
}

/// Every route with its permission and handler.
pub fn table() -> Vec<(Route, MethodRouter<AppState>)> {
    use Permission::*;
    let r = |method: Method, path: &'static str, permission: Permission| Route {
        method,
        path,
        permission,
    };
    vec![
        // Signing in.
        (
            r(Method::POST, "/api/auth/login", Public),
            post(auth::login),
        ),
        (
            r(Method::POST, "/api/auth/refresh", Public),
            post(auth::refresh),
        ),
        (
            r(Method::POST, "/api/auth/logout", Authenticated),
            post(auth::logout),
        ),
        (r(Method::GET, "/api/auth/me", Authenticated), get(auth::me)),
        // Tasks.
        (
            r(Method::POST, "/api/tasks", TaskCreate),
            post(tasks::create_task),
        ),
        (
            r(Method::GET, "/api/tasks", TaskRead),
            get(tasks::list_tasks),
        ),
        (
            r(Method::POST, "/api/orchestrate", TaskCreate),
            post(tasks::orchestrate),
        ),
        (
            r(Method::GET, "/api/tasks/{id}", TaskRead),
            get(tasks::get_task),
        ),
        (
            r(Method::POST, "/api/tasks/{id}/cancel", TaskControl),
            post(tasks::cancel_task),
        ),
        (
            r(Method::POST, "/api/tasks/{id}/approve", TaskControl),
            post(tasks::approve_task),
        ),
        (
            r(
                Method::POST,
                "/api/tasks/{id}/subtasks/{name}/cancel",
                TaskControl,
            ),
            post(tasks::cancel_subtask),
        ),
        (
            r(
                Method::POST,
                "/api/tasks/{id}/subtasks/{name}/follow-up",
                TaskControl,
            ),
            post(tasks::follow_up),
        ),
        (
            r(Method::GET, "/api/tasks/{id}/report", TaskRead),
            get(tasks::get_report),
        ),
        (
            r(Method::GET, "/api/tasks/{id}/events", TaskRead),
            get(tasks::list_events),
        ),
        (
            r(Method::GET, "/api/tasks/{id}/diff", TaskRead),
            get(tasks::get_diff),
        ),
        (
            r(Method::GET, "/api/tasks/{id}/context", ContextRead),
            get(context::list_context),
        ),
        (
            r(Method::GET, "/api/tasks/{id}/context/{key}", ContextRead),
            get(context::get_context),
        ),
        (
            r(Method::PUT, "/api/tasks/{id}/context/{key}", ContextWrite),
            put(context::put_context),
        ),
        (
            r(Method::GET, "/api/events", TaskRead),
            get(events::follow_events),
        ),
        // Workflows.
        (
            r(Method::GET, "/api/workflows", TaskRead),
            get(workflows::list_workflows),
        ),
        (
            r(Method::POST, "/api/workflows", TaskCreate),
            post(workflows::put_workflow),
        ),
        (
            r(Method::GET, "/api/workflows/{name}", TaskRead),
            get(workflows::get_workflow),
        ),
        (
            r(Method::DELETE, "/api/workflows/{name}", TaskCreate),
            delete(workflows::delete_workflow),
        ),
        (
            r(Method::POST, "/api/workflows/{name}/run", TaskCreate),
            post(workflows::run_workflow),
        ),
        // The system.
        (
            r(Method::GET, "/api/workers", SystemRead),
            get(system::list_workers),
        ),
        (
            r(Method::POST, "/api/workers/{id}/drain", WorkerAdmin),
            post(system::drain_worker),
        ),
        (
            r(Method::POST, "/api/workers/{id}/resume", WorkerAdmin),
            post(system::resume_worker),
        ),
        (
            r(Method::GET, "/api/locks", SystemRead),
            get(system::list_locks),
        ),
        (r(Method::GET, "/api/health", Public), get(system::health)),
        // For Prometheus and probes; /metrics asks for AIDA_METRICS_TOKEN
        // itself when one is set.
        (r(Method::GET, "/metrics", Public), get(system::metrics)),
        (r(Method::GET, "/healthz", Public), get(system::healthz)),
        (r(Method::GET, "/readyz", Public), get(system::readyz)),
        (
            r(Method::GET, "/api/status", SystemRead),
            get(system::status),
        ),
        (
            r(Method::GET, "/api/openapi.json", SystemRead),
            get(system::openapi),
        ),
        // Administration.
        (
            r(Method::GET, "/api/users", UserAdmin),
            get(users::list_users),
        ),
        (
            r(Method::POST, "/api/users", UserAdmin),
            post(users::create_user),
        ),
        (
            r(Method::PATCH, "/api/users/{name}", UserAdmin),
            patch(users::update_user),
        ),
        (
            r(Method::DELETE, "/api/users/{name}", UserAdmin),
            delete(users::delete_user),
        ),
        (
            r(Method::GET, "/api/tokens", TokenAdmin),
            get(tokens::list_tokens),
        ),
        (
            r(Method::POST, "/api/tokens", TokenAdmin),
            post(tokens::create_token),
        ),
        (
            r(Method::DELETE, "/api/tokens/{id}", TokenAdmin),
            delete(tokens::revoke_token),
        ),
        (
            r(Method::GET, "/api/audit", AuditRead),
            get(audit::list_audit),
        ),
        (
            r(Method::POST, "/api/admin/gc", Maintenance),
            post(maintenance::collect_garbage),
        ),
        // Signed by the sender instead of a bearer token.
        (
            r(Method::POST, "/api/webhook", Signed),
            post(webhook::receive),
        ),
        // The dashboard: a page shell and its assets, holding no data.
        (r(Method::GET, "/", Public), get(crate::dashboard::page)),
        (
            r(Method::GET, "/tasks/{id}", Public),
            get(crate::dashboard::page),
        ),
        (
            r(Method::GET, "/workers", Public),
            get(crate::dashboard::page),
        ),
        (r(Method::GET, "/new", Public), get(crate::dashboard::page)),
        (
            r(Method::GET, "/assets/{*path}", Public),
            get(crate::dashboard::asset),
        ),
    ]
}

/// The router of [`table`], each route behind its permission's gate.
pub fn router(state: &AppState) -> Router<AppState> {
    table()
        .into_iter()
        .fold(Router::new(), |router, (route, handler)| {
            let gate_state = GateState {
                app: state.clone(),
                permission: route.permission,
            };
            router.route(
                route.path,
                handler.route_layer(axum::middleware::from_fn_with_state(gate_state, gate)),
            )
        })
}
