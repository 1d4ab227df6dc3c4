//! The pure core of hephaestus: workflow-instance values and their
//! bookkeeping, with no Python, no I/O, no clock and no randomness.
//! Timestamps and ids come in as arguments; classes are stored by name.
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod class_map;
pub mod class_ref;
pub mod context;
pub mod datetime;
pub mod engine;
pub mod error;
pub mod execution_entry;
pub mod format;
pub mod graph;
pub mod history;
pub mod instance;
pub mod journal;
pub mod name;
pub mod render;
pub mod sorted_map;
pub mod status;
pub mod value;
