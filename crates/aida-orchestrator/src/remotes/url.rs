//! Remote repository URLs as tasks name them: `https://host/path`,
//! `http://host/path` and `git://host/path` (for servers on a private
//! network; neither authenticates the server), `ssh://[user@]host[:port]/path`,
//! git's `user@host:path`, and `file:///path`. A URL never carries a password
//! or token (those live in `AIDA_GIT_CREDENTIALS`), and which remotes may be
//! used at all is the operator's list, `AIDA_ALLOWED_REMOTES`.

use std::fmt;

use globset::{GlobSet, GlobSetBuilder};

use crate::error::{OrchestratorError, Result};

/// How a remote is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Https,
    Http,
    Ssh,
    /// git's own protocol (`git daemon`): no credentials, no encryption.
    Git,
    File,
}

/// A validated remote URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    scheme: Scheme,
    /// `host` or `host:port`, lowercase; empty for `file://`.
    host: String,
    /// The user of an ssh URL (`git`), never a secret.
    user: Option<String>,
    /// The path on the host, without leading `/` (for ssh's scp form, as
    /// written); the absolute path for `file://`.
    path: String,
    /// Git's `user@host:path` form, kept to print it back as written.
    scp_like: bool,
}

impl RemoteUrl {
    /// Whether `repo` names a remote at all (rather than a local path).
    pub fn looks_like_remote(repo: &str) -> bool {
        let repo = repo.trim();
        if repo.contains("://") {
            return true;
        }
        match repo.split_once(':') {
            Some((before, _)) => before.contains('@') && !before.contains('/'),
            None => false,
        }
    }

    pub fn parse(raw: &str) -> Result<Self> {
        let raw = raw.trim();
        // The URL goes back to the user and into the audit trail: never
        // with the credentials someone put in it.
        let shown = aida_core::secret::redact_url(raw);
        let bad = |why: &str| {
            Err(OrchestratorError::invalid(format!(
                "\"repo\" {shown:?} is not a remote AIDA can use: {why}"
            )))
        };
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("it contains whitespace or control characters");
        }
        if let Some(rest) = raw.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return bad("a file:// URL needs an absolute path (file:///srv/git/x.git)");
            }
            return Ok(RemoteUrl {
                scheme: Scheme::File,
                host: String::new(),
                user: None,
                path: rest.to_owned(),
                scp_like: false,
            });
        }
        let (scheme, rest, scp_like) = if let Some(rest) = raw.strip_prefix("https://") {
            (Scheme::Https, rest, false)
        } else if let Some(rest) = raw.strip_prefix("http://") {
            (Scheme::Http, rest, false)
        } else if let Some(rest) = raw.strip_prefix("ssh://") {
            (Scheme::Ssh, rest, false)
        } else if let Some(rest) = raw.strip_prefix("git://") {
            (Scheme::Git, rest, false)
        } else if raw.contains("://") {
            return bad("use https://, http://, ssh://, git://, git@host:path or file://");
        } else {
            // git@host:path
            (Scheme::Ssh, raw, true)
        };
        let (authority, path) = if scp_like {
            let (authority, path) = rest.split_once(':').unwrap_or((rest, ""));
            (authority, path)
        } else {
            rest.split_once('/').unwrap_or((rest, ""))
        };
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, authority),
        };
        let user = match (scheme, userinfo) {
            (_, None) => None,
            (Scheme::Ssh, Some(u)) if !u.contains(':') && !u.is_empty() => Some(u.to_owned()),
            _ => {
                return bad(
                    "credentials do not belong in a URL: give them to AIDA in AIDA_GIT_CREDENTIALS",
                );
            }
        };
        let host = host.to_ascii_lowercase();
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        if !valid_host {
            return bad("the host is missing or not a host name");
        }
        let path = path.trim_start_matches('/');
        if path.is_empty() || path.split('/').any(|s| s == "..") || path.starts_with('-') {
            return bad("the repository path is missing or not plain");
        }
        Ok(RemoteUrl {
            scheme,
            host,
            user,
            path: path.to_owned(),
            scp_like,
        })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// `host` or `host:port`; empty for `file://`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The host without a port.
    pub fn host_name(&self) -> &str {
        match self.host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => &self.host,
        }
    }

    /// The repository's path on its host, without a trailing `.git`:
    /// `owner/name` on GitHub, `group/sub/project` on GitLab.
    pub fn repo_path(&self) -> &str {
        let path = self.path.trim_end_matches('/');
        path.strip_suffix(".git").unwrap_or(path)
    }

    /// Where the mirror of this remote lives below the cache: one
    /// directory per host and path, safe as file names.
    pub fn cache_key(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        let host = match self.scheme {
            Scheme::File => "file".to_owned(),
            _ => clean(&self.host),
        };
        let path: Vec<String> = self
            .repo_path()
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .map(clean)
            .collect();
        format!("{host}/{}.git", path.join("/"))
    }
}

impl fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = self
            .user
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        match self.scheme {
            Scheme::File => write!(f, "file://{}", self.path),
            Scheme::Https => write!(f, "https://{}/{}", self.host, self.path),
            Scheme::Http => write!(f, "http://{}/{}", self.host, self.path),
            Scheme::Git => write!(f, "git://{}/{}", self.host, self.path),
            Scheme::Ssh if self.scp_like => write!(f, "{user}{}:{}", self.host, self.path),
            Scheme::Ssh => write!(f, "ssh://{user}{}/{}", self.host, self.path),
        }
    }
}

