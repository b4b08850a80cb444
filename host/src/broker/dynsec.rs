//! Mosquitto's dynamic-security plugin driven over MQTT v5: one admin connection kept up in the background, `$CONTROL` commands matched to their responses.
//!
//! Every device gets one client and one role of its own, named `psk-edge:{username}`
//! (Mosquitto 2.0 has no `%u`/`%c` substitution in ACLs). Holding that role is what
//! marks a client as managed here: `managed_clients`, `provision` and `remove` never
//! touch a client without it, such as the admin or clients someone else created.
//!
//! A broker outage never blocks a caller: the connection is rebuilt in the
//! background, and while it is down every call fails at once with `Unavailable`.
//! Each connection gets a fresh rumqttc event loop, so a request that could not be
//! answered is never replayed later on a new connection behind the caller's back.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAck, PubAckReason, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{Broker, BrokerError, BrokerFuture, BrokerUrl, DeviceAccess, check_topic};

const CONTROL_TOPIC: &str = "$CONTROL/dynamic-security/v1";
const RESPONSE_TOPIC: &str = "$CONTROL/dynamic-security/v1/response";
/// A managed client's own role is this prefix and its username.
const ROLE_PREFIX: &str = "psk-edge:";
/// Lets the admin connection publish data and commands for devices.
const PLATFORM_ROLE: &str = "psk-edge-platform";
const CLIENT_TEXT_NAME: &str = "psk-edge device";

const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const KEEP_ALIVE: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT_SECS: u64 = 3;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const REQUEST_QUEUE: usize = 1024;
/// A full client list at tens of thousands of devices is megabytes.
const MAX_PACKET: u32 = 256 * 1024 * 1024;

/// What the platform's own connection may do besides administering dynsec: publish
/// data on behalf of a device and send devices commands.
fn platform_acls() -> Vec<Value> {
    ["+/sensor/device/+", "+/command/device/+"]
        .into_iter()
        .map(|topic| json!({"acltype": "publishClientSend", "topic": topic, "allow": true}))
        .collect()
}

/// Whatever no role grants is denied, receiving included: a device then gets only
/// what its own role names, even if a grant elsewhere was too wide.
const DEFAULT_ACCESS: [(&str, bool); 4] = [
    ("publishClientSend", false),
    ("publishClientReceive", false),
    ("subscribe", false),
    ("unsubscribe", true),
];

fn role_name(username: &str) -> String {
    format!("{ROLE_PREFIX}{username}")
}

fn device_acls(device: &DeviceAccess) -> Vec<Value> {
    let grants = device
        .publish
        .iter()
        .map(|t| ("publishClientSend", t))
        .chain(
            device
                .subscribe
                .iter()
                .flat_map(|t| [("subscribeLiteral", t), ("publishClientReceive", t)]),
        );
    // A device whose id is "all" names the broadcast topic twice; the plugin would keep both.
    let mut seen = HashSet::new();
    grants
        .filter(|grant| seen.insert(*grant))
        .map(|(acltype, topic)| json!({"acltype": acltype, "topic": topic, "allow": true}))
        .collect()
}

/// One entry of the plugin's `responses` array.
#[derive(Debug, Deserialize)]
struct Response {
    command: String,
    #[serde(rename = "correlationData")]
    correlation: Option<String>,
    error: Option<String>,
    #[serde(default)]
    data: Value,
}

impl Response {
    fn ok(&self) -> Result<&Value, BrokerError> {
        match &self.error {
            None => Ok(&self.data),
            Some(error) => Err(BrokerError::Refused(format!("{}: {error}", self.command))),
        }
    }

    /// The plugin's only way to say "absent" is its error text ("Client not found").
    fn is_not_found(&self) -> bool {
        self.error
            .as_deref()
            .is_some_and(|e| e.to_ascii_lowercase().contains("not found"))
    }
}

#[derive(Deserialize)]
struct Responses {
    responses: Vec<Response>,
}

enum Setup {
    Done,
    /// The broker drops this connection to apply a change to the admin itself.
    Reconnect,
}

enum Existing {
    Absent,
    Managed,
    /// A client of that name exists and is not ours.
    Foreign,
}

