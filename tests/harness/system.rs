//! A whole AIDA system for one test: redis-server, aggregator, orchestrator,
//! gateway and N workers, each a real process of its own on free ports,
//! with auth on as a user runs it: a random internal token shared by the
//! services, a random JWT secret and webhook secret on the gateway, and an
//! admin made with `aida admin create-user` and logged in over REST. The
//! system's `http` client sends the admin's access token.

use std::process::{Command, Stdio};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::process::{Proc, bin};
use crate::{RedisServer, eventually, free_port};

/// The admin every system starts with.
pub const ADMIN: &str = "admin";

/// Every secret a system was started with, so tests can look for them
/// where they must never appear.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub internal_token: String,
    pub jwt_secret: String,
    pub webhook_secrets: Vec<String>,
    pub admin_password: String,
    pub redis_password: String,
}

impl Secrets {
    fn new(redis_password: &str, webhook_secrets: usize) -> Self {
        Secrets {
            internal_token: aida_core::secret::random_hex(32),
            jwt_secret: aida_core::secret::random_hex(32),
            webhook_secrets: (0..webhook_secrets.max(1))
                .map(|_| aida_core::secret::random_hex(24))
                .collect(),
            admin_password: format!("Adm1n!{}", aida_core::secret::random_hex(8)),
            redis_password: redis_password.to_owned(),
        }
    }

    pub fn all(&self) -> Vec<String> {
        let mut all = vec![
            self.internal_token.clone(),
            self.jwt_secret.clone(),
            self.admin_password.clone(),
            self.redis_password.clone(),
        ];
        all.extend(self.webhook_secrets.iter().cloned());
        all
    }
}

pub struct System {
    /// The gateway's base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// With mutual TLS: the CA and the services' certificate.
    pub tls: Option<crate::tls::TlsFiles>,
    /// The internal credential's environment, as every service gets it.
    internal_env: Vec<(String, String)>,
    pub orchestrator_addr: String,
    pub aggregator_addr: String,
    /// Where the orchestrator and the aggregator serve `/metrics`,
    /// `/healthz` and `/readyz`: `http://127.0.0.1:<port>`.
    pub orchestrator_ops_url: String,
    pub aggregator_ops_url: String,
    pub secrets: Secrets,
    /// The admin's access token, which `http` sends.
    pub admin_token: String,
    /// Where the orchestrator appends its audit lines (AIDA_AUDIT_LOG).
    pub audit_log: std::path::PathBuf,
    pub database_url: String,
    // Fields drop in order: the processes (printing their logs if the test
    // failed) before `dir` holding those logs.
    procs: Vec<Proc>,
    pub redis: RedisServer,
    /// Sends the admin's access token with every request.
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
    /// Extra environment of the gateway process (its limits, say).
    pub gateway_env: Vec<(String, String)>,
    /// Extra environment of the aggregator process.
    pub aggregator_env: Vec<(String, String)>,
    /// How many webhook secrets the gateway accepts (1 unless more are
    /// asked for, as while one is rotated out).
    pub webhook_secrets: usize,
    /// The services authenticate each other with mutual TLS only (no
    /// shared secret): certificates of a CA made for the test.
    pub mutual_tls: bool,
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

    pub fn gateway_env(mut self, key: &str, value: &str) -> Self {
        self.gateway_env.push((key.into(), value.into()));
        self
    }

    pub fn aggregator_env(mut self, key: &str, value: &str) -> Self {
        self.aggregator_env.push((key.into(), value.into()));
        self
    }

    pub fn mutual_tls(mut self) -> Self {
        self.mutual_tls = true;
        self
    }

    pub fn webhook_secrets(mut self, n: usize) -> Self {
        self.webhook_secrets = n;
        self
    }
}

/// The directories tasks may use in tests: the temporary directory, where
/// `GitRepo` makes its repositories.
pub fn repo_roots() -> String {
    std::env::temp_dir()
        .canonicalize()
        .expect("the temporary directory")
        .display()
        .to_string()
}

