//! Reads the PSK identities out of a raw ClientHello, and refuses one the port cannot serve.
//!
//! wolfSSL hands the key callback the identity as a C string, which a BCD ICCID
//! byte 0x00 would cut short; the exact bytes are only in the ClientHello itself.
//! The same look tells a hello that shares no suite or key exchange mode with the
//! port apart: wolfSSL would go on to fail it as a bad binder or a key callback
//! error, which reads like a wrong key and sends the operator after the wrong cause.

use tls_parser::{
    TlsExtension, TlsMessage, TlsMessageHandshake, TlsRecordType,
    parse_tls_client_hello_extensions, parse_tls_message_handshake, parse_tls_raw_record,
};

/// Largest ClientHello body (the handshake message's own length field) the port takes.
/// A SIM applet's hello is 100–300 bytes (one identity, two suites, no key share); a
/// desktop client's with a post-quantum hybrid key share (X25519MLKEM768: 1,216 bytes)
/// stays under 2 KiB. 4 KiB leaves room for both, and a hello that claims more is
/// refused from its first nine bytes, before anything else is buffered: a pending
/// handshake then holds at most a few KiB, whatever the peer claims or sends.
pub const MAX_HELLO_BYTES: usize = 4 * 1024;

/// Bytes read while waiting for the hello: its body plus room for record and
/// handshake headers even when split into many small records.
pub const MAX_HELLO_WIRE_BYTES: usize = 2 * MAX_HELLO_BYTES;

const CLIENT_HELLO: u8 = 1;

/// Why the port refuses a ClientHello before wolfSSL sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client offers none of the port's cipher suites.
    NoSharedSuite,
    /// The client offers none of the port's PSK key exchange modes.
    KexNotAllowed,
    /// The ClientHello claims or takes more bytes than any SIM's.
    HelloTooLarge,
}

impl Refusal {
    /// A short name for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NoSharedSuite => "no_shared_suite",
            Refusal::KexNotAllowed => "kex_mode_not_allowed",
            Refusal::HelloTooLarge => "client_hello_too_large",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// The ClientHello is not complete yet: read more from the socket.
    NeedMore,
    /// The identities offered in the `pre_shared_key` extension, in order; empty when
    /// the bytes are not a parseable ClientHello (wolfSSL decides).
    Done(Vec<Vec<u8>>),
    /// A well-formed ClientHello that offers no PSK: this server has nothing else to
    /// offer. wolfSSL would answer with a ServerHello and then stop without an alert.
    NoPsk,
    /// A ClientHello the port refuses before wolfSSL sees it.
    Refused(Refusal),
}

/// What the port accepts of a ClientHello, in wire numbers.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// IANA numbers of the suites the port serves; None: not known here, wolfSSL decides.
    pub suites: Option<Vec<u16>>,
    /// psk_key_exchange_modes the port serves (0 psk_ke, 1 psk_dhe_ke); None: any.
    pub kex_modes: Option<Vec<u8>>,
}

/// Which TLS 1.3 PSK key exchange modes a port allows or a client offers (RFC 8446 §4.2.9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyExchange {
    /// psk_ke (what SIM applets send) and psk_dhe_ke (what OpenSSL sends).
    #[default]
    Both,
    /// Pure PSK only, no (EC)DHE.
    PskKe,
    /// PSK with (EC)DHE only.
    PskDheKe,
}

/// RFC 8446 §4.2.9.
pub const PSK_KE: u8 = 0;
pub const PSK_DHE_KE: u8 = 1;

/// wolfSSL's TLS 1.3 suite names (and the IANA ones it takes too) to their numbers.
const SUITES: &[(&str, &str, u16)] = &[
    ("TLS13-AES128-GCM-SHA256", "TLS_AES_128_GCM_SHA256", 0x1301),
    ("TLS13-AES256-GCM-SHA384", "TLS_AES_256_GCM_SHA384", 0x1302),
    (
        "TLS13-CHACHA20-POLY1305-SHA256",
        "TLS_CHACHA20_POLY1305_SHA256",
        0x1303,
    ),
    ("TLS13-AES128-CCM-SHA256", "TLS_AES_128_CCM_SHA256", 0x1304),
    (
        "TLS13-AES128-CCM-8-SHA256",
        "TLS_AES_128_CCM_8_SHA256",
        0x1305,
    ),
];

