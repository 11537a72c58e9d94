//! Logging setup shared by every binary. Logs go to stderr so a CLI's stdout
//! stays data.
//! - Level: `RUST_LOG` (a filter such as `info,aida_worker=debug`), else
//!   the seed's `LOG_LEVEL` (`debug`, `info`, ...), else `info`.
//! - Format: `AIDA_LOG_FORMAT=json` (the images' default) writes one JSON
//!   object per line for log shippers: timestamp, level, target, message,
//!   and the fields of the spans it is in (the task and subtask ids where a
//!   line is about one). Otherwise human-readable, with colours only on a
//!   terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .ok()
        .or_else(|| {
            std::env::var("LOG_LEVEL")
                .ok()
                .filter(|l| !l.trim().is_empty())
                .and_then(|l| EnvFilter::try_new(l.trim().to_lowercase()).ok())
        })
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = std::env::var("AIDA_LOG_FORMAT").is_ok_and(|v| v == "json");
    // try_init: a process running several services (aida dev, tests) calls
    // this more than once.
    let _ = if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}
