//! The integration tests, in one binary (one link step) with a module per area.

mod batchnorm;
mod common;
mod data;
mod devices;
mod download;
mod freeze;
mod http;
mod model;
mod recipe;
mod train;
mod viz;
mod weights;
