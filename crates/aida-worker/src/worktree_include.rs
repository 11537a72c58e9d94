//! `.worktreeinclude`: gitignored files (such as `.env`) that every worktree
//! needs, copied from the repository's main working tree into a fresh
//! worktree. The file at the repository root lists one path or glob per
//! line (`*`, `?`, `[...]` within a name, `**` for any depth; `#` starts a
//! comment). Only files that exist and are ignored are copied: tracked
//! files are in the worktree already, and ignored files are never
//! committed. Blocking: callers run it on `spawn_blocking`.

use std::path::{Component, Path, PathBuf};

use git2::Repository;

use crate::worktree::WorktreeError;

pub const FILE_NAME: &str = ".worktreeinclude";

fn io(what: String) -> impl FnOnce(std::io::Error) -> WorktreeError {
    move |source| WorktreeError::Io { what, source }
}

/// Copies what `<repo>/.worktreeinclude` lists into `worktree`; returns the
/// copied files, relative to the repository root.
pub fn copy_included(repo: &Path, worktree: &Path) -> Result<Vec<String>, WorktreeError> {
    let git = Repository::open(repo).map_err(|source| WorktreeError::OpenRepo {
        repo: repo.display().to_string(),
        source,
    })?;
    // A bare repository has no working tree to copy from.
    let Some(root) = git.workdir().map(Path::to_path_buf) else {
        return Ok(Vec::new());
    };
    let list = match std::fs::read_to_string(root.join(FILE_NAME)) {
        Ok(list) => list,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(format!("reading {FILE_NAME}"))(e)),
    };
    let index = git.index().map_err(|source| WorktreeError::Git {
        what: "reading the index".into(),
        source,
    })?;

    let mut matched = Vec::new();
    for pattern in list.lines().map(str::trim) {
        if pattern.is_empty() || pattern.starts_with('#') {
            continue;
        }
        let Some(parts) = pattern_parts(pattern) else {
            tracing::warn!(
                pattern,
                "ignoring a .worktreeinclude pattern that leaves the repository"
            );
            continue;
        };
        expand(&root, PathBuf::new(), &parts, &mut matched);
    }
    let mut files = Vec::new();
    for rel in matched {
        collect_files(&root, rel, &mut files);
    }
    files.sort();
    files.dedup();

    let mut copied = Vec::new();
    for rel in files {
        let tracked = index.get_path(&rel, 0).is_some();
        let ignored = git.is_path_ignored(&rel).unwrap_or(false);
        if tracked || !ignored {
            continue;
        }
        let to = worktree.join(&rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("creating {}", parent.display())))?;
        }
        std::fs::copy(root.join(&rel), &to)
            .map_err(io(format!("copying {} into the worktree", rel.display())))?;
        copied.push(rel.display().to_string());
    }
    Ok(copied)
}

/// The pattern's path components; `None` if it would leave the repository.
fn pattern_parts(pattern: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    for component in Path::new(pattern.trim_start_matches('/')).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?.to_owned()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then_some(parts)
}

/// Paths (relative to `root`) under `rel` that match `parts`.
fn expand(root: &Path, rel: PathBuf, parts: &[String], out: &mut Vec<PathBuf>) {
    let Some((first, rest)) = parts.split_first() else {
        if root.join(&rel).exists() {
            out.push(rel);
        }
        return;
    };
    if first == "**" {
        expand(root, rel.clone(), rest, out);
        for dir in entries(root, &rel)
            .into_iter()
            .filter(|n| root.join(&rel).join(n).is_dir())
        {
            expand(root, rel.join(dir), parts, out);
        }
    } else if first.contains(['*', '?', '[']) {
        for name in entries(root, &rel) {
            if matches(first, &name) {
                expand(root, rel.join(name), rest, out);
            }
        }
    } else {
        expand(root, rel.join(first), rest, out);
    }
}

/// Entry names of a directory, without `.git` and symlinked directories.
fn entries(root: &Path, rel: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(root.join(rel)) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter(|e| !e.file_type().is_ok_and(|t| t.is_symlink()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name != ".git")
        .collect()
}

/// The regular files at or below `rel`.
fn collect_files(root: &Path, rel: PathBuf, out: &mut Vec<PathBuf>) {
    let path = root.join(&rel);
    if path.is_file() {
        out.push(rel);
    } else if path.is_dir() {
        for name in entries(root, &rel) {
            collect_files(root, rel.join(name), out);
        }
    }
}

/// Glob match of one name: `*` any run, `?` one character, `[abc]`, `[a-z]`
/// and `[!abc]` one of (or none of) a set.
fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_from(&p, &n)
}

fn match_from(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|i| match_from(&p[1..], &n[i..])),
        Some('?') => !n.is_empty() && match_from(&p[1..], &n[1..]),
        Some('[') => {
            let Some(close) = p.iter().skip(2).position(|&c| c == ']').map(|i| i + 2) else {
                // No closing bracket: a literal '['.
                return n.first() == Some(&'[') && match_from(&p[1..], &n[1..]);
            };
            let Some(&c) = n.first() else {
                return false;
            };
            let (negate, set) = match p[1] {
                '!' | '^' => (true, &p[2..close]),
                _ => (false, &p[1..close]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == '-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != negate && match_from(&p[close + 1..], &n[1..])
        }
        Some(&c) => n.first() == Some(&c) && match_from(&p[1..], &n[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_names() {
        assert!(matches(".env*", ".env.local"));
        assert!(matches("*.key", "server.key"));
        assert!(!matches("*.key", "server.keys"));
        assert!(matches("?.txt", "a.txt"));
        assert!(matches("[ab].txt", "b.txt"));
        assert!(!matches("[!ab].txt", "b.txt"));
        assert!(matches("[a-c]x", "cx"));
        assert_eq!(pattern_parts("../etc/passwd"), None);
        assert_eq!(
            pattern_parts("/config/./local.toml"),
            Some(vec!["config".to_owned(), "local.toml".to_owned()])
        );
    }
}
