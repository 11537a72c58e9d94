//! AIDA's gRPC contracts: prost messages and tonic clients and servers
//! generated from `proto/aida/*.proto`, plus the encoded file descriptor set
//! that every server registers for reflection.

pub mod common {
    tonic::include_proto!("aida.common");
}

// Generated code: a oneof with one large variant is fine on the wire.
#[allow(clippy::large_enum_variant)]
pub mod orchestrator {
    tonic::include_proto!("aida.orchestrator");
}

pub mod worker {
    tonic::include_proto!("aida.worker");
}

pub mod aggregator {
    tonic::include_proto!("aida.aggregator");
}

pub mod auth {
    tonic::include_proto!("aida.auth");
}

mod redacted;

/// Every AIDA proto file, encoded, for `tonic_reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("aida_descriptor");

/// Fully qualified gRPC service names, as reflection and health report them.
pub mod service_names {
    pub const ORCHESTRATOR: &str = "aida.orchestrator.Orchestrator";
    pub const WORKER: &str = "aida.worker.Worker";
    pub const AGGREGATOR: &str = "aida.aggregator.Aggregator";
    pub const AUTH: &str = "aida.auth.Auth";
}