type Reply<T> = oneshot::Sender<Result<T, BrokerError>>;

#[derive(Default)]
struct Shared {
    /// The current connection's handle; None while (re)connecting.
    client: Option<AsyncClient>,
    /// Set once the current connection's setup is done; only then do callers get through.
    ready: bool,
    /// Counts connections, so a late setup task cannot mark a newer connection ready.
    epoch: u64,
    /// The broker is about to drop the connection on purpose (no warning then).
    expect_kick: bool,
    commands: HashMap<u64, Reply<Vec<Response>>>,
    /// QoS 1 publishes waiting for their packet id, in the order they were queued.
    unnumbered: VecDeque<Reply<()>>,
    /// QoS 1 publishes waiting for their PUBACK.
    inflight: HashMap<u16, Reply<()>>,
}

struct Inner {
    admin_username: String,
    request_timeout: Duration,
    next_id: AtomicU64,
    shared: Mutex<Shared>,
    connections: watch::Sender<u64>,
}

/// The dynamic-security plugin of a Mosquitto broker, administered over MQTT v5.
pub struct DynSec {
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DynSec {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DynSec {
    /// Connects as the dynsec admin and keeps reconnecting in the background for as
    /// long as this value lives. Must be called within a tokio runtime.
    pub fn connect(url: &BrokerUrl) -> Self {
        Self::connect_with_timeout(url, DEFAULT_REQUEST_TIMEOUT)
    }

    /// As [`DynSec::connect`], with how long a request may wait for the broker's answer.
    pub fn connect_with_timeout(url: &BrokerUrl, request_timeout: Duration) -> Self {
        let (connections, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            admin_username: url.username.clone(),
            request_timeout,
            next_id: AtomicU64::new(1),
            shared: Mutex::new(Shared::default()),
            connections,
        });
        let task = tokio::spawn(run(inner.clone(), url.clone()));
        DynSec { inner, task }
    }

    /// Resolves true once connected and set up, false if that takes longer than `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut changes = self.inner.connections.subscribe();
        tokio::time::timeout(timeout, async {
            loop {
                if self.inner.shared.lock().ready {
                    return;
                }
                if changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
        .is_ok()
    }

    /// Counts successful connections: it changes on every (re)connection, so the
    /// platform can reconcile after an outage.
    pub fn connections(&self) -> watch::Receiver<u64> {
        self.inner.connections.subscribe()
    }

    pub fn is_connected(&self) -> bool {
        self.inner.shared.lock().ready
    }

    /// Sends raw dynsec commands and returns the plugin's responses, in order.
    #[cfg(test)]
    pub(crate) async fn raw_commands(
        &self,
        commands: Vec<Value>,
    ) -> Result<Vec<Value>, BrokerError> {
        let responses = self.inner.command(commands, false).await?;
        Ok(responses
            .into_iter()
            .map(|r| json!({"command": r.command, "error": r.error, "data": r.data}))
            .collect())
    }

    /// What the broker holds under this username: the client (ours or not) and its role.
    async fn existing(
        &self,
        username: &str,
    ) -> Result<(Existing, Option<Vec<Value>>), BrokerError> {
        let role = role_name(username);
        let responses = self
            .inner
            .command(
                vec![
                    json!({"command": "getClient", "username": username}),
                    json!({"command": "getRole", "rolename": role}),
                ],
                false,
            )
            .await?;
        let [client, role_answer] = responses.as_slice() else {
            return Err(BrokerError::Refused(format!(
                "expected 2 responses, got {}",
                responses.len()
            )));
        };
        let acls = if role_answer.is_not_found() {
            None
        } else {
            Some(
                role_answer.ok()?["role"]["acls"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            )
        };
        if client.is_not_found() {
            return Ok((Existing::Absent, acls));
        }
        let holds_role = client.ok()?["client"]["roles"]
            .as_array()
            .is_some_and(|roles| {
                roles
                    .iter()
                    .any(|r| r["rolename"].as_str() == Some(role.as_str()))
            });
        let existing = if holds_role {
            Existing::Managed
        } else {
            Existing::Foreign
        };
        Ok((existing, acls))
    }

    fn refuse_admin(&self, username: &str) -> Result<(), BrokerError> {
        if username == self.inner.admin_username {
            return Err(BrokerError::Invalid(format!(
                "{username:?} is the broker admin"
            )));
        }
        Ok(())
    }

    async fn provision_device(&self, device: &DeviceAccess) -> Result<(), BrokerError> {
        device.validate()?;
        self.refuse_admin(&device.username)?;
        let role = role_name(&device.username);
        let acls = device_acls(device);
        let (existing, current_acls) = self.existing(&device.username).await?;
        let create = match existing {
            Existing::Foreign => {
                return Err(BrokerError::Refused(format!(
                    "a client named {:?} exists and is not managed by psk-edge",
                    device.username
                )));
            }
            Existing::Absent => true,
            Existing::Managed => false,
        };
        // Every change rewrites the plugin's whole file, so an unchanged role is left
        // alone; a role left behind by an interrupted provision is checked like any other.
        let mut commands = Vec::with_capacity(2);
        match current_acls {
            None => commands.push(json!({"command": "createRole", "rolename": role, "acls": acls})),
            Some(current) if acl_set(&current) != acl_set(&acls) => {
                commands.push(json!({"command": "modifyRole", "rolename": role, "acls": acls}));
            }
            Some(_) => {}
        }
        // modifyClient sets password, client id and roles in one change and disconnects
        // live sessions, which must authenticate again.
        commands.push(json!({
            "command": if create { "createClient" } else { "modifyClient" },
            "username": device.username,
            "password": device.password.as_str(),
            "clientid": device.client_id,
            "textname": CLIENT_TEXT_NAME,
            "roles": [{"rolename": role}],
        }));
        let expected = commands.len();
        let responses = self.inner.command(commands, false).await?;
        expect_ok(&responses, expected, 0)
    }

    async fn remove_client(&self, username: &str) -> Result<(), BrokerError> {
        super::check_name("username", username)?;
        self.refuse_admin(username)?;
        let role = role_name(username);
        let mut commands = Vec::with_capacity(2);
        match self.existing(username).await?.0 {
            Existing::Foreign => {
                return Err(BrokerError::Refused(format!(
                    "the client {username:?} is not managed by psk-edge"
                )));
            }
            Existing::Managed => {
                commands.push(json!({"command": "deleteClient", "username": username}))
            }
            Existing::Absent => {}
        }
        commands.push(json!({"command": "deleteRole", "rolename": role}));
        let responses = self.inner.command(commands, false).await?;
        for response in &responses {
            if !response.is_not_found() {
                response.ok()?;
            }
        }
        Ok(())
    }

    async fn list_managed(&self) -> Result<Vec<String>, BrokerError> {
        // Two light lists instead of one verbose client list: the verbose one is
        // several times larger, and the broker stalls while it builds it.
        let responses = self
            .inner
            .command(
                vec![
                    json!({"command": "listClients", "verbose": false, "count": -1, "offset": 0}),
                    json!({"command": "listRoles", "verbose": false, "count": -1, "offset": 0}),
                ],
                false,
            )
            .await?;
        if responses.len() != 2 {
            return Err(BrokerError::Refused(format!(
                "expected 2 responses, got {}",
                responses.len()
            )));
        }
        let clients = names(responses[0].ok()?, "clients")?;
        let roles: HashSet<&str> = names(responses[1].ok()?, "roles")?
            .into_iter()
            .filter_map(|r| r.strip_prefix(ROLE_PREFIX))
            .collect();
        Ok(clients
            .into_iter()
            .filter(|c| roles.contains(c) && *c != self.inner.admin_username)
            .map(str::to_owned)
            .collect())
    }

    async fn publish_data(&self, topic: &str, payload: Bytes) -> Result<(), BrokerError> {
        check_topic(topic)?;
        let (reply, answer) = oneshot::channel();
        {
            let mut shared = self.inner.shared.lock();
            let client = shared.ready_client()?;
            client
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
                .map_err(|e| BrokerError::Unavailable(format!("cannot queue the publish: {e}")))?;
            // Queued under the lock, so this order is the order the event loop numbers them in.
            shared.unnumbered.push_back(reply);
        }
        self.inner.wait(answer).await
    }
}

/// Names under `data[key]` of a non-verbose list.
fn names<'a>(data: &'a Value, key: &str) -> Result<Vec<&'a str>, BrokerError> {
    data[key]
        .as_array()
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .ok_or_else(|| BrokerError::Refused(format!("the plugin's answer has no {key} list")))
}

/// Every response but the first `tolerated` must be a success.
fn expect_ok(responses: &[Response], expected: usize, tolerated: usize) -> Result<(), BrokerError> {
    if responses.len() != expected {
        return Err(BrokerError::Refused(format!(
            "expected {expected} responses, got {}",
            responses.len()
        )));
    }
    for response in &responses[tolerated..] {
        response.ok()?;
    }
    Ok(())
}

impl Broker for DynSec {
    fn provision<'a>(&'a self, device: &'a DeviceAccess) -> BrokerFuture<'a, ()> {
        Box::pin(self.provision_device(device))
    }

    fn remove<'a>(&'a self, username: &'a str) -> BrokerFuture<'a, ()> {
        Box::pin(self.remove_client(username))
    }

    fn managed_clients(&self) -> BrokerFuture<'_, Vec<String>> {
        Box::pin(self.list_managed())
    }

    fn publish<'a>(&'a self, topic: &'a str, payload: Bytes) -> BrokerFuture<'a, ()> {
        Box::pin(self.publish_data(topic, payload))
    }
}

impl Shared {
    fn ready_client(&self) -> Result<&AsyncClient, BrokerError> {
        match &self.client {
            Some(client) if self.ready => Ok(client),
            _ => Err(BrokerError::Unavailable(
                "not connected to the broker".into(),
            )),
        }
    }

