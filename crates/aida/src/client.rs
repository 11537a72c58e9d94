//! A typed client for the gateway's REST API, speaking the DTOs of
//! `aida_gateway::api`. Every request carries the [`Credential`] found for
//! the gateway; an expired login is renewed once, before a request or when
//! one is refused. An error response becomes an [`ApiError`] carrying the
//! API's own message, which is what the CLI shows the user, with a hint
//! on what to do when the token was the problem.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use aida_core::secret::ExposeSecret;
use aida_gateway::api::{
    ApiToken, ApiTokenList, AuditEntry, AuditList, CreateApiToken, CreateTask, CreateUser, Diff,
    ErrorBody, Event, EventList, FollowUp, GcReport, GcRequest, Login, Me, PutWorkflow,
    RunWorkflow, SystemStatus, Task, TaskList, TokenPair, UpdateUser, User, UserList, Worker,
    WorkerList, Workflow, WorkflowList, WorkflowQuery,
};
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use crate::credentials::{self, Credential, Source};

/// An error the API answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// What the user can do about it, when the CLI knows better than the
    /// API (which token was refused, and where it came from).
    pub hint: Option<String>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (HTTP {}, {})",
            self.message,
            self.status.as_u16(),
            self.code
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

impl ApiError {
    /// The error of a response whose status is not a success.
    pub async fn from_response(response: Response) -> ApiError {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => ApiError {
                status,
                code: body.error.code,
                message: body.error.message,
                hint: None,
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
                hint: None,
            },
        }
    }
}

/// A path segment from user input (a name, an id), percent-encoded so it
/// stays one segment: `../tokens/x` must not reach another route.
fn segment(value: &str) -> anyhow::Result<String> {
    if value.is_empty() || value == "." || value == ".." {
        bail!("{value:?} is not a valid name or id");
    }
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(out)
}

impl std::error::Error for ApiError {}

/// A workflow query as URL parameters (absent ones left out).
fn workflow_query(query: &WorkflowQuery) -> Vec<(&'static str, String)> {
    let mut pairs = Vec::new();
    if let Some(repo) = &query.repo {
        pairs.push(("repo", repo.clone()));
    }
    if let Some(base) = &query.base {
        pairs.push(("base", base.clone()));
    }
    pairs
}

/// Events of a followed task, as they arrive.
pub type EventStream = Pin<Box<dyn Stream<Item = anyhow::Result<Event>> + Send>>;

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The gateway's base URL without a trailing slash.
    base: String,
    /// Shared by clones, so that a renewed login is used by all of them.
    credential: Arc<Mutex<Credential>>,
}

