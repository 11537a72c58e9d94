//! The hosting providers' REST APIs, for what git itself cannot do: open a
//! pull request (GitHub) or merge request (GitLab) and comment on issues.
//! Which host speaks which API, and where that API is, is configurable
//! (`AIDA_GIT_PROVIDERS`), so GitHub Enterprise and self-hosted GitLab work;
//! github.com and gitlab.com are known. The token is the one
//! `AIDA_GIT_CREDENTIALS` holds for the host.
//!
//! GitHub: `POST /repos/{owner}/{repo}/pulls`, `GET /repos/{owner}/{repo}/pulls?head=`,
//! `POST /repos/{owner}/{repo}/issues/{number}/comments`
//! (docs.github.com/en/rest/pulls/pulls, /issues/comments).
//! GitLab: `POST /projects/{id}/merge_requests`, `GET /projects/{id}/merge_requests?source_branch=`,
//! `POST /projects/{id}/issues/{iid}/notes` (docs.gitlab.com/api/merge_requests, /api/notes).

use std::time::Duration;

use aida_core::secret::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::url::RemoteUrl;

/// Which API a host speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    GitHub,
    GitLab,
}

/// One host's API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderApi {
    pub host: String,
    pub kind: Kind,
    /// `https://api.github.com`, `https://gitlab.example/api/v4`, ...
    pub base_url: String,
}

/// The hosts AIDA knows an API for.
#[derive(Debug, Clone)]
pub struct Providers {
    apis: Vec<ProviderApi>,
    http: reqwest::Client,
}

/// A pull or merge request, opened or found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u32,
    pub url: String,
}

/// Why an API call failed; the message holds no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error(
        "no API is known for {0}: name it in AIDA_GIT_PROVIDERS (HOST=github@URL or HOST=gitlab@URL)"
    )]
    Unknown(String),
    #[error("no token for {0} in AIDA_GIT_CREDENTIALS")]
    NoToken(String),
    #[error("{api} answered {status}: {message}")]
    Refused {
        api: String,
        status: u16,
        message: String,
    },
    #[error("cannot reach {api}: {detail}")]
    Unreachable { api: String, detail: String },
}