    /// Fails everything in flight: its answer, if any, went down with the connection.
    fn fail_all(&mut self, why: &str) {
        let unavailable = || BrokerError::Unavailable(why.to_owned());
        for (_, reply) in self.commands.drain() {
            let _ = reply.send(Err(unavailable()));
        }
        for reply in self
            .unnumbered
            .drain(..)
            .chain(self.inflight.drain().map(|(_, reply)| reply))
        {
            let _ = reply.send(Err(unavailable()));
        }
    }
}

/// Takes a pending command out of the table when its caller stops waiting (timeout, drop).
struct PendingCommand<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for PendingCommand<'_> {
    fn drop(&mut self) {
        self.inner.shared.lock().commands.remove(&self.id);
    }
}

impl Inner {
    /// Sends one `$CONTROL` message with these commands and waits for the plugin's
    /// responses. `setup` lets the connection's own setup through before it is ready.
    async fn command(
        &self,
        mut commands: Vec<Value>,
        setup: bool,
    ) -> Result<Vec<Response>, BrokerError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let correlation = id.to_string();
        for command in &mut commands {
            command["correlationData"] = json!(correlation);
        }
        // The payload carries passwords: it goes to the broker and nowhere else (no log line).
        let payload = serde_json::to_vec(&json!({"commands": commands}))
            .map_err(|e| BrokerError::Invalid(format!("cannot encode the command: {e}")))?;
        drop(commands);
        let (reply, answer) = oneshot::channel();
        {
            let mut shared = self.shared.lock();
            let client = if setup {
                shared
                    .client
                    .as_ref()
                    .ok_or_else(|| BrokerError::Unavailable("not connected to the broker".into()))?
            } else {
                shared.ready_client()?
            };
            // QoS 0: the response is the acknowledgement, and a lost connection fails it anyway.
            client
                .try_publish(CONTROL_TOPIC, QoS::AtMostOnce, false, payload)
                .map_err(|e| BrokerError::Unavailable(format!("cannot queue the command: {e}")))?;
            shared.commands.insert(id, reply);
        }
        let _pending = PendingCommand { inner: self, id };
        self.wait(answer).await
    }

    async fn wait<T>(
        &self,
        answer: oneshot::Receiver<Result<T, BrokerError>>,
    ) -> Result<T, BrokerError> {
        match tokio::time::timeout(self.request_timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(BrokerError::Unavailable(
                "the broker connection was lost".into(),
            )),
            Err(_) => Err(BrokerError::Unavailable(format!(
                "no answer from the broker within {:?}",
                self.request_timeout
            ))),
        }
    }

    fn on_response(&self, payload: &[u8]) {
        let responses = match serde_json::from_slice::<Responses>(payload) {
            Ok(r) => r.responses,
            Err(e) => {
                tracing::warn!("unreadable answer from the dynamic-security plugin: {e}");
                return;
            }
        };
        let id = responses
            .first()
            .and_then(|r| r.correlation.as_deref())
            .and_then(|c| c.parse::<u64>().ok());
        let Some(id) = id else {
            let errors: Vec<_> = responses
                .iter()
                .filter_map(|r| r.error.as_deref())
                .collect();
            tracing::warn!(
                "an answer from the dynamic-security plugin without correlation data: {errors:?}"
            );
            return;
        };
        // None when the caller already gave up waiting.
        if let Some(reply) = self.shared.lock().commands.remove(&id) {
            let _ = reply.send(Ok(responses));
        }
    }

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

    /// A new connection is up and subscribed: callers may not use it until setup ran.
    fn attach(&self, client: AsyncClient) -> u64 {
        let mut shared = self.shared.lock();
        shared.epoch += 1;
        shared.client = Some(client);
        shared.ready = false;
        shared.epoch
    }

    /// Drops the connection's handle. Returns whether it had been ready, and whether
    /// the broker dropped it on purpose.
    fn detach(&self, why: &str) -> (bool, bool) {
        let mut shared = self.shared.lock();
        shared.client = None;
        let was_ready = std::mem::take(&mut shared.ready);
        shared.fail_all(why);
        (was_ready, std::mem::take(&mut shared.expect_kick))
    }

    fn mark_ready(&self, epoch: u64) -> bool {
        {
            let mut shared = self.shared.lock();
            if shared.epoch != epoch || shared.client.is_none() {
                return false;
            }
            shared.ready = true;
        }
        self.connections.send_modify(|n| *n += 1);
        true
    }

    /// Makes the broker deny by default and lets the admin publish for devices. Reads
    /// first and changes only what differs: every change rewrites the plugin's file.
    async fn set_up_access(&self) -> Result<Setup, BrokerError> {
        let responses = self
            .command(
                vec![
                    json!({"command": "getDefaultACLAccess"}),
                    json!({"command": "getRole", "rolename": PLATFORM_ROLE}),
                    json!({"command": "getClient", "username": self.admin_username}),
                ],
                true,
            )
            .await?;
        let [defaults, role, admin] = responses.as_slice() else {
            return Err(BrokerError::Refused(format!(
                "expected 3 responses, got {}",
                responses.len()
            )));
        };
        let mut changes = Vec::new();

        let current = defaults.ok()?["acls"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let defaults_match = DEFAULT_ACCESS.iter().all(|(acltype, allow)| {
            current.iter().any(|a| {
                a["acltype"].as_str() == Some(acltype) && a["allow"].as_bool() == Some(*allow)
            })
        });
        if !defaults_match {
            let acls: Vec<Value> = DEFAULT_ACCESS
                .iter()
                .map(|(acltype, allow)| json!({"acltype": acltype, "allow": allow}))
                .collect();
            changes.push(json!({"command": "setDefaultACLAccess", "acls": acls}));
        }

        let wanted = acl_set(&platform_acls());
        if role.is_not_found() {
            changes.push(json!({"command": "createRole", "rolename": PLATFORM_ROLE, "acls": platform_acls()}));
        } else {
            let current = role.ok()?["role"]["acls"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if acl_set(&current) != wanted {
                changes.push(json!({"command": "modifyRole", "rolename": PLATFORM_ROLE, "acls": platform_acls()}));
            }
        }

        let holds_role = admin.ok()?["client"]["roles"]
            .as_array()
            .is_some_and(|roles| {
                roles
                    .iter()
                    .any(|r| r["rolename"].as_str() == Some(PLATFORM_ROLE))
            });

        if !changes.is_empty() {
            let expected = changes.len();
            let responses = self.command(changes, true).await?;
            expect_ok(&responses, expected, 0)?;
            tracing::info!("broker access set up: deny by default, platform role {PLATFORM_ROLE}");
        }
        if holds_role {
            return Ok(Setup::Done);
        }
        // The plugin disconnects a client whose roles change, this very connection
        // included, so this goes last and the answer may never come.
        self.shared.lock().expect_kick = true;
        let add = json!({"command": "addClientRole", "username": self.admin_username, "rolename": PLATFORM_ROLE});
        match self.command(vec![add], true).await {
            Ok(responses) => expect_ok(&responses, 1, 0)?,
            Err(BrokerError::Unavailable(_)) => {}
            Err(e) => return Err(e),
        }
        tracing::info!(
            "gave {} the role {PLATFORM_ROLE}; reconnecting so the broker applies it",
            self.admin_username
        );
        Ok(Setup::Reconnect)
    }
}

fn acl_set(acls: &[Value]) -> HashSet<(String, String, bool)> {
    acls.iter()
        .map(|a| {
            (
                a["acltype"].as_str().unwrap_or_default().to_owned(),
                a["topic"].as_str().unwrap_or_default().to_owned(),
                a["allow"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// Connects, serves the connection until it fails, and starts over, forever.
async fn run(inner: Arc<Inner>, url: BrokerUrl) {
    // Unique per process: two platforms with one client id would kick each other in a loop.
    let suffix = super::random_hex(6).unwrap_or_else(|_| std::process::id().to_string());
    let client_id = format!("psk-edge-admin-{suffix}");
    let mut backoff = MIN_BACKOFF;
    let mut quiet = false;
    loop {
        let mut options = MqttOptions::new(client_id.clone(), url.host.clone(), url.port);
        options
            .set_credentials(url.username.clone(), url.password.as_str())
            .set_keep_alive(KEEP_ALIVE)
            .set_clean_start(true)
            .set_connection_timeout(CONNECT_TIMEOUT_SECS)
            .set_max_packet_size(Some(MAX_PACKET));
        let (client, events) = AsyncClient::new(options, REQUEST_QUEUE);
        let error = serve(&inner, client, events).await;
        let (was_ready, expected) = inner.detach("the broker connection was lost");
        if expected {
            backoff = MIN_BACKOFF;
            tracing::debug!(
                "reconnecting to the broker at {url} after a change to the admin's roles"
            );
        } else if was_ready {
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
    // Cancelled by the setup task to drop this connection and start over.
    let reset = CancellationToken::new();
    let mut attached = false;
    loop {
        let event = tokio::select! {
            event = events.poll() => event,
            () = reset.cancelled() => return ConnectionError::Io(std::io::Error::other("reconnecting on purpose")),
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if let Err(e) = client.try_subscribe(RESPONSE_TOPIC, QoS::AtMostOnce) {
                    return ConnectionError::Io(std::io::Error::other(e.to_string()));
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) if !attached => {
                if !ack
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, SubscribeReasonCode::Success(_)))
                {
                    let error = std::io::Error::other(format!(
                        "the broker refused the admin's subscription to {RESPONSE_TOPIC}: {:?}",
                        ack.return_codes
                    ));
                    return ConnectionError::Io(error);
                }
                attached = true;
                let epoch = inner.attach(client.clone());
                tokio::spawn(set_up(inner.clone(), epoch, reset.clone()));
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if publish.topic.as_ref() == RESPONSE_TOPIC.as_bytes() {
                    inner.on_response(&publish.payload);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => inner.on_puback(&ack),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => inner.on_numbered(pkid),
            Ok(_) => {}
            Err(error) => return error,
        }
    }
}

async fn set_up(inner: Arc<Inner>, epoch: u64, reset: CancellationToken) {
    match inner.set_up_access().await {
        Ok(Setup::Done) => {}
        Ok(Setup::Reconnect) => {
            reset.cancel();
            return;
        }
        // The connection went down meanwhile; the next one sets up again.
        Err(BrokerError::Unavailable(why)) => {
            tracing::warn!("broker setup did not finish: {why}");
            reset.cancel();
            return;
        }
        // Calls would fail the same way; let them through so they report it precisely.
        Err(e) => tracing::error!("cannot set up broker access (default deny, platform role): {e}"),
    }
    if inner.mark_ready(epoch) {
        tracing::info!("connected to the broker's dynamic-security plugin");
    }
}