/// The remotes tasks may use: glob patterns over the URL as written
/// (`https://github.com/acme/*`, `git@github.com:acme/*`,
/// `file:///srv/git/*`). None by default.
#[derive(Debug, Clone, Default)]
pub struct AllowedRemotes {
    patterns: Vec<String>,
    set: Option<GlobSet>,
}

impl AllowedRemotes {
    /// From `AIDA_ALLOWED_REMOTES`, comma-separated.
    pub fn parse(list: &str) -> anyhow::Result<Self> {
        let patterns: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        if patterns.is_empty() {
            return Ok(Self::default());
        }
        let mut builder = GlobSetBuilder::new();
        for pattern in &patterns {
            // `*` stops at `/`, as in paths: `https://github.com/acme/*`
            // allows acme's repositories, not every path below the host.
            let glob = globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| anyhow::anyhow!("AIDA_ALLOWED_REMOTES: {pattern:?}: {e}"))?;
            builder.add(glob);
        }
        let set = builder
            .build()
            .map_err(|e| anyhow::anyhow!("AIDA_ALLOWED_REMOTES: {e}"))?;
        Ok(AllowedRemotes {
            patterns,
            set: Some(set),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Refuses `url` unless a pattern allows it.
    pub fn check(&self, url: &RemoteUrl) -> Result<()> {
        let text = url.to_string();
        let allowed = self.set.as_ref().is_some_and(|set| {
            set.is_match(&text)
                || set.is_match(text.trim_end_matches(".git"))
                || set.is_match(format!("{}.git", text.trim_end_matches(".git")))
        });
        if allowed {
            return Ok(());
        }
        Err(OrchestratorError::invalid(if self.patterns.is_empty() {
            format!(
                "remote {text} is not allowed: this AIDA takes no remotes (the operator lists them in AIDA_ALLOWED_REMOTES)"
            )
        } else {
            format!(
                "remote {text} is not allowed: it matches none of AIDA_ALLOWED_REMOTES ({})",
                self.patterns.join(", ")
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_supported_forms_parse_and_print_back() {
        for (raw, host, path, key) in [
            (
                "https://github.com/acme/shop.git",
                "github.com",
                "acme/shop",
                "github.com/acme/shop.git",
            ),
            (
                "http://10.0.0.5:8080/git/x",
                "10.0.0.5:8080",
                "git/x",
                "10.0.0.5_8080/git/x.git",
            ),
            (
                "ssh://git@gitlab.example:2222/group/sub/p.git",
                "gitlab.example:2222",
                "group/sub/p",
                "gitlab.example_2222/group/sub/p.git",
            ),
            (
                "git@github.com:acme/shop.git",
                "github.com",
                "acme/shop",
                "github.com/acme/shop.git",
            ),
            (
                "file:///srv/git/shop.git",
                "",
                "/srv/git/shop",
                "file/srv/git/shop.git",
            ),
            (
                "git://127.0.0.1:9418/acme/shop.git",
                "127.0.0.1:9418",
                "acme/shop",
                "127.0.0.1_9418/acme/shop.git",
            ),
        ] {
            let url = RemoteUrl::parse(raw).unwrap();
            assert_eq!(url.to_string(), raw, "{raw}");
            assert_eq!(url.host(), host, "{raw}");
            assert_eq!(url.repo_path(), path, "{raw}");
            assert_eq!(url.cache_key(), key, "{raw}");
        }
        assert!(RemoteUrl::parse("HTTPS://x").is_err());
        assert_eq!(
            RemoteUrl::parse("https://Example.COM/a").unwrap().host(),
            "example.com"
        );
    }

    #[test]
    fn credentials_and_odd_urls_are_refused_with_the_reason() {
        for (raw, why) in [
            ("https://user:token@github.com/acme/shop.git", "credentials"),
            ("https://token@github.com/acme/shop.git", "credentials"),
            ("ssh://git:pw@host/x", "credentials"),
            ("ftp://host/x", "https://"),
            ("https://github.com/", "path"),
            ("https://github.com/a/../b", "path"),
            ("https:///x", "host"),
            ("file://relative/x", "absolute"),
            ("https://host/a b", "whitespace"),
        ] {
            let err = RemoteUrl::parse(raw).unwrap_err().to_string();
            assert!(err.contains(why), "{raw}: {err}");
            assert!(!err.contains("token@") && !err.contains(":pw@"), "{err}");
        }
        assert!(RemoteUrl::looks_like_remote("git@github.com:a/b"));
        assert!(RemoteUrl::looks_like_remote("https://x/y"));
        assert!(!RemoteUrl::looks_like_remote("/srv/repos/shop"));
        assert!(!RemoteUrl::looks_like_remote("./a:b"));
    }

    #[test]
    fn only_listed_remotes_are_allowed() {
        let none = AllowedRemotes::default();
        let url = RemoteUrl::parse("https://github.com/acme/shop.git").unwrap();
        assert!(
            none.check(&url)
                .unwrap_err()
                .to_string()
                .contains("AIDA_ALLOWED_REMOTES")
        );
        let some =
            AllowedRemotes::parse("https://github.com/acme/*, git@github.com:acme/*").unwrap();
        assert!(some.check(&url).is_ok());
        assert!(
            some.check(&RemoteUrl::parse("git@github.com:acme/shop.git").unwrap())
                .is_ok()
        );
        assert!(
            some.check(&RemoteUrl::parse("https://github.com/evil/shop").unwrap())
                .is_err()
        );
        assert!(
            some.check(&RemoteUrl::parse("https://github.com/acme/a/b").unwrap())
                .is_err()
        );
    }
}
