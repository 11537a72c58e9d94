//! What `aida dev` makes for itself, so that it runs with no set-up and
//! still has no default secret. Everything lives in its data directory (the
//! directory of the SQLite database, `data/` by default), each file
//! readable by the user only:
//!
//! - `jwt-secret` and `internal-token`: made on the first run, then reused
//!   (so grpcurl can send `$(cat data/internal-token)`, and logins survive a
//!   restart); `AIDA_JWT_SECRET` and `AIDA_INTERNAL_TOKEN` win when set;
//! - `admin-password`: the password of user `admin`, made when the database
//!   has no user at all;
//! - `admin-token`: an admin API token, made again whenever the one in the
//!   file is no longer valid (revoked, expired or about to, its owner no
//!   admin) and registered for the dev gateway's URL in the CLI's
//!   credentials file, so the CLI on this machine finds it by itself.
//!
//! Nothing here prints or logs a secret: only where the files are.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use aida_core::proto::common::Actor;
use aida_core::secret::{self, ExposeSecret, SecretString};
use aida_core::token::{self, TokenKind};
use aida_orchestrator::audit::{Audit, AuditLine};
use aida_orchestrator::store::{ApiTokenRow, Store};
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteConnectOptions;
use zeroize::Zeroizing;

use crate::credentials::{self, Entry};

pub const JWT_SECRET_FILE: &str = "jwt-secret";
pub const INTERNAL_TOKEN_FILE: &str = "internal-token";
pub const ADMIN_PASSWORD_FILE: &str = "admin-password";
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The user made when the database has none.
const DEV_ADMIN: &str = "admin";
/// What the token is called in `aida token list`.
const TOKEN_NAME: &str = "aida dev";
/// A token that expires sooner than this is replaced at start, so that it
/// does not expire while `aida dev` runs.
const RENEW_BEFORE: chrono::Duration = chrono::Duration::days(7);

/// The directory of the SQLite database `database_url` names, where the
/// secrets go beside it.
pub fn data_dir(database_url: &str) -> anyhow::Result<PathBuf> {
    let in_memory = database_url.contains(":memory:") || database_url.contains("mode=memory");
    if in_memory {
        bail!(
            "aida dev keeps its users and tokens in a database file: DATABASE_URL must name one, not {database_url}"
        );
    }
    let options = SqliteConnectOptions::from_str(database_url)
        .with_context(|| format!("invalid DATABASE_URL {database_url:?}"))?;
    let dir = options
        .get_filename()
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(dir)
}

/// Creates the data directory, readable by the user only, if it is not
/// there yet; an existing one is the user's and left as it is.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// The secrets the services share.
pub struct DevSecrets {
    pub jwt_secret: SecretString,
    pub internal_token: SecretString,
    /// The files made on this run.
    pub made: Vec<PathBuf>,
}

/// Secret `var` from the environment, or else from `path`, made there if
/// missing.
fn env_or_file(var: &str, path: &Path, made: &mut Vec<PathBuf>) -> anyhow::Result<SecretString> {
    if let Some(value) = secret::from_env(var)? {
        secret::require_len(var, &value, aida_core::grpc::security::MIN_TOKEN_LEN)?;
        return Ok(value);
    }
    let existed = path.exists();
    let value = secret::load_or_create(path)?;
    if !existed {
        made.push(path.to_owned());
    }
    Ok(value)
}

/// Reads the JWT secret and the internal token from `dir`, making each on
/// the first run.
pub fn secrets(dir: &Path) -> anyhow::Result<DevSecrets> {
    private_dir(dir)?;
    let mut made = Vec::new();
    let jwt_secret = env_or_file("AIDA_JWT_SECRET", &dir.join(JWT_SECRET_FILE), &mut made)?;
    let internal_token = env_or_file(
        aida_core::grpc::security::TOKEN_VAR,
        &dir.join(INTERNAL_TOKEN_FILE),
        &mut made,
    )?;
    Ok(DevSecrets {
        jwt_secret,
        internal_token,
        made,
    })
}

/// An admin API token the CLI can use.
pub struct AdminToken {
    /// Its owner.
    pub username: String,
    pub token: SecretString,
    pub expires_at: DateTime<Utc>,
    /// Where it is kept.
    pub path: PathBuf,
    /// Made on this run (rather than found valid in the file).
    pub made: bool,
}

