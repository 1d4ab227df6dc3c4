//! `PyO3` glue: converts arguments, calls the core, maps errors, and calls
//! the Python code (steps, routes) the core asks about. Nothing here decides
//! workflow semantics.

mod context;
mod convert;
mod engine;
mod errors;
mod execution_entry;
mod graph;
mod instance;
mod registry;
mod status;

use pyo3::prelude::*;
use pyo3::types::PyAny;

/// The step key of a class: its `step_key` attribute if set, else its name
/// in snake case (`ValidateOrder` → `validate_order`).
#[pyfunction]
fn step_key(step: &Bound<'_, PyAny>) -> PyResult<String> {
    registry::info(step, "step").map(|i| i.key.to_string())
}

/// The native core of hephaestus. Import from `hephaestus`, not from here.
#[pymodule]
mod _core {
    #[pymodule_export]
    use super::context::PyContext;
    #[pymodule_export]
    use super::engine::{
        activate_transitions, advance, check_completion, check_step, fail, resume_record,
        resume_step, run, runnable, PyRun,
    };
    #[pymodule_export]
    use super::errors::{_core_error_variants, _raise_core_error};
    #[pymodule_export]
    use super::execution_entry::PyExecutionEntry;
    #[pymodule_export]
    use super::graph::PyWorkflowGraph;
    #[pymodule_export]
    use super::instance::{_unpickle_instance, PyInstance};
    #[pymodule_export]
    use super::status::_status_values;
    #[pymodule_export]
    use super::step_key;

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add("FORMAT_VERSION", crate::core::format::FORMAT_VERSION)?;
        m.add("MAX_DEPTH", crate::core::value::MAX_DEPTH)?;
        Ok(())
    }
}
