//! A real `redis-server` on a free port, with no persistence, for one test;
//! it can be stopped and started again on the same port (an outage).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::Proc;

pub struct RedisServer {
    pub url: String,
    pub port: u16,
    proc: Option<Proc>,
    log_dir: PathBuf,
    starts: u32,
}

impl RedisServer {
    pub async fn start(log_dir: &Path) -> RedisServer {
        let port = crate::free_port();
        let mut server = RedisServer {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            proc: None,
            log_dir: log_dir.to_path_buf(),
            starts: 0,
        };
        server.spawn().await;
        server
    }

    /// Kills the server (SIGKILL: no goodbye to its clients) and waits
    /// until it is gone.
    pub async fn stop(&mut self) {
        let mut proc = self.proc.take().expect("redis-server is not running");
        let _ = proc.child.kill();
        let waited = tokio::task::spawn_blocking(move || {
            let _ = proc.child.wait();
            proc
        });
        waited.await.expect("waiting for redis-server");
    }

    /// Starts the server again on the same port; returns once it answers
    /// PING.
    pub async fn restart(&mut self) {
        assert!(self.proc.is_none(), "redis-server is still running");
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let port = self.port;
        self.starts += 1;
        let name = if self.starts == 1 {
            "redis-server".to_owned()
        } else {
            format!("redis-server-{}", self.starts)
        };
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        let proc = Proc::spawn(&name, cmd, &self.log_dir);
        let client = redis::Client::open(self.url.as_str()).expect("redis url");
        crate::eventually("redis-server to answer PING", || {
            let client = client.clone();
            async move {
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                let pong: String = redis::cmd("PING").query_async(&mut conn).await.ok()?;
                (pong == "PONG").then_some(())
            }
        })
        .await;
        self.proc = Some(proc);
    }
}
