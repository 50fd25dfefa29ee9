//! The integration tests, in one binary (one link step) with a module per area.

mod alloc;
mod architectures;
mod augment;
mod batchnorm;
mod bundled;
#[cfg(feature = "train")]
mod burn_train;
mod cli;
mod common;
mod data;
mod devices;
mod download;
mod families;
mod faults;
mod features;
mod freeze;
mod http;
mod hub;
mod mix;
mod model;
mod properties;
mod recipe;
mod train;
mod viz;
mod weights;
