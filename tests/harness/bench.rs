//! What the benchmarks share: the headline rows each hands to `make bench`'s
//! one table, and the whole-process measures they take (resident memory).
//!
//! Every bench prints its own detailed table. With `AIDA_BENCH_SUMMARY`
//! set to a file (as `make bench` does), each also appends its headline
//! figures there as JSON lines, one per row; the `summary` bench then
//! prints them as one table, with the machine they were measured on. A
//! ratio always compares two figures taken in the same invocation.
//!
//! The in-process benches measure with criterion; [`criterion_estimates`]
//! reads back what criterion measured, so a headline row is criterion's own
//! figure and not a second, hand-made measurement.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The file `make bench` collects rows in.
pub const SUMMARY_ENV: &str = "AIDA_BENCH_SUMMARY";

/// Which way a ratio has to go to meet its target.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Goal {
    /// The ratio must be at most this.
    AtMost(f64),
    /// The ratio must be at least this.
    AtLeast(f64),
    /// Shown for reference; no target.
    None,
}

/// One row of the table: a figure of AIDA's, what it is held against,
/// their ratio, and the target the ratio must meet. A figure with an
/// absolute bound (memory under 200 MB) is held against the bound.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub figure: String,
    pub aida: String,
    pub against: String,
    pub ratio: f64,
    pub goal: Goal,
}

impl Row {
    /// A row comparing `aida` with `against` by `ratio`.
    pub fn ratio(
        figure: impl Into<String>,
        aida: impl Into<String>,
        against: impl Into<String>,
        ratio: f64,
        goal: Goal,
    ) -> Self {
        Row {
            figure: figure.into(),
            aida: aida.into(),
            against: against.into(),
            ratio,
            goal,
        }
    }

    /// Whether the row meets its target (`None` when it has none).
    pub fn met(&self) -> Option<bool> {
        match self.goal {
            Goal::AtMost(bound) => Some(self.ratio <= bound),
            Goal::AtLeast(bound) => Some(self.ratio >= bound),
            Goal::None => None,
        }
    }

    /// The target as the table shows it.
    pub fn target(&self) -> String {
        match self.goal {
            Goal::AtMost(b) => format!("≤ {b}"),
            Goal::AtLeast(b) => format!("≥ {b}"),
            Goal::None => String::new(),
        }
    }
}

/// Hands `rows` to `make bench`'s table (when it collects them) and prints
/// them under the bench's own output.
pub fn report(rows: &[Row]) {
    println!();
    for row in rows {
        println!(
            "summary: {} — {} against {}: {:.2} (target {})",
            row.figure,
            row.aida,
            row.against,
            row.ratio,
            row.target()
        );
    }
    let Some(path) = std::env::var_os(SUMMARY_ENV) else {
        return;
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    for row in rows {
        let line = serde_json::to_string(row).expect("a row as JSON");
        writeln!(file, "{line}").expect("writing the bench summary");
    }
}

/// What criterion estimated for one benchmark: its `estimates.json`, of
/// which only the point estimates are read.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Estimates {
    pub mean: Estimate,
    pub median: Estimate,
}

/// One of criterion's estimates of the time an iteration takes.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Estimate {
    /// In nanoseconds (criterion's wall-clock measurement).
    pub point_estimate: f64,
}

impl Estimate {
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.point_estimate / 1e9)
    }
}

/// Criterion's estimates for benchmark `id` (as criterion prints it:
/// `group/function/parameter`, no part holding `/` or another character
/// criterion replaces in directory names), as this run wrote them to
/// `<criterion home>/<id>/new/estimates.json`.
///
/// Only a file written since `since` (taken before the benchmarks ran)
/// counts: criterion writes none when it measures nothing (`cargo test
/// --benches` runs each routine once, a filter skips the benchmark), and
/// the one left by an earlier run is not this run's figure.
pub fn criterion_estimates(id: &str, since: SystemTime) -> Result<Estimates, String> {
    let path = criterion_home().join(id).join("new").join("estimates.json");
    let fresh = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .is_ok_and(|written| written >= since);
    if !fresh {
        return Err(format!(
            "criterion measured no {id} in this run (nothing new in {})",
            path.display()
        ));
    }
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// Where criterion keeps its results, found as criterion finds it:
/// `CRITERION_HOME`, else `criterion` in `CARGO_TARGET_DIR`, else in the
/// target directory `cargo metadata` names, else `target/criterion`.
fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    let metadata = std::env::var_os("CARGO").and_then(|cargo| {
        let out = std::process::Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .output()
            .ok()?;
        let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(PathBuf::from(metadata["target_directory"].as_str()?))
    });
    metadata.map_or_else(
        || PathBuf::from("target/criterion"),
        |t| t.join("criterion"),
    )
}

