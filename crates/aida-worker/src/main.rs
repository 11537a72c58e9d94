//! The worker binary: reads its configuration from the environment, binds
//! its gRPC port and runs until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use aida_worker::Config;

#[tokio::main]
async fn main() -> ExitCode {
    aida_core::telemetry::init("worker");
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("aida-worker: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(&config.worker_listen_addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "aida-worker: cannot listen on {}: {e}",
                config.worker_listen_addr
            );
            return ExitCode::FAILURE;
        }
    };
    let served = aida_worker::run(config, listener, aida_core::shutdown::signal()).await;
    aida_core::telemetry::shutdown().await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = ?e, "worker failed");
            ExitCode::FAILURE
        }
    }
}
