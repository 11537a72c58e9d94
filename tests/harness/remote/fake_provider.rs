//! A fake of GitHub's REST API and GitLab's REST API v4 for pull requests,
//! merge requests, issues and their comments, on one local port, recording
//! every request (never the token). See `tests/servers/fake_provider.py`
//! for the endpoints and the documented contracts it follows.

use std::path::Path;

use serde_json::{Value, json};

use super::start_script;
use crate::process::Proc;

pub struct FakeProvider {
    /// `http://127.0.0.1:PORT`: GitHub's API root, and the web root of the
    /// `html_url`s and `web_url`s it answers with.
    pub url: String,
    http: reqwest::Client,
    proc: Proc,
    _logs: tempfile::TempDir,
}

impl FakeProvider {
    /// Starts the fake, accepting `token` only (given through its
    /// environment); returns once it listens.
    pub async fn start(token: &str) -> FakeProvider {
        let logs = tempfile::tempdir().expect("tempdir");
        let env = [("FAKE_PROVIDER_TOKEN", token)];
        let (proc, port) =
            start_script("fake-provider", "fake_provider.py", &[], &env, logs.path()).await;
        FakeProvider {
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            proc,
            _logs: logs,
        }
    }

    /// Where a GitHub client points instead of `https://api.github.com`.
    pub fn github_api_url(&self) -> String {
        self.url.clone()
    }

    /// Where a GitLab client points instead of `https://gitlab.com/api/v4`.
    pub fn gitlab_api_url(&self) -> String {
        format!("{}/api/v4", self.url)
    }

    /// Every API request so far, oldest first: `{seq, api, method, path,
    /// query, auth: {scheme, matched}, headers, body, status}`.
    pub async fn requests(&self) -> Vec<Value> {
        match self.control("GET", "requests", None).await {
            Value::Array(requests) => requests,
            other => panic!("the fake's requests are not a list: {other}"),
        }
    }

    /// What the fake holds: GitHub repositories (pull requests, issues,
    /// comments) and GitLab projects (merge requests, issues, notes).
    pub async fn state(&self) -> Value {
        self.control("GET", "state", None).await
    }

    /// Seeds GitHub issue `number` of `owner_repo` (`owner/repo`).
    pub async fn seed_issue(&self, owner_repo: &str, number: u64, title: &str, body: &str) {
        self.seed("github", owner_repo, number, title, body).await;
    }

    /// Seeds GitLab issue `iid` of the project at `project_path`
    /// (`group/project`).
    pub async fn seed_gitlab_issue(&self, project_path: &str, iid: u64, title: &str, body: &str) {
        self.seed("gitlab", project_path, iid, title, body).await;
    }

    /// The next `count` API requests whose path contains `path_contains`
    /// are answered `status` without being handled.
    pub async fn fail_next(&self, count: u32, status: u16, path_contains: &str) {
        let failure = json!({"count": count, "status": status, "path_contains": path_contains});
        self.control("POST", "fail", Some(failure)).await;
    }

    /// Forgets every pull request, merge request, issue, comment and
    /// recorded request.
    pub async fn reset(&self) {
        self.control("POST", "reset", None).await;
    }

    /// The fake's log (one line per request, errors).
    pub fn log_path(&self) -> &Path {
        &self.proc.log
    }

    async fn seed(&self, provider: &str, repo: &str, number: u64, title: &str, body: &str) {
        let issue = json!({
            "provider": provider, "repo": repo, "number": number, "title": title, "body": body,
        });
        self.control("POST", "issues", Some(issue)).await;
    }

