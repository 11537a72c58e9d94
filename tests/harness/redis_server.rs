//! A real `redis-server` on a free port, with no persistence, for one test.

use std::path::Path;
use std::process::Command;

use crate::process::Proc;

pub struct RedisServer {
    pub url: String,
    pub port: u16,
    _proc: Proc,
}

impl RedisServer {
    pub async fn start(log_dir: &Path) -> RedisServer {
        let port = crate::free_port();
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
        let proc = Proc::spawn("redis-server", cmd, log_dir);
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url.as_str()).expect("redis url");
        crate::eventually("redis-server to answer PING", || {
            let client = client.clone();
            async move {
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                let pong: String = redis::cmd("PING").query_async(&mut conn).await.ok()?;
                (pong == "PONG").then_some(())
            }
        })
        .await;
        RedisServer {
            url,
            port,
            _proc: proc,
        }
    }
}
