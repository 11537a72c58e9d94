//! The OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! attributes and the DTOs' schemas.

use utoipa::OpenApi;

use crate::routes::{events, system, tasks};

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
        tasks::get_report,
        tasks::list_events,
        events::follow_events,
        system::list_workers,
        system::health,
        system::openapi,
    ),
    tags(
        (name = "tasks", description = "Create and follow tasks"),
        (name = "events", description = "Task, worker and log events"),
        (name = "workers", description = "Connected workers"),
        (name = "system", description = "Health and this document"),
    )
)]
pub struct ApiDoc;
