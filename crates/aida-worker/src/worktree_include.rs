//! `.worktreeinclude`: gitignored files (such as `.env`) that every worktree
//! needs, copied from the repository's main working tree into a fresh
//! worktree. The file at the repository root lists one path or glob per
//! line, relative to the root (`*`, `?`, `[...]` and `{a,b}` within a name,
//! `**` for any depth; a directory stands for everything below it; `#`
//! starts a comment). Only files that exist and are ignored are copied:
//! tracked files are in the worktree already, and ignored files are never
//! committed. Blocking: callers run it on `spawn_blocking`.
//!
//! Symlinks are never followed, on either side. In the repository a
//! symlinked `.worktreeinclude`, a listed file that is a symlink, or a
//! symlinked directory on the way is skipped and named in
//! [`Included::skipped`]: a repository could otherwise have the worker copy
//! `~/.ssh` into a worktree an agent reads. In the worktree (checked out
//! from a commit that may hold `conf -> /etc`) a file whose path crosses a
//! symlink is not written, and files are opened with `O_NOFOLLOW`, so
//! nothing is ever written outside the worktree.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use git2::Repository;
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use walkdir::WalkDir;

use crate::worktree::WorktreeError;

pub const FILE_NAME: &str = ".worktreeinclude";

/// What [`copy_included`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Included {
    /// The files copied, relative to the repository root.
    pub copied: Vec<String>,
    /// What was left out, and why, one sentence each (symlinks, patterns
    /// that leave the repository or do not parse).
    pub skipped: Vec<String>,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> WorktreeError {
    move |source| WorktreeError::Io { what, source }
}

fn is_symlink_error(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(Errno::ELOOP as i32)
}

/// Opens `path` for reading unless its last component is a symlink.
fn open_no_follow(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
}

/// Copies what `<repo>/.worktreeinclude` lists into `worktree`.
pub fn copy_included(repo: &Path, worktree: &Path) -> Result<Included, WorktreeError> {
    let git = Repository::open(repo).map_err(|source| WorktreeError::OpenRepo {
        repo: repo.display().to_string(),
        source,
    })?;
    let mut included = Included::default();
    // A bare repository has no working tree to copy from.
    let Some(root) = git.workdir().map(Path::to_path_buf) else {
        return Ok(included);
    };
    let Some(list) = read_list(&root, &mut included.skipped)? else {
        return Ok(included);
    };
    let patterns = parse_list(&list, &mut included.skipped);
    if patterns.is_empty() {
        return Ok(included);
    }
    let mut set = GlobSetBuilder::new();
    for pattern in &patterns {
        set.add(pattern.glob.clone());
    }
    let set = set.build().map_err(|e| WorktreeError::Io {
        what: format!("reading {FILE_NAME}"),
        source: std::io::Error::other(e),
    })?;

    let mut skipped = BTreeSet::new();
    let mut found = Found::default();
    let bases: BTreeSet<&Path> = patterns.iter().map(|p| p.base.as_path()).collect();
    for base in bases {
        find_files(&root, base, &set, &mut found, &mut skipped);
    }

    let index = git.index().map_err(|source| WorktreeError::Git {
        what: "reading the index".into(),
        source,
    })?;
    // Only what would be copied counts: ignored files that are not tracked.
    let copied =
        |rel: &Path| index.get_path(rel, 0).is_none() && git.is_path_ignored(rel).unwrap_or(false);
    for link in found.symlinks.iter().filter(|l| copied(l)) {
        skipped.insert(symlink_skipped(link));
    }
    for rel in found.files {
        if !copied(&rel) {
            continue;
        }
        match copy_file(&root, worktree, &rel)? {
            None => included.copied.push(rel.display().to_string()),
            Some(reason) => {
                skipped.insert(reason);
            }
        }
    }
    for reason in &skipped {
        tracing::warn!(reason = %reason, ".worktreeinclude entry skipped");
    }
    included.skipped.extend(skipped);
    Ok(included)
}

