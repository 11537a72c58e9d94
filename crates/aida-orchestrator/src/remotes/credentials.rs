//! Credentials for remotes, per host, from secrets: `AIDA_GIT_CREDENTIALS`
//! (or `_FILE`) holds lines in git's credential-store format,
//! `https://USER:TOKEN@HOST[/PATH-PREFIX]`, one per host (or per path on a
//! host, the longest prefix wins); `AIDA_GIT_SSH_KEY_FILE` and
//! `AIDA_GIT_KNOWN_HOSTS_FILE` serve `ssh://` and `git@host:path` remotes,
//! with the host key checked. The same token answers the provider's API
//! (pull requests, comments) on that host.

use std::path::PathBuf;

use aida_core::secret::{ExposeSecret, SecretString};
use anyhow::{Context, bail};

use super::url::{RemoteUrl, Scheme};

/// One line of the credential store.
#[derive(Clone)]
struct HostCredential {
    scheme: Scheme,
    host: String,
    path_prefix: String,
    username: String,
    token: SecretString,
}

/// A user name and token for one remote.
#[derive(Clone)]
pub struct Login {
    pub username: String,
    pub token: SecretString,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Every credential the orchestrator holds for remotes.
#[derive(Clone, Default)]
pub struct Credentials {
    https: Vec<HostCredential>,
    /// A private key for ssh remotes, and the known hosts it may talk to.
    pub ssh_key: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field(
                "hosts",
                &self
                    .https
                    .iter()
                    .map(|c| format!("{}/{}", c.host, c.path_prefix))
                    .collect::<Vec<_>>(),
            )
            .field("ssh_key", &self.ssh_key)
            .field("known_hosts", &self.known_hosts)
            .finish()
    }
}

impl Credentials {
    /// From the environment: `AIDA_GIT_CREDENTIALS` (or `_FILE`),
    /// `AIDA_GIT_SSH_KEY_FILE`, `AIDA_GIT_KNOWN_HOSTS_FILE`.
    pub fn from_env() -> anyhow::Result<Self> {
        let mut credentials = match aida_core::secret::from_env("AIDA_GIT_CREDENTIALS")? {
            Some(text) => Self::parse(text.expose_secret())?,
            None => Self::default(),
        };
        let path = |var: &str| -> anyhow::Result<Option<PathBuf>> {
            match std::env::var_os(var).filter(|v| !v.is_empty()) {
                Some(p) => {
                    let p = PathBuf::from(p);
                    std::fs::metadata(&p).with_context(|| format!("{var} ({})", p.display()))?;
                    Ok(Some(p))
                }
                None => Ok(None),
            }
        };
        credentials.ssh_key = path("AIDA_GIT_SSH_KEY_FILE")?;
        credentials.known_hosts = path("AIDA_GIT_KNOWN_HOSTS_FILE")?;
        if credentials.ssh_key.is_some() && credentials.known_hosts.is_none() {
            bail!(
                "AIDA_GIT_SSH_KEY_FILE needs AIDA_GIT_KNOWN_HOSTS_FILE: AIDA checks the host keys of ssh remotes"
            );
        }
        Ok(credentials)
    }

    /// Parses credential-store entries; blank lines and `#` comments are
    /// skipped. Errors name the entry, never its secret.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut https = Vec::new();
        let entries = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.starts_with('#'))
            .flat_map(|line| line.split(','))
            .map(str::trim)
            .filter(|entry| !entry.is_empty());
        for (n, line) in entries.enumerate() {
            let bad = |why: &str| anyhow::anyhow!("AIDA_GIT_CREDENTIALS entry {}: {why}", n + 1);
            let (scheme, rest) = if let Some(rest) = line.strip_prefix("https://") {
                (Scheme::Https, rest)
            } else if let Some(rest) = line.strip_prefix("http://") {
                (Scheme::Http, rest)
            } else {
                return Err(bad("expected https://USER:TOKEN@HOST[/PATH]"));
            };
            let (userinfo, location) = rest
                .rsplit_once('@')
                .ok_or_else(|| bad("expected https://USER:TOKEN@HOST[/PATH]"))?;
            let (username, token) = userinfo
                .split_once(':')
                .ok_or_else(|| bad("expected USER:TOKEN before the host"))?;
            let decode = |s: &str| -> anyhow::Result<String> {
                percent_decode(s).ok_or_else(|| bad("bad percent-encoding"))
            };
            let (host, path) = location.split_once('/').unwrap_or((location, ""));
            if host.is_empty() || token.is_empty() {
                return Err(bad("the host or the token is empty"));
            }
            https.push(HostCredential {
                scheme,
                host: host.to_ascii_lowercase(),
                path_prefix: path.trim_matches('/').to_owned(),
                username: decode(username)?,
                token: SecretString::from(decode(token)?),
            });
        }
        Ok(Credentials {
            https,
            ..Default::default()
        })
    }

    /// The login for an http(s) remote: the line of its host whose path
    /// prefix is the longest that fits.
    pub fn login_for(&self, url: &RemoteUrl) -> Option<Login> {
        if !matches!(url.scheme(), Scheme::Https | Scheme::Http) {
            return None;
        }
        let path = url.repo_path();
        self.https
            .iter()
            .filter(|c| c.scheme == url.scheme() && c.host == url.host())
            .filter(|c| {
                c.path_prefix.is_empty()
                    || path == c.path_prefix
                    || path.starts_with(&format!("{}/", c.path_prefix))
            })
            .max_by_key(|c| c.path_prefix.len())
            .map(|c| Login {
                username: c.username.clone(),
                token: c.token.clone(),
            })
    }

    /// Every token, to mask them wherever git's output is shown.
    pub fn secrets(&self) -> Vec<String> {
        self.https
            .iter()
            .map(|c| c.token.expose_secret().to_owned())
            .collect()
    }
}

/// `%XX` decoding, as credential-store lines use it for `@` and `:`.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_matching_prefix_of_the_host_wins() {
        let c = Credentials::parse(
            "# CI bot\nhttps://bot:t0ken@github.com\nhttps://x-access-token:s%40cret@github.com/acme\nhttp://u:p@10.0.0.5:8080\n",
        )
        .unwrap();
        let login = |u: &str| {
            c.login_for(&RemoteUrl::parse(u).unwrap())
                .map(|l| l.username)
        };
        assert_eq!(
            login("https://github.com/acme/shop.git").as_deref(),
            Some("x-access-token")
        );
        assert_eq!(
            c.login_for(&RemoteUrl::parse("https://github.com/acme/shop").unwrap())
                .unwrap()
                .token
                .expose_secret(),
            "s@cret"
        );
        assert_eq!(login("https://github.com/other/x").as_deref(), Some("bot"));
        assert_eq!(login("https://github.com/acmex/x").as_deref(), Some("bot"));
        assert_eq!(login("http://10.0.0.5:8080/r").as_deref(), Some("u"));
        assert_eq!(login("https://gitlab.com/a/b"), None);
        assert_eq!(login("git@github.com:acme/shop.git"), None);
        assert!(!format!("{c:?}").contains("t0ken"));
    }

    #[test]
    fn bad_lines_are_named_without_their_secret() {
        let err = Credentials::parse("https://github.com\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("entry 1"), "{err}");
        let both = Credentials::parse("https://a:x@h1, https://b:y@h2\n").unwrap();
        assert!(
            both.login_for(&RemoteUrl::parse("https://h2/r").unwrap())
                .is_some()
        );
        let err = Credentials::parse("ftp://u:hunter2@h\n")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
