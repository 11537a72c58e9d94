//! `aida admin backup` and `aida admin restore`: a consistent copy of the
//! orchestrator's SQLite database taken while it runs, checked before it is
//! trusted, and put back in place atomically.
//!
//! These talk to the database file directly, not to the gateway: a backup
//! must work when the API is down, and a restore happens before an
//! orchestrator starts on it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};

use crate::output;

/// The orchestrator's migrations, to recognise its databases: a file whose
/// applied migrations are not these is not one of ours.
static MIGRATOR: Migrator = sqlx::migrate!("../aida-orchestrator/migrations");

/// The default of the orchestrator's `DATABASE_URL`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/aida.db";

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Copy the orchestrator's database while it runs (a consistent
    /// snapshot through SQLite's VACUUM INTO), then verify the copy.
    Backup(BackupArgs),
    /// Check a backup and install it as the database of an orchestrator
    /// that is not running yet.
    Restore(RestoreArgs),
    /// Create a user in the database (the first admin, before anything
    /// runs); the password comes from stdin or a prompt.
    CreateUser(super::admin_users::CreateUserArgs),
    /// Set a user's password in the database, lift a lockout and end their
    /// sessions.
    ResetPassword(super::admin_users::ResetPasswordArgs),
    /// Remove the events and aida/<task>/* branches of tasks that ended
    /// long ago, through the gateway (admin). Tasks that have not ended and
    /// branches whose pull request is open are kept.
    Gc(super::gc::GcArgs),
}

