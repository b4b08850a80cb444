//! The lines of an NDJSON request body as it streams in: bounded in length whatever arrives.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, Decoder};

/// One line of the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line's bytes without its `\n`; may be blank.
    Data(Bytes),
    /// A line longer than the bound: dropped as it arrived, answered in its place.
    Overlong,
}

/// Splits a body into lines as its chunks arrive; at most `max_len` bytes of a line are
/// ever held, so a body of any size, with or without newlines, streams in flat memory.
pub struct Lines {
    codec: AnyDelimiterCodec,
    pending: BytesMut,
}

impl Lines {
    pub fn new(max_len: usize) -> Self {
        Lines {
            codec: AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), max_len),
            pending: BytesMut::new(),
        }
    }

    /// Takes the next chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        self.pending.extend_from_slice(chunk);
    }

    /// The next whole line of what was pushed, if there is one yet.
    pub fn next_line(&mut self) -> Option<Line> {
        Self::line(self.codec.decode(&mut self.pending))
    }

    /// The next line once the body has ended: the last line needs no `\n`.
    pub fn next_line_at_end(&mut self) -> Option<Line> {
        Self::line(self.codec.decode_eof(&mut self.pending))
    }

    fn line(decoded: Result<Option<Bytes>, AnyDelimiterCodecError>) -> Option<Line> {
        match decoded {
            Ok(line) => line.map(Line::Data),
            // The codec then drops the rest of that line by itself, up to its `\n`.
            Err(AnyDelimiterCodecError::MaxChunkLengthExceeded) => Some(Line::Overlong),
            // Only a reader's I/O error, and the codec reads nothing itself.
            Err(AnyDelimiterCodecError::Io(_)) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]], max: usize) -> Vec<Line> {
        let mut lines = Lines::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            lines.push(chunk);
            while let Some(line) = lines.next_line() {
                out.push(line);
            }
        }
        while let Some(line) = lines.next_line_at_end() {
            out.push(line);
        }
        out
    }

    fn data(s: &str) -> Line {
        Line::Data(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn lines_split_at_newlines_across_chunks() {
        assert_eq!(
            all(&[b"ab\nc", b"d\n\n", b"e"], 8),
            vec![data("ab"), data("cd"), data(""), data("e")]
        );
        assert_eq!(all(&[b"ab\n"], 8), vec![data("ab")]);
    }

    #[test]
    fn an_overlong_line_is_one_refusal_in_its_place_however_it_arrives() {
        let whole: &[&[u8]] = &[b"a\n0123456789\nb\n"];
        let drip: Vec<&[u8]> = b"a\n0123456789\nb\n".chunks(1).collect();
        for chunks in [whole, &drip] {
            assert_eq!(
                all(chunks, 4),
                vec![data("a"), Line::Overlong, data("b")],
                "{chunks:?}"
            );
        }
        assert_eq!(all(&[b"0123456789"], 4), vec![Line::Overlong]);
        assert_eq!(all(&[b"1234\n"], 4), vec![data("1234")]);
    }
}
