//! The bulk PSK stream: NDJSON lines as chunks arrive, bounded in length, then each line's body.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wire::ndjson::{Line, Lines};

/// Small, so that overlong lines are common; the port's bound is 64 KiB.
const MAX: usize = 48;

fuzz_target!(|data: &[u8]| {
    let Some((&step, body)) = data.split_first() else {
        return;
    };
    // Chunks as the network might cut them: of 1 to 256 bytes.
    let mut lines = Lines::new(MAX);
    let mut got = Vec::new();
    for chunk in body.chunks(usize::from(step) + 1) {
        lines.push(chunk);
        while let Some(line) = lines.next_line() {
            got.push(line);
        }
    }
    while let Some(line) = lines.next_line_at_end() {
        got.push(line);
    }
    // However it was cut, the stream is its lines, an overlong one answered in place.
    let mut want: Vec<Line> = body
        .split(|&b| b == b'\n')
        .map(|line| match line.len() {
            n if n > MAX => Line::Overlong,
            _ => Line::Data(Bytes::copy_from_slice(line)),
        })
        .collect();
    // A final `\n` ends the last line; it does not begin an empty one.
    if want.last() == Some(&Line::Data(Bytes::new())) {
        want.pop();
    }
    assert_eq!(got, want);
    let mut batch = Vec::new();
    for line in &got {
        if let Line::Data(line) = line {
            let _ = common::psk::parse_upsert(line);
            batch.extend_from_slice(line);
            batch.push(b'\n');
        }
    }
    // The component sees the same non-blank lines the host passed it.
    let passed = got.iter().filter(|l| match l {
        Line::Data(d) => !d.iter().all(u8::is_ascii_whitespace),
        Line::Overlong => false,
    });
    assert_eq!(common::psk::ndjson_lines(&batch).count(), passed.count());
});