/// The suite numbers of a wolfSSL cipher list; None when a name is not one of ours,
/// so an unusual list is left to wolfSSL rather than refused here by mistake.
pub fn suite_numbers(cipher_list: &str) -> Option<Vec<u16>> {
    cipher_list
        .split(':')
        .filter(|name| !name.is_empty())
        .map(|name| {
            SUITES
                .iter()
                .find(|(wolf, iana, _)| name == *wolf || name == *iana)
                .map(|(_, _, id)| *id)
        })
        .collect()
}

/// Looks at the bytes received so far (the start of the connection).
pub fn scan(received: &[u8], policy: &Policy) -> Scan {
    let mut rest = received;
    let mut handshake = Vec::new();
    loop {
        // Judge by the first byte: a non-TLS peer must not be waited on for a "record".
        if rest
            .first()
            .is_some_and(|t| *t != u8::from(TlsRecordType::Handshake))
        {
            return Scan::Done(Vec::new());
        }
        // Judge the lengths the peer declares before waiting for the bytes behind them.
        let record_len = rest
            .get(3..5)
            .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])));
        if record_len.is_some_and(|len| len > MAX_HELLO_BYTES + 4) {
            return Scan::Refused(Refusal::HelloTooLarge);
        }
        // The handshake header is only at 5..9 when this record holds all of it.
        if handshake.is_empty()
            && record_len.is_some_and(|len| len >= 4)
            && let Some(head) = rest.get(5..9)
            && head[0] == CLIENT_HELLO
            && u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize > MAX_HELLO_BYTES
        {
            return Scan::Refused(Refusal::HelloTooLarge);
        }
        let record = match parse_tls_raw_record(rest) {
            Ok((after, record)) => {
                rest = after;
                record
            }
            Err(tls_parser::nom::Err::Incomplete(_)) if received.len() < MAX_HELLO_WIRE_BYTES => {
                return Scan::NeedMore;
            }
            Err(tls_parser::nom::Err::Incomplete(_)) => {
                return Scan::Refused(Refusal::HelloTooLarge);
            }
            Err(_) => return Scan::Done(Vec::new()),
        };
        handshake.extend_from_slice(record.data);
        if handshake.len() < 4 {
            continue;
        }
        if handshake[0] != CLIENT_HELLO {
            return Scan::Done(Vec::new());
        }
        let body_len = u32::from_be_bytes([0, handshake[1], handshake[2], handshake[3]]) as usize;
        if body_len > MAX_HELLO_BYTES {
            return Scan::Refused(Refusal::HelloTooLarge);
        }
        if handshake.len() >= 4 + body_len {
            return judge(&handshake[..4 + body_len], policy);
        }
    }
}

/// The identities of a complete ClientHello, or why the port refuses it.
fn judge(message: &[u8], policy: &Policy) -> Scan {
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)))) =
        parse_tls_message_handshake(message)
    else {
        return Scan::Done(Vec::new());
    };
    let Some(ext) = hello.ext else {
        return Scan::NoPsk;
    };
    let Ok((_, extensions)) = parse_tls_client_hello_extensions(ext) else {
        return Scan::Done(Vec::new());
    };
    let psk = extensions.iter().find_map(|extension| match extension {
        TlsExtension::PreSharedKey(data) => Some(*data),
        _ => None,
    });
    let identities = match psk.map(parse_psk_identities) {
        None => return Scan::NoPsk,
        Some(Some(identities)) => identities,
        Some(None) => return Scan::Done(Vec::new()),
    };
    // Judged on what the client offers, never on who it claims to be: the refusal is
    // the same for a known identity, an unknown one and a wrong key.
    if let Some(allowed) = &policy.suites
        && !hello.ciphers.iter().any(|suite| allowed.contains(&suite.0))
    {
        return Scan::Refused(Refusal::NoSharedSuite);
    }
    if let Some(allowed) = &policy.kex_modes {
        let offered = extensions.iter().find_map(|extension| match extension {
            TlsExtension::PskExchangeModes(modes) => Some(modes),
            _ => None,
        });
        // Without the extension the client may not use a PSK at all (RFC 8446 §4.2.9);
        // wolfSSL says so itself.
        if let Some(modes) = offered
            && !modes.iter().any(|mode| allowed.contains(mode))
        {
            return Scan::Refused(Refusal::KexNotAllowed);
        }
    }
    Scan::Done(identities)
}

