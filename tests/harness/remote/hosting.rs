//! A team's git hosting for one test: bare repositories served over smart
//! HTTP with a token (as `https://` hosting) and over `git://`, a fake of
//! the GitHub API for that HTTP host, and the orchestrator and worker
//! settings that point AIDA at them (`AIDA_ALLOWED_REMOTES`,
//! `AIDA_GIT_CREDENTIALS`, `AIDA_GIT_PROVIDERS`, `AIDA_REPO_CACHE`).

use std::path::{Path, PathBuf};

use super::{BareRepo, FakeProvider, GitDaemon, GitHttpServer};
use crate::Options;

/// The user AIDA's token belongs to on the HTTP host.
pub const BOT: &str = "aida-bot";
/// A repository for which AIDA is configured with a wrong token.
pub const LOCKED: &str = "acme/locked";

pub struct Hosting {
    /// The bare repositories, `ROOT/acme/NAME.git`.
    pub root: tempfile::TempDir,
    /// Where the orchestrator keeps its mirrors.
    pub cache: tempfile::TempDir,
    pub http: GitHttpServer,
    pub daemon: GitDaemon,
    pub provider: FakeProvider,
    /// The token the HTTP host and the API accept.
    pub token: String,
    /// The token AIDA holds for [`LOCKED`], which the host refuses.
    pub wrong_token: String,
}

impl Hosting {
    pub async fn start() -> Hosting {
        let root = tempfile::tempdir().expect("tempdir");
        let cache = tempfile::tempdir().expect("tempdir");
        let token = format!("ghp_{}", aida_core::secret::random_hex(16));
        let wrong_token = format!("ghp_{}", aida_core::secret::random_hex(16));
        let http = GitHttpServer::start(root.path(), BOT, &token).await;
        let daemon = GitDaemon::start(root.path()).await;
        let provider = FakeProvider::start(&token).await;
        Hosting {
            root,
            cache,
            http,
            daemon,
            provider,
            token,
            wrong_token,
        }
    }

    /// A new bare repository `acme/NAME` with `files` on `main`.
    pub fn repo(&self, name: &str, files: &[(&str, &str)]) -> BareRepo {
        BareRepo::create(self.root.path(), &format!("acme/{name}"), files)
    }

    /// `http://127.0.0.1:PORT/acme/NAME.git`.
    pub fn http_url(&self, name: &str) -> String {
        self.http.url(&format!("acme/{name}"))
    }

    /// `git://127.0.0.1:PORT/acme/NAME.git`.
    pub fn git_url(&self, name: &str) -> String {
        self.daemon.url(&format!("acme/{name}"))
    }

    pub fn cache_path(&self) -> &Path {
        self.cache.path()
    }

    /// The mirror directories the orchestrator made so far (`.git` dirs).
    pub fn mirrors(&self) -> Vec<PathBuf> {
        walk(self.cache.path())
    }

    /// `options` with AIDA pointed at this hosting.
    pub fn configure(&self, options: Options) -> Options {
        let http_host = format!("127.0.0.1:{}", self.http.port);
        let credentials = format!(
            "# the bot's token for the host, and a wrong one for one repository\n\
             http://{BOT}:{}@{http_host}\n\
             http://{BOT}:{}@{http_host}/{LOCKED}\n",
            self.token, self.wrong_token
        );
        let cache = self.cache.path().display().to_string();
        options
            .orchestrator_env(
                "AIDA_ALLOWED_REMOTES",
                &format!(
                    "http://{http_host}/acme/*, git://127.0.0.1:{}/acme/*",
                    self.daemon.port
                ),
            )
            .orchestrator_env("AIDA_GIT_CREDENTIALS", &credentials)
            .orchestrator_env(
                "AIDA_GIT_PROVIDERS",
                &format!("{http_host}=github@{}", self.provider.github_api_url()),
            )
            .orchestrator_env("AIDA_REPO_CACHE", &cache)
            .orchestrator_env("AIDA_GIT_TIMEOUT_SECS", "30")
            .worker_env("AIDA_REPO_CACHE", &cache)
    }

    /// Every secret of this hosting, to look for where none may appear.
    pub fn secrets(&self) -> Vec<String> {
        vec![self.token.clone(), self.wrong_token.clone()]
    }
}

/// The `*.git` directories below `dir`, not below each other.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.extension().is_some_and(|e| e == "git") {
            found.push(path);
        } else {
            found.extend(walk(&path));
        }
    }
    found.sort();
    found
}
