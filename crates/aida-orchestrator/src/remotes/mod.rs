//! Tasks on remote repositories: which remotes may be used
//! (`AIDA_ALLOWED_REMOTES`), with which credentials (`AIDA_GIT_CREDENTIALS`,
//! ssh key and known hosts), the mirror each remote gets (`AIDA_REPO_CACHE`),
//! and the providers' APIs for pull requests and issue comments
//! (`AIDA_GIT_PROVIDERS`). Delivery of a task's result lives in
//! `crate::delivery`.

pub mod credentials;
pub mod git;
pub mod mirror;
pub mod provider;
pub mod url;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use credentials::Credentials;
pub use git::{GitCli, RefUpdate, RemoteError};
pub use mirror::{Freshness, Mirrors};
pub use provider::{ProviderError, Providers, PullRequest, PullRequestRequest};
pub use url::{AllowedRemotes, RemoteUrl};

use crate::error::{OrchestratorError, Result};

/// Everything about remotes, from the configuration.
pub struct Remotes {
    pub allowed: AllowedRemotes,
    pub mirrors: Mirrors,
    pub providers: Providers,
    /// The GitHub repositories whose issues and reviews start work.
    pub github: Option<crate::github::GitHubConfig>,
}

impl Remotes {
    pub fn new(
        allowed: AllowedRemotes,
        credentials: Credentials,
        cache: PathBuf,
        providers: Providers,
        git_timeout: Duration,
        github: Option<crate::github::GitHubConfig>,
    ) -> Self {
        let git = GitCli::new(Arc::new(credentials), git_timeout);
        Remotes {
            allowed,
            mirrors: Mirrors::new(cache, git),
            providers,
            github,
        }
    }

    pub fn credentials(&self) -> &Credentials {
        self.mirrors.git().credentials()
    }

    /// Checks `repo` as a remote: well formed, without credentials, and
    /// allowed.
    pub fn check(&self, repo: &str) -> Result<RemoteUrl> {
        let url = RemoteUrl::parse(repo)?;
        self.allowed.check(&url)?;
        Ok(url)
    }

    /// The mirror of an allowed remote, up to date. A remote that cannot
    /// be reached or refuses AIDA is the request's problem (400), said
    /// without a secret.
    pub async fn mirror(&self, url: &RemoteUrl) -> Result<(PathBuf, Freshness)> {
        self.mirrors
            .fresh(url)
            .await
            .map_err(|e| OrchestratorError::invalid(e.to_string()))
    }
}
