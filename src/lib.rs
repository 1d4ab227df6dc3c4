//! hephaestus-core: the pure workflow-instance core (`core`) and, behind the
//! default `python` feature, its `PyO3` bindings (`bindings`).

#[cfg(feature = "python")]
mod bindings;
pub mod core;
