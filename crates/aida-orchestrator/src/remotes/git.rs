//! Talking to remotes: the `git` command line, for what libgit2 is not
//! built for here (https and ssh transports, `--force-with-lease`). Every
//! call gets a clean, non-interactive environment: no system or user git
//! configuration, no prompts, only the https/http/ssh/file transports, and
//! the remote's credentials through the environment (an `http.extraHeader`
//! set with `GIT_CONFIG_*`, an ssh command with the key and strict host key
//! checking), never in the command line, a URL or a log. User text (URLs,
//! refs) only ever comes after `--` or in positions git does not read as
//! options; errors are classified and masked before anyone sees them.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use aida_core::secret::ExposeSecret;
use base64::Engine;
use tokio::process::Command;

use super::credentials::Credentials;
use super::url::{RemoteUrl, Scheme};

/// Why a call to a remote failed; the message is for the user and holds
/// no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    #[error(
        "{remote} refused AIDA's credentials ({detail}): check AIDA_GIT_CREDENTIALS (or the ssh key) for {host}"
    )]
    Auth {
        remote: String,
        host: String,
        detail: String,
    },
    #[error("cannot reach {remote}: {detail}")]
    Unreachable { remote: String, detail: String },
    #[error("{remote} has no such repository ({detail})")]
    NotFound { remote: String, detail: String },
    #[error("{remote} rejected the push: {detail}")]
    Rejected { remote: String, detail: String },
    #[error("git timed out after {secs} s talking to {remote}")]
    TimedOut { remote: String, secs: u64 },
    #[error("git failed on {remote}: {detail}")]
    Failed { remote: String, detail: String },
}

impl RemoteError {
    /// Whether trying again later may work (the network), unlike a refusal.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RemoteError::Unreachable { .. } | RemoteError::TimedOut { .. }
        )
    }
}

/// One branch to push: where it goes and what it must replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    /// The branch on the remote, `aida/<task>/...` (AIDA's own names only).
    pub branch: String,
    /// A commit of the mirror.
    pub commit: String,
    /// The commit the remote branch must be at now; `None`: it must not
    /// exist.
    pub expected: Option<String>,
}

/// Runs git against remotes with their credentials.
#[derive(Clone)]
pub struct GitCli {
    credentials: Arc<Credentials>,
    timeout: Duration,
}

