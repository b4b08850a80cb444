//! The SIM port's first look at a connection: ClientHello records in, PSK identities or a refusal out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::hello::{self, MAX_HELLO_BYTES, MAX_HELLO_WIRE_BYTES, PSK_DHE_KE, PSK_KE, Policy, Scan};
use wire::identity::Identity;

fuzz_target!(|data: &[u8]| {
    let any = Policy::default();
    // A port narrowed the way an operator may narrow it: one suite, psk_ke only.
    let narrow = Policy {
        suites: hello::suite_numbers("TLS13-AES128-CCM-SHA256"),
        kex_modes: Some(vec![PSK_KE]),
    };
    let dhe = Policy {
        suites: None,
        kex_modes: Some(vec![PSK_DHE_KE]),
    };
    for policy in [&any, &narrow, &dhe] {
        let whole = hello::scan(data, policy);
        match &whole {
            // Waiting is bounded: no peer makes the port hold more than the wire bound.
            Scan::NeedMore => assert!(data.len() < MAX_HELLO_WIRE_BYTES),
            Scan::Done(identities) => {
                for identity in identities {
                    assert!(identity.len() <= MAX_HELLO_BYTES);
                    if let Some(id) = Identity::decode(identity) {
                        assert!(wire::identity::is_iccid(id.iccid()));
                    }
                }
            }
            Scan::NoPsk | Scan::Refused(_) => {}
        }
        // A decision, once reached, stands whatever follows: the verdict on a prefix
        // is the verdict on the whole stream (the port scans as bytes arrive).
        if let Some(&cut) = data.first() {
            let cut = usize::from(cut) * data.len() / 256;
            let early = hello::scan(&data[..cut], policy);
            if early != Scan::NeedMore {
                assert_eq!(early, whole, "prefix of {cut} bytes");
            }
        }
    }
});
