//! The one error type of the pure core.
//!
//! The Elixir original mixes `{:error, reason}` tuples, bare values and raised
//! exceptions; here every fallible core operation returns `Result<_, CoreError>`,
//! and the bindings map each variant to exactly one Python exception class.

use std::fmt;

use crate::core::status::Status;

/// Everything that can go wrong in the core, with the data a caller needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreError {
    /// A bookkeeping operation was asked of a step in the wrong state,
    /// e.g. completing a step that is not active.
    StepState {
        /// The operation, e.g. `"complete_step"`.
        operation: &'static str,
        /// The step's class reference (`"module:QualName"`).
        step: String,
        /// What the step was: `"active"`, `"waiting"`, `"completed"`,
        /// `"skipped"` or `"not active"`.
        actual: &'static str,
        /// What the operation needs, e.g. `"active"`.
        allowed: &'static str,
    },
    /// A change was asked of an instance that is completed or failed.
    Terminal {
        /// The operation, e.g. `"activate_step"`.
        operation: &'static str,
        /// The instance's terminal status.
        status: Status,
    },
    /// A step was given an event it does not declare.
    UndeclaredEvent {
        /// The operation, e.g. `"resume_step"`.
        operation: &'static str,
        /// The step's class reference.
        step: String,
        /// The event given.
        event: String,
        /// The events the step declares, quoted and comma-separated.
        declared: String,
    },
    /// A field was given a value outside its domain (empty id, version 0,
    /// inconsistent step sets, ...).
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// Why the value is wrong.
        reason: String,
    },
    /// Serialized data could not be read.
    Serialization {
        /// What was wrong with the input.
        reason: String,
    },
}

impl CoreError {
    /// Builds an [`CoreError::InvalidField`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field,
            reason: reason.into(),
        }
    }

    /// Builds a [`CoreError::Serialization`].
    pub fn serialization(reason: impl Into<String>) -> Self {
        Self::Serialization {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StepState {
                operation,
                step,
                actual,
                allowed,
            } => write!(
                f,
                "{operation}: step {step} is {actual}, but {operation} needs a step that is {allowed}"
            ),
            Self::Terminal { operation, status } => write!(
                f,
                "{operation}: the instance is {status} and takes no further changes"
            ),
            Self::UndeclaredEvent {
                operation,
                step,
                event,
                declared,
            } => write!(
                f,
                "{operation}: {step} does not declare the event {event:?}; it declares {declared}"
            ),
            Self::InvalidField { field, reason } => write!(f, "{field}: {reason}"),
            Self::Serialization { reason } => write!(f, "cannot read instance: {reason}"),
        }
    }
}

impl std::error::Error for CoreError {}

/// The core's result type.
pub type CoreResult<T> = Result<T, CoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_step_and_states() {
        let err = CoreError::StepState {
            operation: "complete_step",
            step: "shop:Pay".into(),
            actual: "completed",
            allowed: "active",
        };
        assert_eq!(
            err.to_string(),
            "complete_step: step shop:Pay is completed, but complete_step needs a step that is active"
        );
        let err = CoreError::Terminal {
            operation: "activate_step",
            status: Status::Failed,
        };
        assert!(err.to_string().contains("is failed"));
        assert_eq!(
            CoreError::invalid("id", "must not be empty").to_string(),
            "id: must not be empty"
        );
    }
}
