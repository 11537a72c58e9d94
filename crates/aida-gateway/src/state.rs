//! What every handler shares: the gRPC clients to the orchestrator and a
//! signal that the server is shutting down, so endless SSE streams end and
//! graceful shutdown does not wait on them forever.

use std::sync::Arc;
use std::time::Duration;

use aida_proto::orchestrator::orchestrator_client::OrchestratorClient;
use anyhow::Context;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;

#[derive(Clone)]
pub struct AppState {
    channel: Channel,
    /// Flips to true when the server starts shutting down.
    closing: watch::Receiver<bool>,
    close: Arc<watch::Sender<bool>>,
}

impl AppState {
    /// A state over an existing channel to the orchestrator.
    pub fn new(channel: Channel) -> Self {
        let (close, closing) = watch::channel(false);
        AppState {
            channel,
            closing,
            close: Arc::new(close),
        }
    }

    /// Connects on first use, so the gateway starts (and answers health
    /// checks with 503) while the orchestrator is still coming up.
    /// `orchestrator_addr` is `host:port` or a `http://` URL.
    pub fn connect_lazy(orchestrator_addr: &str) -> anyhow::Result<Self> {
        let url = aida_core::config::grpc_endpoint(orchestrator_addr);
        let endpoint = Endpoint::from_shared(url.clone())
            .with_context(|| format!("invalid orchestrator address {url:?}"))?
            .connect_timeout(Duration::from_secs(5));
        Ok(Self::new(endpoint.connect_lazy()))
    }

    pub fn orchestrator(&self) -> OrchestratorClient<Channel> {
        OrchestratorClient::new(self.channel.clone())
    }

    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel.clone())
    }

    /// Ends open event streams; called when graceful shutdown begins.
    pub fn begin_shutdown(&self) {
        let _ = self.close.send(true);
    }

    /// Resolves once [`AppState::begin_shutdown`] was called.
    pub async fn closed(&self) {
        let mut closing = self.closing.clone();
        let _ = closing.wait_for(|closing| *closing).await;
    }
}
