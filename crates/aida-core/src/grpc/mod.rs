//! Serving a gRPC service the AIDA way: beside it the gRPC health protocol
//! and server reflection (v1 and v1alpha, since grpcurl 1.8 asks for the
//! latter), so `grpcurl -plaintext HOST:PORT list` and `describe` work with
//! no proto files at hand; the service itself only answers callers with the
//! internal credential ([`security`]).

pub mod observe;
pub mod security;

pub use observe::ObserveLayer;
pub use security::{AuthChannel, RequireCredential, Security};

use std::future::Future;

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tower::layer::util::{Identity, Stack};

use crate::health::{Health, Probe};

/// A tonic router whose every call is counted ([`ObserveLayer`]).
pub type Router = tonic::transport::server::Router<Stack<ObserveLayer, Identity>>;

/// A router with health and reflection already in place; add the services
/// themselves with `add_service`, each wrapped in `guard`
/// (`XServer::with_interceptor(service, guard.clone())`), and hand the
/// result to [`serve`].
pub struct GrpcRouter {
    pub router: Router,
    /// The service's health: NOT_SERVING until `health.run(..)` finds the
    /// probe passing.
    pub health: Health,
    /// Refuses calls without the internal credential.
    pub guard: RequireCredential,
}

/// `service_names` are the fully qualified names reflection advertises and
/// health reports on, for example `aida.orchestrator.Orchestrator`; their
/// health follows `probe`. Serves over mutual TLS when `security` has it.
pub async fn router(
    service_names: &[&'static str],
    security: &Security,
    probe: Probe,
) -> anyhow::Result<GrpcRouter> {
    security.require()?;
    crate::metrics::install();
    let reporter = HealthReporter::new();
    let health = Health::new(reporter.clone(), service_names, probe).await;
    let mut v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(aida_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health");
    let mut v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(aida_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health");
    for name in service_names {
        v1 = v1.with_service_name(*name);
        v1alpha = v1alpha.with_service_name(*name);
    }
    let reflection_v1 = v1.build_v1().context("building the reflection service")?;
    let reflection_v1alpha = v1alpha
        .build_v1alpha()
        .context("building the reflection service")?;
    let mut server = Server::builder().layer(ObserveLayer);
    if let Some(tls) = security.server_tls() {
        server = server
            .tls_config(tls)
            .context("setting up mutual TLS (AIDA_TLS_CERT, AIDA_TLS_KEY, AIDA_TLS_CA)")?;
    }
    let router = server
        .add_service(HealthServer::new(HealthService::from_health_reporter(
            reporter,
        )))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    Ok(GrpcRouter {
        router,
        health,
        guard: security.guard(),
    })
}

/// Serves until `shutdown` resolves, then lets in-flight calls finish.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    // Without TCP_NODELAY a small frame written after another one waits for
    // the peer's delayed ACK (40 ms on Linux): every short call would pay it.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("gRPC server failed")
}

/// Metadata on an UNAVAILABLE status naming the part behind the callee
/// that is down (`aggregator`), so the caller's error names it rather than
/// the service it called.
pub const UNAVAILABLE_PART: &str = "aida-unavailable-part";

/// An UNAVAILABLE status naming `part` as what is down.
pub fn unavailable(part: &'static str, message: impl Into<String>) -> tonic::Status {
    let mut status = tonic::Status::unavailable(message);
    status.metadata_mut().insert(
        UNAVAILABLE_PART,
        tonic::metadata::MetadataValue::from_static(part),
    );
    status
}

/// The part an UNAVAILABLE status names, if it names one.
pub fn unavailable_part(status: &tonic::Status) -> Option<&str> {
    status
        .metadata()
        .get(UNAVAILABLE_PART)
        .and_then(|v| v.to_str().ok())
}

/// Maps a status from a peer service to an internal error without losing the
/// peer's message, for logs.
pub fn status_context(status: tonic::Status, what: &str) -> anyhow::Error {
    anyhow::anyhow!("{what}: {} ({:?})", status.message(), status.code())
}
