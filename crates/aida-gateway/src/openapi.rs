//! The OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! attributes and the DTOs' schemas.

use utoipa::OpenApi;

use crate::routes::{context, events, system, tasks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "AIDA",
        description = "Run AI coding agents in parallel in git worktrees and merge their work."
    ),
    paths(
        tasks::create_task,
        tasks::orchestrate,
        tasks::list_tasks,
        tasks::get_task,
        tasks::cancel_task,
        tasks::approve_task,
        tasks::cancel_subtask,
        tasks::get_report,
        tasks::list_events,
        context::list_context,
        context::get_context,
        context::put_context,
        events::follow_events,
        system::list_workers,
        system::list_locks,
        system::health,
        system::openapi,
    ),
    modifiers(&ContextToken),
    tags(
        (name = "tasks", description = "Create and follow tasks"),
        (name = "events", description = "Task, worker and log events"),
        (name = "context", description = "A task's shared context, read and written by its agents"),
        (name = "workers", description = "Connected workers"),
        (name = "system", description = "Health and this document"),
    )
)]
pub struct ApiDoc;

/// Declares the bearer token that writes a task's context.
struct ContextToken;

impl utoipa::Modify for ContextToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "context_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
