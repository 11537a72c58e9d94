//! One managed mirror per remote: a bare repository under `AIDA_REPO_CACHE`
//! whose `refs/remotes/origin/*` follow the remote's branches, shared by
//! every task on that remote. Workers make their worktrees from it (they see
//! the same directory), the aggregator merges in it, and deliveries push
//! from it. AIDA's own branches (`refs/heads/aida/...`) live beside the
//! remote's and a fetch never touches them.
//!
//! A new mirror is made in a temporary directory and renamed into place
//! only once its first fetch succeeded, so a failed clone leaves nothing
//! behind; a failed fetch leaves the mirror as it was. Tasks on one remote
//! take turns fetching (a lock per mirror).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::git::{GitCli, RemoteError};
use super::url::RemoteUrl;

/// What getting a mirror ready did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// There was none: the remote was cloned.
    Cloned,
    /// The existing mirror was fetched.
    Fetched,
}

impl Freshness {
    pub fn label(self) -> &'static str {
        match self {
            Freshness::Cloned => "cloned",
            Freshness::Fetched => "fetched",
        }
    }
}

/// The mirrors below one cache directory.
pub struct Mirrors {
    root: PathBuf,
    git: GitCli,
    /// One lock per mirror: fetches of one remote never overlap.
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl Mirrors {
    pub fn new(root: PathBuf, git: GitCli) -> Self {
        Mirrors {
            root,
            git,
            locks: Mutex::default(),
        }
    }

    pub fn git(&self) -> &GitCli {
        &self.git
    }

    /// Where `url`'s mirror lives (whether or not it exists yet).
    pub fn path_of(&self, url: &RemoteUrl) -> PathBuf {
        self.root.join(url.cache_key())
    }

    fn lock_for(&self, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(path.to_path_buf())
            .or_default()
            .clone()
    }

    /// The mirror of `url`, cloned if there is none yet, else fetched, so
    /// work starts from the remote's latest branches.
    pub async fn fresh(&self, url: &RemoteUrl) -> Result<(PathBuf, Freshness), RemoteError> {
        let path = self.path_of(url);
        let lock = self.lock_for(&path);
        let _turn = lock.lock().await;
        if path.join("HEAD").is_file() {
            self.git
                .run(&path, url, &["fetch", "--prune", "--quiet", "origin"])
                .await?;
            return Ok((path, Freshness::Fetched));
        }
        self.clone_into(url, &path).await?;
        Ok((path, Freshness::Cloned))
    }

    async fn clone_into(&self, url: &RemoteUrl, path: &Path) -> Result<(), RemoteError> {
        let failed = |detail: String| RemoteError::Failed {
            remote: url.to_string(),
            detail,
        };
        let parent = path.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&parent)
            .map_err(|e| failed(format!("cannot create {}: {e}", parent.display())))?;
        let tmp = tempfile::Builder::new()
            .prefix(".clone-")
            .tempdir_in(&parent)
            .map_err(|e| {
                failed(format!(
                    "cannot create a directory in {}: {e}",
                    parent.display()
                ))
            })?;
        let dir = tmp.path();
        let remote = url.to_string();
        // Set up locally, then one network call: the fetch.
        for args in [
            vec![
                "init",
                "--bare",
                "--quiet",
                "--initial-branch=aida-mirror",
                ".",
            ],
            vec!["config", "remote.origin.url", remote.as_str()],
            vec![
                "config",
                "remote.origin.fetch",
                "+refs/heads/*:refs/remotes/origin/*",
            ],
            // Workers add worktrees to the mirror; git must not collect
            // their objects away while they run.
            vec!["config", "gc.auto", "0"],
        ] {
            self.git.run(dir, url, &args).await?;
        }
        self.git
            .run(dir, url, &["fetch", "--prune", "--quiet", "origin"])
            .await?;
        // Which branch the remote calls its default, for tasks that name
        // no base. A remote without one is fine: such tasks must name it.
        let _ = self
            .git
            .run(dir, url, &["remote", "set-head", "origin", "--auto"])
            .await;
        let kept = tmp.keep();
        std::fs::rename(&kept, path).map_err(|e| {
            let _ = std::fs::remove_dir_all(&kept);
            failed(format!("cannot move the new mirror into place: {e}"))
        })?;
        tracing::info!(remote = %url, mirror = %path.display(), "mirrored a remote");
        Ok(())
    }
}
