//! The one error type of the pure core.
//!
//! The Elixir original mixes `{:error, reason}` tuples, bare values and raised
//! exceptions; here every fallible core operation returns `Result<_, CoreError>`,
//! and the bindings map each variant to exactly one Python exception class.

use std::fmt;

use crate::core::graph::GraphProblem;
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
    /// An engine operation named a step that is not part of the workflow
    /// (put into an instance by raw field changes or a foreign document).
    StepNotInWorkflow {
        /// The operation, e.g. `"runnable"`.
        operation: &'static str,
        /// The step's class reference.
        step: String,
        /// The workflow's name.
        workflow: String,
    },
    /// A dynamic route chose a target it does not declare.
    UndeclaredTarget {
        /// The step whose event the route handles.
        from: String,
        /// The event.
        event: String,
        /// The target chosen.
        target: String,
        /// The targets the route declares, comma-separated.
        declared: String,
    },
    /// A dynamic route that chooses one target chose several.
    TooManyTargets {
        /// The step whose event the route handles.
        from: String,
        /// The event.
        event: String,
        /// The targets chosen, comma-separated.
        chosen: String,
    },
    /// A dynamic route chose no target at all.
    NoTarget {
        /// The step whose event the route handles.
        from: String,
        /// The event.
        event: String,
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
    /// A class named in serialized data could not be resolved to a class
    /// of the right kind.
    UnresolvedClass {
        /// The name, `"module:QualName"`.
        name: String,
        /// Why, and how to make it loadable.
        reason: String,
    },
    /// A workflow definition breaks the rules; every problem at once.
    Definition {
        /// The workflow's name.
        workflow: String,
        /// What is wrong, one entry per problem.
        problems: Vec<GraphProblem>,
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
            Self::StepNotInWorkflow {
                operation,
                step,
                workflow,
            } => write!(
                f,
                "{operation}: step {step} is not a step of the workflow {workflow}"
            ),
            Self::UndeclaredTarget {
                from,
                event,
                target,
                declared,
            } => write!(
                f,
                "the route for {event:?} from {from} chose {target}, which it does not declare; \
                 it may choose {declared}"
            ),
            Self::TooManyTargets {
                from,
                event,
                chosen,
            } => write!(
                f,
                "the route for {event:?} from {from} chose {chosen}, but it may choose only one \
                 target (declare it with many=True to take several branches)"
            ),
            Self::NoTarget { from, event } => {
                write!(f, "the route for {event:?} from {from} chose no target")
            }
            Self::InvalidField { field, reason } => write!(f, "{field}: {reason}"),
            Self::Serialization { reason } => write!(f, "cannot read instance: {reason}"),
            Self::UnresolvedClass { name, reason } => {
                write!(f, "cannot read instance: cannot resolve class {name:?}: {reason}")
            }
            Self::Definition { workflow, problems } => {
                write!(f, "{workflow} is not a valid workflow:")?;
                for problem in problems {
                    write!(f, "\n  - {problem}")?;
                }
                Ok(())
            }
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
