//! Pretrained weights: torchvision key mapping and strict loading reports.

pub mod keymap;
pub mod report;

pub use report::{LoadMismatch, LoadReport};
