//! A real `redis-server` on a free port, with a password and no
//! persistence, for one test; it can be stopped and started again on the
//! same port (an outage). The password is in a config file, not on the
//! command line, as in the pod.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::Proc;

pub struct RedisServer {
    /// `redis://:<password>@127.0.0.1:<port>`.
    pub url: String,
    pub password: String,
    pub port: u16,
    proc: Option<Proc>,
    log_dir: PathBuf,
    starts: u32,
}

impl RedisServer {
    pub async fn start(log_dir: &Path) -> RedisServer {
        let port = crate::free_port();
        let password = aida_core::secret::random_hex(16);
        let mut server = RedisServer {
            url: format!("redis://:{password}@127.0.0.1:{port}"),
            password,
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
        let config = self.log_dir.join(format!("{name}.conf"));
        aida_core::secret::write_private(
            &config,
            format!(
                "bind 127.0.0.1\nport {port}\nsave \"\"\nappendonly no\nrequirepass {}\n",
                self.password
            )
            .as_bytes(),
        )
        .expect("writing the redis config");
        let mut cmd = Command::new("redis-server");
        cmd.arg(&config);
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