/// Resident memory of process `pid`, in MB.
pub fn rss_mb(pid: u32) -> f64 {
    status_mb(pid, "VmRSS:")
}

/// The part of [`rss_mb`] that is the process's own (heap and stacks),
/// not pages of files it maps (its executable, shared libraries), which
/// are shared and can be dropped and read back.
pub fn anonymous_mb(pid: u32) -> f64 {
    status_mb(pid, "RssAnon:")
}

fn status_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    kb / 1024.0
}

/// CPU time (user and system) process `pid` has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/stat: {e}"));
    // The fields after the command name, which is in parentheses and may
    // hold spaces: utime and stime are the 12th and 13th of them.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: f64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    // Linux reports these in clock ticks of 1/100 s (USER_HZ).
    ticks / 100.0
}

/// Resident memory of `pid` once it stopped changing (by less than 0.5 MB
/// over half a second; at most 10 s), e.g. after connections closed.
pub async fn settled_rss_mb(pid: u32) -> f64 {
    settled_rss_mb_over(pid, Duration::from_millis(500)).await
}

/// Resident memory of `pid` once it changed by less than 0.5 MB over
/// `window` (at most 20 s): a window longer than a period the process acts
/// on (the gateway gives memory back every 2 s) sees that act.
pub async fn settled_rss_mb_over(pid: u32, window: Duration) -> f64 {
    const STEP: Duration = Duration::from_millis(250);
    let keep = (window.as_millis() / STEP.as_millis()).max(1) as usize + 1;
    let mut seen = std::collections::VecDeque::from([rss_mb(pid)]);
    for _ in 0..80 {
        tokio::time::sleep(STEP).await;
        seen.push_back(rss_mb(pid));
        if seen.len() > keep {
            seen.pop_front();
        }
        let (low, high) = seen
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        if seen.len() == keep && high - low < 0.5 {
            return seen[seen.len() - 1];
        }
    }
    seen[seen.len() - 1]
}

/// A peer's script in `../shared/bench/` (or under `AIDA_PEERS`).
fn peer_script(name: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("AIDA_PEERS").map_or_else(
        || {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("..")
                .join("shared")
                .join("bench")
        },
        std::path::PathBuf::from,
    );
    dir.join(name)
}

/// Runs a peer's script with `args` and returns its standard output, or why
/// it gave none.
fn run_peer(script: &std::path::Path, args: &[String]) -> Result<String, String> {
    let out = std::process::Command::new("bash")
        .arg(script)
        .args(args)
        // Celery reads these itself: set, they turn on its own benchmark
        // mode, whose callbacks break its worker (tasks never complete).
        .env_remove("CELERY_BENCH")
        .env_remove("C_BENCH")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "{} failed: {text}{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Celery's submissions per second from one client for `n` tasks
/// (`celery/bench.sh`), or why there is none.
pub fn celery_submissions(n: usize) -> Result<f64, String> {
    let script = peer_script("celery/bench.sh");
    let text = run_peer(&script, &[n.to_string()])?;
    // "celery: submitted N in Xs (R/s), all done in ..."
    text.lines()
        .find_map(|l| {
            let rate = l.strip_prefix("celery: submitted ")?.split('(').nth(1)?;
            rate.split("/s").next()?.parse().ok()
        })
        .ok_or_else(|| format!("{} printed no rate: {text}", script.display()))
}

/// Seconds plain git takes for one orchestration of `n` subtasks,
/// `parallel` at a time (`git-floor.sh`), or why there is none.
pub fn git_floor(n: usize, parallel: usize) -> Result<f64, String> {
    let script = peer_script("git-floor.sh");
    let args = [n.to_string(), parallel.to_string()];
    // `git worktree` races with itself now and then (the script retries
    // only its `add`); a careful user runs it again.
    let text = run_peer(&script, &args).or_else(|_| run_peer(&script, &args))?;
    // "git floor: N subtasks, P in parallel: S s"
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix("git floor: ")?;
            rest.rsplit(": ")
                .next()?
                .trim()
                .strip_suffix(" s")?
                .parse()
                .ok()
        })
        .ok_or_else(|| format!("{} printed no time: {text}", script.display()))
}
