//! The client's side of a TLS 1.3 PSK handshake: ClientHello with its binder, ServerHello, EncryptedExtensions, both Finished messages.

use bytes::BytesMut;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use crate::codec::{
    ALERT, APPLICATION_DATA, CHANGE_CIPHER_SPEC, ENCRYPTED_EXTENSIONS, HANDSHAKE, Suite,
    client_hello, parse_server_hello, plain_record, take_message,
};
use crate::key_schedule::{EarlySecret, finished_message};
use crate::record::{Direction, read_record};
use crate::session::Session;
use crate::{ClientConfig, KeyExchange, TlsError, TlsStream, fail};

/// Opens a TLS 1.3 PSK connection over `tcp`, offering exactly `cfg.identity`.
///
/// Not bounded in time: wrap it in `tokio::time::timeout`.
pub async fn connect(tcp: TcpStream, cfg: &ClientConfig) -> Result<TlsStream, TlsError> {
    let suites = cfg
        .cipher_list
        .split(':')
        .filter(|name| !name.is_empty())
        .map(|name| {
            Suite::from_name(name)
                .ok_or_else(|| TlsError::Config(format!("unsupported cipher suite {name:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if suites.is_empty() {
        return Err(TlsError::Config("empty cipher list".into()));
    }
    if cfg.identity.is_empty() || cfg.key.is_empty() {
        return Err(TlsError::Config(
            "PSK identity and key must not be empty".into(),
        ));
    }
    let key_share = match cfg.key_exchange {
        KeyExchange::PskKe => None,
        KeyExchange::Both | KeyExchange::PskDheKe => Some(
            rustls::crypto::ring::kx_group::X25519
                .start()
                .map_err(|e| TlsError::Config(format!("X25519 key generation failed: {e}")))?,
        ),
    };

    let early_secret = EarlySecret::from_psk(&cfg.key);
    let hello = client_hello(cfg, &suites, key_share.as_deref(), &early_secret)?;
    let mut transcript = Sha256::new();
    transcript.update(&hello);

    let mut hs = Handshake {
        tcp,
        rx: BytesMut::with_capacity(4096),
        messages: Vec::new(),
    };
    hs.tcp.write_all(&plain_record(HANDSHAKE, &hello)).await?;

    let server_hello = hs.next_message(None).await?;
    let chosen = parse_server_hello(&server_hello, &suites)?;
    transcript.update(&server_hello);
    let dhe = match (key_share, chosen.key_share) {
        (Some(ours), Some(theirs)) => Zeroizing::new(
            ours.complete(&theirs)
                .map_err(|e| fail(format!("bad server key share: {e}")))?
                .secret_bytes()
                .to_vec(),
        ),
        (None, Some(_)) => return Err(fail("server sent a key share we did not ask for")),
        (Some(_), None) if cfg.key_exchange == KeyExchange::PskDheKe => {
            return Err(fail("server chose psk_ke, only psk_dhe_ke was offered"));
        }
        (_, None) => Zeroizing::new(vec![0; 32]),
    };

    let handshake_secret = early_secret.handshake(&dhe);
    let handshake_traffic = handshake_secret.traffic(&transcript.clone().finalize());
    let mut server_hs_keys = Direction::new(chosen.suite, &handshake_traffic.server);
    let mut client_hs_keys = Direction::new(chosen.suite, &handshake_traffic.client);

    let extensions = hs.next_message(Some(&mut server_hs_keys)).await?;
    if extensions.first() != Some(&ENCRYPTED_EXTENSIONS) {
        return Err(fail(format!(
            "expected EncryptedExtensions, got message {:?} (certificates are not supported)",
            extensions.first()
        )));
    }
    transcript.update(&extensions);

    let finished = hs.next_message(Some(&mut server_hs_keys)).await?;
    let expected = finished_message(&handshake_traffic.server, &transcript.clone().finalize());
    if !bool::from(finished[..].ct_eq(&expected[..])) {
        return Err(fail("server Finished does not verify"));
    }
    transcript.update(&finished);

    let server_finished_hash = transcript.clone().finalize();
    let application = handshake_secret.master().traffic(&server_finished_hash);
    let client_finished = finished_message(&handshake_traffic.client, &server_finished_hash);
    let record = client_hs_keys.seal(HANDSHAKE, &client_finished)?;
    hs.tcp.write_all(&record).await?;

    let session = Session {
        tcp: hs.tcp,
        rx: hs.rx,
        suite: chosen.suite,
        read: Direction::new(chosen.suite, &application.server),
        write: Direction::new(chosen.suite, &application.client),
        read_secret: application.server,
        write_secret: application.client,
        plain: Vec::new(),
        plain_pos: 0,
        post_handshake: hs.messages,
        peer_closed: false,
    };
    Ok(TlsStream {
        identity: cfg.identity.clone(),
        cipher: chosen.suite.wolf_name().to_owned(),
        session: Box::new(session),
    })
}

struct Handshake {
    tcp: TcpStream,
    rx: BytesMut,
    /// Handshake bytes received but not yet consumed (messages may span records).
    messages: Vec<u8>,
}

impl Handshake {
    /// The next handshake message, read in plaintext or under `keys`.
    async fn next_message(
        &mut self,
        mut keys: Option<&mut Direction>,
    ) -> Result<Vec<u8>, TlsError> {
        loop {
            if let Some(msg) = take_message(&mut self.messages) {
                return Ok(msg);
            }
            if self.messages.len() > 64 * 1024 {
                return Err(fail("handshake message too large"));
            }
            let (header, body) = read_record(&mut self.tcp, &mut self.rx)
                .await?
                .ok_or_else(|| fail("server closed the connection during the handshake"))?;
            let (content_type, data) = match (header[0], keys.as_deref_mut()) {
                (CHANGE_CIPHER_SPEC, _) => continue,
                (APPLICATION_DATA, Some(k)) => k.open(&header, body)?,
                // A server that gives up early may still alert in plaintext.
                (ALERT, _) | (HANDSHAKE, None) => (header[0], body),
                (t, _) => return Err(fail(format!("unexpected record type {t}"))),
            };
            match content_type {
                HANDSHAKE => self.messages.extend_from_slice(&data),
                ALERT => {
                    let description = data.get(1).copied().unwrap_or(0);
                    return Err(TlsError::Handshake {
                        code: i32::from(description),
                        reason: format!("server sent alert {description}"),
                    });
                }
                t => return Err(fail(format!("unexpected content type {t}"))),
            }
        }
    }
}