impl GitCli {
    pub fn new(credentials: Arc<Credentials>, timeout: Duration) -> Self {
        GitCli {
            credentials,
            timeout,
        }
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// `git <args>` in `dir` (a repository, or where it is to be made),
    /// with `url`'s credentials; stdout on success.
    pub async fn run(
        &self,
        dir: &Path,
        url: &RemoteUrl,
        args: &[&str],
    ) -> Result<String, RemoteError> {
        let mut cmd = Command::new("git");
        cmd.current_dir(dir)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "true")
            .env("SSH_ASKPASS", "true")
            .env("GIT_ALLOW_PROTOCOL", "https:http:ssh:git:file")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(tmp) = std::env::var_os("TMPDIR") {
            cmd.env("TMPDIR", tmp);
        }
        let mut config: Vec<(String, String)> = vec![
            // Never follow a redirect to another host with our credentials.
            ("http.followRedirects".into(), "initial".into()),
        ];
        match url.scheme() {
            Scheme::Https | Scheme::Http => {
                if let Some(login) = self.credentials.login_for(url) {
                    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                        "{}:{}",
                        login.username,
                        login.token.expose_secret()
                    ));
                    let scheme = if url.scheme() == Scheme::Https {
                        "https"
                    } else {
                        "http"
                    };
                    config.push((
                        format!("http.{scheme}://{}/.extraHeader", url.host()),
                        format!("Authorization: Basic {basic}"),
                    ));
                }
            }
            Scheme::Ssh => {
                cmd.env("GIT_SSH_COMMAND", self.ssh_command());
            }
            Scheme::Git | Scheme::File => {}
        }
        cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
        for (i, (key, value)) in config.iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), key);
            cmd.env(format!("GIT_CONFIG_VALUE_{i}"), value);
        }
        let remote = url.to_string();
        let output = match tokio::time::timeout(self.timeout, cmd.output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                return Err(RemoteError::Failed {
                    remote,
                    detail: format!("cannot run git: {e}"),
                });
            }
            Err(_) => {
                return Err(RemoteError::TimedOut {
                    remote,
                    secs: self.timeout.as_secs(),
                });
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            return Ok(stdout);
        }
        let stderr = self.mask(&String::from_utf8_lossy(&output.stderr));
        // `--porcelain` pushes report rejections on stdout.
        let stdout_masked = self.mask(&stdout);
        Err(classify(&remote, url.host_name(), &stderr, &stdout_masked))
    }

    /// The remote's branches below `prefix` (`aida/<task>/`), by full
    /// branch name (`aida/<task>/result`), with their commits.
    pub async fn remote_branches(
        &self,
        mirror: &Path,
        url: &RemoteUrl,
        prefix: &str,
    ) -> Result<BTreeMap<String, String>, RemoteError> {
        let pattern = format!("refs/heads/{prefix}*");
        let out = self
            .run(mirror, url, &["ls-remote", "--heads", "origin", &pattern])
            .await?;
        Ok(out
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .filter_map(|(commit, name)| {
                name.strip_prefix("refs/heads/")
                    .map(|branch| (branch.to_owned(), commit.trim().to_owned()))
            })
            .collect())
    }

    /// Pushes each update from the mirror to its remote, all or none
    /// (`--atomic`), each with a lease: the remote branch must still be at
    /// `expected` (absent when `None`), so a branch someone else moved is
    /// never overwritten.
    pub async fn push(
        &self,
        mirror: &Path,
        url: &RemoteUrl,
        updates: &[RefUpdate],
    ) -> Result<(), RemoteError> {
        let mut args: Vec<String> = vec![
            "push".into(),
            "--porcelain".into(),
            "--atomic".into(),
            "--no-verify".into(),
        ];
        for update in updates {
            args.push(format!(
                "--force-with-lease=refs/heads/{}:{}",
                update.branch,
                update.expected.as_deref().unwrap_or_default()
            ));
        }
        args.push("origin".into());
        for update in updates {
            args.push(format!("{}:refs/heads/{}", update.commit, update.branch));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(mirror, url, &args).await.map(|_| ())
    }

    fn ssh_command(&self) -> String {
        let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
        let mut command = String::from("ssh -o BatchMode=yes -o StrictHostKeyChecking=yes");
        if let Some(key) = &self.credentials.ssh_key {
            command.push_str(&format!(" -o IdentitiesOnly=yes -i {}", quote(key)));
        }
        if let Some(known) = &self.credentials.known_hosts {
            command.push_str(&format!(" -o UserKnownHostsFile={}", quote(known)));
        }
        command
    }

    /// `text` with every credential replaced by `***`.
    fn mask(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in self.credentials.secrets() {
            if secret.len() >= 4 {
                out = out.replace(&secret, "***");
            }
        }
        // Basic-auth headers git may echo in a trace.
        out.lines()
            .filter(|l| !l.to_ascii_lowercase().contains("authorization:"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// What git's output says went wrong.
fn classify(remote: &str, host: &str, stderr: &str, stdout: &str) -> RemoteError {
    let lower = stderr.to_ascii_lowercase();
    let detail = last_meaningful_line(stderr);
    let remote = remote.to_owned();
    if stdout.contains("[rejected]")
        || stdout.contains("[remote rejected]")
        || lower.contains("[rejected]")
        || lower.contains("[remote rejected]")
        || lower.contains("stale info")
        || lower.contains("non-fast-forward")
    {
        let line = stdout
            .lines()
            .chain(stderr.lines())
            .find(|l| l.contains("rejected"))
            .unwrap_or(&detail)
            .trim()
            .to_owned();
        return RemoteError::Rejected {
            remote,
            detail: line,
        };
    }
    if lower.contains("authentication failed")
        || lower.contains("could not read username")
        || lower.contains("could not read password")
        || lower.contains("permission denied")
        || lower.contains("access denied")
        || lower.contains("returned error: 401")
        || lower.contains("returned error: 403")
        || lower.contains("host key verification failed")
    {
        return RemoteError::Auth {
            remote,
            host: host.to_owned(),
            detail,
        };
    }
    if lower.contains("repository not found")
        || lower.contains("does not appear to be a git repository")
        || lower.contains("not found")
        || lower.contains("returned error: 404")
    {
        return RemoteError::NotFound { remote, detail };
    }
    if lower.contains("could not resolve host")
        || lower.contains("connection refused")
        || lower.contains("connection timed out")
        || lower.contains("unable to access")
        || lower.contains("failed to connect")
        || lower.contains("network is unreachable")
        || lower.contains("could not connect")
        || lower.contains("connection reset")
    {
        return RemoteError::Unreachable { remote, detail };
    }
    RemoteError::Failed { remote, detail }
}

fn last_meaningful_line(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("hint:"))
        .unwrap_or("no message")
        .trim_start_matches("fatal: ")
        .trim_start_matches("error: ")
        .chars()
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_messages_become_reasons_a_user_can_act_on() {
        let r = "https://h/x";
        assert!(matches!(
            classify(
                r,
                "h",
                "remote: HTTP Basic: Access denied\nfatal: Authentication failed for 'https://h/x/'",
                ""
            ),
            RemoteError::Auth { .. }
        ));
        assert!(matches!(
            classify(
                r,
                "h",
                "fatal: unable to access 'https://h/x/': Failed to connect to h port 4030: Connection refused",
                ""
            ),
            RemoteError::Unreachable { .. }
        ));
        assert!(matches!(
            classify(
                r,
                "h",
                "fatal: unable to access 'http://h/x/': The requested URL returned error: 401",
                ""
            ),
            RemoteError::Auth { .. }
        ));
        assert!(matches!(
            classify(
                r,
                "h",
                "fatal: unable to access 'https://nope/x/': Could not resolve host: nope",
                ""
            ),
            RemoteError::Unreachable { .. }
        ));
        assert!(matches!(
            classify(
                r,
                "h",
                "",
                "!\trefs/heads/aida/t/result:refs/heads/aida/t/result\t[rejected] (stale info)\nDone"
            ),
            RemoteError::Rejected { .. }
        ));
        assert!(matches!(
            classify(
                r,
                "h",
                "remote: Repository not found.\nfatal: repository 'https://h/x/' not found",
                ""
            ),
            RemoteError::NotFound { .. }
        ));
        assert!(
            RemoteError::Unreachable {
                remote: r.into(),
                detail: String::new()
            }
            .is_transient()
        );
    }

    #[test]
    fn ssh_checks_host_keys_and_uses_only_aidas_key() {
        let mut creds = Credentials::default();
        creds.ssh_key = Some("/run/secrets/id ed25519".into());
        creds.known_hosts = Some("/etc/aida/known_hosts".into());
        let git = GitCli::new(Arc::new(creds), Duration::from_secs(1));
        assert_eq!(
            git.ssh_command(),
            "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes \
             -i '/run/secrets/id ed25519' -o UserKnownHostsFile='/etc/aida/known_hosts'"
        );
    }

    #[test]
    fn credentials_never_survive_in_messages() {
        let creds = Credentials::parse("https://bot:sekrit-token@h\n").unwrap();
        let git = GitCli::new(Arc::new(creds), Duration::from_secs(1));
        let masked = git.mask(
            "fatal: https://bot:sekrit-token@h failed\nAuthorization: Basic Ym90OnNla3JpdA==",
        );
        assert!(!masked.contains("sekrit-token"), "{masked}");
        assert!(!masked.contains("Ym90"), "{masked}");
    }
}
