//! Secrets from the environment. A secret `NAME` comes from the variable
//! `NAME`, or from the file that `NAME_FILE` names (how Podman and
//! Kubernetes hand secrets to containers). Values are [`SecretString`]s,
//! which never print, and AIDA has no default for any of them.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use rand::RngCore;
pub use secrecy::{ExposeSecret, SecretString};

/// Reads secret `name` from `name` or the file `name_FILE` names; `None`
/// when neither is set. Setting both is a mistake worth stopping for.
pub fn from_env(name: &str) -> anyhow::Result<Option<SecretString>> {
    let file_var = format!("{name}_FILE");
    let direct = std::env::var(name).ok().filter(|v| !v.is_empty());
    let file = std::env::var_os(&file_var).filter(|v| !v.is_empty());
    match (direct, file) {
        (Some(_), Some(_)) => bail!("set {name} or {file_var}, not both"),
        (Some(value), None) => Ok(Some(SecretString::from(value))),
        (None, Some(path)) => {
            let path = Path::new(&path);
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {file_var} ({})", path.display()))?;
            // Files usually end with a newline that is not part of the secret.
            let value = text.trim_end_matches(['\n', '\r']).to_owned();
            if value.is_empty() {
                bail!("{file_var} ({}) is empty", path.display());
            }
            Ok(Some(SecretString::from(value)))
        }
        (None, None) => Ok(None),
    }
}

/// Fails unless `secret` has at least `min` bytes, naming the variable.
pub fn require_len(name: &str, secret: &SecretString, min: usize) -> anyhow::Result<()> {
    let len = secret.expose_secret().len();
    if len < min {
        bail!(
            "{name} must be at least {min} bytes long (it has {len}): generate one with `openssl rand -hex 32`"
        );
    }
    Ok(())
}

/// `bytes` random bytes from the operating system's generator, hex-encoded.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// Reads the secret stored in `path`, or creates the file with a new random
/// one (readable by its owner only) if there is none. For `aida dev`, which
/// must run with no set-up and still have no default secret.
pub fn load_or_create(path: &Path) -> anyhow::Result<SecretString> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let value = text.trim_end_matches(['\n', '\r']).to_owned();
            if value.len() < 32 {
                bail!(
                    "{} holds a secret shorter than 32 bytes: delete it to have a new one made",
                    path.display()
                );
            }
            Ok(SecretString::from(value))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let value = random_hex(32);
            write_private(path, value.as_bytes())?;
            Ok(SecretString::from(value))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Creates `path` (and its directory) readable and writable by its owner
/// only, and writes `contents`; an existing file is replaced.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Written beside it and renamed, so a reader never sees half a secret
    // and the mode is right from the first byte.
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The URL with its password (and user) replaced by `***`, for logs:
/// `redis://:pw@host:6379` becomes `redis://***@host:6379`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials_in_logs() {
        assert_eq!(
            redact_url("redis://:hunter2@127.0.0.1:6379/0"),
            "redis://***@127.0.0.1:6379/0"
        );
        assert_eq!(redact_url("redis://u:p@h/x@y"), "redis://***@h/x@y");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert_eq!(redact_url("sqlite://data/aida.db"), "sqlite://data/aida.db");
    }

    #[test]
    fn created_secrets_are_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/jwt-secret");
        let first = load_or_create(&path).unwrap();
        assert_eq!(first.expose_secret().len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = load_or_create(&path).unwrap();
        assert_eq!(first.expose_secret(), again.expose_secret());
        // Debug output hides the value.
        assert!(!format!("{first:?}").contains(first.expose_secret()));
    }

    #[test]
    fn short_secrets_are_refused_with_the_variable_named() {
        let err = require_len("AIDA_JWT_SECRET", &SecretString::from("short"), 32).unwrap_err();
        assert!(err.to_string().contains("AIDA_JWT_SECRET"), "{err}");
    }
}
