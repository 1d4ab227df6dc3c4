//! The lifecycle status of an instance (Elixir: the `status` field of
//! `Hephaestus.Core.Instance`, an atom).

use std::fmt;
use std::str::FromStr;

use crate::core::error::CoreError;

/// Where an instance is in its life. Crosses the Python boundary as its
/// lowercase name (see [`Status::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Created, not yet advanced.
    Pending,
    /// Has runnable steps.
    Running,
    /// Every active step waits for an event or a timer.
    Waiting,
    /// Finished normally. Terminal.
    Completed,
    /// Failed or cancelled. Terminal.
    Failed,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Running,
        Status::Waiting,
        Status::Completed,
        Status::Failed,
    ];

    /// The status's name: `"pending"`, `"running"`, ...
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Waiting => "waiting",
            Status::Completed => "completed",
            Status::Failed => "failed",
        }
    }

    /// Whether the instance can change no more (`Completed` or `Failed`).
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                CoreError::invalid(
                    "status",
                    format!(
                        "unknown status {s:?}; expected one of pending, running, waiting, completed, failed"
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>(), Ok(status));
        }
        assert!("done".parse::<Status>().is_err());
    }

    #[test]
    fn only_completed_and_failed_are_terminal() {
        let terminal: Vec<_> = Status::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(terminal, [Status::Completed, Status::Failed]);
    }
}
