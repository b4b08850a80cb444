//! Keeps the broker in step with the store: pushes a device when it changes, and reconciles by difference at start and after an outage.
//!
//! The store is the source of truth. Each device row carries a revision (bumped on
//! every credential change) and the revision the broker last acknowledged; dynsec
//! keeps only salted hashes, so this pair is how a reconcile knows what to push
//! without replaying every device.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::broker::{Broker, BrokerError, DeviceAccess};
use crate::secrets::Sealer;
use crate::store::{BrokerDevice, Store};

/// How long a push may wait for the broker before the reconciler takes over.
const PUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before retrying a reconcile that failed while the broker stayed connected.
const RETRY: Duration = Duration::from_secs(5);

pub fn password_context(account_id: &str, device_id: &str) -> Vec<u8> {
    format!("pwd:{account_id}/{device_id}").into_bytes()
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub provisioned: usize,
    pub removed: usize,
    pub unchanged: usize,
}

pub struct Provisioner {
    broker: Arc<dyn Broker>,
    store: Store,
    sealer: Sealer,
    wake: Notify,
    /// One push or reconcile at a time: each reads the store and writes the broker
    /// under it, so an older read can never overwrite a newer one at the broker.
    order: tokio::sync::Mutex<()>,
}

impl Provisioner {
    pub fn new(broker: Arc<dyn Broker>, store: Store, sealer: Sealer) -> Self {
        Provisioner {
            broker,
            store,
            sealer,
            wake: Notify::new(),
            order: tokio::sync::Mutex::new(()),
        }
    }

    /// Pushes the device's current state in the background: the caller (a SIM
    /// waiting for its answer) never waits for the broker. When the push fails the
    /// device stays marked as behind and the reconciler retries.
    pub fn device_changed(self: &Arc<Self>, account_id: &str, device_id: &str) {
        let (this, account_id, device_id) =
            (self.clone(), account_id.to_owned(), device_id.to_owned());
        tokio::spawn(async move { this.push_now(&account_id, &device_id).await });
    }

    async fn push_now(&self, account_id: &str, device_id: &str) {
        let result = tokio::time::timeout(PUSH_TIMEOUT, self.push(account_id, device_id)).await;
        let failure = match result {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer in time".to_owned(),
        };
        tracing::warn!(
            account = account_id,
            device_id,
            "broker not updated now, will retry: {failure}"
        );
        self.wake.notify_one();
    }

    async fn push(&self, account_id: &str, device_id: &str) -> anyhow::Result<()> {
        let _order = self.order.lock().await;
        let Some(device) = self.store.broker_device(account_id, device_id).await? else {
            return Ok(());
        };
        self.provision(&device).await
    }

    async fn provision(&self, device: &BrokerDevice) -> anyhow::Result<()> {
        let password = self.sealer.open(
            &password_context(&device.account_id, &device.device_id),
            &device.sealed_password,
        )?;
        let access = DeviceAccess {
            client_id: device.client_id.clone(),
            username: device.username.clone(),
            password: Zeroizing::new(String::from_utf8(password.to_vec())?),
            publish: device.publish.clone(),
            subscribe: device.subscribe.clone(),
        };
        self.broker.provision(&access).await?;
        self.store
            .mark_provisioned(&device.account_id, &device.device_id, device.revision)
            .await?;
        Ok(())
    }

    pub async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BrokerError> {
        self.broker.publish(topic, payload).await
    }

    /// Removes what the broker has and the store does not, pushes what the broker
    /// lacks or has an older revision of, and leaves the rest alone.
    pub async fn reconcile(&self) -> anyhow::Result<Reconciled> {
        let _order = self.order.lock().await;
        let devices = self.store.broker_devices().await?;
        let at_broker: HashSet<String> = self.broker.managed_clients().await?.into_iter().collect();
        let wanted: HashSet<&str> = devices.iter().map(|d| d.username.as_str()).collect();
        let mut done = Reconciled::default();
        for username in at_broker.iter().filter(|u| !wanted.contains(u.as_str())) {
            self.broker.remove(username).await?;
            done.removed += 1;
        }
        for device in &devices {
            if device.broker_revision >= device.revision && at_broker.contains(&device.username) {
                done.unchanged += 1;
                continue;
            }
            self.provision(device).await?;
            done.provisioned += 1;
        }
        Ok(done)
    }

