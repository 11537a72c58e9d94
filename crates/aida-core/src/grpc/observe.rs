//! Traces, counts and times every call a gRPC server answers. Each call
//! runs in a server span (a child of the caller's, from the `traceparent`
//! metadata; its trace id in the `trace_id` field for the logs), and counts
//! in
//! `aida_grpc_requests_total{service, method, code}` and
//! `aida_grpc_request_duration_seconds{service, method}`. The code is the
//! call's final status, read from the response head (an error answered at
//! once) or from the trailers at the end of its body; a body dropped before
//! its end counts as CANCELLED. Paths that name no method of AIDA's
//! protocols (or of health and reflection) count as `unknown`, so a caller
//! cannot grow the label set.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame};
use prost::Message;
use tower::{Layer, Service};

use crate::metrics::names;

/// The layer to put on a tonic `Server`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObserveLayer;

impl<S> Layer<S> for ObserveLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metered { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Metered<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (service, method) = labels(request.uri().path());
        let start = Instant::now();
        let span = tracing::info_span!(
            "grpc",
            otel.name = %format!("{service}/{method}"),
            otel.kind = "server",
            rpc.service = service,
            rpc.method = method,
            trace_id = tracing::field::Empty,
        );
        crate::telemetry::adopt_headers(&span, request.headers());
        let answer = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let call = async move {
            let response = answer.await?;
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok());
            Ok(response.map(|inner| MeteredBody {
                inner,
                call: Some(Call {
                    service,
                    method,
                    start,
                    code,
                }),
            }))
        };
        Box::pin(tracing::Instrument::instrument(call, span))
    }
}

struct Call {
    service: &'static str,
    method: &'static str,
    start: Instant,
    code: Option<i32>,
}

impl Call {
    fn record(self, code: &'static str) {
        metrics::counter!(names::GRPC_REQUESTS,
            "service" => self.service, "method" => self.method, "code" => code)
        .increment(1);
        metrics::histogram!(names::GRPC_REQUEST_DURATION,
            "service" => self.service, "method" => self.method)
        .record(self.start.elapsed().as_secs_f64());
    }
}

/// A response body that records its call when it ends (or is dropped).
pub struct MeteredBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            let code = call.code.map(code_name).unwrap_or("CANCELLED");
            call.record(code);
        }
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = trailers
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok());
                    if let Some(call) = self.call.take() {
                        let code = code.or(call.code).map(code_name).unwrap_or("UNKNOWN");
                        call.record(code);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = self.call.take() {
                    call.record("UNKNOWN");
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = self.call.take() {
                    let code = call.code.map(code_name).unwrap_or("UNKNOWN");
                    call.record(code);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The canonical name of a gRPC status code.
fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// `(service, method)` of a call path when it names a known method.
fn labels(path: &str) -> (&'static str, &'static str) {
    known_methods()
        .get(path)
        .copied()
        .unwrap_or(("unknown", "unknown"))
}

/// Every `/package.Service/Method` of AIDA's protocols, health and
/// reflection, with its labels (leaked once: a fixed, small set).
fn known_methods() -> &'static std::collections::HashMap<&'static str, (&'static str, &'static str)>
{
    static KNOWN: OnceLock<std::collections::HashMap<&'static str, (&'static str, &'static str)>> =
        OnceLock::new();
    KNOWN.get_or_init(|| {
        let mut paths: HashSet<(String, String)> = HashSet::new();
        for encoded in [
            aida_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            let Ok(set) = prost_types::FileDescriptorSet::decode(encoded) else {
                continue;
            };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let service_name = format!("{package}.{}", service.name.unwrap_or_default());
                    for method in service.method {
                        paths.insert((service_name.clone(), method.name.unwrap_or_default()));
                    }
                }
            }
        }
        for service in [
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ] {
            paths.insert((service.to_owned(), "ServerReflectionInfo".to_owned()));
        }
        paths
            .into_iter()
            .map(|(service, method)| {
                let path: &'static str = Box::leak(format!("/{service}/{method}").into_boxed_str());
                let service: &'static str = Box::leak(service.into_boxed_str());
                let method: &'static str = Box::leak(method.into_boxed_str());
                (path, (service, method))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_methods_get_their_own_labels() {
        assert_eq!(
            labels("/aida.orchestrator.Orchestrator/CreateTask"),
            ("aida.orchestrator.Orchestrator", "CreateTask")
        );
        assert_eq!(
            labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        assert_eq!(
            labels("/aida.orchestrator.Orchestrator/Whatever123"),
            ("unknown", "unknown")
        );
        assert_eq!(code_name(14), "UNAVAILABLE");
    }
}
