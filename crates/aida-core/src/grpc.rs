//! Serving a gRPC service the AIDA way: beside it the gRPC health protocol
//! and server reflection (v1 and v1alpha, since grpcurl 1.8 asks for the
//! latter), so `grpcurl -plaintext HOST:PORT list` and `describe` work with
//! no proto files at hand.

use std::future::Future;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic::transport::server::Router;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

/// A router with health and reflection already in place; add the service
/// itself with `add_service` and hand the result to [`serve`].
pub struct GrpcRouter {
    pub router: Router,
    pub health: HealthReporter,
}

/// `service_name` is the fully qualified name reflection advertises and
/// health reports on, for example `aida.orchestrator.Orchestrator`.
pub async fn router(service_name: &'static str) -> anyhow::Result<GrpcRouter> {
    let health = HealthReporter::new();
    health
        .set_service_status(service_name, ServingStatus::Serving)
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(aida_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(service_name)
        .with_service_name("grpc.health.v1.Health")
        .build_v1()
        .context("building the reflection service")?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(aida_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(service_name)
        .with_service_name("grpc.health.v1.Health")
        .build_v1alpha()
        .context("building the reflection service")?;
    let router = Server::builder()
        .add_service(HealthServer::new(HealthService::from_health_reporter(
            health.clone(),
        )))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok(GrpcRouter { router, health })
}

/// Serves until `shutdown` resolves, then lets in-flight calls finish.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    router
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .context("gRPC server failed")
}

/// Maps a status from a peer service to an internal error without losing the
/// peer's message, for logs.
pub fn status_context(status: tonic::Status, what: &str) -> anyhow::Error {
    anyhow::anyhow!("{what}: {} ({:?})", status.message(), status.code())
}
