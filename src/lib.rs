//! hephaestus-core: the pure workflow-instance core (`core`) and, behind the
//! default `python` feature, its `PyO3` bindings (`bindings`).

#[cfg(feature = "python")]
mod bindings;

#[cfg(feature = "python")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub mod core;
