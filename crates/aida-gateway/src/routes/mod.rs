//! HTTP handlers, grouped by what they are about.

pub mod events;
pub mod system;
pub mod tasks;