/// The list's text; `None` when there is none, or it is not a regular file
/// (a symlink is never read through, and said so).
fn read_list(root: &Path, skipped: &mut Vec<String>) -> Result<Option<String>, WorktreeError> {
    let path = root.join(FILE_NAME);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(format!("reading {FILE_NAME}"))(e)),
    };
    if meta.file_type().is_symlink() {
        let reason = format!("{FILE_NAME} is a symlink; not read, nothing copied");
        tracing::warn!(reason = %reason, ".worktreeinclude not read");
        skipped.push(reason);
        return Ok(None);
    }
    if !meta.is_file() {
        return Ok(None);
    }
    let mut text = String::new();
    match open_no_follow(&path).and_then(|mut f| f.read_to_string(&mut text)) {
        Ok(_) => Ok(Some(text)),
        // Swapped for a symlink since we looked.
        Err(e) if is_symlink_error(&e) => {
            skipped.push(format!(
                "{FILE_NAME} is a symlink; not read, nothing copied"
            ));
            Ok(None)
        }
        Err(e) => Err(io(format!("reading {FILE_NAME}"))(e)),
    }
}

/// One line of the list.
#[derive(Debug)]
struct Pattern {
    glob: globset::Glob,
    /// The pattern's leading components without glob characters: the
    /// directory (or file) its matches are searched under.
    base: PathBuf,
}

fn parse_list(list: &str, skipped: &mut Vec<String>) -> Vec<Pattern> {
    let mut patterns = Vec::new();
    for line in list.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_pattern(line) {
            Ok(pattern) => patterns.push(pattern),
            Err(reason) => {
                tracing::warn!(pattern = line, reason = %reason, "ignoring a .worktreeinclude pattern");
                skipped.push(format!("pattern {line:?} ignored: {reason}"));
            }
        }
    }
    patterns
}

/// A pattern relative to the repository root; refused if it would leave it.
fn parse_pattern(line: &str) -> Result<Pattern, String> {
    let mut parts = Vec::new();
    for component in Path::new(line.trim_start_matches('/')).components() {
        match component {
            Component::Normal(part) => parts.push(
                part.to_str()
                    .ok_or_else(|| "it is not valid UTF-8".to_owned())?,
            ),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err("it leaves the repository".into());
            }
        }
    }
    if parts.is_empty() {
        return Err("it names the repository itself".into());
    }
    let base: PathBuf = parts
        .iter()
        .take_while(|part| !part.contains(['*', '?', '[', '{', '\\']))
        .collect();
    // `*` stays within one name, as in .gitignore; `**` crosses directories.
    let glob = GlobBuilder::new(&parts.join("/"))
        .literal_separator(true)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Pattern { glob, base })
}

/// Whether `rel` or a directory above it matches: a listed directory
/// stands for everything below it.
fn selected(set: &GlobSet, rel: &Path) -> bool {
    let mut prefix = PathBuf::new();
    rel.components().any(|c| {
        prefix.push(c);
        set.is_match(&prefix)
    })
}

/// What the patterns select in the repository, relative to its root.
#[derive(Debug, Default)]
struct Found {
    /// Regular files.
    files: BTreeSet<PathBuf>,
    /// Symlinks, which are never followed.
    symlinks: BTreeSet<PathBuf>,
}

/// What the patterns select at or below `base`, without following any
/// symlink; a symlinked directory on the way to `base` goes to `skipped`.
fn find_files(
    root: &Path,
    base: &Path,
    set: &GlobSet,
    found: &mut Found,
    skipped: &mut BTreeSet<String>,
) {
    // Every directory on the way to the base, and the base itself.
    let mut prefix = PathBuf::new();
    for component in base.components() {
        prefix.push(component);
        match std::fs::symlink_metadata(root.join(&prefix)) {
            Ok(meta) if meta.file_type().is_symlink() => {
                skipped.insert(symlink_skipped(&prefix));
                return;
            }
            Ok(meta) if prefix.as_path() != base && !meta.is_dir() => return,
            Ok(_) => {}
            Err(_) => return, // not there: nothing to copy
        }
    }
    let walk = WalkDir::new(root.join(base))
        .follow_links(false)
        .follow_root_links(false)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || e.file_name() != ".git");
    for entry in walk {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read a directory listed by .worktreeinclude, skipped");
                continue;
            }
        };
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        let kind = entry.file_type();
        if kind.is_symlink() && selected(set, rel) {
            found.symlinks.insert(rel.to_path_buf());
        } else if kind.is_file() && selected(set, rel) {
            found.files.insert(rel.to_path_buf());
        }
    }
}

fn symlink_skipped(rel: &Path) -> String {
    format!(
        "{} skipped: it is a symlink, and symlinks are never followed",
        rel.display()
    )
}

