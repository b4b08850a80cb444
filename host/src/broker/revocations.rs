//! Telling this node's broker what stopped working: the store's revocation log, followed by revision, sent as kicks on `$CONTROL/psk-edge/v1`.
//!
//! Every node follows the whole log (changes made through any node, announced by
//! NOTIFY or found by the periodic resync), so a broker attached to one node hears of
//! a rotation made through another. A broker the node lost touch with may have missed
//! kicks: on every (re)connection it is told to forget every password it verified
//! (`flush`) and the kicks since the last acknowledged one are sent again.

use std::sync::Arc;
use std::time::Duration;

use broker_policy::Control;
use tokio_util::sync::CancellationToken;

use super::client::BrokerClient;
use crate::store::follow::Changes;
use crate::store::{Counter, Store};

/// Usernames per control message: small enough for any broker's packet limit.
const BATCH: i64 = 500;
const RETRY: Duration = Duration::from_secs(1);
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Sends the log to the broker until `shutdown`. `changes.credentials` is woken by
/// local revocations and by the follower of other nodes' changes.
pub async fn run(
    store: Store,
    client: Arc<BrokerClient>,
    changes: Arc<Changes>,
    shutdown: CancellationToken,
) {
    let mut connections = client.connections();
    // What happened before this node started is covered by the flush on connecting.
    let mut delivered = loop {
        match store.revision(Counter::Credentials).await {
            Ok(revision) => break revision,
            Err(e) => {
                tracing::warn!("cannot read the revocation log yet, retrying: {e}");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    };
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first connection may have come before this task subscribed.
    let mut flush = true;
    let mut pending = true;
    loop {
        if !pending {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = changes.credentials.notified() => {}
                changed = connections.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    flush = true;
                }
                _ = prune.tick() => {
                    match store.prune_revocations().await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(pruned = n, "old revocations pruned"),
                        Err(e) => tracing::debug!("revocations not pruned: {e}"),
                    }
                    continue;
                }
            }
        }
        pending = false;
        let sent = async {
            if flush && client.is_connected() {
                client
                    .control(&Control {
                        kick: Vec::new(),
                        flush: true,
                    })
                    .await?;
                flush = false;
            }
            loop {
                let (kick, at) = store.revocations_since(delivered, BATCH).await?;
                if kick.is_empty() {
                    return Ok::<_, anyhow::Error>(());
                }
                let count = kick.len();
                client.control(&Control { kick, flush: false }).await?;
                tracing::debug!(count, revision = at, "revocations sent to the broker");
                delivered = at;
            }
        }
        .await;
        if let Err(e) = sent {
            tracing::debug!("revocations not sent yet, retrying: {e:#}");
            pending = true;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RETRY) => {}
                _ = connections.changed() => flush = true,
            }
        }
    }
}