/// Runs `aida admin create-user` on `database_url`, the password on stdin.
pub fn create_user_in_database(database_url: &str, name: &str, role: &str, password: &str) {
    use std::io::Write;
    let mut child = Command::new(bin("aida"))
        .args([
            "admin",
            "create-user",
            name,
            "--role",
            role,
            "--password-stdin",
        ])
        .env("DATABASE_URL", database_url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running aida admin create-user");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "aida admin create-user failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client that sends `token` as its bearer token.
pub fn client_with(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

impl System {
    /// Starts everything and waits until the gateway is healthy and
    /// `workers` workers are connected.
    pub async fn start(workers: usize) -> System {
        Self::start_with(Options::workers(workers)).await
    }

    /// Starts a system as `options` say. The ports are picked free just
    /// before use, so another process may take one first: a system whose
    /// process dies before it is up is started again on new ports.
    pub async fn start_with(options: Options) -> System {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start(&options).await {
                Ok(system) => return system,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("the system did not start: {failures:#?}");
    }

    async fn try_start(options: &Options) -> Result<System, String> {
        let options = options.clone();
        let workers = options.workers;
        let dir = tempfile::tempdir().expect("tempdir");
        let redis = RedisServer::start(dir.path()).await;
        let secrets = Secrets::new(&redis.password, options.webhook_secrets);
        let (orch_port, agg_port, gw_port) = (free_port(), free_port(), free_port());
        let (orch_ops_port, agg_ops_port) = (free_port(), free_port());
        let orchestrator_addr = format!("127.0.0.1:{orch_port}");
        let aggregator_addr = format!("127.0.0.1:{agg_port}");
        let url = format!("http://127.0.0.1:{gw_port}");
        let database_url = format!("sqlite://{}/aida.db", dir.path().display());
        let audit_log = dir.path().join("audit.log");
        let mut procs = Vec::new();

        // The first admin, before anything runs, as the README says.
        create_user_in_database(&database_url, ADMIN, "admin", &secrets.admin_password);

        // How the services prove themselves to each other.
        let tls = options
            .mutual_tls
            .then(|| crate::tls::make(&dir.path().join("tls"), "aida"));
        let internal_env: Vec<(String, String)> = match &tls {
            Some(files) => vec![
                ("AIDA_TLS_CERT".into(), files.cert.display().to_string()),
                ("AIDA_TLS_KEY".into(), files.key.display().to_string()),
                ("AIDA_TLS_CA".into(), files.ca.display().to_string()),
            ],
            None => vec![("AIDA_INTERNAL_TOKEN".into(), secrets.internal_token.clone())],
        };

        let mut cmd = Command::new(bin("aida-aggregator"));
        cmd.env("AGGREGATOR_LISTEN_ADDR", &aggregator_addr)
            .env("METRICS_LISTEN_ADDR", format!("127.0.0.1:{agg_ops_port}"))
            .envs(internal_env.iter().cloned())
            .envs(options.aggregator_env.iter().cloned());
        procs.push(Proc::spawn("aggregator", cmd, dir.path()));

        let orchestrator_env: Vec<(String, String)> = [
            (
                "ORCHESTRATOR_LISTEN_ADDR".to_owned(),
                orchestrator_addr.clone(),
            ),
            (
                "METRICS_LISTEN_ADDR".to_owned(),
                format!("127.0.0.1:{orch_ops_port}"),
            ),
            ("DATABASE_URL".to_owned(), database_url.clone()),
            ("AIDA_REPO_ROOTS".to_owned(), repo_roots()),
            ("AIDA_AUDIT_LOG".to_owned(), audit_log.display().to_string()),
            (
                "AGGREGATOR_ADDR".to_owned(),
                format!("http://{aggregator_addr}"),
            ),
            // The password apart from the URL, as the pod passes it.
            (
                "REDIS_URL".to_owned(),
                format!("redis://127.0.0.1:{}", redis.port),
            ),
            ("REDIS_PASSWORD".to_owned(), redis.password.clone()),
            ("PUBLIC_API_URL".to_owned(), url.clone()),
        ]
        .into_iter()
        .chain(internal_env.iter().cloned())
        .chain(options.orchestrator_env.iter().cloned())
        .collect();
        let mut cmd = Command::new(bin("aida-orchestrator"));
        cmd.envs(orchestrator_env.iter().cloned());
        procs.push(Proc::spawn("orchestrator", cmd, dir.path()));

        let mut cmd = Command::new(bin("aida-gateway"));
        cmd.env("GATEWAY_LISTEN_ADDR", format!("127.0.0.1:{gw_port}"))
            .env("ORCHESTRATOR_ADDR", &orchestrator_addr)
            .envs(internal_env.iter().cloned())
            .env("AIDA_JWT_SECRET", &secrets.jwt_secret)
            .env("AIDA_WEBHOOK_SECRETS", secrets.webhook_secrets.join(","))
            // Tests run longer than a default access token lives, and poll
            // harder than a person: the limits get their own tests.
            .env("AIDA_ACCESS_TOKEN_TTL_SECS", "3600")
            .env("AIDA_RATE_LIMIT_PER_MINUTE", "100000")
            .env("AIDA_RATE_LIMIT_BURST", "10000")
            .env("AIDA_CLIENT_RATE_LIMIT_PER_MINUTE", "100000")
            .env("AIDA_CLIENT_RATE_LIMIT_BURST", "10000")
            .env("AIDA_LOGIN_RATE_LIMIT_PER_MINUTE", "10000")
            .env("AIDA_LOGIN_RATE_LIMIT_BURST", "1000")
            .envs(options.gateway_env.iter().cloned());
        procs.push(Proc::spawn("gateway", cmd, dir.path()));

        let mut system = System {
            url,
            tls,
            internal_env,
            orchestrator_addr,
            aggregator_addr,
            orchestrator_ops_url: format!("http://127.0.0.1:{orch_ops_port}"),
            aggregator_ops_url: format!("http://127.0.0.1:{agg_ops_port}"),
            secrets,
            admin_token: String::new(),
            audit_log,
            database_url,
            redis,
            http: reqwest::Client::new(),
            dir,
            procs,
            worker_env: options.worker_env,
            orchestrator_env,
        };
        system.wait_started().await?;
        let password = system.secrets.admin_password.clone();
        system.admin_token = system
            .login(ADMIN, &password)
            .await
            .unwrap_or_else(|e| panic!("the admin cannot log in: {e}"));
        system.http = client_with(&system.admin_token);
        for i in 1..=workers {
            system.add_worker(&format!("worker-{i}"));
        }
        system.wait_workers(workers).await;
        Ok(system)
    }

    /// Waits until the gateway reports the orchestrator healthy; fails at
    /// once, with its log, if a process of the system has exited.
    async fn wait_started(&mut self) -> Result<(), String> {
        let start = tokio::time::Instant::now();
        let http = reqwest::Client::new();
        loop {
            for proc in &mut self.procs {
                if let Ok(Some(status)) = proc.child.try_wait() {
                    let log = std::fs::read_to_string(&proc.log).unwrap_or_default();
                    let tail: String = log
                        .lines()
                        .filter(|l| !l.starts_with(' '))
                        .take(20)
                        .collect::<Vec<_>>()
                        .join("\n");
                    return Err(format!(
                        "{} exited ({status}) while starting:\n{tail}",
                        proc.name
                    ));
                }
            }
            let healthy = http
                .get(format!("{}/api/health", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if healthy {
                return Ok(());
            }
            if start.elapsed() > crate::DEADLINE {
                return Err("the gateway did not report the orchestrator healthy in time".into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Logs in over REST; the access token, or the API's error.
    pub async fn login(&self, username: &str, password: &str) -> Result<String, String> {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/auth/login", self.url))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("{status}: {body}"));
        }
        body["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no access_token in {body}"))
    }

    /// Creates a user with a known password through the API (as the
    /// admin), for a test that signs in as them (a browser, say).
    pub async fn add_user(&self, name: &str, role: &str, password: &str) {
        let (status, body) = self
            .post(
                "/api/users",
                &json!({ "name": name, "role": role, "password": password }),
            )
            .await;
        assert_eq!(status, 201, "creating user {name}: {body}");
    }

    /// Creates a user through the API (as the admin) and returns a client
    /// logged in as them.
    pub async fn user(&self, name: &str, role: &str) -> reqwest::Client {
        let password = format!("Pw-{name}-{}!", aida_core::secret::random_hex(6));
        self.add_user(name, role, &password).await;
        let token = self
            .login(name, &password)
            .await
            .expect("the new user logs in");
        client_with(&token)
    }

    /// Starts a process of the test's own as part of this system: stopped
    /// with it, its log `<name>.log` beside the others.
    pub fn spawn(&mut self, name: &str, cmd: Command) {
        self.procs.push(Proc::spawn(name, cmd, self.dir.path()));
    }

    /// Starts one more worker process with the given id.
    pub fn add_worker(&mut self, worker_id: &str) {
        let cmd = self.worker_command(worker_id);
        self.procs
            .push(Proc::spawn(worker_id, cmd, self.dir.path()));
    }

    /// The command that starts worker `worker_id` of this system, with its
    /// credential, roots and worktree root, for a test to start itself.
    pub fn worker_command(&self, worker_id: &str) -> Command {
        let mut cmd = Command::new(bin("aida-worker"));
        cmd.env("WORKER_ID", worker_id)
            .env("ORCHESTRATOR_ADDR", &self.orchestrator_addr)
            .envs(self.internal_env.iter().cloned())
            .env("AIDA_REPO_ROOTS", repo_roots())
            .env("WORKER_LISTEN_ADDR", "127.0.0.1:0")
            .env(
                "WORKTREE_ROOT",
                self.dir.path().join("worktrees").join(worker_id),
            )
            .envs(self.worker_env.iter().cloned());
        cmd
    }

    pub async fn wait_healthy(&self) {
        eventually("the gateway to report the orchestrator healthy", || async {
            let resp = reqwest::Client::new()
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

    /// PATCHes JSON and returns the status and the JSON body.
    pub async fn patch(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .patch(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .expect("PATCH");
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

    /// Opens the SSE stream `path` (as the admin); fails the test unless
    /// it answers 200.
    pub async fn open_sse(&self, path: &str) -> SseStream {
        self.open_sse_after(path, None).await
    }

    /// [`System::open_sse`], resuming after `last_event_id` (sent as the
    /// `Last-Event-ID` header) if given.
    pub async fn open_sse_after(&self, path: &str, last_event_id: Option<&str>) -> SseStream {
        let mut req = self
            .http
            .get(format!("{}{path}", self.url))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.expect("SSE request");
        assert_eq!(resp.status().as_u16(), 200, "SSE status");
        Box::pin(eventsource_stream::EventStream::new(resp.bytes_stream()))
    }

    /// A task's whole stored history, read a page at a time as a client
    /// would (`GET /api/tasks/{id}/events?after=&limit=`).
    pub async fn event_history(&self, task: &str) -> Vec<Value> {
        let mut all: Vec<Value> = Vec::new();
        loop {
            let after = all.last().map_or(0, |e| e["id"].as_i64().unwrap());
            let page = self
                .get(&format!(
                    "/api/tasks/{task}/events?after={after}&limit=1000"
                ))
                .await
                .unwrap();
            let page = page["events"].as_array().unwrap();
            if page.is_empty() {
                return all;
            }
            all.extend(page.iter().cloned());
        }
    }

    /// Reads the task's SSE stream, resuming after `last_event_id` (sent as
    /// the `Last-Event-ID` header) if given, until `count` events arrived or
    /// the server ended the stream; returns the SSE ids and the events.
    pub async fn read_task_sse(
        &self,
        task: &str,
        last_event_id: Option<&str>,
        count: Option<usize>,
    ) -> Vec<(String, Value)> {
        let stream = self
            .open_sse_after(&format!("/api/events?task={task}"), last_event_id)
            .await;
        collect_sse(stream, count).await
    }

    /// Reads the SSE stream `path` until the server ends it; returns the
    /// SSE ids and the events' JSON.
    pub async fn read_sse(&self, path: &str) -> Vec<(String, Value)> {
        collect_sse(self.open_sse(path).await, None).await
    }

    /// Reads the SSE stream `path` as it comes until an event satisfies
    /// `until`; returns the events read, that one last. Fails the test if
    /// the stream ends first.
    pub async fn read_sse_until(&self, path: &str, until: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut stream = self.open_sse(path).await;
        let mut events = Vec::new();
        let read = async {
            while let Some(item) = stream.next().await {
                let ev = item.expect("SSE event");
                let data: Value = serde_json::from_str(&ev.data).expect("SSE data is JSON");
                let done = until(&data);
                events.push(data);
                if done {
                    return true;
                }
            }
            false
        };
        let found = tokio::time::timeout(crate::DEADLINE, read)
            .await
            .expect("the awaited SSE event did not come in time");
        assert!(
            found,
            "the SSE stream ended before the awaited event: {events:#?}"
        );
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

    /// Every log this system's processes wrote so far, and the audit log:
    /// (file name, text).
    pub fn captured_logs(&self) -> Vec<(String, String)> {
        let mut logs = Vec::new();
        for entry in std::fs::read_dir(self.dir.path()).expect("the system's directory") {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_some_and(|e| e == "log") {
                let text =
                    String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
                logs.push((
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    text,
                ));
            }
        }
        logs
    }

    /// The pid of a process started by this system, by name.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs.iter().find(|p| p.name == name).map(Proc::pid)
    }
}

/// The `command` agent of a task body: argv run directly by the worker.
/// An open SSE stream, as [`System::open_sse`] gives it.
pub type SseStream = std::pin::Pin<
    Box<
        dyn futures::Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

/// Reads `stream` until `count` events arrived (all, when `None`) or the
/// server ended it; fails the test if it stalls.
async fn collect_sse(mut stream: SseStream, count: Option<usize>) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    let read = async {
        while let Some(item) = stream.next().await {
            let ev = item.expect("SSE event");
            let data: Value = serde_json::from_str(&ev.data).expect("SSE data is JSON");
            events.push((ev.id, data));
            if count.is_some_and(|n| events.len() >= n) {
                break;
            }
        }
    };
    tokio::time::timeout(crate::DEADLINE, read)
        .await
        .expect("the SSE stream stalled");
    events
}

pub fn sh_agent(script: &str) -> Value {
    serde_json::json!({ "kind": "command", "command": ["sh", "-c", script] })
}
