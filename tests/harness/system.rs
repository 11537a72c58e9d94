//! A whole AIDA system for one test: redis-server, aggregator, orchestrator,
//! gateway and N workers, each a real process of its own on free ports.

use std::process::Command;

use futures::StreamExt;
use serde_json::Value;

use crate::process::{Proc, bin};
use crate::{RedisServer, eventually, free_port};

pub struct System {
    /// The gateway's base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    pub orchestrator_addr: String,
    pub aggregator_addr: String,
    // Fields drop in order: the processes (printing their logs if the test
    // failed) before `dir` holding those logs.
    procs: Vec<Proc>,
    pub redis: RedisServer,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    worker_env: Vec<(String, String)>,
    /// To start the orchestrator again as it was.
    orchestrator_env: Vec<(String, String)>,
}

/// What to start, beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub workers: usize,
    /// Extra environment of the orchestrator process.
    pub orchestrator_env: Vec<(String, String)>,
    /// Extra environment of every worker process.
    pub worker_env: Vec<(String, String)>,
}

impl Options {
    pub fn workers(workers: usize) -> Self {
        Options {
            workers,
            ..Default::default()
        }
    }

    pub fn orchestrator_env(mut self, key: &str, value: &str) -> Self {
        self.orchestrator_env.push((key.into(), value.into()));
        self
    }

    pub fn worker_env(mut self, key: &str, value: &str) -> Self {
        self.worker_env.push((key.into(), value.into()));
        self
    }
}

impl System {
    /// Starts everything and waits until the gateway is healthy and
    /// `workers` workers are connected.
    pub async fn start(workers: usize) -> System {
        Self::start_with(Options::workers(workers)).await
    }

    pub async fn start_with(options: Options) -> System {
        let workers = options.workers;
        let dir = tempfile::tempdir().expect("tempdir");
        let redis = RedisServer::start(dir.path()).await;
        let (orch_port, agg_port, gw_port) = (free_port(), free_port(), free_port());
        let orchestrator_addr = format!("127.0.0.1:{orch_port}");
        let aggregator_addr = format!("127.0.0.1:{agg_port}");
        let url = format!("http://127.0.0.1:{gw_port}");
        let mut procs = Vec::new();

        let mut cmd = Command::new(bin("aida-aggregator"));
        cmd.env("AGGREGATOR_LISTEN_ADDR", &aggregator_addr);
        procs.push(Proc::spawn("aggregator", cmd, dir.path()));

        let orchestrator_env: Vec<(String, String)> = [
            (
                "ORCHESTRATOR_LISTEN_ADDR".to_owned(),
                orchestrator_addr.clone(),
            ),
            (
                "DATABASE_URL".to_owned(),
                format!("sqlite://{}/aida.db", dir.path().display()),
            ),
            (
                "AGGREGATOR_ADDR".to_owned(),
                format!("http://{aggregator_addr}"),
            ),
            ("REDIS_URL".to_owned(), redis.url.clone()),
            ("PUBLIC_API_URL".to_owned(), url.clone()),
        ]
        .into_iter()
        .chain(options.orchestrator_env.iter().cloned())
        .collect();
        let mut cmd = Command::new(bin("aida-orchestrator"));
        cmd.envs(orchestrator_env.iter().cloned());
        procs.push(Proc::spawn("orchestrator", cmd, dir.path()));

        let mut cmd = Command::new(bin("aida-gateway"));
        cmd.env("GATEWAY_LISTEN_ADDR", format!("127.0.0.1:{gw_port}"))
            .env("ORCHESTRATOR_ADDR", &orchestrator_addr);
        procs.push(Proc::spawn("gateway", cmd, dir.path()));

        let mut system = System {
            url,
            orchestrator_addr,
            aggregator_addr,
            redis,
            http: reqwest::Client::new(),
            dir,
            procs,
            worker_env: options.worker_env,
            orchestrator_env,
        };
        for i in 1..=workers {
            system.add_worker(&format!("worker-{i}"));
        }
        system.wait_healthy().await;
        system.wait_workers(workers).await;
        system
    }

    /// Starts one more worker process with the given id.
    pub fn add_worker(&mut self, worker_id: &str) {
        let mut cmd = Command::new(bin("aida-worker"));
        cmd.env("WORKER_ID", worker_id)
            .env("ORCHESTRATOR_ADDR", &self.orchestrator_addr)
            .env("WORKER_LISTEN_ADDR", "127.0.0.1:0")
            .env(
                "WORKTREE_ROOT",
                self.dir.path().join("worktrees").join(worker_id),
            )
            .envs(self.worker_env.iter().cloned());
        self.procs
            .push(Proc::spawn(worker_id, cmd, self.dir.path()));
    }

