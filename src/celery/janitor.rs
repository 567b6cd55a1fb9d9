//! The janitor of late results: a task given up on (lost) or revoked may still get a
//! result written by a late worker, a day-long key nobody reads. [`super::results::Hub`]
//! keeps such tasks' result channels subscribed for the whole watch; on each publish, and
//! once when the watch begins and when it ends, the janitor reads the key and deletes it
//! if it holds a final state (or something unreadable). Its IO: `GET` and `DEL` on the
//! result backend, in batches.

use std::sync::Weak;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::keys::Keys;
use super::results::Hub;
use super::{parse_result, result_key};

/// How often the janitor ends the watches whose time is up.
const JANITOR_TICK: Duration = Duration::from_secs(1);
/// Most keys checked together.
const AT_ONCE: usize = 512;

/// The janitor: for each late-watched task whose channel carried a value (or whose watch
/// began or ended), reads the key and deletes it if it holds a final state or something
/// unreadable. A watch ends at its time or when its key is deleted.
pub(super) async fn run(hub: Weak<Hub>, keys: Keys, mut ids: mpsc::Receiver<String>) {
    let mut tick = tokio::time::interval(JANITOR_TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut arrived = Vec::with_capacity(AT_ONCE);
    loop {
        let (ids_to_check, ending) = tokio::select! {
            count = ids.recv_many(&mut arrived, AT_ONCE) => match count {
                0 => return,
                _ => (std::mem::take(&mut arrived), false),
            },
            _ = tick.tick() => match hub.upgrade() {
                Some(hub) => (hub.expired_late(Instant::now()), true),
                None => return,
            },
        };
        // Checked together: their `GET`s, then their `DEL`s, share pipelines
        // (`src/celery/keys.rs`) instead of a round trip each.
        for group in ids_to_check.chunks(AT_ONCE) {
            join_all(group.iter().map(|task_id| clean_late(&keys, task_id))).await;
            let Some(hub) = hub.upgrade() else { return };
            // A watch lasts its whole time even after a deletion: a worker writes REVOKED
            // twice (on the revoke, then when it discards the message).
            if ending {
                for task_id in group {
                    hub.unwatch_late(task_id);
                }
            }
        }
    }
}

/// Deletes a late task's result key if it holds a final state (or an unreadable value);
/// returns whether it deleted one.
async fn clean_late(keys: &Keys, task_id: &str) -> bool {
    let key = result_key(task_id);
    let value = match keys.get(key.clone()).await {
        Ok(value) => value,
        Err(error) => {
            tracing::debug!(%error, %task_id, "janitor cannot read a late result key");
            return false;
        }
    };
    let Some(value) = value else { return false };
    let final_or_unreadable = parse_result(&value).map_or(true, |result| result.state.is_final());
    if !final_or_unreadable {
        return false;
    }
    match keys.delete(key).await {
        Ok(_) => {
            tracing::debug!(%task_id, "late result key deleted");
            true
        }
        Err(error) => {
            tracing::debug!(%error, %task_id, "janitor cannot delete a late result key");
            false
        }
    }
}
