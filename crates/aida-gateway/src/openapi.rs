//! The OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! attributes and the DTOs' schemas.

use utoipa::OpenApi;

use crate::routes::{
    audit, auth, context, events, maintenance, system, tasks, tokens, users, webhook, workflows,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "AIDA",
        description = "Run AI coding agents in parallel in git worktrees and merge their work."
    ),
    paths(
        auth::login,
        auth::refresh,
        auth::logout,
        auth::me,
        tasks::create_task,
        tasks::orchestrate,
        tasks::list_tasks,
        tasks::get_task,
        tasks::cancel_task,
        tasks::approve_task,
        tasks::cancel_subtask,
        tasks::follow_up,
        tasks::get_report,
        tasks::get_diff,
        tasks::list_events,
        context::list_context,
        context::get_context,
        context::put_context,
        events::follow_events,
        system::list_workers,
        system::drain_worker,
        system::resume_worker,
        system::list_locks,
        system::health,
        system::status,
        system::openapi,
        users::list_users,
        users::create_user,
        users::update_user,
        users::delete_user,
        tokens::list_tokens,
        tokens::create_token,
        tokens::revoke_token,
        audit::list_audit,
        maintenance::collect_garbage,
        webhook::receive,
        workflows::list_workflows,
        workflows::put_workflow,
        workflows::get_workflow,
        workflows::delete_workflow,
        workflows::run_workflow,
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "tasks", description = "Create and follow tasks"),
        (name = "events", description = "Task, worker and log events"),
        (name = "context", description = "A task's shared context, read and written by its agents"),
        (name = "workers", description = "Connected workers"),
        (name = "system", description = "Health and this document"),
        (name = "auth", description = "Signing in: access tokens (JWT) and refresh tokens"),
        (name = "users", description = "Users and their roles (admins)"),
        (name = "tokens", description = "API tokens for CI and scripts (admins)"),
        (name = "audit", description = "The audit trail (admins)"),
        (name = "webhooks", description = "Signed events from other systems"),
        (name = "workflows", description = "Reusable task templates: steps, parallel groups, fallbacks"),
    )
)]
pub struct ApiDoc;

/// Declares the bearer credentials: a user's access token (JWT) or API
/// token, and an agent's context token.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An access token from POST /api/auth/login, or an API token (aida_pat_...)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "context_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An agent's AIDA_CONTEXT_TOKEN (aida_ctx_...)"))
                    .build(),
            ),
        );
    }
}
