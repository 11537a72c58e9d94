//! Logging setup shared by every binary. `RUST_LOG` filters (default
//! `info`); `AIDA_LOG_FORMAT=json` switches to one JSON object per line for
//! log shippers. Logs go to stderr so a CLI's stdout stays data.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = std::env::var("AIDA_LOG_FORMAT").is_ok_and(|v| v == "json");
    // try_init: a process running several services (aida dev, tests) calls
    // this more than once.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
