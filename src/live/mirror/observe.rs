//! Observe mode: the legacy outcome taken from the client's own result polls as they pass
//! through the proxy, so the legacy system gets no extra load.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;
use tokio::sync::oneshot;

/// Evaluations waiting for their legacy outcome to be observed.
#[derive(Debug, Default)]
pub struct Observers {
    // A std mutex: insert, remove and lookup only, never across an await.
    waiting: Mutex<HashMap<String, oneshot::Sender<(Value, Instant)>>>,
}

/// A registration; dropping it deregisters.
pub struct Observation<'a> {
    observers: &'a Observers,
    eval_id: String,
    /// Fires with the final document and when it was seen.
    pub receiver: oneshot::Receiver<(Value, Instant)>,
}

impl Drop for Observation<'_> {
    fn drop(&mut self) {
        self.observers.lock().remove(&self.eval_id);
    }
}

impl Observers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<(Value, Instant)>>> {
        self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts waiting for `eval_id`'s final document.
    pub fn register(&self, eval_id: &str) -> Observation<'_> {
        let (sender, receiver) = oneshot::channel();
        self.lock().insert(eval_id.to_string(), sender);
        Observation { observers: self, eval_id: eval_id.to_string(), receiver }
    }

    /// Delivers a final document seen on the client's path; false when nobody waits.
    pub fn deliver(&self, eval_id: &str, document: Value, at: Instant) -> bool {
        match self.lock().remove(eval_id) {
            Some(sender) => sender.send((document, at)).is_ok(),
            None => false,
        }
    }

    /// How many evaluations wait.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
