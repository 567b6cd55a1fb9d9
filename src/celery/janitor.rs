//! The janitor of late results: a task given up on (lost) or revoked may still get a
//! result written by a late worker, a day-long key nobody reads. [`super::results::Hub`]
//! keeps such tasks' result channels subscribed for the whole watch; on each publish, and
//! once when the watch begins and when it ends, the janitor reads the key and deletes it
//! if it holds a final state (or something unreadable). Its IO: `GET` and `DEL` on the
//! result backend.

use std::sync::Weak;
use std::time::Duration;

use redis::AsyncCommands as _;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::redis_target::RedisLink;
use super::results::Hub;
use super::{parse_result, result_key};

/// How often the janitor ends the watches whose time is up.
const JANITOR_TICK: Duration = Duration::from_secs(1);

/// The janitor: for each late-watched task whose channel carried a value (or whose watch
/// began or ended), reads the key and deletes it if it holds a final state or something
/// unreadable. A watch ends at its time or when its key is deleted.
pub(super) async fn run(hub: Weak<Hub>, results: RedisLink, mut ids: mpsc::Receiver<String>) {
    let mut tick = tokio::time::interval(JANITOR_TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let (ids_to_check, ending) = tokio::select! {
            id = ids.recv() => match id {
                Some(id) => (vec![id], false),
                None => return,
            },
            _ = tick.tick() => match hub.upgrade() {
                Some(hub) => (hub.expired_late(Instant::now()), true),
                None => return,
            },
        };
        for task_id in ids_to_check {
            clean_late(&results, &task_id).await;
            let Some(hub) = hub.upgrade() else { return };
            // A watch lasts its whole time even after a deletion: a worker writes REVOKED
            // twice (on the revoke, then when it discards the message).
            if ending {
                hub.unwatch_late(&task_id);
            }
        }
    }
}

/// Deletes a late task's result key if it holds a final state (or an unreadable value);
/// returns whether it deleted one.
async fn clean_late(results: &RedisLink, task_id: &str) -> bool {
    let key = result_key(task_id);
    let mut connection = results.clone();
    let value: Option<Vec<u8>> = match connection.get(&key).await {
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
    match connection.del::<_, u64>(&key).await {
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
