//! Who the CLI is at a gateway: the bearer token each request carries, and
//! the sign-ins kept between commands. A request's token comes from, in
//! order:
//!
//! 1. `AIDA_TOKEN` (an API token or an access token), sent as it is;
//! 2. the entry for the gateway's URL in `<config dir>/aida/credentials.json`:
//!    a login made by `aida login` (refreshed when its access token expires),
//!    or the admin token `aida dev` registered for its own URL;
//! 3. for the default URL only, the admin token `aida dev` keeps in
//!    `./data/admin-token`, so the CLI finds it even without the file.
//!
//! The file holds secrets: it is the user's alone (mode 0600 in a 0700
//! directory), nothing here prints a token, and every change to it is made
//! under a lock file, because refresh tokens rotate and two `aida`
//! processes refreshing with the same one would end the session. This
//! module may touch that file and `./data/admin-token`, nothing else.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aida_core::secret::{ExposeSecret, SecretString};
use aida_core::token::{TokenKind, parse as parse_token};
use aida_gateway::api::{RefreshRequest, TokenPair};
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The variable whose token overrides any stored one.
pub const TOKEN_VAR: &str = "AIDA_TOKEN";
/// The gateway URL the CLI talks to unless told otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// Where `aida dev`, run in the current directory with its defaults, keeps
/// its admin token.
pub const DEV_TOKEN_FILE: &str = "data/admin-token";
/// The `source` of an entry `aida login` made.
pub const SOURCE_LOGIN: &str = "login";
/// The `source` of an entry `aida dev` registered.
pub const SOURCE_DEV: &str = "aida dev";

/// An access token this close to its expiry is refreshed before use, so
/// that it does not expire on the way.
const EXPIRY_MARGIN: chrono::Duration = chrono::Duration::seconds(30);
/// A lock file older than this was left by a process that died: no
/// refresh takes that long.
const STALE_LOCK: Duration = Duration::from_secs(30);
/// How long to wait for another `aida` holding the lock.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// `<config dir>/aida/credentials.json`; the config directory honours
/// `XDG_CONFIG_HOME`.
pub fn file_path() -> anyhow::Result<PathBuf> {
    let dir = dirs::config_dir()
        .context("cannot find your configuration directory (set HOME or XDG_CONFIG_HOME)")?;
    Ok(dir.join("aida").join("credentials.json"))
}

/// The key of a gateway in the file: its URL with scheme, host and port
/// spelled out and no trailing slash, so `http://127.0.0.1:8080/` and
/// `http://127.0.0.1:8080` are one gateway.
pub fn gateway_key(url: &str) -> anyhow::Result<String> {
    let parsed =
        reqwest::Url::parse(url.trim()).with_context(|| format!("invalid gateway url {url:?}"))?;
    let host = parsed
        .host_str()
        .with_context(|| format!("the gateway url {url:?} has no host"))?;
    let port = parsed
        .port_or_known_default()
        .with_context(|| format!("the gateway url {url:?} has no port"))?;
    let path = parsed.path().trim_end_matches('/');
    Ok(format!("{}://{host}:{port}{path}", parsed.scheme()))
}

/// Whether `url` is where `aida dev` listens by default, on this machine.
pub fn is_default_local(url: &str) -> bool {
    gateway_key(url).is_ok_and(|key| {
        [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://[::1]:8080",
        ]
        .contains(&key.as_str())
    })
}

/// What the file keeps for one gateway.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Who the token acts for.
    pub username: String,
    /// An access token (a JWT) of a login, or an API token.
    pub access_token: String,
    /// A login's refresh token; none for an API token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// When `access_token` expires, as far as the gateway said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// [`SOURCE_LOGIN`] or [`SOURCE_DEV`]: `aida dev` replaces its own
    /// entries but never a user's login.
    #[serde(default)]
    pub source: String,
}

// Tokens never print.
impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("username", &self.username)
            .field("expires_at", &self.expires_at)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Entry {
    /// The entry of a login's token pair, received `now`.
    pub fn from_login(pair: &TokenPair, now: DateTime<Utc>) -> Entry {
        Entry {
            username: pair.user.name.clone(),
            access_token: pair.access_token.clone(),
            refresh_token: Some(pair.refresh_token.clone()),
            expires_at: i64::try_from(pair.expires_in)
                .ok()
                .and_then(chrono::Duration::try_seconds)
                .map(|ttl| now + ttl),
            source: SOURCE_LOGIN.to_owned(),
        }
    }
}

