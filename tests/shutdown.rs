//! Every service stops on SIGTERM (what `podman stop` sends) while the others
//! are still connected to it, and exits with success.

use aida_tests::System;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_exits_cleanly_on_sigterm_while_connected() {
    let mut system = System::start(1).await;
    // An SSE follower keeps a stream open through the gateway to the
    // orchestrator: neither may wait for it forever.
    let follower = system
        .http
        .get(format!("{}/api/events", system.url))
        .send()
        .await
        .unwrap();
    assert_eq!(follower.status().as_u16(), 200);

    // The orchestrator first: the worker's registration stream and the
    // gateway's progress stream are open against it.
    for name in ["orchestrator", "gateway", "worker-1", "aggregator"] {
        let status = system.terminate(name).await;
        assert!(status.success(), "{name} exited with {status}");
    }
    drop(follower);
}