/// RFC 8446 §4.2.11: `identities<7..2^16-1>` of `{ identity<1..2^16-1>, u32 age }`,
/// followed by the binders, which only wolfSSL needs.
fn parse_psk_identities(data: &[u8]) -> Option<Vec<Vec<u8>>> {
    let (list, _binders) = take_u16_prefixed(data)?;
    let mut rest = list;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (identity, after) = take_u16_prefixed(rest)?;
        rest = after.get(4..)?;
        out.push(identity.to_vec());
    }
    Some(out)
}

fn take_u16_prefixed(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u16::from_be_bytes([*data.first()?, *data.get(1)?]) as usize;
    let body = data.get(2..2 + len)?;
    Some((body, &data[2 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello carrying `identities`, as one handshake message (no record header).
    fn client_hello(identities: &[&[u8]]) -> Vec<u8> {
        hello_with(identities, true)
    }

    fn hello_with(identities: &[&[u8]], with_psk: bool) -> Vec<u8> {
        let mut ids = Vec::new();
        for id in identities {
            ids.extend_from_slice(&(id.len() as u16).to_be_bytes());
            ids.extend_from_slice(id);
            ids.extend_from_slice(&[0, 0, 0, 0]);
        }
        let mut psk = (ids.len() as u16).to_be_bytes().to_vec();
        psk.extend_from_slice(&ids);
        psk.extend_from_slice(&[0, 33, 32]);
        psk.extend_from_slice(&[0xbb; 32]);

        let mut ext = vec![0, 43, 0, 3, 2, 3, 4, 0, 45, 0, 2, 1, 0];
        if with_psk {
            ext.extend_from_slice(&[0, 41]);
            ext.extend_from_slice(&(psk.len() as u16).to_be_bytes());
            ext.extend_from_slice(&psk);
        }

        let mut body = vec![3, 3];
        body.extend_from_slice(&[0xaa; 32]);
        body.extend_from_slice(&[0, 0, 2, 0x13, 0x04, 1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);

        let mut msg = vec![CLIENT_HELLO];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        msg
    }

    fn records(message: &[u8], chunk: usize) -> Vec<u8> {
        message
            .chunks(chunk)
            .flat_map(|part| {
                let mut rec = vec![22, 3, 1];
                rec.extend_from_slice(&(part.len() as u16).to_be_bytes());
                rec.extend_from_slice(part);
                rec
            })
            .collect()
    }

    const BCD: &[u8] = &[0x98, 0x44, 0x05, 0, 0, 0, 0, 0, 0x21, 0xf3];

    #[test]
    fn identities_keep_their_zero_bytes() {
        let wire = records(&client_hello(&[BCD, b"049305930495403"]), 16 * 1024);
        assert_eq!(
            scan(&wire, &Policy::default()),
            Scan::Done(vec![BCD.to_vec(), b"049305930495403".to_vec()])
        );
    }

    #[test]
    fn hello_spanning_records_waits_for_the_last_byte() {
        let wire = records(&client_hello(&[BCD]), 7);
        for cut in 0..wire.len() {
            assert_eq!(
                scan(&wire[..cut], &Policy::default()),
                Scan::NeedMore,
                "cut at {cut}"
            );
        }
        assert_eq!(
            scan(&wire, &Policy::default()),
            Scan::Done(vec![BCD.to_vec()])
        );
    }

    #[test]
    fn garbage_and_other_messages_go_to_wolfssl() {
        assert_eq!(
            scan(b"GET / HTTP/1.1\r\n\r\n", &Policy::default()),
            Scan::Done(vec![])
        );
        assert_eq!(
            scan(&[21, 3, 3, 0, 2, 2, 40], &Policy::default()),
            Scan::Done(vec![])
        );
        let mut not_hello = client_hello(&[BCD]);
        not_hello[0] = 2;
        assert_eq!(
            scan(&records(&not_hello, 100), &Policy::default()),
            Scan::Done(vec![])
        );
    }

    #[test]
    fn a_hello_without_psk_is_told_apart() {
        assert_eq!(
            scan(&records(&hello_with(&[], false), 100), &Policy::default()),
            Scan::NoPsk
        );
    }

    #[test]
    fn a_hello_the_port_cannot_serve_is_refused_whoever_it_names() {
        let wire = records(&client_hello(&[BCD]), 100);
        let ccm_only_port = Policy {
            suites: suite_numbers("TLS13-AES128-CCM-SHA256"),
            kex_modes: Some(vec![PSK_KE, PSK_DHE_KE]),
        };
        assert_eq!(scan(&wire, &ccm_only_port), Scan::Done(vec![BCD.to_vec()]));
        let gcm_only = Policy {
            suites: suite_numbers("TLS13-AES128-GCM-SHA256"),
            ..Policy::default()
        };
        assert_eq!(
            scan(&wire, &gcm_only),
            Scan::Refused(Refusal::NoSharedSuite)
        );
        // The hello offers psk_ke only, as a SIM applet does.
        let dhe_only = Policy {
            kex_modes: Some(vec![PSK_DHE_KE]),
            ..Policy::default()
        };
        assert_eq!(
            scan(&wire, &dhe_only),
            Scan::Refused(Refusal::KexNotAllowed)
        );
        assert_eq!(
            suite_numbers("TLS13-AES128-CCM-SHA256:TLS_AES_128_GCM_SHA256"),
            Some(vec![0x1304, 0x1301])
        );
        assert_eq!(
            suite_numbers("TLS13-AES128-CCM-SHA256:SOMETHING-ELSE"),
            None
        );
    }

    #[test]
    fn an_oversized_hello_is_refused_from_its_declared_length() {
        let too_large = Refusal::HelloTooLarge;
        let claimed = (MAX_HELLO_BYTES as u32 + 1).to_be_bytes();
        let head = [
            22,
            3,
            1,
            0x10,
            0,
            CLIENT_HELLO,
            claimed[1],
            claimed[2],
            claimed[3],
        ];
        assert_eq!(scan(&head, &Policy::default()), Scan::Refused(too_large));
        // A record longer than any hello the port takes, whatever it holds.
        assert_eq!(
            scan(&[22, 3, 1, 0x40, 0], &Policy::default()),
            Scan::Refused(too_large)
        );
        // A hello at the bound still goes through.
        let mut big = client_hello(&[&[b'7'; MAX_HELLO_BYTES - 200]]);
        assert!(big.len() - 4 <= MAX_HELLO_BYTES, "{}", big.len());
        assert_eq!(
            scan(&records(&big, 16 * 1024), &Policy::default()),
            Scan::Done(vec![vec![b'7'; MAX_HELLO_BYTES - 200]])
        );
        // Tiny records cannot stretch the wait past the wire bound either.
        big.truncate(big.len() - 1);
        assert_eq!(
            scan(&records(&big, 1), &Policy::default()),
            Scan::Refused(too_large)
        );
    }

    #[test]
    fn a_verdict_does_not_depend_on_how_much_has_arrived() {
        // Found by the client_hello fuzz target: an empty record, then a byte that is
        // not a record type. The bytes after it once looked like a hello's length.
        let wire = [22, 0, 0, 0, 0, 1, 0, 52, 52, 53];
        for cut in 6..=wire.len() {
            assert_eq!(
                scan(&wire[..cut], &Policy::default()),
                Scan::Done(vec![]),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn malformed_identity_lists_are_refused() {
        assert_eq!(parse_psk_identities(&[0, 20, 0, 3, 1]), None);
        assert_eq!(parse_psk_identities(&[0, 4, 0, 1, 7, 0]), None);
        assert_eq!(
            parse_psk_identities(&[0, 7, 0, 1, 7, 0, 0, 0, 0]),
            Some(vec![vec![7]])
        );
    }
}
