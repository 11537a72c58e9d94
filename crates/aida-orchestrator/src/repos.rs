//! Which repositories tasks may name: those under `AIDA_REPO_ROOTS`. A path
//! is canonicalized first (symlinks and `..` resolved), so neither leads
//! outside. Outside the roots every answer is the same generic one: a
//! caller learns nothing about the host's files from it.

use std::path::{Component, Path, PathBuf};

use crate::error::{OrchestratorError, Result};

/// The one answer for a repository outside the roots, or one whose
/// existence would say something about the host.
pub const NOT_ALLOWED: &str = "\"repo\" is not a repository AIDA may use: it must be a git repository under one of the directories the operator allowed (AIDA_REPO_ROOTS)";

/// The allowed directories, canonicalized.
#[derive(Debug, Clone, Default)]
pub struct RepoRoots {
    roots: Vec<PathBuf>,
}

impl RepoRoots {
    /// From a comma-separated list of absolute directories. A root that
    /// does not exist is an operator's mistake worth stopping for.
    pub fn parse(list: &str) -> anyhow::Result<Self> {
        let mut roots = Vec::new();
        for raw in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let path = Path::new(raw);
            anyhow::ensure!(
                path.is_absolute(),
                "AIDA_REPO_ROOTS: {raw:?} is not an absolute path"
            );
            let canonical = path
                .canonicalize()
                .map_err(|e| anyhow::anyhow!("AIDA_REPO_ROOTS: {raw:?} cannot be used: {e}"))?;
            roots.push(canonical);
        }
        anyhow::ensure!(
            !roots.is_empty(),
            "AIDA_REPO_ROOTS is empty: name the directories (comma-separated) whose repositories tasks may use"
        );
        Ok(RepoRoots { roots })
    }

    pub fn from_paths(roots: Vec<PathBuf>) -> Self {
        RepoRoots { roots }
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// The canonical path of `repo` if it lies under a root. Blocking.
    pub fn check(&self, repo: &str) -> Result<PathBuf> {
        let path = Path::new(repo);
        if !path.is_absolute() {
            return Err(OrchestratorError::invalid(format!(
                "\"repo\" must be an absolute path, got {repo:?}"
            )));
        }
        match path.canonicalize() {
            Ok(canonical) if self.contains(&canonical) => Ok(canonical),
            Ok(_) => Err(OrchestratorError::invalid(NOT_ALLOWED)),
            // It does not exist (or cannot be read). Say so only where the
            // caller may look anyway: when the path, taken literally, lies
            // under a root.
            Err(_) if self.contains(&lexically_normal(path)) => Err(OrchestratorError::invalid(
                format!("{repo:?} does not exist"),
            )),
            Err(_) => Err(OrchestratorError::invalid(NOT_ALLOWED)),
        }
    }

    fn contains(&self, path: &Path) -> bool {
        self.roots.iter().any(|root| path.starts_with(root))
    }
}

/// `path` with `.` and `..` resolved without touching the file system.
fn lexically_normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_under_a_root_pass_whatever_the_route() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let repo = root.path().join("shop");
        std::fs::create_dir(&repo).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape")).unwrap();
        let roots = RepoRoots::parse(&root.path().display().to_string()).unwrap();

        assert_eq!(
            roots.check(repo.to_str().unwrap()).unwrap(),
            repo.canonicalize().unwrap()
        );
        for bad in [
            outside.path().display().to_string(),
            format!("{}/escape", root.path().display()),
            format!(
                "{}/shop/../../{}",
                root.path().display(),
                outside.path().display()
            ),
            "/etc".to_owned(),
            "/no/such/dir".to_owned(),
        ] {
            let err = roots.check(&bad).unwrap_err().to_string();
            assert_eq!(err, NOT_ALLOWED, "{bad}");
        }
        let missing = format!("{}/missing", root.path().display());
        assert!(
            roots
                .check(&missing)
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
        assert!(roots.check("relative/path").is_err());
    }

    #[test]
    fn roots_must_be_absolute_existing_directories() {
        assert!(RepoRoots::parse("").is_err());
        assert!(RepoRoots::parse("relative").is_err());
        assert!(RepoRoots::parse("/no/such/root/anywhere").is_err());
    }
}
