//! Reads the PSK identities out of a raw ClientHello.
//!
//! wolfSSL hands the key callback the identity as a C string, which a BCD ICCID
//! byte 0x00 would cut short; the exact bytes are only in the ClientHello itself.

use tls_parser::{
    TlsExtension, TlsMessage, TlsMessageHandshake, TlsRecordType,
    parse_tls_client_hello_extensions, parse_tls_message_handshake, parse_tls_raw_record,
};

/// Stop waiting for the rest of a ClientHello past this many bytes: a SIM's is a few
/// hundred bytes and wolfSSL refuses an oversized one anyway.
const MAX_HELLO_BYTES: usize = 64 * 1024;

const CLIENT_HELLO: u8 = 1;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Scan {
    /// The ClientHello is not complete yet: read more from the socket.
    NeedMore,
    /// The identities offered in the `pre_shared_key` extension, in order; empty when
    /// the bytes are not a parseable ClientHello (wolfSSL decides).
    Done(Vec<Vec<u8>>),
    /// A well-formed ClientHello that offers no PSK: this server has nothing else to
    /// offer. wolfSSL would answer with a ServerHello and then stop without an alert.
    NoPsk,
}

/// Looks at the bytes received so far (the start of the connection).
pub(super) fn scan(received: &[u8]) -> Scan {
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
        let record = match parse_tls_raw_record(rest) {
            Ok((after, record)) => {
                rest = after;
                record
            }
            Err(tls_parser::nom::Err::Incomplete(_)) if received.len() < MAX_HELLO_BYTES => {
                return Scan::NeedMore;
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
        if handshake.len() >= 4 + body_len {
            return match identities(&handshake[..4 + body_len]) {
                Offered::Identities(identities) => Scan::Done(identities),
                Offered::NoPsk => Scan::NoPsk,
                Offered::Unparseable => Scan::Done(Vec::new()),
            };
        }
    }
}

enum Offered {
    Identities(Vec<Vec<u8>>),
    NoPsk,
    Unparseable,
}

fn identities(message: &[u8]) -> Offered {
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)))) =
        parse_tls_message_handshake(message)
    else {
        return Offered::Unparseable;
    };
    let Some(ext) = hello.ext else {
        return Offered::NoPsk;
    };
    let Ok((_, extensions)) = parse_tls_client_hello_extensions(ext) else {
        return Offered::Unparseable;
    };
    let psk = extensions.iter().find_map(|extension| match extension {
        TlsExtension::PreSharedKey(data) => Some(*data),
        _ => None,
    });
    match psk.map(parse_psk_identities) {
        None => Offered::NoPsk,
        Some(Some(identities)) => Offered::Identities(identities),
        Some(None) => Offered::Unparseable,
    }
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
            scan(&wire),
            Scan::Done(vec![BCD.to_vec(), b"049305930495403".to_vec()])
        );
    }

    #[test]
    fn hello_spanning_records_waits_for_the_last_byte() {
        let wire = records(&client_hello(&[BCD]), 7);
        for cut in 0..wire.len() {
            assert_eq!(scan(&wire[..cut]), Scan::NeedMore, "cut at {cut}");
        }
        assert_eq!(scan(&wire), Scan::Done(vec![BCD.to_vec()]));
    }

    #[test]
    fn garbage_and_other_messages_go_to_wolfssl() {
        assert_eq!(scan(b"GET / HTTP/1.1\r\n\r\n"), Scan::Done(vec![]));
        assert_eq!(scan(&[21, 3, 3, 0, 2, 2, 40]), Scan::Done(vec![]));
        let mut not_hello = client_hello(&[BCD]);
        not_hello[0] = 2;
        assert_eq!(scan(&records(&not_hello, 100)), Scan::Done(vec![]));
    }

    #[test]
    fn a_hello_without_psk_is_told_apart() {
        assert_eq!(scan(&records(&hello_with(&[], false), 100)), Scan::NoPsk);
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
