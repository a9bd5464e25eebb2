//! The chunked decoder: the same answer however the bytes are split into reads, and
//! what the gateway encodes, it decodes to the same data.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tessera_wire::h1::{self, ChunkedDecoder, Decoded};

/// Decodes `wire` fed in reads of `split` bytes: the data and what followed the end,
/// or `None` for an error or a body not ended.
fn decode(wire: &[u8], split: usize) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut decoder = ChunkedDecoder::default();
    let (mut data, mut buf, mut rest) = (Vec::new(), Bytes::new(), wire);
    loop {
        match decoder.decode(&mut buf).ok()? {
            Decoded::Data(d) => {
                assert!(!d.is_empty());
                data.extend_from_slice(&d);
            }
            Decoded::Done => return Some((data, [&buf[..], rest].concat())),
            Decoded::NeedMore if rest.is_empty() => return None,
            Decoded::NeedMore => {
                let n = split.clamp(1, rest.len());
                buf = Bytes::from([&buf[..], &rest[..n]].concat());
                rest = &rest[n..];
            }
        }
    }
}

fuzz_target!(|input: (u8, &[u8])| {
    let (split, wire) = input;
    let whole = decode(wire, wire.len().max(1));
    assert_eq!(decode(wire, usize::from(split)), whole);
    // The data re-encoded as the gateway writes chunks decodes to the same data.
    let data = whole.map_or_else(|| wire.to_vec(), |(d, _)| d);
    let mut encoded = Vec::new();
    for piece in data.chunks(usize::from(split).max(1)) {
        h1::chunk_size_line(piece.len(), &mut encoded);
        encoded.extend_from_slice(piece);
        encoded.extend_from_slice(h1::CHUNK_END);
    }
    encoded.extend_from_slice(h1::LAST_CHUNK);
    assert_eq!(decode(&encoded, 7), Some((data, Vec::new())));
});