impl Client {
    /// A client whose requests carry `credential`.
    pub fn new(base_url: &str, credential: Credential) -> anyhow::Result<Self> {
        let base = base_url.trim().trim_end_matches('/').to_owned();
        reqwest::Url::parse(&base).with_context(|| format!("invalid gateway url {base:?}"))?;
        Ok(Client {
            http: reqwest::Client::new(),
            base,
            credential: Arc::new(Mutex::new(credential)),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn create_task(&self, body: &CreateTask) -> anyhow::Result<Task> {
        self.json(self.http.post(self.url("/api/tasks")).json(body))
            .await
    }

    pub async fn get_task(&self, id: &str) -> anyhow::Result<Task> {
        let path = format!("/api/tasks/{}", segment(id)?);
        self.json(self.http.get(self.url(&path))).await
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
        let path = format!("/api/tasks/{}/approve", segment(id)?);
        self.json(self.http.post(self.url(&path))).await
    }

    pub async fn cancel_subtask(&self, id: &str, subtask: &str) -> anyhow::Result<Task> {
        let path = format!(
            "/api/tasks/{}/subtasks/{}/cancel",
            segment(id)?,
            segment(subtask)?
        );
        self.json(self.http.post(self.url(&path))).await
    }

    pub async fn cancel_task(&self, id: &str) -> anyhow::Result<Task> {
        let path = format!("/api/tasks/{}/cancel", segment(id)?);
        self.json(self.http.post(self.url(&path))).await
    }

    pub async fn follow_up(
        &self,
        id: &str,
        subtask: &str,
        body: &FollowUp,
    ) -> anyhow::Result<Task> {
        let path = format!(
            "/api/tasks/{}/subtasks/{}/follow-up",
            segment(id)?,
            segment(subtask)?
        );
        self.json(self.http.post(self.url(&path)).json(body)).await
    }

    pub async fn list_workflows(&self, query: &WorkflowQuery) -> anyhow::Result<Vec<Workflow>> {
        let list: WorkflowList = self
            .json(
                self.http
                    .get(self.url("/api/workflows"))
                    .query(&workflow_query(query)),
            )
            .await?;
        Ok(list.workflows)
    }

    pub async fn get_workflow(
        &self,
        name: &str,
        query: &WorkflowQuery,
    ) -> anyhow::Result<Workflow> {
        let path = format!("/api/workflows/{}", segment(name)?);
        self.json(self.http.get(self.url(&path)).query(&workflow_query(query)))
            .await
    }

    pub async fn put_workflow(&self, body: &PutWorkflow) -> anyhow::Result<Workflow> {
        self.json(self.http.post(self.url("/api/workflows")).json(body))
            .await
    }

    pub async fn delete_workflow(&self, name: &str) -> anyhow::Result<Workflow> {
        let path = format!("/api/workflows/{}", segment(name)?);
        self.json(self.http.delete(self.url(&path))).await
    }

    pub async fn run_workflow(&self, name: &str, body: &RunWorkflow) -> anyhow::Result<Task> {
        let path = format!("/api/workflows/{}/run", segment(name)?);
        self.json(self.http.post(self.url(&path)).json(body)).await
    }

    pub async fn report_markdown(&self, id: &str) -> anyhow::Result<String> {
        let request = self
            .http
            .get(self.url(&format!("/api/tasks/{}/report", segment(id)?)))
            .header(reqwest::header::ACCEPT, "text/markdown");
        let response = self.send(request).await?;
        response.text().await.context("reading the report")
    }

    pub async fn report_json(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        let request = self
            .http
            .get(self.url(&format!("/api/tasks/{}/report", segment(id)?)))
            .header(reqwest::header::ACCEPT, "application/json");
        self.json(request).await
    }

    fn diff_request(
        &self,
        id: &str,
        subtask: Option<&str>,
        path: Option<&str>,
        accept: &str,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let mut query = Vec::new();
        if let Some(subtask) = subtask {
            query.push(("subtask", subtask));
        }
        if let Some(path) = path {
            query.push(("path", path));
        }
        Ok(self
            .http
            .get(self.url(&format!("/api/tasks/{}/diff", segment(id)?)))
            .query(&query)
            .header(reqwest::header::ACCEPT, accept))
    }

    /// A subtask's or the result's diff, as `git diff` prints it.
    pub async fn diff_text(
        &self,
        id: &str,
        subtask: Option<&str>,
        path: Option<&str>,
    ) -> anyhow::Result<String> {
        let request = self.diff_request(id, subtask, path, "text/x-diff")?;
        let response = self.send(request).await?;
        response.text().await.context("reading the diff")
    }

    pub async fn diff_json(
        &self,
        id: &str,
        subtask: Option<&str>,
        path: Option<&str>,
    ) -> anyhow::Result<Diff> {
        self.json(self.diff_request(id, subtask, path, "application/json")?)
            .await
    }

    pub async fn status(&self) -> anyhow::Result<SystemStatus> {
        self.json(self.http.get(self.url("/api/status"))).await
    }

    pub async fn events(&self, id: &str) -> anyhow::Result<Vec<Event>> {
        let path = format!("/api/tasks/{}/events", segment(id)?);
        let list: EventList = self.json(self.http.get(self.url(&path))).await?;
        Ok(list.events)
    }

    pub async fn workers(&self) -> anyhow::Result<Vec<Worker>> {
        let list: WorkerList = self.json(self.http.get(self.url("/api/workers"))).await?;
        Ok(list.workers)
    }

    /// `POST /api/auth/login`: sent without any other token.
    pub async fn login(&self, body: &Login) -> anyhow::Result<TokenPair> {
        let response = self
            .http
            .post(self.url("/api/auth/login"))
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {}", self.base))?;
        if !response.status().is_success() {
            return Err(ApiError::from_response(response).await.into());
        }
        response
            .json()
            .await
            .context("reading the answer of /api/auth/login")
    }

    /// `POST /api/auth/logout`: ends the session of the access token sent.
    pub async fn logout(&self) -> anyhow::Result<()> {
        self.send(self.http.post(self.url("/api/auth/logout")))
            .await
            .map(drop)
    }

    pub async fn me(&self) -> anyhow::Result<Me> {
        self.json(self.http.get(self.url("/api/auth/me"))).await
    }

    /// `POST /api/tokens`: the new token, and the answer as it came (for
    /// `--json`).
    pub async fn create_token(
        &self,
        body: &CreateApiToken,
    ) -> anyhow::Result<(CreatedToken, serde_json::Value)> {
        // Read as a JSON value first: the gateway's answer names `id`
        // twice (beside the token and in the token's description), which
        // the value keeps once.
        let answer: serde_json::Value = self
            .json(self.http.post(self.url("/api/tokens")).json(body))
            .await?;
        let created =
            serde_json::from_value(answer.clone()).context("reading the answer of /api/tokens")?;
        Ok((created, answer))
    }

    pub async fn list_tokens(&self, all: bool) -> anyhow::Result<Vec<ApiToken>> {
        let request = self
            .http
            .get(self.url("/api/tokens"))
            .query(&[("all", all)]);
        let list: ApiTokenList = self.json(request).await?;
        Ok(list.tokens)
    }

    pub async fn revoke_token(&self, id: &str) -> anyhow::Result<ApiToken> {
        let path = format!("/api/tokens/{}", segment(id)?);
        self.json(self.http.delete(self.url(&path))).await
    }

    pub async fn collect_garbage(&self, body: &GcRequest) -> anyhow::Result<GcReport> {
        self.json(self.http.post(self.url("/api/admin/gc")).json(body))
            .await
    }

    pub async fn list_users(&self) -> anyhow::Result<Vec<User>> {
        let list: UserList = self.json(self.http.get(self.url("/api/users"))).await?;
        Ok(list.users)
    }

    pub async fn create_user(&self, body: &CreateUser) -> anyhow::Result<User> {
        self.json(self.http.post(self.url("/api/users")).json(body))
            .await
    }

    pub async fn update_user(&self, name: &str, body: &UpdateUser) -> anyhow::Result<User> {
        let path = format!("/api/users/{}", segment(name)?);
        self.json(self.http.patch(self.url(&path)).json(body)).await
    }

    pub async fn delete_user(&self, name: &str) -> anyhow::Result<User> {
        let path = format!("/api/users/{}", segment(name)?);
        self.json(self.http.delete(self.url(&path))).await
    }

    pub async fn audit(&self, filter: &AuditFilter) -> anyhow::Result<Vec<AuditEntry>> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(user) = &filter.user {
            query.push(("user", user.clone()));
        }
        if let Some(action) = &filter.action {
            query.push(("action", action.clone()));
        }
        if let Some(since) = filter.since {
            query.push(("since", since.to_rfc3339()));
        }
        if let Some(limit) = filter.limit {
            query.push(("limit", limit.to_string()));
        }
        let request = self.http.get(self.url("/api/audit")).query(&query);
        let list: AuditList = self.json(request).await?;
        Ok(list.entries)
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

    /// Sends a request with the credential's token; an error status
    /// becomes an [`ApiError`]. An expired login is renewed first; a
    /// refused token of a login is renewed and the request sent once more.
    async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        let mut renewed = false;
        loop {
            let mut credential = self.credential.lock().await;
            if !renewed && credential.needs_refresh(Utc::now()) {
                credential.refresh(&self.http, &self.base).await?;
                renewed = true;
            }
            let mut attempt = request
                .try_clone()
                .context("a request whose body cannot be sent twice")?;
            if let Some(token) = credential.token() {
                // Marked sensitive by reqwest: it never shows in its logs.
                attempt = attempt.bearer_auth(token.expose_secret());
            }
            drop(credential);
            let response = attempt
                .send()
                .await
                .with_context(|| format!("cannot reach the gateway at {}", self.base))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let mut credential = self.credential.lock().await;
            if status == StatusCode::UNAUTHORIZED && !renewed && credential.can_refresh() {
                // The access token expired early (a clock off), or the
                // gateway forgot it: the refresh token says whether the
                // session still stands.
                credential.refresh(&self.http, &self.base).await?;
                renewed = true;
                continue;
            }
            let mut error = ApiError::from_response(response).await;
            if status == StatusCode::UNAUTHORIZED {
                error.hint = Some(unauthenticated_hint(&credential.source, &self.base));
            }
            return Err(error.into());
        }
    }
}

/// What to do when the gateway refused the token from `source` (or that
/// there was none).
fn unauthenticated_hint(source: &Source, base: &str) -> String {
    let login = format!("`aida login{}`", credentials::login_url_flag(base));
    match source {
        Source::Nothing => format!("not signed in to {base}: run {login} (or set AIDA_TOKEN)"),
        Source::Env => "the token in AIDA_TOKEN was refused".to_owned(),
        Source::Stored { source, .. } if source == credentials::SOURCE_DEV => format!(
            "the admin token aida dev registered for {base} was refused: restart aida dev, or run {login}"
        ),
        Source::Stored { username, .. } => {
            format!("the login of {username} at {base} has ended: run {login}")
        }
        Source::DevFile => format!(
            "the token in {} was refused: restart aida dev, or run {login}",
            credentials::DEV_TOKEN_FILE
        ),
    }
}

/// A new API token: the secret, shown once, and what it is.
#[derive(serde::Deserialize)]
pub struct CreatedToken {
    pub token: String,
    #[serde(flatten)]
    pub info: ApiToken,
}

// The token never prints.
impl fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedToken")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// The filters of `GET /api/audit`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub user: Option<String>,
    pub action: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub limit: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_input_stays_one_path_segment() {
        assert_eq!(segment("alice").unwrap(), "alice");
        assert_eq!(segment("a.b_c-d").unwrap(), "a.b_c-d");
        assert_eq!(segment("../tokens/x").unwrap(), "..%2Ftokens%2Fx");
        assert_eq!(segment("a b?c#d").unwrap(), "a%20b%3Fc%23d");
        assert!(segment("..").is_err());
        assert!(segment(".").is_err());
        assert!(segment("").is_err());
    }

    #[test]
    fn a_refused_token_says_where_it_came_from() {
        let base = "http://127.0.0.1:8080";
        assert!(unauthenticated_hint(&Source::Nothing, base).contains("run `aida login`"));
        assert!(
            unauthenticated_hint(&Source::Nothing, "http://gw:9000")
                .contains("`aida login --url http://gw:9000`")
        );
        assert!(unauthenticated_hint(&Source::Env, base).contains("AIDA_TOKEN"));
        let stored = Source::Stored {
            source: credentials::SOURCE_LOGIN.into(),
            username: "bob".into(),
        };
        assert!(unauthenticated_hint(&stored, base).contains("login of bob"));
    }
}
