//! HTTP handlers, grouped by what they are about.

pub mod context;
pub mod events;
pub mod system;
pub mod tasks;
