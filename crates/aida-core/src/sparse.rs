//! The directories a subtask declares it works in. A worker then checks out
//! only those (git's sparse checkout in cone mode: every file under them,
//! plus the files directly in the repository's root and in their parent
//! directories), so a run on a big repository starts in the time its part
//! takes, not the whole tree's. The commit still holds the whole tree: what
//! was left out stays as it is at the start commit.
//!
//! Validated once at the boundary; the worker parses them again before it
//! hands them to git (on its standard input, one per line, never as an
//! argument).

use serde::{Deserialize, Serialize};

/// At most this many directories per subtask.
pub const MAX_PATHS: usize = 64;
/// At most this many bytes per directory.
pub const MAX_PATH_LEN: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("paths entry {path:?} is not valid: {why}")]
pub struct SparsePathError {
    pub path: String,
    pub why: &'static str,
}

/// A subtask's directories, relative to the repository root, without a
/// trailing `/`, sorted and without repeats; empty: the whole repository.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct SparsePaths(Vec<String>);

impl SparsePaths {
    /// Checks and normalises what a request or a plan gave.
    pub fn parse<S: AsRef<str>>(raw: &[S]) -> Result<Self, SparsePathError> {
        if raw.len() > MAX_PATHS {
            return Err(SparsePathError {
                path: format!("({} entries)", raw.len()),
                why: "a subtask declares at most 64 directories",
            });
        }
        let mut dirs = raw
            .iter()
            .map(|p| directory(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        dirs.sort();
        dirs.dedup();
        Ok(SparsePaths(dirs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// What `git sparse-checkout set --stdin` reads: one directory a line.
    pub fn to_stdin(&self) -> String {
        self.0.iter().map(|d| format!("{d}\n")).collect()
    }
}

/// One directory, normalised: `src/api/` becomes `src/api`.
fn directory(raw: &str) -> Result<String, SparsePathError> {
    let bad = |why| {
        Err(SparsePathError {
            path: raw.to_owned(),
            why,
        })
    };
    let path = raw.strip_suffix('/').unwrap_or(raw);
    if path.is_empty() {
        return bad("it is empty (leave \"paths\" out for the whole repository)");
    }
    if path.len() > MAX_PATH_LEN {
        return bad("it is longer than 1024 bytes");
    }
    if path.starts_with('/') {
        return bad("it must be relative to the repository root");
    }
    if path.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    // git reads these as pattern syntax even in cone mode.
    if path.contains(['*', '?', '[', ']', '\\', '!']) || path.starts_with(['#', '-']) {
        return bad("it must be a plain directory name, not a pattern");
    }
    for part in path.split('/') {
        match part {
            "" => return bad("it contains an empty component (\"//\")"),
            "." | ".." => return bad("it contains \".\" or \"..\""),
            _ if part.eq_ignore_ascii_case(".git") => return bad("it names git's own directory"),
            _ => {}
        }
    }
    Ok(path.to_owned())
}

impl TryFrom<Vec<String>> for SparsePaths {
    type Error = SparsePathError;
    fn try_from(raw: Vec<String>) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<SparsePaths> for Vec<String> {
    fn from(paths: SparsePaths) -> Self {
        paths.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_normalised_sorted_and_deduplicated() {
        let paths = SparsePaths::parse(&["src/api/", "docs", "src/api"]).unwrap();
        assert_eq!(paths.as_slice(), ["docs", "src/api"]);
        assert_eq!(paths.to_stdin(), "docs\nsrc/api\n");
        assert!(SparsePaths::parse::<&str>(&[]).unwrap().is_empty());
    }

    #[test]
    fn anything_but_a_plain_relative_directory_is_refused() {
        for (raw, why) in [
            ("", "empty"),
            ("/", "empty"),
            ("/etc", "relative"),
            ("../outside", "\"..\""),
            ("src/../..", "\"..\""),
            ("./src", "\".\""),
            ("src//api", "empty component"),
            (".git", "git's own"),
            ("sub/.GIT/hooks", "git's own"),
            ("src/*", "pattern"),
            ("!src", "pattern"),
            ("#src", "pattern"),
            ("--help", "pattern"),
            ("a\nb", "control"),
        ] {
            let err = SparsePaths::parse(&[raw]).unwrap_err();
            assert_eq!(err.path, raw);
            assert!(err.why.contains(why), "{raw:?}: {}", err.why);
        }
        let many: Vec<String> = (0..=MAX_PATHS).map(|i| format!("d{i}")).collect();
        assert!(SparsePaths::parse(&many).unwrap_err().why.contains("64"));
        assert!(SparsePaths::parse(&["x".repeat(MAX_PATH_LEN + 1)]).is_err());
    }

    #[test]
    fn it_travels_as_a_list_of_strings_and_is_checked_when_read() {
        let paths = SparsePaths::parse(&["b", "a"]).unwrap();
        assert_eq!(serde_json::to_string(&paths).unwrap(), r#"["a","b"]"#);
        assert!(serde_json::from_str::<SparsePaths>(r#"["../x"]"#).is_err());
    }
}
