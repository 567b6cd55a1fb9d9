//! What can go wrong between shadowdiff and Redis, shared by the broker client
//! ([`super::broker`]) and the result reader ([`super::results`]).

use std::time::Duration;

use super::redis_target::TargetError;
use super::WireError;

/// Names the Redis that failed in a [`BrokerError`]: the one holding the task queues.
pub const BROKER: &str = "broker";
/// Names the Redis that failed in a [`BrokerError`]: the one holding task results.
pub const RESULT_BACKEND: &str = "result backend";

/// How long opening a connection to Redis may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// What went wrong talking to Redis, or with what was read from it.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A URL or an option in the config cannot be used (the URL itself is left out: it
    /// may hold a password).
    #[error("invalid {which} URL or options: {reason}")]
    BadUrl {
        /// [`BROKER`] or [`RESULT_BACKEND`].
        which: &'static str,
        /// What is wrong.
        reason: String,
    },

    /// Redis could not be reached, or refused a command.
    #[error("{which} unavailable ({action}): {source}")]
    Unavailable {
        /// [`BROKER`] or [`RESULT_BACKEND`].
        which: &'static str,
        /// The command and key, e.g. `LPUSH "shadow"`.
        action: String,
        /// The client's error.
        source: redis::RedisError,
    },

    /// A message was refused before it was sent, because a worker would crash on it,
    /// wedge on it or lose it (reference §3); nothing was pushed.
    #[error("refused to send an invalid message: {0}")]
    InvalidMessage(#[source] WireError),

    /// A task with this id is already being waited for through this client; a second
    /// message would share its result key, so it was not pushed.
    #[error("task {task_id} is already being waited for")]
    AlreadyWaiting {
        /// The task id.
        task_id: String,
    },

    /// The result backend holds a value for the task that is not a Celery result.
    #[error("unreadable result for task {task_id}: {source}")]
    BadResult {
        /// The task id.
        task_id: String,
        /// What is wrong with the value.
        source: WireError,
    },
}

impl BrokerError {
    /// The error of a Redis that could not be opened or connected to.
    pub(super) fn from_target(which: &'static str, error: TargetError) -> Self {
        match error {
            TargetError::Invalid(reason) => BrokerError::BadUrl { which, reason },
            TargetError::Connect { action, source } => BrokerError::Unavailable { which, action, source },
        }
    }

    /// An [`Unavailable`](BrokerError::Unavailable) error builder for `which` and `action`.
    pub(super) fn unavailable(which: &'static str, action: String) -> impl FnOnce(redis::RedisError) -> Self {
        move |source| BrokerError::Unavailable { which, action, source }
    }
}
