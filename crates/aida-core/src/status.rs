//! Task and subtask statuses as the REST API, the database and the events
//! spell them: lowercase words.

use aida_proto::common::{SubtaskStatus, TaskStatus};

pub trait StatusLabel: Sized + Copy {
    /// The lowercase word, for example `"queued"`.
    fn label(self) -> &'static str;
    fn from_label(label: &str) -> Option<Self>;
    /// A status that never changes again.
    fn is_terminal(self) -> bool;
}

impl StatusLabel for TaskStatus {
    fn label(self) -> &'static str {
        match self {
            TaskStatus::Unspecified => "unspecified",
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Merging => "merging",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Conflicted => "conflicted",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::Planning => "planning",
            TaskStatus::AwaitingApproval => "awaiting_approval",
        }
    }

    fn from_label(label: &str) -> Option<Self> {
        Some(match label {
            "queued" => TaskStatus::Queued,
            "running" => TaskStatus::Running,
            "merging" => TaskStatus::Merging,
            "succeeded" => TaskStatus::Succeeded,
            "conflicted" => TaskStatus::Conflicted,
            "failed" => TaskStatus::Failed,
            "cancelled" => TaskStatus::Cancelled,
            "planning" => TaskStatus::Planning,
            "awaiting_approval" => TaskStatus::AwaitingApproval,
            _ => return None,
        })
    }

    fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded
                | TaskStatus::Conflicted
                | TaskStatus::Failed
                | TaskStatus::Cancelled
        )
    }
}

impl StatusLabel for SubtaskStatus {
    fn label(self) -> &'static str {
        match self {
            SubtaskStatus::Unspecified => "unspecified",
            SubtaskStatus::Pending => "pending",
            SubtaskStatus::Running => "running",
            SubtaskStatus::Succeeded => "succeeded",
            SubtaskStatus::Failed => "failed",
            SubtaskStatus::Cancelled => "cancelled",
        }
    }

    fn from_label(label: &str) -> Option<Self> {
        Some(match label {
            "pending" => SubtaskStatus::Pending,
            "running" => SubtaskStatus::Running,
            "succeeded" => SubtaskStatus::Succeeded,
            "failed" => SubtaskStatus::Failed,
            "cancelled" => SubtaskStatus::Cancelled,
            _ => return None,
        })
    }

    fn is_terminal(self) -> bool {
        matches!(
            self,
            SubtaskStatus::Succeeded | SubtaskStatus::Failed | SubtaskStatus::Cancelled
        )
    }
}

/// Label of a raw proto enum value, `"unspecified"` for unknown numbers.
pub fn task_label(raw: i32) -> &'static str {
    TaskStatus::try_from(raw)
        .unwrap_or(TaskStatus::Unspecified)
        .label()
}

/// Label of a raw proto enum value, `"unspecified"` for unknown numbers.
pub fn subtask_label(raw: i32) -> &'static str {
    SubtaskStatus::try_from(raw)
        .unwrap_or(SubtaskStatus::Unspecified)
        .label()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        for s in [
            TaskStatus::Queued,
            TaskStatus::Running,
            TaskStatus::Merging,
            TaskStatus::Succeeded,
            TaskStatus::Conflicted,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
            TaskStatus::Planning,
            TaskStatus::AwaitingApproval,
        ] {
            assert_eq!(TaskStatus::from_label(s.label()), Some(s));
        }
        for s in [
            SubtaskStatus::Pending,
            SubtaskStatus::Running,
            SubtaskStatus::Succeeded,
            SubtaskStatus::Failed,
            SubtaskStatus::Cancelled,
        ] {
            assert_eq!(SubtaskStatus::from_label(s.label()), Some(s));
        }
        assert!(TaskStatus::Conflicted.is_terminal());
        assert!(!TaskStatus::Merging.is_terminal());
    }
}