/// What [`admin_access`] found or made.
pub struct AdminAccess {
    /// `Some(path)` when user `admin` was made on this run, its password
    /// in `path`.
    pub new_admin_password: Option<PathBuf>,
    /// `None` when no enabled admin exists to own a token.
    pub token: Option<AdminToken>,
}

/// Who the audit trail names for what `aida dev` does on its own.
fn dev_actor(username: &str) -> Actor {
    Actor {
        username: username.to_owned(),
        role: "admin".into(),
        client_addr: "local".into(),
        via: "aida dev".into(),
    }
}

/// Makes sure the database has an admin and `dir` a valid admin API
/// token: the first admin when there is no user, a new token when the file
/// holds none that still works.
pub async fn admin_access(dir: &Path, database_url: &str) -> anyhow::Result<AdminAccess> {
    let store = Store::connect(database_url).await?;
    let audit = Audit::new(store.clone(), None)?;
    let mut users = store.list_users().await.context("reading the users")?;

    let mut new_admin_password = None;
    if users.is_empty() {
        // 128 random bits, with what the password policy asks for around
        // them.
        let password = Zeroizing::new(format!("Aida-{}-Dev1!", secret::random_hex(16)));
        let path = dir.join(ADMIN_PASSWORD_FILE);
        // Written before the user exists: a password that cannot be saved
        // must not leave an admin nobody can log in as.
        secret::write_private(&path, format!("{}\n", password.as_str()).as_bytes())?;
        let os_user = super::super::admin_users::local_actor();
        let user = aida_orchestrator::auth::create_user(
            &store,
            &audit,
            DEV_ADMIN,
            "admin",
            &password,
            Some(&Actor {
                via: "aida dev".into(),
                ..os_user
            }),
        )
        .await
        .map_err(|e| anyhow::anyhow!("creating the admin user: {e}"))?;
        users.push(user);
        new_admin_password = Some(path);
    }

    let is_owner = |u: &&aida_orchestrator::store::UserRow| u.role == "admin" && !u.disabled;
    let owner = users
        .iter()
        .filter(is_owner)
        .find(|u| u.name == DEV_ADMIN)
        .or_else(|| users.iter().find(is_owner));
    let Some(owner) = owner else {
        return Ok(AdminAccess {
            new_admin_password,
            token: None,
        });
    };

    let path = dir.join(ADMIN_TOKEN_FILE);
    let now = Utc::now();
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => Some(SecretString::from(text.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if let Some(existing) = existing {
        match check_token(&store, existing.expose_secret(), now).await? {
            TokenCheck::Valid(row) => {
                return Ok(AdminAccess {
                    new_admin_password,
                    token: Some(AdminToken {
                        username: row.owner,
                        token: existing,
                        expires_at: row.expires_at,
                        path,
                        made: false,
                    }),
                });
            }
            TokenCheck::ExpiresSoon(row) => {
                // Replaced below; the old one is not left valid unused.
                store
                    .revoke_api_token(&row.id, now)
                    .await
                    .context("revoking the old admin token")?;
                audit
                    .record(
                        AuditLine::new(
                            Some(&dev_actor(&owner.name)),
                            "token.revoke",
                            format!("token:{}", row.id),
                        )
                        .with("reason", "replaced by aida dev before it expires"),
                    )
                    .await;
            }
            TokenCheck::Invalid => {}
        }
    }

    let (row, token) = aida_orchestrator::auth::create_api_token(
        &store,
        &audit,
        TOKEN_NAME,
        "admin",
        0,
        Some(&dev_actor(&owner.name)),
    )
    .await
    .map_err(|e| anyhow::anyhow!("creating the admin token: {e}"))?;
    secret::write_private(&path, format!("{}\n", token.expose_secret()).as_bytes())?;
    Ok(AdminAccess {
        new_admin_password,
        token: Some(AdminToken {
            username: row.owner,
            token,
            expires_at: row.expires_at,
            path,
            made: true,
        }),
    })
}

enum TokenCheck {
    /// Usable as an admin token for a while yet.
    Valid(ApiTokenRow),
    /// Usable, but not for long.
    ExpiresSoon(ApiTokenRow),
    /// Not a token, not ours, revoked, expired, or no longer an admin's.
    Invalid,
}

/// What the store says of `text` as an admin API token at `now`.
async fn check_token(store: &Store, text: &str, now: DateTime<Utc>) -> anyhow::Result<TokenCheck> {
    let Some((id, secret)) = token::parse(TokenKind::Api, text) else {
        return Ok(TokenCheck::Invalid);
    };
    let Some(row) = store
        .api_token(id)
        .await
        .context("reading the admin token")?
    else {
        return Ok(TokenCheck::Invalid);
    };
    let usable = token::verify(secret, &row.secret_hash)
        && row.revoked_at.is_none()
        && row.expires_at > now
        && row.role == "admin"
        && row.owner_role == "admin"
        && !row.owner_disabled;
    Ok(if !usable {
        TokenCheck::Invalid
    } else if row.expires_at - now < RENEW_BEFORE {
        TokenCheck::ExpiresSoon(row)
    } else {
        TokenCheck::Valid(row)
    })
}

/// What [`register`] did in the CLI's credentials file.
pub enum Registration {
    /// The token is the CLI's for the URL now; the file is at the path.
    Saved(PathBuf),
    /// A login of the user's (as this user) stays in place.
    KeptLogin(String),
}

/// Registers `token` for `gateway_url` in the CLI's credentials file,
/// unless a login of the user's is there: `aida dev` replaces its own
/// entries, never a person's sign-in.
pub async fn register(gateway_url: &str, token: &AdminToken) -> anyhow::Result<Registration> {
    let key = credentials::gateway_key(gateway_url)?;
    let path = credentials::file_path()?;
    let entry = Entry {
        username: token.username.clone(),
        access_token: token.token.expose_secret().to_owned(),
        refresh_token: None,
        expires_at: Some(token.expires_at),
        source: credentials::SOURCE_DEV.to_owned(),
    };
    credentials::update(&path, |file| {
        if let Some(login) = file
            .gateways
            .get(&key)
            .filter(|e| e.refresh_token.is_some())
        {
            return Ok((false, Registration::KeptLogin(login.username.clone())));
        }
        let changed = file.gateways.get(&key) != Some(&entry);
        file.gateways.insert(key, entry);
        Ok((changed, Registration::Saved(path.clone())))
    })
    .await
}

/// The directories whose repositories tasks may use when
/// `AIDA_REPO_ROOTS` is not set: the user's home and the temporary
/// directory (where the README's `/tmp/demo` lives).
pub fn default_repo_roots() -> String {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(home) = dirs::home_dir().filter(|home| home.is_dir()) {
        roots.push(home);
    }
    roots.push(std::env::temp_dir());
    roots
        .iter()
        .map(|root| root.display().to_string())
        // The list is comma-separated; such a directory cannot be named.
        .filter(|root| !root.contains(','))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_directory_is_the_databases() {
        assert_eq!(
            data_dir("sqlite://data/aida.db").unwrap(),
            PathBuf::from("data")
        );
        assert_eq!(
            data_dir("sqlite:///var/lib/aida/aida.db?mode=rwc").unwrap(),
            PathBuf::from("/var/lib/aida")
        );
        assert_eq!(data_dir("sqlite://aida.db").unwrap(), PathBuf::from("."));
        assert!(data_dir("sqlite::memory:").is_err());
    }

    #[tokio::test]
    async fn the_first_run_makes_an_admin_and_later_runs_keep_a_valid_token() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let url = format!("sqlite://{}/aida.db", data.display());

        let made = secrets(&data).unwrap();
        assert_eq!(made.made.len(), 2);
        let again = secrets(&data).unwrap();
        assert!(again.made.is_empty());
        assert_eq!(
            made.jwt_secret.expose_secret(),
            again.jwt_secret.expose_secret()
        );

        let first = admin_access(&data, &url).await.unwrap();
        let password = first.new_admin_password.expect("an admin was made");
        let token = first.token.expect("a token was made");
        assert!(token.made);
        for file in [&password, &token.path] {
            let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
        let stored = std::fs::read_to_string(&token.path).unwrap();
        assert_eq!(stored.trim(), token.token.expose_secret());

        // A second run keeps the user and the token.
        let second = admin_access(&data, &url).await.unwrap();
        assert!(second.new_admin_password.is_none());
        let kept = second.token.unwrap();
        assert!(!kept.made);
        assert_eq!(kept.token.expose_secret(), token.token.expose_secret());

        // A revoked token is replaced.
        let store = Store::connect(&url).await.unwrap();
        let (id, _) = token::parse(TokenKind::Api, token.token.expose_secret()).unwrap();
        store.revoke_api_token(id, Utc::now()).await.unwrap();
        let third = admin_access(&data, &url).await.unwrap().token.unwrap();
        assert!(third.made);
        assert_ne!(third.token.expose_secret(), token.token.expose_secret());
    }
}
