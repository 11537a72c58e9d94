//! What every AIDA service shares: validated ids and names, task and subtask
//! statuses, the event model, gRPC serving with health and reflection,
//! configuration loading, telemetry and shutdown signals.
//!
//! Nothing here talks to a database, Redis or git repositories beyond name
//! validation: those belong to the service that owns them.

pub mod auth;
pub mod config;
pub mod event;
pub mod grpc;
pub mod health;
pub mod ids;
pub mod metrics;
pub mod ops;
pub mod secret;
pub mod shutdown;
pub mod sparse;
pub mod status;
pub mod telemetry;
pub mod time;
pub mod token;

pub use aida_proto as proto;