    async fn control(&self, method: &str, endpoint: &str, body: Option<Value>) -> Value {
        let url = format!("{}/_fake/{endpoint}", self.url);
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let resp = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status();
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{url}: {status} {answer}");
        answer
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::FakeProvider;

    /// A client as AIDA's would be: JSON, a user agent, a token header.
    async fn call(
        method: reqwest::Method,
        url: &str,
        auth: (&str, &str),
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .request(method, url)
            .header("User-Agent", "aida-test")
            .header("Accept", "application/vnd.github+json")
            .header(auth.0, auth.1);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    async fn post(url: &str, auth: (&str, &str), body: Value) -> (u16, Value) {
        call(reqwest::Method::POST, url, auth, Some(body)).await
    }

    async fn get(url: &str, auth: (&str, &str)) -> (u16, Value) {
        call(reqwest::Method::GET, url, auth, None).await
    }

    #[tokio::test]
    async fn github_pull_requests_and_comments() {
        let token = aida_core::secret::random_hex(16);
        let fake = FakeProvider::start(&token).await;
        let bearer = format!("Bearer {token}");
        let auth = ("Authorization", bearer.as_str());
        let pulls = format!("{}/repos/acme/widget/pulls", fake.github_api_url());
        let pr = json!({"title": "AIDA: fix", "head": "aida/fix", "base": "main", "body": "Done.", "draft": false});

        let (status, created) = post(&pulls, auth, pr.clone()).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(
            (created["number"].as_u64(), created["state"].as_str()),
            (Some(1), Some("open"))
        );
        assert_eq!(created["head"]["ref"], "aida/fix");
        assert_eq!(created["base"]["ref"], "main");
        assert_eq!(
            created["html_url"],
            format!("{}/acme/widget/pull/1", fake.url)
        );
        assert_ne!(created["id"], created["number"]);

        let (status, duplicate) = post(&pulls, auth, pr.clone()).await;
        assert_eq!(status, 422);
        assert_eq!(duplicate["message"], "Validation Failed");
        assert_eq!(
            duplicate["errors"][0]["message"],
            "A pull request already exists for acme:aida/fix."
        );
        let (status, _) = post(&pulls, auth, json!({"title": "t", "base": "main"})).await;
        assert_eq!(status, 422);
        let (status, refused) = post(&pulls, ("Authorization", "Bearer wrong"), pr).await;
        assert_eq!(
            (status, refused["message"].as_str()),
            (401, Some("Bad credentials"))
        );

        let (status, listed) = get(&format!("{pulls}?state=open&head=acme:aida/fix"), auth).await;
        assert_eq!((status, listed.as_array().map(Vec::len)), (200, Some(1)));
        let (_, other) = get(&format!("{pulls}?state=open&head=acme:other"), auth).await;
        assert_eq!(other, json!([]));

        fake.seed_issue("acme/widget", 7, "Crash on start", "It crashes.")
            .await;
        let token_auth = format!("token {token}");
        let auth = ("Authorization", token_auth.as_str());
        let issue = format!("{}/repos/acme/widget/issues/7", fake.url);
        let (status, seeded) = get(&issue, auth).await;
        assert_eq!(
            (status, seeded["title"].as_str()),
            (200, Some("Crash on start"))
        );
        let (status, comment) = post(
            &format!("{issue}/comments"),
            auth,
            json!({"body": "On it."}),
        )
        .await;
        assert_eq!((status, comment["body"].as_str()), (201, Some("On it.")));
        let (_, comments) = get(&format!("{issue}/comments"), auth).await;
        assert_eq!(comments[0]["id"], comment["id"]);
        let unknown = format!("{}/repos/acme/widget/issues/99/comments", fake.url);
        let (status, _) = post(&unknown, auth, json!({"body": "x"})).await;
        assert_eq!(status, 404);

        let requests = fake.requests().await;
        let text = serde_json::to_string(&requests).unwrap();
        assert!(
            !text.contains(&token),
            "the token is in the requests listing"
        );
        assert_eq!(
            requests[0]["auth"],
            json!({"scheme": "bearer", "matched": true})
        );
        assert_eq!(requests[0]["body"]["head"], "aida/fix");
        assert_eq!(requests[0]["status"], 201);
        assert!(
            requests
                .iter()
                .any(|r| r["status"] == 401 && r["auth"]["matched"] == false)
        );
    }

    #[tokio::test]
    async fn github_needs_a_user_agent_and_json() {
        let fake = FakeProvider::start("t0ken").await;
        let pulls = format!("{}/repos/acme/widget/pulls", fake.url);
        let resp = reqwest::Client::new()
            .get(&pulls)
            .header("Authorization", "Bearer t0ken")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        let resp = reqwest::Client::new()
            .post(&pulls)
            .header("User-Agent", "aida-test")
            .header("Authorization", "Bearer t0ken")
            .form(&[("title", "t"), ("head", "h"), ("base", "main")])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let (status, missing) = get(&pulls, ("X-None", "none")).await;
        assert_eq!(
            (status, missing["message"].as_str()),
            (401, Some("Requires authentication"))
        );
    }

    #[tokio::test]
    async fn gitlab_merge_requests_and_notes() {
        let token = aida_core::secret::random_hex(16);
        let fake = FakeProvider::start(&token).await;
        let auth = ("PRIVATE-TOKEN", token.as_str());
        let mrs = format!(
            "{}/projects/acme%2Fwidget/merge_requests",
            fake.gitlab_api_url()
        );
        let mr = json!({"source_branch": "aida/fix", "target_branch": "main", "title": "Draft: AIDA fix", "description": "Done."});

        let (status, created) = post(&mrs, auth, mr.clone()).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(
            (created["iid"].as_u64(), created["state"].as_str()),
            (Some(1), Some("opened"))
        );
        assert_eq!(created["draft"], true);
        assert_eq!(
            created["web_url"],
            format!("{}/acme/widget/-/merge_requests/1", fake.url)
        );

        let (status, conflict) = post(&mrs, auth, mr.clone()).await;
        assert_eq!(status, 409);
        assert_eq!(
            conflict["message"][0],
            "Another open merge request already exists for this source branch: !1"
        );
        let (status, refused) = post(&mrs, ("PRIVATE-TOKEN", "wrong"), mr).await;
        assert_eq!(
            (status, refused["message"].as_str()),
            (401, Some("401 Unauthorized"))
        );

        let by_id = format!(
            "{}/projects/{}/merge_requests",
            fake.gitlab_api_url(),
            created["project_id"]
        );
        let (status, listed) = get(
            &format!("{by_id}?state=opened&source_branch=aida/fix"),
            auth,
        )
        .await;
        assert_eq!((status, listed[0]["iid"].as_u64()), (200, Some(1)));

        fake.seed_gitlab_issue("acme/widget", 3, "Crash", "It crashes.")
            .await;
        let notes = format!(
            "{}/projects/acme%2Fwidget/issues/3/notes",
            fake.gitlab_api_url()
        );
        let (status, note) = post(&notes, auth, json!({"body": "On it."})).await;
        assert_eq!((status, note["body"].as_str()), (201, Some("On it.")));
        assert_eq!(note["noteable_type"], "Issue");

        let requests = fake.requests().await;
        assert!(!serde_json::to_string(&requests).unwrap().contains(&token));
        assert_eq!(requests[0]["api"], "gitlab");
        assert_eq!(
            requests[0]["auth"],
            json!({"scheme": "private-token", "matched": true})
        );
        assert_eq!(requests.last().unwrap()["body"]["body"], "On it.");

        fake.reset().await;
        assert!(fake.requests().await.is_empty());
    }

    #[tokio::test]
    async fn injected_failures_answer_before_handling() {
        let fake = FakeProvider::start("t0ken").await;
        fake.fail_next(1, 502, "/pulls").await;
        let pulls = format!("{}/repos/acme/widget/pulls", fake.url);
        let pr = json!({"title": "t", "head": "h", "base": "main"});
        let auth = ("Authorization", "Bearer t0ken");
        assert_eq!(post(&pulls, auth, pr.clone()).await.0, 502);
        assert_eq!(post(&pulls, auth, pr).await.0, 201);
        let state = fake.state().await;
        assert_eq!(
            state["github"]["acme/widget"]["pulls"]["1"]["head"],
            "acme:h"
        );
    }
}
