//! A smart-HTTP git server over the bare repositories below a directory,
//! with basic auth (a user and a token, as GitHub and GitLab take them over
//! https), logging one JSON line per request. See `tests/servers/git_http.py`
//! for the contract.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::start_script;
use crate::process::Proc;

pub struct GitHttpServer {
    pub port: u16,
    proc: Proc,
    requests: PathBuf,
    _logs: tempfile::TempDir,
}

impl GitHttpServer {
    /// Serves the repositories below `root` (`root/NAME.git`), taking only
    /// `user` with `token` as password; returns once it listens. The
    /// credentials reach the server through its environment, not argv.
    pub async fn start(root: &Path, user: &str, token: &str) -> GitHttpServer {
        let logs = tempfile::tempdir().expect("tempdir");
        let requests = logs.path().join("requests.jsonl");
        let requests_str = requests.to_str().expect("utf-8 path");
        let env = [
            ("GIT_HTTP_USER", user),
            ("GIT_HTTP_TOKEN", token),
            ("GIT_HTTP_LOG", requests_str),
        ];
        let (proc, port) =
            start_script("git-http", "git_http.py", &[root], &env, logs.path()).await;
        GitHttpServer {
            port,
            proc,
            requests,
            _logs: logs,
        }
    }

    /// `http://127.0.0.1:PORT/NAME.git`, without credentials.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}.git", self.port)
    }

    /// [`url`](Self::url) with `user:token@` in it (percent-encoded), as a
    /// user would paste it for git.
    pub fn url_with_credentials(&self, name: &str, user: &str, token: &str) -> String {
        let mut url = reqwest::Url::parse(&self.url(name)).expect("a valid url");
        url.set_username(user).expect("a user name");
        url.set_password(Some(token)).expect("a password");
        url.to_string()
    }

    /// Every request so far, oldest first: `{method, path, query, user,
    /// credentials: "missing"|"wrong"|"ok", status}`. A request is logged
    /// before its answer is sent, so a finished git command's requests are
    /// all there.
    pub fn requests(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.requests).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str(line).expect("a JSON request line"))
            .collect()
    }

    /// The server's own log (stderr: one line per request, errors).
    pub fn log_path(&self) -> &Path {
        &self.proc.log
    }
}

#[cfg(test)]
mod tests {
    use super::GitHttpServer;
    use crate::remote::{BareRepo, try_git};

    const USER: &str = "aida-bot";

    fn token() -> String {
        aida_core::secret::random_hex(16)
    }

    /// Bytes that do not compress, so that a push of them is larger than
    /// git's 1 MiB post buffer and goes chunked.
    fn incompressible(len: usize) -> String {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'!' + (x % 90) as u8)
            })
            .collect()
    }

    #[tokio::test]
    async fn clones_with_the_token_and_refuses_a_wrong_one() {
        let root = tempfile::tempdir().unwrap();
        BareRepo::create(root.path(), "project", &[("README.md", "remote\n")]);
        let token = token();
        let server = GitHttpServer::start(root.path(), USER, &token).await;
        let work = tempfile::tempdir().unwrap();

        let good = server.url_with_credentials("project", USER, &token);
        try_git(work.path(), &["clone", "-q", &good, "ok"]).unwrap();
        let readme = std::fs::read_to_string(work.path().join("ok/README.md")).unwrap();
        assert_eq!(readme, "remote\n");

        let bad = server.url_with_credentials("project", USER, "not-the-token");
        let err = try_git(work.path(), &["clone", "-q", &bad, "bad"]).unwrap_err();
        assert!(err.contains("Authentication failed"), "{err}");
        let anonymous = try_git(
            work.path(),
            &["clone", "-q", &server.url("project"), "anon"],
        );
        assert!(anonymous.is_err());

        let requests = server.requests();
        let refused: Vec<_> = requests.iter().filter(|r| r["status"] == 401).collect();
        assert!(
            refused
                .iter()
                .any(|r| r["credentials"] == "wrong" && r["user"].is_null())
        );
        assert!(refused.iter().any(|r| r["credentials"] == "missing"));
        assert!(requests.iter().any(|r| {
            r["path"] == "/project.git/git-upload-pack" && r["status"] == 200 && r["user"] == USER
        }));
        let logged = std::fs::read_to_string(&server.requests).unwrap()
            + &std::fs::read_to_string(server.log_path()).unwrap();
        assert!(!logged.contains(&token), "the token leaked into a log");
    }

    #[tokio::test]
    async fn pushes_small_and_chunked_large_commits() {
        let root = tempfile::tempdir().unwrap();
        let repo = BareRepo::create(root.path(), "project", &[("README.md", "remote\n")]);
        let token = token();
        let server = GitHttpServer::start(root.path(), USER, &token).await;
        let work = tempfile::tempdir().unwrap();
        let url = server.url_with_credentials("project", USER, &token);
        try_git(work.path(), &["clone", "-q", &url, "."]).unwrap();

        std::fs::write(work.path().join("big.txt"), incompressible(3 << 20)).unwrap();
        try_git(work.path(), &["checkout", "-q", "-b", "result"]).unwrap();
        try_git(work.path(), &["add", "big.txt"]).unwrap();
        try_git(work.path(), &["commit", "-q", "-m", "large result"]).unwrap();
        try_git(work.path(), &["push", "-q", "origin", "result"]).unwrap();
        let pushed = try_git(work.path(), &["rev-parse", "HEAD"]).unwrap();
        assert_eq!(repo.head("result").as_deref(), Some(pushed.trim()));
        assert_eq!(
            repo.show("result", "big.txt").map(|s| s.len()),
            Some(3 << 20)
        );

        std::fs::write(work.path().join("small.txt"), "small\n").unwrap();
        try_git(work.path(), &["add", "small.txt"]).unwrap();
        try_git(work.path(), &["commit", "-q", "-m", "small result"]).unwrap();
        try_git(work.path(), &["push", "-q", "origin", "result"]).unwrap();
        assert_eq!(repo.show("result", "small.txt").as_deref(), Some("small\n"));

        let pushes = server
            .requests()
            .into_iter()
            .filter(|r| r["path"] == "/project.git/git-receive-pack" && r["method"] == "POST")
            .map(|r| r["status"].clone())
            .collect::<Vec<_>>();
        // Two pushes (a large one may add a probe request first).
        assert!(
            pushes.len() >= 2 && pushes.iter().all(|s| s == 200),
            "{pushes:?}"
        );
    }
}
