//! A device's MQTT side for tests: a plain rumqttc v5 client that reports what the broker answered.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(5);

/// A device's side: a plain rumqttc v5 client, without reconnection, events in a channel.
pub struct Mqtt {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Packet, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mqtt {
    pub async fn connect(
        port: u16,
        client_id: &str,
        username: &str,
        password: &str,
    ) -> Result<Mqtt, String> {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options
            .set_credentials(username, password)
            .set_keep_alive(Duration::from_secs(30))
            .set_connection_timeout(3);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let (tx, mut events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(packet)) => {
                        if tx.send(Ok(packet)).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        let _ = tx.send(Err(format!("{e:?}")));
                        return;
                    }
                }
            }
        });
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Some(Ok(Packet::ConnAck(_)))) => Ok(Mqtt {
                client,
                events,
                task,
            }),
            Ok(Some(Ok(other))) => Err(format!("unexpected first packet {other:?}")),
            Ok(Some(Err(e))) => Err(e),
            Ok(None) | Err(_) => Err("no CONNACK".into()),
        }
    }

    pub async fn next<T>(
        &mut self,
        mut pick: impl FnMut(Packet) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Ok(packet))) => {
                    if let Some(found) = pick(packet) {
                        return Ok(found);
                    }
                }
                Ok(Some(Err(e))) => return Err(e),
                Ok(None) => return Err("connection task ended".into()),
                Err(_) => return Err("timed out".into()),
            }
        }
    }

    /// The PUBACK reason; "no matching subscribers" also means accepted, so it reads as Success.
    pub async fn publish(&mut self, topic: &str, payload: &str) -> PubAckReason {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_owned())
            .await
            .unwrap();
        self.next(|p| match p {
            Packet::PubAck(ack) if ack.reason == PubAckReason::NoMatchingSubscribers => {
                Some(PubAckReason::Success)
            }
            Packet::PubAck(ack) => Some(ack.reason),
            _ => None,
        })
        .await
        .unwrap()
    }

    pub async fn subscribe(&mut self, filter: &str) -> SubscribeReasonCode {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        self.next(|p| match p {
            Packet::SubAck(ack) => ack.return_codes.first().copied(),
            _ => None,
        })
        .await
        .unwrap()
    }

    pub async fn received(&mut self, topic: &str) -> Bytes {
        self.next(|p| match p {
            Packet::Publish(publish) if publish.topic.as_ref() == topic.as_bytes() => {
                Some(publish.payload)
            }
            _ => None,
        })
        .await
        .unwrap()
    }

    /// How the live session ended, as rumqttc reports it.
    pub async fn ended(&mut self) -> String {
        match self.next(|_| None::<()>).await {
            Err(e) => e,
            Ok(()) => unreachable!(),
        }
    }
}
