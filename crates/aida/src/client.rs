//! A typed client for the gateway's REST API, speaking the DTOs of
//! `aida_gateway::api`. An error response becomes an [`ApiError`] carrying
//! the API's own message, which is what the CLI shows the user.

use std::fmt;
use std::pin::Pin;

use aida_gateway::api::{
    CreateTask, ErrorBody, Event, EventList, Task, TaskList, Worker, WorkerList,
};
use anyhow::Context;
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

/// An error the API answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (HTTP {}, {})",
            self.message,
            self.status.as_u16(),
            self.code
        )
    }
}

impl std::error::Error for ApiError {}

/// Events of a followed task, as they arrive.
pub type EventStream = Pin<Box<dyn Stream<Item = anyhow::Result<Event>> + Send>>;

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The gateway's base URL without a trailing slash.
    base: String,
}

impl Client {
    pub fn new(base_url: &str) -> anyhow::Result<Self> {
        let base = base_url.trim().trim_end_matches('/').to_owned();
        reqwest::Url::parse(&base).with_context(|| format!("invalid gateway url {base:?}"))?;
        Ok(Client {
            http: reqwest::Client::new(),
            base,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn create_task(&self, body: &CreateTask) -> anyhow::Result<Task> {
        self.json(self.http.post(self.url("/api/tasks")).json(body))
            .await
    }

    pub async fn get_task(&self, id: &str) -> anyhow::Result<Task> {
        self.json(self.http.get(self.url(&format!("/api/tasks/{id}"))))
            .await
    }

    pub async fn list_tasks(&self, limit: Option<u32>) -> anyhow::Result<Vec<Task>> {
        let mut request = self.http.get(self.url("/api/tasks"));
        if let Some(limit) = limit {
            request = request.query(&[("limit", limit)]);
        }
        let list: TaskList = self.json(request).await?;
        Ok(list.tasks)
    }

    pub async fn approve_task(&self, id: &str) -> anyhow::Result<Task> {
        self.json(
            self.http
                .post(self.url(&format!("/api/tasks/{id}/approve"))),
        )
        .await
    }

    pub async fn cancel_subtask(&self, id: &str, subtask: &str) -> anyhow::Result<Task> {
        self.json(
            self.http
                .post(self.url(&format!("/api/tasks/{id}/subtasks/{subtask}/cancel"))),
        )
        .await
    }

    pub async fn cancel_task(&self, id: &str) -> anyhow::Result<Task> {
        self.json(self.http.post(self.url(&format!("/api/tasks/{id}/cancel"))))
            .await
    }

    pub async fn report_markdown(&self, id: &str) -> anyhow::Result<String> {
        let request = self
            .http
            .get(self.url(&format!("/api/tasks/{id}/report")))
            .header(reqwest::header::ACCEPT, "text/markdown");
        let response = self.send(request).await?;
        response.text().await.context("reading the report")
    }

    pub async fn report_json(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        let request = self
            .http
            .get(self.url(&format!("/api/tasks/{id}/report")))
            .header(reqwest::header::ACCEPT, "application/json");
        self.json(request).await
    }

    pub async fn events(&self, id: &str) -> anyhow::Result<Vec<Event>> {
        let list: EventList = self
            .json(self.http.get(self.url(&format!("/api/tasks/{id}/events"))))
            .await?;
        Ok(list.events)
    }

    pub async fn workers(&self) -> anyhow::Result<Vec<Worker>> {
        let list: WorkerList = self.json(self.http.get(self.url("/api/workers"))).await?;
        Ok(list.workers)
    }

    /// Follows a task's events from after `after` (all of them when
    /// `None`); the stream ends when the task finished.
    pub async fn follow(&self, task_id: &str, after: Option<i64>) -> anyhow::Result<EventStream> {
        let mut request = self
            .http
            .get(self.url("/api/events"))
            .query(&[("task", task_id)])
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(after) = after {
            request = request.header("Last-Event-ID", after.to_string());
        }
        let response = self.send(request).await?;
        let events = response.bytes_stream().eventsource().map(|item| {
            let sse = item.context("reading the event stream")?;
            if sse.event == "error" {
                // The gateway reports a failure after the headers in-band.
                let body: ErrorBody =
                    serde_json::from_str(&sse.data).context("reading an error event")?;
                anyhow::bail!("event stream failed: {}", body.error.message);
            }
            serde_json::from_str::<Event>(&sse.data)
                .with_context(|| format!("reading event {:?}", sse.id))
        });
        Ok(Box::pin(events))
    }

    async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> anyhow::Result<T> {
        let response = self.send(request).await?;
        let url = response.url().clone();
        response
            .json()
            .await
            .with_context(|| format!("reading the answer of {url}"))
    }

    /// Sends a request; an error status becomes an [`ApiError`].
    async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {}", self.base))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let error = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => ApiError {
                status,
                code: body.error.code,
                message: body.error.message,
            },
            // Not our API's error shape (a proxy in between, for example).
            Err(_) => ApiError {
                status,
                code: "http".to_owned(),
                message: if text.trim().is_empty() {
                    status
                        .canonical_reason()
                        .unwrap_or("request failed")
                        .to_owned()
                } else {
                    text.trim().to_owned()
                },
            },
        };
        Err(error.into())
    }
}
