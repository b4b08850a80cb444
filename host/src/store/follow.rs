//! Following the other nodes' changes: LISTEN/NOTIFY on PostgreSQL, with a periodic resync as the safety net.
//!
//! A notification only says "revision N of this counter exists"; what changed is always
//! read from the store by revision. So a lost notification, a dropped connection or a
//! node that starts late costs latency, never correctness: the next resync finds it.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{CHANNEL, Counter, Store, redact};

/// How often a node resyncs even without a notification.
pub const RESYNC_EVERY: Duration = Duration::from_secs(10);
/// Wait between attempts to reach a database that is down.
const RETRY: Duration = Duration::from_secs(1);

/// Wakes whoever applies one counter's changes; wakes coalesce while a sync runs.
#[derive(Default)]
pub struct Changes {
    /// Woken on a change to the SIM table.
    pub psk: Notify,
    /// Woken on a change to tenant activations or limits.
    pub functions: Notify,
    /// Woken when a broker credential stops working.
    pub credentials: Notify,
}

impl Changes {
    /// Wakes whoever follows `counter`; called after a local change, and when another
    /// node's change is heard of.
    pub fn announce(&self, counter: Counter) {
        match counter {
            Counter::Psk => self.psk.notify_one(),
            Counter::Functions => self.functions.notify_one(),
            Counter::Credentials => self.credentials.notify_one(),
        }
    }

    fn announce_all(&self) {
        self.announce(Counter::Psk);
        self.announce(Counter::Functions);
        self.announce(Counter::Credentials);
    }
}

fn parse(payload: &str) -> Option<Counter> {
    match payload.split_once(':')?.0 {
        "psk" => Some(Counter::Psk),
        "fn" => Some(Counter::Functions),
        "cred" => Some(Counter::Credentials),
        _ => None,
    }
}

/// Wakes `changes` for every announced change until `shutdown`. SQLite has one node
/// per file, so there it returns at once.
pub async fn listen(store: Store, changes: Arc<Changes>, shutdown: CancellationToken) {
    let Some(url) = store.url.clone() else {
        return;
    };
    let mut resync = tokio::time::interval(RESYNC_EVERY);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut listener: Option<PgListener> = None;
    let mut down_since_logged = false;
    loop {
        let Some(active) = listener.as_mut() else {
            let connected = async {
                let mut l = PgListener::connect(&url).await?;
                l.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>(l)
            };
            match connected.await {
                Ok(l) => {
                    if down_since_logged {
                        tracing::info!("following the database again");
                        down_since_logged = false;
                    }
                    listener = Some(l);
                    // Whatever happened while not listening is found by revision.
                    changes.announce_all();
                }
                Err(e) => {
                    if !down_since_logged {
                        tracing::warn!(
                            database = redact(&url),
                            "cannot listen for changes, retrying: {e}"
                        );
                        down_since_logged = true;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(RETRY) => {}
                    }
                }
            }
            continue;
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = resync.tick() => changes.announce_all(),
            received = active.try_recv() => match received {
                Ok(Some(notification)) => {
                    if let Some(counter) = parse(notification.payload()) {
                        changes.announce(counter);
                    }
                }
                // The connection dropped; the listener reconnects on its next call,
                // and notifications sent meanwhile are lost, so resync by revision.
                Ok(None) => changes.announce_all(),
                Err(e) => {
                    if !down_since_logged {
                        tracing::warn!("lost the database notifications, reconnecting: {e}");
                        down_since_logged = true;
                    }
                    listener = None;
                }
            },
        }
    }
}

/// Runs `sync` after every wake of `notify` until `shutdown`; a failed sync is retried
/// until the store answers again, so a wake is never lost to an outage.
pub async fn apply<F, Fut>(
    what: &'static str,
    notify: &Notify,
    shutdown: CancellationToken,
    mut sync: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = notify.notified() => {}
        }
        let mut failing = false;
        while let Err(e) = sync().await {
            if !failing {
                tracing::warn!("cannot follow {what} changes yet, retrying: {e:#}");
                failing = true;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RETRY) => {}
            }
        }
        if failing {
            tracing::info!("{what} changes followed again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_the_counter_only() {
        assert_eq!(parse("psk:42"), Some(Counter::Psk));
        assert_eq!(parse("fn:7"), Some(Counter::Functions));
        assert_eq!(parse("cred:3"), Some(Counter::Credentials));
        assert_eq!(parse("psk"), None);
        assert_eq!(parse("other:1"), None);
    }
}