/// The whole file.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CredentialsFile {
    /// By [`gateway_key`].
    #[serde(default)]
    pub gateways: BTreeMap<String, Entry>,
}

impl CredentialsFile {
    /// Reads the file; a missing file is an empty one.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        warn_if_shared(path);
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a credentials file: delete it and log in again",
                path.display()
            )
        })
    }

    /// Writes the file (mode 0600, replaced atomically) in a directory of
    /// mode 0700.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            private_dir(dir)?;
        }
        let mut text = serde_json::to_vec_pretty(self).context("encoding the credentials")?;
        text.push(b'\n');
        aida_core::secret::write_private(path, &text)
    }
}

/// Creates `dir` (and any missing parent) with mode 0700, and narrows it to
/// 0700 if it exists: it is AIDA's own directory.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", dir.display()))?;
    }
    Ok(())
}

/// Says so when others may read a file of secrets (someone copied it, or
/// changed its mode); the tokens in it are then no longer the user's alone.
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "aida: warning: {} can be read by other users: run `chmod 600 {}` and log in again",
            path.display(),
            path.display()
        );
    }
}

/// Held while the credentials file is read, changed and written. A file
/// made with `O_EXCL` beside it, because std's file locks are newer than
/// the workspace's minimum Rust.
struct FileLock {
    path: PathBuf,
}