impl ProviderError {
    pub fn is_transient(&self) -> bool {
        match self {
            ProviderError::Unreachable { .. } => true,
            ProviderError::Refused { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

impl Providers {
    /// github.com and gitlab.com, and what `AIDA_GIT_PROVIDERS` adds
    /// (comma-separated `HOST=github@URL` or `HOST=gitlab@URL`).
    pub fn parse(list: &str) -> anyhow::Result<Self> {
        let mut apis = vec![
            ProviderApi {
                host: "github.com".into(),
                kind: Kind::GitHub,
                base_url: "https://api.github.com".into(),
            },
            ProviderApi {
                host: "gitlab.com".into(),
                kind: Kind::GitLab,
                base_url: "https://gitlab.com/api/v4".into(),
            },
        ];
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || {
                anyhow::anyhow!(
                    "AIDA_GIT_PROVIDERS: {item:?} is not HOST=github@URL or HOST=gitlab@URL"
                )
            };
            let (host, rest) = item.split_once('=').ok_or_else(bad)?;
            let (kind, base) = rest.split_once('@').ok_or_else(bad)?;
            let kind = match kind.trim() {
                "github" => Kind::GitHub,
                "gitlab" => Kind::GitLab,
                _ => return Err(bad()),
            };
            let base = base.trim().trim_end_matches('/');
            anyhow::ensure!(
                base.starts_with("https://") || base.starts_with("http://"),
                "AIDA_GIT_PROVIDERS: the API of {host} must be an http(s) URL"
            );
            let host = host.trim().to_ascii_lowercase();
            apis.retain(|a| a.host != host);
            apis.push(ProviderApi {
                host,
                kind,
                base_url: base.to_owned(),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("aida/", env!("CARGO_PKG_VERSION")))
            // A redirect to another host must not carry the token.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Providers { apis, http })
    }

    pub fn api_for(&self, url: &RemoteUrl) -> Result<&ProviderApi, ProviderError> {
        self.apis
            .iter()
            .find(|a| a.host == url.host() || a.host == url.host_name())
            .ok_or_else(|| ProviderError::Unknown(url.host().to_owned()))
    }

    /// Opens a pull (merge) request from `head` to `base`, or finds the one
    /// already open for `head` (a delivery done again after a follow-up).
    pub async fn open_pull_request(
        &self,
        url: &RemoteUrl,
        token: &SecretString,
        request: &PullRequestRequest<'_>,
    ) -> Result<PullRequest, ProviderError> {
        let api = self.api_for(url)?;
        match api.kind {
            Kind::GitHub => self.github_pull_request(api, url, token, request).await,
            Kind::GitLab => self.gitlab_merge_request(api, url, token, request).await,
        }
    }

    /// Whether pull (merge) request `number` of `url`'s repository is still
    /// open: GitHub's `state` is `open`, GitLab's `opened`.
    pub async fn pull_request_open(
        &self,
        url: &RemoteUrl,
        token: &SecretString,
        number: u32,
    ) -> Result<bool, ProviderError> {
        let api = self.api_for(url)?;
        let (auth, endpoint, open) = match api.kind {
            Kind::GitHub => (
                Auth::GitHub,
                format!("{}/repos/{}/pulls/{number}", api.base_url, url.repo_path()),
                "open",
            ),
            Kind::GitLab => (
                Auth::GitLab,
                format!(
                    "{}/projects/{}/merge_requests/{number}",
                    api.base_url,
                    encode_path(url.repo_path())
                ),
                "opened",
            ),
        };
        let value = self
            .send(api, auth, token, reqwest::Method::GET, &endpoint, None)
            .await?;
        Ok(value.get("state").and_then(Value::as_str) == Some(open))
    }

    /// Comments on issue `number` of `url`'s repository.
    pub async fn comment_on_issue(
        &self,
        url: &RemoteUrl,
        token: &SecretString,
        number: u32,
        body: &str,
    ) -> Result<(), ProviderError> {
        let api = self.api_for(url)?;
        let (endpoint, auth) = match api.kind {
            Kind::GitHub => (
                format!(
                    "{}/repos/{}/issues/{number}/comments",
                    api.base_url,
                    url.repo_path()
                ),
                Auth::GitHub,
            ),
            Kind::GitLab => (
                format!(
                    "{}/projects/{}/issues/{number}/notes",
                    api.base_url,
                    encode_path(url.repo_path())
                ),
                Auth::GitLab,
            ),
        };
        self.send(
            api,
            auth,
            token,
            reqwest::Method::POST,
            &endpoint,
            Some(json!({ "body": body })),
        )
        .await
        .map(|_| ())
    }

    async fn github_pull_request(
        &self,
        api: &ProviderApi,
        url: &RemoteUrl,
        token: &SecretString,
        request: &PullRequestRequest<'_>,
    ) -> Result<PullRequest, ProviderError> {
        let repo = url.repo_path();
        let owner = repo.split('/').next().unwrap_or_default();
        self.open_or_find(
            api,
            Auth::GitHub,
            token,
            Opening {
                create: format!("{}/repos/{repo}/pulls", api.base_url),
                body: json!({
                    "title": request.title,
                    "head": request.head,
                    "base": request.base,
                    "body": request.body,
                    "draft": request.draft,
                }),
                // 422: one is open for this branch already (a second delivery).
                exists: 422,
                list: format!(
                    "{}/repos/{repo}/pulls?state=open&head={owner}:{}",
                    api.base_url, request.head
                ),
                number: "number",
                url: "html_url",
            },
        )
        .await
    }

    async fn gitlab_merge_request(
        &self,
        api: &ProviderApi,
        url: &RemoteUrl,
        token: &SecretString,
        request: &PullRequestRequest<'_>,
    ) -> Result<PullRequest, ProviderError> {
        let project = encode_path(url.repo_path());
        // GitLab marks drafts by the title.
        let title = if request.draft {
            format!("Draft: {}", request.title)
        } else {
            request.title.to_owned()
        };
        self.open_or_find(
            api,
            Auth::GitLab,
            token,
            Opening {
                create: format!("{}/projects/{project}/merge_requests", api.base_url),
                body: json!({
                    "source_branch": request.head,
                    "target_branch": request.base,
                    "title": title,
                    "description": request.body,
                }),
                // 409: one is open for this branch already.
                exists: 409,
                list: format!(
                    "{}/projects/{project}/merge_requests?state=opened&source_branch={}",
                    api.base_url,
                    encode_path(request.head)
                ),
                number: "iid",
                url: "web_url",
            },
        )
        .await
    }

    /// Creates the request, or, when the API says one is open already,
    /// finds that one.
    async fn open_or_find(
        &self,
        api: &ProviderApi,
        auth: Auth,
        token: &SecretString,
        opening: Opening,
    ) -> Result<PullRequest, ProviderError> {
        let created = self
            .send(
                api,
                auth,
                token,
                reqwest::Method::POST,
                &opening.create,
                Some(opening.body),
            )
            .await;
        let value = match created {
            Ok(value) => value,
            Err(ProviderError::Refused { status, .. }) if status == opening.exists => {
                let list = self
                    .send(api, auth, token, reqwest::Method::GET, &opening.list, None)
                    .await?;
                list.as_array()
                    .and_then(|l| l.first().cloned())
                    .ok_or_else(|| ProviderError::Refused {
                        api: api.base_url.clone(),
                        status,
                        message: "the request could not be opened and none is open for the branch"
                            .into(),
                    })?
            }
            Err(e) => return Err(e),
        };
        parse_pull_request(api, &value, opening.number, opening.url)
    }

    async fn send(
        &self,
        api: &ProviderApi,
        auth: Auth,
        token: &SecretString,
        method: reqwest::Method,
        endpoint: &str,
        body: Option<Value>,
    ) -> Result<Value, ProviderError> {
        let mut request = self.http.request(method, endpoint);
        request = match auth {
            Auth::GitHub => request
                .bearer_auth(token.expose_secret())
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28"),
            Auth::GitLab => request.header("PRIVATE-TOKEN", token.expose_secret()),
        };
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ProviderError::Unreachable {
                api: api.base_url.clone(),
                detail: e.without_url().to_string(),
            })?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        Err(ProviderError::Refused {
            api: api.base_url.clone(),
            status: status.as_u16(),
            message: api_message(&value),
        })
    }
}

/// What a new pull request says.
#[derive(Debug, Clone)]
pub struct PullRequestRequest<'a> {
    pub title: &'a str,
    /// The branch to merge: `aida/<task>/result`.
    pub head: &'a str,
    /// The branch to merge into.
    pub base: &'a str,
    pub body: &'a str,
    pub draft: bool,
}

/// How one provider opens a pull (merge) request and finds an open one.
struct Opening {
    create: String,
    body: Value,
    /// The status the API answers when one is open for the branch.
    exists: u16,
    list: String,
    /// The fields of the answer holding its number and web URL.
    number: &'static str,
    url: &'static str,
}

#[derive(Debug, Clone, Copy)]
enum Auth {
    GitHub,
    GitLab,
}

fn parse_pull_request(
    api: &ProviderApi,
    value: &Value,
    number: &str,
    url: &str,
) -> Result<PullRequest, ProviderError> {
    match (value[number].as_u64(), value[url].as_str()) {
        (Some(n), Some(u)) => Ok(PullRequest {
            number: n as u32,
            url: u.to_owned(),
        }),
        _ => Err(ProviderError::Refused {
            api: api.base_url.clone(),
            status: 200,
            message: format!("the answer has no {number} or {url}"),
        }),
    }
}

/// The API's own error message: GitHub's `message` and `errors[].message`,
/// GitLab's `message` or `error`.
fn api_message(value: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(m) = value["message"].as_str() {
        parts.push(m.to_owned());
    } else if let Some(m) = value["message"].as_array() {
        parts.extend(m.iter().filter_map(|v| v.as_str().map(str::to_owned)));
    }
    if let Some(e) = value["error"].as_str() {
        parts.push(e.to_owned());
    }
    if let Some(errors) = value["errors"].as_array() {
        parts.extend(
            errors
                .iter()
                .filter_map(|e| e["message"].as_str().map(str::to_owned)),
        );
    }
    if parts.is_empty() {
        "no message".into()
    } else {
        parts.join("; ").chars().take(400).collect()
    }
}

/// A path as one URL path segment (GitLab's `group%2Fproject`).
fn encode_path(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_map_to_their_apis() {
        let p = Providers::parse(
            "git.acme.io=gitlab@https://git.acme.io/api/v4/, 127.0.0.1:9=github@http://127.0.0.1:8",
        )
        .unwrap();
        let api = |u: &str| {
            p.api_for(&RemoteUrl::parse(u).unwrap())
                .map(|a| (a.kind, a.base_url.clone()))
        };
        assert_eq!(
            api("https://github.com/a/b").unwrap(),
            (Kind::GitHub, "https://api.github.com".into())
        );
        assert_eq!(api("git@gitlab.com:a/b.git").unwrap().0, Kind::GitLab);
        assert_eq!(
            api("https://git.acme.io/g/p").unwrap(),
            (Kind::GitLab, "https://git.acme.io/api/v4".into())
        );
        assert_eq!(api("http://127.0.0.1:9/r.git").unwrap().0, Kind::GitHub);
        assert!(matches!(
            api("https://elsewhere.org/a/b"),
            Err(ProviderError::Unknown(_))
        ));
        assert!(Providers::parse("x=bitbucket@https://x").is_err());
        assert_eq!(encode_path("group/sub/p"), "group%2Fsub%2Fp");
        assert_eq!(
            api_message(
                &json!({"message": "Validation Failed", "errors": [{"message": "A pull request already exists"}]})
            ),
            "Validation Failed; A pull request already exists"
        );
    }
}
