//! An established connection: application data both ways, KeyUpdate, close_notify.

use std::io;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::codec::{
    ALERT, APPLICATION_DATA, HANDSHAKE, KEY_UPDATE, MAX_PLAINTEXT, NEW_SESSION_TICKET, Suite,
    take_message,
};
use crate::key_schedule::{Secret, next_traffic_secret};
use crate::record::{Direction, read_record};

/// An established client connection.
pub(crate) struct Session {
    pub(crate) tcp: TcpStream,
    pub(crate) rx: BytesMut,
    pub(crate) suite: Suite,
    pub(crate) read: Direction,
    pub(crate) write: Direction,
    pub(crate) read_secret: Secret,
    pub(crate) write_secret: Secret,
    pub(crate) plain: Vec<u8>,
    pub(crate) plain_pos: usize,
    /// Handshake bytes after the handshake (tickets, KeyUpdate) not yet consumed.
    pub(crate) post_handshake: Vec<u8>,
    pub(crate) peer_closed: bool,
}

impl Session {
    pub(crate) async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.plain_pos < self.plain.len() {
                let n = buf.len().min(self.plain.len() - self.plain_pos);
                buf[..n].copy_from_slice(&self.plain[self.plain_pos..self.plain_pos + n]);
                self.plain_pos += n;
                return Ok(n);
            }
            if self.peer_closed || buf.is_empty() {
                return Ok(0);
            }
            let Some((header, body)) = read_record(&mut self.tcp, &mut self.rx).await? else {
                self.peer_closed = true;
                return Ok(0);
            };
            if header[0] != APPLICATION_DATA {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unexpected record type {}", header[0]),
                ));
            }
            let (content_type, data) = self.read.open(&header, body)?;
            match content_type {
                APPLICATION_DATA => {
                    self.plain = data;
                    self.plain_pos = 0;
                }
                ALERT if data.get(1) == Some(&0) => self.peer_closed = true,
                ALERT => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        format!("peer sent alert {:?}", data.get(1)),
                    ));
                }
                HANDSHAKE => {
                    self.post_handshake.extend_from_slice(&data);
                    self.post_handshake_messages().await?;
                }
                t => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unexpected content type {t}"),
                    ));
                }
            }
        }
    }

    async fn post_handshake_messages(&mut self) -> io::Result<()> {
        while let Some(msg) = take_message(&mut self.post_handshake) {
            match msg[0] {
                // Resumption is not used: tickets are dropped.
                NEW_SESSION_TICKET => {}
                KEY_UPDATE => {
                    self.read_secret = next_traffic_secret(&self.read_secret);
                    self.read = Direction::new(self.suite, &self.read_secret);
                    if msg.get(4) == Some(&1) {
                        let record = self.write.seal(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0])?;
                        self.tcp.write_all(&record).await?;
                        self.write_secret = next_traffic_secret(&self.write_secret);
                        self.write = Direction::new(self.suite, &self.write_secret);
                    }
                }
                t => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unexpected post-handshake message {t}"),
                    ));
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(data.len() + 32);
        for chunk in data.chunks(MAX_PLAINTEXT) {
            out.extend_from_slice(&self.write.seal(APPLICATION_DATA, chunk)?);
        }
        self.tcp.write_all(&out).await
    }

    pub(crate) async fn shutdown(&mut self) {
        if let Ok(record) = self.write.seal(ALERT, &[1, 0]) {
            let _ = self.tcp.write_all(&record).await;
        }
        let _ = self.tcp.shutdown().await;
    }
}
