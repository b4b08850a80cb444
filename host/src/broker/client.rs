//! The platform's own MQTT v5 connection to its broker: kept up in the background, publishing data on devices' behalf and revocations on `$CONTROL/psk-edge/v1`, each acknowledged.
//!
//! A broker outage never blocks a caller: the connection is rebuilt in the
//! background, and while it is down every call fails at once with `Unavailable`.
//! Each connection gets a fresh rumqttc event loop, so a publish that could not be
//! acknowledged is never replayed later on a new connection behind the caller's back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use broker_policy::{CONTROL_TOPIC, Control};
use bytes::Bytes;
use parking_lot::Mutex;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAck, PubAckReason};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
use tokio::sync::{oneshot, watch};
use zeroize::Zeroizing;

use super::{BrokerError, BrokerUrl};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const KEEP_ALIVE: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT_SECS: u64 = 3;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const REQUEST_QUEUE: usize = 1024;

type Reply = oneshot::Sender<Result<(), BrokerError>>;

#[derive(Default)]
struct Shared {
    /// The current connection's handle; None while (re)connecting.
    client: Option<AsyncClient>,
    /// QoS 1 publishes waiting for their packet id, in the order they were queued.
    unnumbered: VecDeque<Reply>,
    /// QoS 1 publishes waiting for their PUBACK.
    inflight: HashMap<u16, Reply>,
}

struct Inner {
    shared: Mutex<Shared>,
    /// Counts accepted connections: a change means the broker may have missed
    /// whatever was said while the platform was away.
    connections: watch::Sender<u64>,
}

/// The platform's connection to one broker.
pub struct BrokerClient {
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BrokerClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BrokerClient {
    /// Connects as `username` and keeps reconnecting in the background for as long
    /// as this value lives. Must be called within a tokio runtime.
    pub fn connect(url: &BrokerUrl, username: &str, password: Zeroizing<String>) -> Self {
        let (connections, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            shared: Mutex::new(Shared::default()),
            connections,
        });
        let task = tokio::spawn(run(
            inner.clone(),
            url.clone(),
            username.to_owned(),
            password,
        ));
        BrokerClient { inner, task }
    }

    /// Changes on every (re)connection.
    pub fn connections(&self) -> watch::Receiver<u64> {
        self.inner.connections.subscribe()
    }

    /// Whether the platform's connection to the broker is up right now.
    pub fn is_connected(&self) -> bool {
        self.inner.shared.lock().client.is_some()
    }

    /// Publishes on behalf of a device (QoS 1); Ok once the broker acknowledged it.
    pub async fn publish(&self, topic: &str, payload: Bytes) -> Result<(), BrokerError> {
        if !broker_policy::valid_topic_name(topic) || topic.starts_with('$') {
            return Err(BrokerError::Invalid(format!(
                "{topic:?} is not an exact topic name"
            )));
        }
        self.send(topic, payload).await
    }

    /// Tells the broker's plugin what stopped working; Ok once acknowledged.
    pub async fn control(&self, message: &Control) -> Result<(), BrokerError> {
        let payload = serde_json::to_vec(message)
            .map_err(|e| BrokerError::Invalid(format!("cannot encode the message: {e}")))?;
        self.send(CONTROL_TOPIC, Bytes::from(payload)).await
    }

    async fn send(&self, topic: &str, payload: Bytes) -> Result<(), BrokerError> {
        let (reply, answer) = oneshot::channel();
        {
            let mut shared = self.inner.shared.lock();
            let client = shared
                .client
                .as_ref()
                .ok_or_else(|| BrokerError::Unavailable("not connected to the broker".into()))?;
            client
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
                .map_err(|e| BrokerError::Unavailable(format!("cannot queue the publish: {e}")))?;
            // Queued under the lock, so this order is the order the event loop numbers them in.
            shared.unnumbered.push_back(reply);
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(BrokerError::Unavailable(
                "the broker connection was lost".into(),
            )),
            Err(_) => Err(BrokerError::Unavailable(format!(
                "no acknowledgement from the broker within {REQUEST_TIMEOUT:?}"
            ))),
        }
    }
}

impl Inner {
    fn on_numbered(&self, pkid: u16) {
        let mut shared = self.shared.lock();
        if let Some(reply) = shared.unnumbered.pop_front() {
            shared.inflight.insert(pkid, reply);
        }
    }

    fn on_puback(&self, ack: &PubAck) {
        let Some(reply) = self.shared.lock().inflight.remove(&ack.pkid) else {
            return;
        };
        let result = match ack.reason {
            PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Ok(()),
            reason => Err(BrokerError::Refused(format!("publish refused: {reason:?}"))),
        };
        let _ = reply.send(result);
    }

    fn attach(&self, client: AsyncClient) {
        self.shared.lock().client = Some(client);
        self.connections.send_modify(|n| *n += 1);
    }

    /// Drops the connection's handle and fails everything in flight: its answer, if
    /// any, went down with the connection. Returns whether it had been connected.
    fn detach(&self) -> bool {
        let mut guard = self.shared.lock();
        let shared = &mut *guard;
        let was = shared.client.take().is_some();
        let unavailable = || BrokerError::Unavailable("the broker connection was lost".into());
        let pending: Vec<Reply> = shared
            .unnumbered
            .drain(..)
            .chain(shared.inflight.drain().map(|(_, reply)| reply))
            .collect();
        drop(guard);
        for reply in pending {
            let _ = reply.send(Err(unavailable()));
        }
        was
    }
}

/// Connects, serves the connection until it fails, and starts over, forever.
async fn run(inner: Arc<Inner>, url: BrokerUrl, username: String, password: Zeroizing<String>) {
    // Unique per process: two nodes with one client id would kick each other in a loop.
    let suffix = crate::secrets::random_token(8).unwrap_or_else(|_| std::process::id().to_string());
    let client_id = format!("psk-edge-node-{suffix}");
    let mut backoff = MIN_BACKOFF;
    let mut quiet = false;
    loop {
        let mut options = MqttOptions::new(client_id.clone(), url.host.clone(), url.port);
        options
            .set_credentials(username.clone(), password.as_str())
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_start(true)
            .set_connection_timeout(CONNECT_TIMEOUT_SECS);
        let (client, events) = AsyncClient::new(options, REQUEST_QUEUE);
        let error = serve(&inner, client, events).await;
        if inner.detach() {
            backoff = MIN_BACKOFF;
            quiet = false;
            tracing::warn!(
                "lost the broker connection to {url}: {}; reconnecting",
                describe(&error)
            );
        } else if !quiet {
            // One line per outage, not one per retry.
            quiet = true;
            tracing::warn!(
                "cannot connect to the broker at {url}: {}; retrying",
                describe(&error)
            );
        } else {
            tracing::debug!("broker at {url} still unavailable: {}", describe(&error));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn describe(error: &ConnectionError) -> String {
    match error {
        // rumqttc reads Mosquitto's DISCONNECT (a bare reason code) as an aborted connection.
        ConnectionError::MqttState(StateError::ConnectionAborted) => {
            "the broker closed the connection".into()
        }
        ConnectionError::ConnectionRefused(code) => format!("connection refused ({code:?})"),
        other => other.to_string(),
    }
}

/// Drives one connection until it ends, and says why it ended.
async fn serve(inner: &Arc<Inner>, client: AsyncClient, mut events: EventLoop) -> ConnectionError {
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                tracing::info!("connected to the broker as the platform");
                inner.attach(client.clone());
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => inner.on_puback(&ack),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => inner.on_numbered(pkid),
            Ok(_) => {}
            Err(error) => return error,
        }
    }
}