/// Copies `root/rel` to `worktree/rel` without following a symlink on
/// either side; `Some(reason)` when it was refused.
fn copy_file(root: &Path, worktree: &Path, rel: &Path) -> Result<Option<String>, WorktreeError> {
    let mut source = match open_no_follow(&root.join(rel)) {
        Ok(file) => file,
        // Replaced by a symlink since the walk saw it.
        Err(e) if is_symlink_error(&e) => return Ok(Some(symlink_skipped(rel))),
        Err(e) => return Err(io(format!("reading {}", rel.display()))(e)),
    };
    let meta = source
        .metadata()
        .map_err(io(format!("reading {}", rel.display())))?;
    if !meta.is_file() {
        return Ok(None);
    }
    let refused = |what: &Path| {
        Some(format!(
            "{} not written: {} in the worktree is a symlink, and nothing is written through one",
            rel.display(),
            what.display()
        ))
    };

    // Each directory on the way inside the worktree: there, or made here;
    // never a symlink (a commit can hold `conf -> /etc`).
    let mut dir = worktree.to_path_buf();
    let mut inside = PathBuf::new();
    for component in rel.parent().into_iter().flat_map(Path::components) {
        dir.push(component);
        inside.push(component);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => return Ok(refused(&inside)),
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {
                return Ok(Some(format!(
                    "{} not written: {} in the worktree is not a directory",
                    rel.display(),
                    inside.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("reading {}", dir.display()))(e)),
        }
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            // Made by someone else meanwhile: look again.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                match std::fs::symlink_metadata(&dir) {
                    Ok(m) if m.is_dir() => {}
                    _ => return Ok(refused(&inside)),
                }
            }
            Err(e) => return Err(io(format!("creating {}", dir.display()))(e)),
        }
    }
    let to = worktree.join(rel);
    if std::fs::symlink_metadata(&to).is_ok_and(|m| m.file_type().is_symlink()) {
        return Ok(refused(rel));
    }
    let mut target = match OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(meta.permissions().mode() & 0o777)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(&to)
    {
        Ok(file) => file,
        Err(e) if is_symlink_error(&e) => return Ok(refused(rel)),
        Err(e) => {
            return Err(io(format!("copying {} into the worktree", rel.display()))(
                e,
            ));
        }
    };
    std::io::copy(&mut source, &mut target)
        .map_err(io(format!("copying {} into the worktree", rel.display())))?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, path: &str) -> bool {
        let pattern = parse_pattern(pattern).unwrap();
        let set = GlobSetBuilder::new().add(pattern.glob).build().unwrap();
        selected(&set, Path::new(path))
    }

    #[test]
    fn patterns_match_names_depths_and_directories() {
        assert!(matches(".env*", ".env.local"));
        assert!(!matches(".env*", "sub/.env"));
        assert!(matches("*.key", "server.key"));
        assert!(!matches("*.key", "server.keys"));
        assert!(!matches("*.key", "dir/server.key"), "* stays in one name");
        assert!(matches("**/*.key", "dir/sub/server.key"));
        assert!(matches("**/*.key", "server.key"));
        assert!(matches("?.txt", "a.txt"));
        assert!(matches("[ab].txt", "b.txt"));
        assert!(!matches("[!ab].txt", "b.txt"));
        assert!(matches("[a-c]x", "cx"));
        assert!(matches("config", "config/local/x.toml"), "a directory");
        assert!(matches("/config/./local.toml", "config/local.toml"));
    }

    #[test]
    fn patterns_stay_in_the_repository_and_know_their_base() {
        for bad in ["../etc/passwd", "a/../../b", "/", "."] {
            assert!(parse_pattern(bad).is_err(), "{bad}");
        }
        let base = |p: &str| parse_pattern(p).unwrap().base;
        assert_eq!(base("config/*.toml"), Path::new("config"));
        assert_eq!(base("a/b/.env"), Path::new("a/b/.env"));
        assert_eq!(base("**/.env"), Path::new(""));
        assert!(parse_pattern("a/[oops").is_err());
    }

    #[test]
    fn a_pathological_pattern_matches_in_linear_time() {
        // The hand-written matcher this replaces backtracked exponentially.
        let started = std::time::Instant::now();
        let name = "a".repeat(60);
        assert!(!matches(&format!("{}b", "*a".repeat(30)), &name));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