impl FileLock {
    async fn acquire(credentials: &Path) -> anyhow::Result<FileLock> {
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = credentials.parent() {
            private_dir(dir)?;
        }
        let path = credentials.with_extension("lock");
        let started = tokio::time::Instant::now();
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(_) => return Ok(FileLock { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|at| at.elapsed().ok())
                        .is_some_and(|age| age > STALE_LOCK);
                    if stale {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    if started.elapsed() > LOCK_WAIT {
                        bail!(
                            "{} is held by another aida command; delete it if none is running",
                            path.display()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("creating {}", path.display()));
                }
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads, changes and writes the file under its lock; `change` returns
/// whether there is anything to write, and a value for the caller.
pub async fn update<T>(
    path: &Path,
    change: impl FnOnce(&mut CredentialsFile) -> anyhow::Result<(bool, T)>,
) -> anyhow::Result<T> {
    let _lock = FileLock::acquire(path).await?;
    let mut file = CredentialsFile::load(path)?;
    let (changed, value) = change(&mut file)?;
    if changed {
        file.save(path)?;
    }
    Ok(value)
}

/// Where the token of a request comes from; decides what a refused token
/// tells the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `AIDA_TOKEN`.
    Env,
    /// The credentials file's entry for this gateway.
    Stored {
        /// [`SOURCE_LOGIN`] or [`SOURCE_DEV`].
        source: String,
        username: String,
    },
    /// `./data/admin-token`.
    DevFile,
    /// No token at all.
    Nothing,
}

/// The credential requests to one gateway carry, and what is needed to
/// renew it.
pub struct Credential {
    pub source: Source,
    token: Option<SecretString>,
    refresh_token: Option<SecretString>,
    expires_at: Option<DateTime<Utc>>,
    /// The file and this gateway's key in it, where a renewed pair goes.
    stored_at: Option<(PathBuf, String)>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("source", &self.source)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// No token: requests go without `Authorization` (logging in, health).
    pub fn none() -> Credential {
        Credential {
            source: Source::Nothing,
            token: None,
            refresh_token: None,
            expires_at: None,
            stored_at: None,
        }
    }

    /// The token for requests to the gateway at `url`, from the first
    /// place that has one (see the module's documentation).
    pub fn resolve(url: &str) -> anyhow::Result<Credential> {
        // Without a configuration directory there is nothing stored; the
        // other sources still work.
        Credential::resolve_from(
            url,
            std::env::var(TOKEN_VAR).ok(),
            file_path().ok().as_deref(),
            Path::new("."),
        )
    }

    /// [`Credential::resolve`] with its inputs named: `AIDA_TOKEN`'s
    /// value, the credentials file, and the working directory.
    fn resolve_from(
        url: &str,
        env_token: Option<String>,
        file: Option<&Path>,
        cwd: &Path,
    ) -> anyhow::Result<Credential> {
        if let Some(token) = env_token
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
        {
            return Ok(Credential {
                source: Source::Env,
                token: Some(SecretString::from(token)),
                ..Credential::none()
            });
        }
        let key = gateway_key(url)?;
        if let Some(path) = file
            && let Some(entry) = CredentialsFile::load(path)?.gateways.remove(&key)
        {
            return Ok(Credential::from_entry(entry, path.to_owned(), key));
        }
        if is_default_local(url)
            && let Some(token) = read_dev_token(&cwd.join(DEV_TOKEN_FILE))?
        {
            return Ok(Credential {
                source: Source::DevFile,
                token: Some(token),
                ..Credential::none()
            });
        }
        Ok(Credential::none())
    }

    /// The credential of a stored entry: `key` in the file at `path`.
    pub fn from_entry(entry: Entry, path: PathBuf, key: String) -> Credential {
        Credential {
            source: Source::Stored {
                source: entry.source.clone(),
                username: entry.username.clone(),
            },
            token: Some(SecretString::from(entry.access_token.clone())),
            refresh_token: entry.refresh_token.clone().map(SecretString::from),
            expires_at: entry.expires_at,
            stored_at: Some((path, key)),
        }
    }

    pub fn token(&self) -> Option<&SecretString> {
        self.token.as_ref()
    }

    /// Whether a refresh token could renew the access token.
    pub fn can_refresh(&self) -> bool {
        self.refresh_token.is_some() && self.stored_at.is_some()
    }

    /// Whether the access token has expired (or is about to) and can be
    /// renewed.
    pub fn needs_refresh(&self, now: DateTime<Utc>) -> bool {
        self.can_refresh() && self.expires_at.is_some_and(|at| at - EXPIRY_MARGIN <= now)
    }

    /// Trades the refresh token for a new pair at `base` and stores it.
    /// Under the file's lock: when another `aida` renewed the pair first,
    /// its pair is taken instead, because presenting a used refresh token
    /// again would end the session.
    pub async fn refresh(&mut self, http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
        let (Some((path, key)), Some(ours)) = (self.stored_at.clone(), self.refresh_token.as_ref())
        else {
            bail!("there is no refresh token to renew the login with");
        };
        let ours = ours.expose_secret().to_owned();
        let _lock = FileLock::acquire(&path).await?;
        let mut file = CredentialsFile::load(&path)?;
        let Some(stored) = file.gateways.get(&key) else {
            bail!(
                "you logged out of {base} meanwhile: run `aida login{}`",
                login_url_flag(base)
            );
        };
        let entry = if stored.refresh_token.as_deref() != Some(ours.as_str()) {
            // Another aida renewed it after this one read the file.
            stored.clone()
        } else {
            let pair = request_refresh(http, base, &ours).await?;
            let entry = Entry::from_login(&pair, Utc::now());
            file.gateways.insert(key.clone(), entry.clone());
            file.save(&path)?;
            entry
        };
        *self = Credential::from_entry(entry, path, key);
        Ok(())
    }
}

/// `POST /api/auth/refresh`.
async fn request_refresh(
    http: &reqwest::Client,
    base: &str,
    refresh_token: &str,
) -> anyhow::Result<TokenPair> {
    let response = http
        .post(format!("{base}/api/auth/refresh"))
        .json(&RefreshRequest {
            refresh_token: refresh_token.to_owned(),
        })
        // The credentials file stays locked meanwhile.
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .with_context(|| format!("cannot reach the gateway at {base}"))?;
    if !response.status().is_success() {
        let mut error = crate::client::ApiError::from_response(response).await;
        error.hint = Some(format!(
            "the login for {base} cannot be renewed: run `aida login{}`",
            login_url_flag(base)
        ));
        return Err(error.into());
    }
    response
        .json()
        .await
        .context("reading the answer of /api/auth/refresh")
}

/// `--url URL` when `base` is not the default, for hints.
pub fn login_url_flag(base: &str) -> String {
    if gateway_key(base).ok() == gateway_key(DEFAULT_URL).ok() {
        String::new()
    } else {
        format!(" --url {base}")
    }
}

/// The API token in `path` (`aida dev`'s), if the file exists and holds
/// one.
fn read_dev_token(path: &Path) -> anyhow::Result<Option<SecretString>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim();
            Ok(parse_token(TokenKind::Api, token)
                .is_some()
                .then(|| SecretString::from(token.to_owned())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_gateway_has_one_key() {
        assert_eq!(
            gateway_key("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            gateway_key(" HTTP://LocalHost:8080").unwrap(),
            "http://localhost:8080"
        );
        assert_eq!(gateway_key("http://gw").unwrap(), "http://gw:80");
        assert_eq!(
            gateway_key("https://gw.example/aida/").unwrap(),
            "https://gw.example:443/aida"
        );
        assert!(gateway_key("not a url").is_err());
        assert!(is_default_local("http://localhost:8080/"));
        assert!(!is_default_local("http://127.0.0.1:8081"));
        assert!(!is_default_local("http://10.0.0.1:8080"));
    }

    #[test]
    fn the_file_is_private_and_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cfg/aida/credentials.json");
        let mut file = CredentialsFile::default();
        file.gateways.insert(
            "http://127.0.0.1:8080".into(),
            Entry {
                username: "alice".into(),
                access_token: "secret-access".into(),
                refresh_token: Some("secret-refresh".into()),
                expires_at: None,
                source: SOURCE_LOGIN.into(),
            },
        );
        file.save(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let read = CredentialsFile::load(&path).unwrap();
        assert_eq!(read.gateways["http://127.0.0.1:8080"].username, "alice");
        // Debug output hides the tokens.
        let shown = format!("{read:?}");
        assert!(!shown.contains("secret-"), "{shown}");
        // A missing file is an empty one.
        assert!(
            CredentialsFile::load(&dir.path().join("none.json"))
                .unwrap()
                .gateways
                .is_empty()
        );
    }

    #[test]
    fn a_login_expires_when_the_gateway_said() {
        let now = Utc::now();
        let pair = TokenPair {
            access_token: "a".into(),
            refresh_token: "r".into(),
            token_type: "Bearer".into(),
            expires_in: 900,
            user: aida_gateway::api::UserInfo {
                name: "bob".into(),
                role: "viewer".into(),
            },
        };
        let entry = Entry::from_login(&pair, now);
        assert_eq!(entry.expires_at, Some(now + chrono::Duration::seconds(900)));
        let credential = Credential::from_entry(entry, "/x".into(), "k".into());
        assert!(!credential.needs_refresh(now));
        assert!(credential.needs_refresh(now + chrono::Duration::seconds(880)));
    }

    #[test]
    fn aida_token_wins_then_the_stored_entry_then_aida_devs_file_for_the_default_url() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials.json");
        let dev_token = format!("aida_pat_{}_{}", "1".repeat(16), "2".repeat(64));
        aida_core::secret::write_private(
            &dir.path().join(DEV_TOKEN_FILE),
            format!("{dev_token}\n").as_bytes(),
        )
        .unwrap();
        let resolve = |url: &str, env: Option<&str>| {
            let credential =
                Credential::resolve_from(url, env.map(str::to_owned), Some(&file), dir.path())
                    .unwrap();
            let token = credential.token().map(|t| t.expose_secret().to_owned());
            (credential.source, token)
        };

        // Nothing stored: aida dev's file, for the default URL only.
        assert_eq!(
            resolve(DEFAULT_URL, None),
            (Source::DevFile, Some(dev_token.clone()))
        );
        assert_eq!(
            resolve("http://127.0.0.1:9999", None),
            (Source::Nothing, None)
        );
        assert_eq!(
            resolve(DEFAULT_URL, Some("from-env")),
            (Source::Env, Some("from-env".into()))
        );
        // An empty AIDA_TOKEN is no token.
        assert_eq!(resolve(DEFAULT_URL, Some(" ")).0, Source::DevFile);

        let mut stored = CredentialsFile::default();
        stored.gateways.insert(
            gateway_key(DEFAULT_URL).unwrap(),
            Entry {
                username: "alice".into(),
                access_token: "stored".into(),
                refresh_token: Some("r".into()),
                expires_at: None,
                source: SOURCE_LOGIN.into(),
            },
        );
        stored.save(&file).unwrap();
        let alice = Source::Stored {
            source: SOURCE_LOGIN.into(),
            username: "alice".into(),
        };
        assert_eq!(
            resolve("http://127.0.0.1:8080/", None),
            (alice, Some("stored".into()))
        );
        assert_eq!(resolve(DEFAULT_URL, Some("from-env")).0, Source::Env);
    }

    #[tokio::test]
    async fn the_lock_is_exclusive_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.json");
        let first = FileLock::acquire(&path).await.unwrap();
        let second = tokio::time::timeout(Duration::from_millis(200), FileLock::acquire(&path));
        assert!(second.await.is_err(), "a second holder had to wait");
        drop(first);
        let _again = FileLock::acquire(&path).await.unwrap();
    }
}
