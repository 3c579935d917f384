//! Keeping Redis clients connected, and a cluster client's slot map whole.
//!
//! A client whose first connection fails for a reason other than the network (a cluster that
//! is still forming answers with no slot map) ends its connection task, reconnect policy or
//! not, and would stay down for the life of the process. [`keep_connecting`] starts the task
//! again, with backoff, until the client quits.
//!
//! A cluster client routes each command by the slot map it read from the cluster. If it read
//! the map while the cluster was still forming or recovering (every node restarted, slots not
//! yet assigned), the map has holes, and the client keeps it: commands for those slots fail
//! ("missing cluster routing state") until something makes it read the map again, which
//! nothing does while no command gets as far as a `MOVED`. So every cluster client is watched:
//! whenever its map does not cover all 16,384 slots it reads the map again, every second.

use std::time::Duration;

use fred::{interfaces::ClusterInterface, prelude::ClientLike};
use tokio_util::sync::CancellationToken;

/// How often a client's slot map is checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long one reading of the slot map may take.
const SYNC_LIMIT: Duration = Duration::from_secs(5);
/// First and longest wait before starting a connection task that ended again.
const RESTART_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// Connects `client` (a clone of it), and connects it again whenever its connection task ends
/// with an error, until it quits or `shutdown`.
pub fn keep_connecting<C>(client: &C, shutdown: CancellationToken)
where
    C: ClientLike + Clone + Send + Sync + 'static,
{
    let client = client.clone();
    tokio::spawn(async move {
        let (mut backoff, longest) = RESTART_BACKOFF;
        loop {
            let task = client.connect();
            let ended = tokio::select! {
                () = shutdown.cancelled() => return,
                ended = task => ended,
            };
            match ended {
                // It quit.
                Ok(Ok(())) => return,
                Ok(Err(error)) => {
                    tracing::warn!(%error, ?backoff, "redis client stopped connecting; starting it again")
                }
                Err(error) => tracing::warn!(%error, ?backoff, "redis connection task failed; starting it again"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(longest);
        }
    });
}
/// Slots in a Redis Cluster.
const SLOTS: usize = 16_384;

/// Whether `client`'s slot map assigns every slot to a primary.
pub fn covers_every_slot(client: &impl ClusterInterface) -> bool {
    client.cached_cluster_state().is_some_and(|state| {
        let covered: usize = state.slots().iter().map(|range| usize::from(range.end - range.start) + 1).sum();
        covered >= SLOTS
    })
}

/// Spawns the watch on `client` (a clone of it) until `shutdown`.
pub fn keep_whole<C>(client: &C, shutdown: CancellationToken)
where
    C: ClusterInterface + ClientLike + Clone + Send + Sync + 'static,
{
    let client = client.clone();
    tokio::spawn(async move {
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = check.tick() => {}
            }
            if !covers_every_slot(&client) {
                match tokio::time::timeout(SYNC_LIMIT, client.sync_cluster()).await {
                    Ok(Ok(())) if covers_every_slot(&client) => tracing::info!("redis cluster slot map complete again"),
                    Ok(Ok(())) => tracing::warn!("redis cluster does not serve every slot yet"),
                    Ok(Err(error)) => tracing::warn!(%error, "redis cluster slot map not read"),
                    Err(_) => tracing::warn!("redis cluster slot map not read in time"),
                }
            }
        }
    });
}