    /// Reconciles at start, on every reconnection to the broker and whenever a push failed.
    pub async fn run(
        self: Arc<Self>,
        mut connections: watch::Receiver<u64>,
        shutdown: CancellationToken,
    ) {
        // The first connection may have happened before this task subscribed.
        let mut pending = true;
        loop {
            if !pending {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = connections.changed() => if changed.is_err() { return },
                    () = self.wake.notified() => {}
                }
            }
            let started = std::time::Instant::now();
            match self.reconcile().await {
                Ok(done) => {
                    pending = false;
                    tracing::info!(
                        provisioned = done.provisioned,
                        removed = done.removed,
                        unchanged = done.unchanged,
                        ms = started.elapsed().as_millis(),
                        "broker reconciled"
                    );
                }
                Err(e) => {
                    tracing::warn!("broker reconcile failed, retrying: {e:#}");
                    pending = true;
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        _ = connections.changed() => {}
                        () = tokio::time::sleep(RETRY) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::broker::{DynSec, ManagedMosquitto};
    use crate::store::{NewDevice, PskWrite};

    /// Prints what a reconcile costs with N devices (`PSK_EDGE_MEASURE_DEVICES`, default
    /// 1000): a full push into an empty broker, then a reconcile with nothing to do.
    /// `cargo test --lib provisioning::tests::measure_reconcile -- --ignored --nocapture`
    #[tokio::test]
    #[ignore]
    async fn measure_reconcile() {
        if !ManagedMosquitto::available() {
            return eprintln!("skipped: mosquitto is not installed");
        }
        let count: usize = std::env::var("PSK_EDGE_MEASURE_DEVICES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1000);
        let (store, dir) = crate::store::tests::temp_store().await;
        let sealer = Sealer::new(&[3; 32]);
        store
            .apply_psk_writes(&[PskWrite::Upsert {
                iccid: "1".into(),
                account_id: "m".into(),
                sealed_psk: vec![1],
            }])
            .await
            .unwrap();
        for i in 0..count {
            let id = format!("d{i}");
            let sealed = sealer
                .seal(&password_context("m", &id), b"password")
                .unwrap();
            let topics = [format!("m/sensor/device/{id}")];
            let subscribe = [
                format!("m/command/device/{id}"),
                "m/command/device/all".to_owned(),
            ];
            store
                .create_device(&NewDevice {
                    account_id: "m",
                    device_id: &id,
                    iccid: "1",
                    client_id: &format!("c{i}"),
                    username: &format!("u{i}"),
                    sealed_password: &sealed,
                    profile: None,
                    publish: &topics,
                    subscribe: &subscribe,
                    config: &[],
                })
                .await
                .unwrap();
        }
        let broker = ManagedMosquitto::start(&dir.path().join("broker"))
            .await
            .unwrap();
        let dynsec = Arc::new(DynSec::connect(&broker.url()));
        assert!(dynsec.wait_connected(Duration::from_secs(10)).await);
        let provisioner = Provisioner::new(dynsec, store, sealer);
        let started = Instant::now();
        let full = provisioner.reconcile().await.unwrap();
        let full_time = started.elapsed();
        let started = Instant::now();
        let noop = provisioner.reconcile().await.unwrap();
        let noop_time = started.elapsed();
        assert_eq!((full.provisioned, noop.unchanged), (count, count));
        println!(
            "{count} devices: full reconcile (all pushed) {:.2} s = {:.1} ms per device; \
             reconcile with nothing to do {:.1} ms",
            full_time.as_secs_f64(),
            full_time.as_secs_f64() * 1000.0 / count as f64,
            noop_time.as_secs_f64() * 1000.0
        );
        broker.stop().await;
    }
}