    pub async fn wait_healthy(&self) {
        eventually("the gateway to report the orchestrator healthy", || async {
            let resp = self
                .http
                .get(format!("{}/api/health", self.url))
                .send()
                .await
                .ok()?;
            resp.status().is_success().then_some(())
        })
        .await;
    }

    /// Waits until `n` workers are connected (idle or busy).
    pub async fn wait_workers(&self, n: usize) -> Value {
        eventually(&format!("{n} workers to connect"), || async {
            let workers = self.get("/api/workers").await.ok()?;
            let connected = workers["workers"]
                .as_array()?
                .iter()
                .filter(|w| w["state"] != "offline")
                .count();
            (connected >= n).then_some(workers)
        })
        .await
    }

    pub async fn get(&self, path: &str) -> Result<Value, String> {
        crate::get_json(&self.http, &self.url, path).await
    }

    /// A task's report as markdown.
    pub async fn report(&self, task_id: &str) -> String {
        let resp = self
            .http
            .get(format!("{}/api/tasks/{task_id}/report", self.url))
            .send()
            .await
            .expect("GET report");
        assert!(resp.status().is_success(), "report: {}", resp.status());
        resp.text().await.expect("report text")
    }

    /// POSTs JSON and returns the status and the JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Creates a task and returns its id; panics unless the API says 201.
    pub async fn create_task(&self, body: &Value) -> String {
        let (status, task) = self.post("/api/tasks", body).await;
        assert_eq!(status, 201, "creating the task failed: {task}");
        task["id"].as_str().expect("task id").to_owned()
    }

    /// Waits for a task to reach a final status and returns it.
    pub async fn wait_finished(&self, task_id: &str) -> Value {
        eventually(&format!("task {task_id} to finish"), || async {
            let task = self.get(&format!("/api/tasks/{task_id}")).await.ok()?;
            let status = task["status"].as_str()?;
            ["succeeded", "conflicted", "failed", "cancelled"]
                .contains(&status)
                .then_some(task)
        })
        .await
    }

    /// Reads the SSE stream `path` until the server ends it; returns the
    /// SSE ids and the events' JSON.
    pub async fn read_sse(&self, path: &str) -> Vec<(String, Value)> {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("SSE request");
        assert_eq!(resp.status().as_u16(), 200, "SSE status");
        let mut stream = eventsource_stream::EventStream::new(resp.bytes_stream());
        let mut events = Vec::new();
        let read = async {
            while let Some(item) = stream.next().await {
                let ev = item.expect("SSE event");
                let data: Value = serde_json::from_str(&ev.data).expect("SSE data is JSON");
                events.push((ev.id, data));
            }
        };
        tokio::time::timeout(crate::DEADLINE, read)
            .await
            .expect("SSE stream did not end");
        events
    }

    /// Sends SIGTERM to a process of this system and waits for it to exit.
    pub async fn terminate(&mut self, name: &str) -> std::process::ExitStatus {
        let index = self
            .procs
            .iter()
            .position(|p| p.name == name)
            .expect("no such process");
        let mut proc = self.procs.remove(index);
        let sent = Command::new("kill")
            .args(["-TERM", &proc.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {name}");
        let waited = tokio::task::spawn_blocking(move || (proc.child.wait().expect("wait"), proc));
        let (status, _proc) = tokio::time::timeout(crate::DEADLINE, waited)
            .await
            .unwrap_or_else(|_| panic!("{name} did not exit after SIGTERM"))
            .unwrap();
        status
    }

    /// `kill -9`: the process dies at once, with no chance to clean up.
    pub fn kill9(&mut self, name: &str) {
        let index = self
            .procs
            .iter()
            .position(|p| p.name == name)
            .expect("no such process");
        let mut proc = self.procs.remove(index);
        proc.child.kill().expect("SIGKILL");
        proc.child.wait().expect("wait");
        // Its log stays in `dir`, named after it.
    }

    /// Starts the orchestrator again on its port and database, and waits
    /// until the gateway reaches it.
    pub async fn restart_orchestrator(&mut self) {
        assert!(
            self.pid("orchestrator").is_none(),
            "the orchestrator is still running"
        );
        let mut cmd = Command::new(bin("aida-orchestrator"));
        cmd.envs(self.orchestrator_env.iter().cloned());
        self.procs
            .push(Proc::spawn("orchestrator-restarted", cmd, self.dir.path()));
        self.wait_healthy().await;
    }

    /// The pid of a process started by this system, by name.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs.iter().find(|p| p.name == name).map(Proc::pid)
    }
}

/// The `command` agent of a task body: argv run directly by the worker.
pub fn sh_agent(script: &str) -> Value {
    serde_json::json!({ "kind": "command", "command": ["sh", "-c", script] })
}
