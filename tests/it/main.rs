//! The integration tests, in one binary (one link step) with a module per area.

mod common;
mod devices;
mod freeze;
mod model;
