//! Ports a run may listen on, its own while it lasts: no other run on the
//! host, in this worker or another worker process, is given the same one.
//!
//! Each port is found by binding `127.0.0.1:0` (the kernel picks a free
//! one) and claimed with an exclusive, non-blocking `flock` on
//! `<lock dir>/<port>.lock`; a port whose lock someone else holds is
//! skipped. The listeners are closed once every port is claimed, so the
//! agent can bind them; the locks are held by a [`PortLease`] until it is
//! dropped at the end of the run. Lock files stay behind (empty, one per
//! port ever leased): removing one could let two runs lock different files
//! for the same port.
//!
//! It touches the lock directory only.

use std::fs::{DirBuilder, File, OpenOptions};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};

/// The environment variable naming the lock directory.
pub const LOCK_DIR_ENV: &str = "AIDA_PORT_LOCK_DIR";
/// How many ports the kernel may hand out that turn out to be taken before
/// a lease gives up.
const MAX_CANDIDATES: usize = 256;

/// The lock directory when [`LOCK_DIR_ENV`] is unset:
/// `<system temp dir>/aida-ports`, shared by every worker of the host.
pub fn default_lock_dir() -> PathBuf {
    std::env::temp_dir().join("aida-ports")
}

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("cannot create the port lock directory {dir}: {source}")]
    LockDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot find a free port: {0}")]
    Bind(std::io::Error),
    #[error("no free port found after {0} tries: every one was taken by another run")]
    Exhausted(usize),
}

/// Ports claimed for one run; released when dropped.
#[derive(Debug)]
pub struct PortLease {
    ports: Vec<u16>,
    /// Held, never read: the claim on each port lasts as long as its lock.
    _locks: Vec<Flock<File>>,
}

impl PortLease {
    /// A lease with no ports.
    pub fn none() -> Self {
        Self {
            ports: Vec::new(),
            _locks: Vec::new(),
        }
    }

    /// Claims `count` distinct free ports, locking them in `lock_dir`
    /// (created with mode 0700 if missing).
    pub fn acquire(count: u32, lock_dir: &Path) -> Result<Self, PortError> {
        if count == 0 {
            return Ok(Self::none());
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(lock_dir)
            .map_err(|source| PortError::LockDir {
                dir: lock_dir.to_owned(),
                source,
            })?;
        let mut ports = Vec::new();
        let mut locks = Vec::new();
        // Kept open until all ports are claimed, so the kernel cannot hand
        // out one of them twice within this lease.
        let mut listeners = Vec::new();
        let mut tries = 0;
        while ports.len() < count as usize {
            tries += 1;
            if tries > MAX_CANDIDATES {
                return Err(PortError::Exhausted(MAX_CANDIDATES));
            }
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(PortError::Bind)?;
            let port = listener.local_addr().map_err(PortError::Bind)?.port();
            if let Some(lock) = try_lock(lock_dir, port)? {
                ports.push(port);
                locks.push(lock);
                listeners.push(listener);
            }
        }
        drop(listeners);
        Ok(Self {
            ports,
            _locks: locks,
        })
    }

    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// `AIDA_PORT_0` .. `AIDA_PORT_<n-1>` and `AIDA_PORTS` (comma list);
    /// nothing without ports.
    pub fn env(&self) -> Vec<(String, String)> {
        if self.ports.is_empty() {
            return Vec::new();
        }
        let mut env: Vec<(String, String)> = self
            .ports
            .iter()
            .enumerate()
            .map(|(i, port)| (format!("AIDA_PORT_{i}"), port.to_string()))
            .collect();
        let all: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        env.push(("AIDA_PORTS".into(), all.join(",")));
        env
    }
}

/// The lock of `port`, or `None` when another lease holds it.
fn try_lock(dir: &Path, port: u16) -> Result<Option<Flock<File>>, PortError> {
    let path = dir.join(format!("{port}.lock"));
    let lock_err = |source| PortError::Lock {
        path: path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        // A link planted in a shared directory must not be followed.
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(&path)
        .map_err(lock_err)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(lock_err(errno.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_locked_by_another_lease_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let held = try_lock(dir.path(), 40000).unwrap().expect("free");
        assert!(try_lock(dir.path(), 40000).unwrap().is_none(), "held");
        drop(held);
        assert!(try_lock(dir.path(), 40000).unwrap().is_some(), "released");
    }

    #[test]
    fn env_names_every_port() {
        let lease = PortLease {
            ports: vec![4100, 4101],
            _locks: Vec::new(),
        };
        assert_eq!(
            lease.env(),
            [
                ("AIDA_PORT_0".to_owned(), "4100".to_owned()),
                ("AIDA_PORT_1".to_owned(), "4101".to_owned()),
                ("AIDA_PORTS".to_owned(), "4100,4101".to_owned()),
            ]
        );
        assert!(PortLease::none().env().is_empty());
    }
}