impl AdminCommand {
    pub async fn run(self, global: &super::Global) -> anyhow::Result<ExitCode> {
        let (summary, json) = match &self {
            AdminCommand::Gc(args) => return args.run(global).await,
            AdminCommand::Backup(args) => (backup(args).await?, args.json),
            AdminCommand::Restore(args) => (restore(args).await?, args.json),
            AdminCommand::CreateUser(args) => return super::admin_users::create_user(args).await,
            AdminCommand::ResetPassword(args) => {
                return super::admin_users::reset_password(args).await;
            }
        };
        if json {
            output::print_json(&summary)?;
        } else {
            output::print(&summary.render())?;
        }
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The orchestrator's database.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// The backup file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace `--out` if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(long)]
    pub from: PathBuf,
    /// The database to create from it; no orchestrator may be using it.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Replace the target database if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print what was restored as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What a backup or restore wrote, as read back from the file itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// "backup" or "restored".
    pub action: &'static str,
    pub path: PathBuf,
    pub bytes: u64,
    pub tasks: i64,
    pub subtasks: i64,
    pub events: i64,
    /// The highest event id: an orchestrator on this database continues
    /// after it.
    pub last_event_id: i64,
    /// The newest schema migration applied.
    pub schema_version: i64,
}

impl Summary {
    fn render(&self) -> String {
        format!(
            "{:<9} {}\nbytes     {}\ntasks     {}\nsubtasks  {}\nevents    {} (last id {})\nschema    {}\n",
            self.action,
            self.path.display(),
            self.bytes,
            self.tasks,
            self.subtasks,
            self.events,
            self.last_event_id,
            self.schema_version
        )
    }
}

/// The database file a `sqlite://` URL names.
fn database_path(url: &str) -> anyhow::Result<PathBuf> {
    let options = SqliteConnectOptions::from_str(url)
        .with_context(|| format!("invalid database URL {url:?}"))?;
    let path = options.get_filename();
    if path.as_os_str().is_empty() || path.to_str().is_some_and(|p| p.starts_with(':')) {
        bail!("database URL {url:?} does not name a database file");
    }
    Ok(path.to_path_buf())
}

/// A sibling of `target` for writing before the atomic rename: same
/// directory (so the rename never crosses file systems), hidden, unique to
/// this process.
fn temp_beside(target: &Path, what: &str) -> anyhow::Result<PathBuf> {
    let name = target
        .file_name()
        .with_context(|| format!("{} is not a file path", target.display()))?;
    Ok(target.with_file_name(format!(
        ".{}.{what}-{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// The files SQLite keeps beside a database in WAL mode.
fn sidecars(db: &Path) -> [PathBuf; 2] {
    let with = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [with("-wal"), with("-shm")]
}

fn remove_quietly(path: &Path) {
    for p in std::iter::once(path.to_path_buf()).chain(sidecars(path)) {
        let _ = std::fs::remove_file(p);
    }
}

/// Makes `path`'s content and its directory entry durable.
fn sync(path: &Path) -> anyhow::Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", path.display()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Not every file system can sync a directory; the data is synced.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

fn create_parent(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating directory {}", dir.display()))?;
    }
    Ok(())
}

async fn backup(args: &BackupArgs) -> anyhow::Result<Summary> {
    let source = database_path(&args.database_url)?;
    if !source.is_file() {
        bail!("no database at {} to back up", source.display());
    }
    if args.out.exists() && !args.force {
        bail!(
            "{} already exists; pass --force to overwrite it",
            args.out.display()
        );
    }
    create_parent(&args.out)?;
    let temp = temp_beside(&args.out, "backup")?;
    remove_quietly(&temp);
    let result = async {
        // No journal mode or other pragma is set: this connection joins the
        // orchestrator's WAL database as it is. VACUUM INTO reads one
        // transaction's snapshot, so writes going on meanwhile are either
        // wholly in the copy or not at all.
        let mut conn = SqliteConnectOptions::new()
            .filename(&source)
            .create_if_missing(false)
            .busy_timeout(std::time::Duration::from_secs(30))
            .connect()
            .await
            .with_context(|| format!("opening {}", source.display()))?;
        eprintln!("backing up {} ...", source.display());
        sqlx::query("VACUUM INTO $1")
            .bind(temp.to_str().context("the backup path is not UTF-8")?)
            .execute(&mut conn)
            .await
            .with_context(|| format!("copying {}", source.display()))?;
        conn.close().await?;
        let summary = inspect(&temp)
            .await
            .context("the copy does not check out")?;
        sync(&temp)?;
        std::fs::rename(&temp, &args.out)
            .with_context(|| format!("moving the backup to {}", args.out.display()))?;
        sync(&args.out)?;
        anyhow::Ok(summary)
    }
    .await;
    match result {
        Ok(summary) => Ok(Summary {
            action: "backup",
            path: absolute(&args.out),
            ..summary
        }),
        Err(e) => {
            remove_quietly(&temp);
            Err(e)
        }
    }
}

async fn restore(args: &RestoreArgs) -> anyhow::Result<Summary> {
    let target = database_path(&args.database_url)?;
    if !args.from.is_file() {
        bail!("no backup file at {}", args.from.display());
    }
    let existing: Vec<PathBuf> = std::iter::once(target.clone())
        .chain(sidecars(&target))
        .filter(|p| p.exists())
        .collect();
    if !existing.is_empty() && !args.force {
        bail!(
            "{} already exists; pass --force to replace it (stop any orchestrator using it first)",
            existing[0].display()
        );
    }
    create_parent(&target)?;
    // Checked and installed as a copy beside the target, so the backup file
    // is never opened for writing and a crash leaves the old target or the
    // new one, never half of one.
    let temp = temp_beside(&target, "restore")?;
    remove_quietly(&temp);
    let result = async {
        std::fs::copy(&args.from, &temp)
            .with_context(|| format!("copying {}", args.from.display()))?;
        let summary = inspect(&temp)
            .await
            .with_context(|| format!("{} is not a usable AIDA backup", args.from.display()))?;
        sync(&temp)?;
        // A WAL left by the database being replaced would be replayed onto
        // the restored one: it goes first.
        for sidecar in sidecars(&target) {
            match std::fs::remove_file(&sidecar) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", sidecar.display()));
                }
                _ => {}
            }
        }
        std::fs::rename(&temp, &target)
            .with_context(|| format!("moving the restored database to {}", target.display()))?;
        sync(&target)?;
        anyhow::Ok(summary)
    }
    .await;
    match result {
        Ok(summary) => Ok(Summary {
            action: "restored",
            path: absolute(&target),
            ..summary
        }),
        Err(e) => {
            remove_quietly(&temp);
            Err(e)
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Opens a database file read-only and checks that it is sound and is an
/// orchestrator's: `PRAGMA integrity_check` says "ok", and its applied
/// migrations are the orchestrator's own (same versions, same checksums).
pub async fn inspect(path: &Path) -> anyhow::Result<Summary> {
    let bytes = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false)
        .connect()
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let summary = inspect_open(&mut conn, path, bytes).await;
    let _ = conn.close().await;
    summary
}

async fn inspect_open(
    conn: &mut SqliteConnection,
    path: &Path,
    bytes: u64,
) -> anyhow::Result<Summary> {
    let problems: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut *conn)
        .await
        .context("the integrity check cannot run")?;
    if problems != ["ok"] {
        let shown: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
        bail!("integrity check failed: {}", shown.join("; "));
    }

    let has_migrations: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !has_migrations {
        bail!("not an AIDA orchestrator database: it has no schema migrations table");
    }
    let applied =
        sqlx::query("SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await
            .context("reading the schema migrations")?;
    if applied.is_empty() {
        bail!("not an AIDA orchestrator database: no schema migration was applied");
    }
    let mut schema_version = 0;
    for row in &applied {
        let version: i64 = row.try_get("version")?;
        let checksum: Vec<u8> = row.try_get("checksum")?;
        let success: bool = row.try_get("success")?;
        let Some(known) = MIGRATOR.iter().find(|m| m.version == version) else {
            bail!(
                "schema migration {version} is unknown to this aida (a newer version wrote the database?)"
            );
        };
        if *known.checksum != *checksum {
            bail!(
                "not an AIDA orchestrator database: schema migration {version} ({}) differs",
                known.description
            );
        }
        if !success {
            bail!(
                "schema migration {version} ({}) did not complete",
                known.description
            );
        }
        schema_version = version;
    }

    let tasks = count(conn, "tasks").await?;
    let subtasks = count(conn, "subtasks").await?;
    let events = count(conn, "events").await?;
    let last_event_id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
        .fetch_one(&mut *conn)
        .await?;
    Ok(Summary {
        action: "checked",
        path: path.to_path_buf(),
        bytes,
        tasks,
        subtasks,
        events,
        last_event_id,
        schema_version,
    })
}

async fn count(conn: &mut SqliteConnection, table: &str) -> anyhow::Result<i64> {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(conn)
        .await
        .with_context(|| format!("counting {table}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database the way the orchestrator makes it, with one task.
    async fn orchestrator_db(dir: &Path) -> (PathBuf, SqliteConnection) {
        let path = dir.join("live.db");
        let mut conn = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .connect()
            .await
            .unwrap();
        MIGRATOR.run(&mut conn).await.unwrap();
        sqlx::query(
            "INSERT INTO tasks (id, status, repo, base, base_commit, description, agent_json, created_at)
             VALUES ('t1', 'running', '/r', 'main', 'abc', 'd', '{}', '2026-01-01T00:00:00Z')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO events (channel, kind, task_id, at, data)
             VALUES ('task', 'task.created', 't1', '2026-01-01T00:00:00Z', '{}')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        // Kept open in WAL mode by the caller: the backup must see what
        // only the WAL holds.
        (path, conn)
    }

    fn url(path: &Path) -> String {
        format!("sqlite://{}", path.display())
    }

    #[tokio::test]
    async fn a_backup_restores_to_the_same_content() {
        let dir = tempfile::tempdir().unwrap();
        let (live, _open) = orchestrator_db(dir.path()).await;
        let out = dir.path().join("backups/b.db");
        let args = BackupArgs {
            database_url: url(&live),
            out: out.clone(),
            force: false,
            json: false,
        };
        let made = backup(&args).await.unwrap();
        assert_eq!((made.tasks, made.events, made.last_event_id), (1, 1, 1));
        assert_eq!(made.path, out);
        assert_eq!(
            made.schema_version,
            MIGRATOR.iter().map(|m| m.version).max().unwrap()
        );
        // No overwriting without --force; with it, fine.
        let err = backup(&args).await.unwrap_err().to_string();
        assert!(err.contains("already exists; pass --force"), "{err}");
        backup(&BackupArgs {
            force: true,
            ..args.clone()
        })
        .await
        .unwrap();

        let target = dir.path().join("restored/aida.db");
        let restore_args = RestoreArgs {
            from: out.clone(),
            database_url: url(&target),
            force: false,
            json: false,
        };
        let restored = restore(&restore_args).await.unwrap();
        assert_eq!(
            (restored.tasks, restored.events, restored.path.clone()),
            (1, 1, target.clone())
        );
        let err = restore(&restore_args).await.unwrap_err().to_string();
        assert!(err.contains("already exists; pass --force"), "{err}");
        let leftovers: Vec<_> = std::fs::read_dir(target.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["aida.db"], "no temporary file stays");
    }

    #[tokio::test]
    async fn garbage_and_foreign_databases_are_refused_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.db");
        std::fs::write(
            &garbage,
            b"this is not a database, just some bytes ".repeat(200),
        )
        .unwrap();
        let foreign = dir.path().join("foreign.db");
        let mut conn = SqliteConnectOptions::new()
            .filename(&foreign)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::query("CREATE TABLE tasks (id TEXT)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();

        let target_dir = dir.path().join("target");
        for (from, reason) in [
            (&garbage, "file is not a database"),
            (&foreign, "no schema migrations table"),
        ] {
            let err = restore(&RestoreArgs {
                from: from.clone(),
                database_url: url(&target_dir.join("aida.db")),
                force: false,
                json: false,
            })
            .await
            .unwrap_err();
            let text = format!("{err:#}");
            assert!(text.contains("is not a usable AIDA backup"), "{text}");
            assert!(text.contains(reason), "{text}");
            assert_eq!(
                std::fs::read_dir(&target_dir).unwrap().count(),
                0,
                "nothing is left in the target directory"
            );
        }
    }
}
