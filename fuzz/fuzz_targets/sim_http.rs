//! The SIM port's framing under the 250-byte message limit, pipelined requests included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::sim_http::{self, Framed};

/// The contract's message limit.
const LIMIT: usize = 250;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    // As the port does: frame, serve, go on with what follows in the same buffer.
    for _ in 0..16 {
        match sim_http::frame(rest, LIMIT) {
            Framed::Request { head_len, total } => {
                assert!(head_len <= total && total <= LIMIT && total <= rest.len());
                let raw = &rest[..total];
                let head = sim_http::head(raw).expect("a framed request has a head");
                assert!(head.target.starts_with(head.path));
                if let Ok(request) = head.request(&raw[head_len..]) {
                    assert_eq!(request.body().len(), total - head_len);
                    assert_eq!(request.method().as_str(), head.method);
                }
                if total == 0 {
                    return;
                }
                rest = &rest[total..];
            }
            // The port never holds more than the limit while it waits.
            Framed::Incomplete => {
                assert!(rest.len() <= LIMIT);
                return;
            }
            Framed::Refused(reason) => {
                assert!(!reason.is_empty());
                return;
            }
        }
    }
});
