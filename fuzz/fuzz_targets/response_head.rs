//! The upstream response-head parser against httparse used directly, and the framing it
//! decides against the headers it read.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tessera_wire::h1::{self, Framing};

fuzz_target!(|input: (bool, &[u8])| {
    let (head_request, data) = input;
    let buf = Bytes::copy_from_slice(data);
    let Ok(Some((head, len))) = h1::parse_response(&buf, head_request) else {
        return;
    };
    let mut slots = [httparse::EMPTY_HEADER; h1::MAX_HEADERS];
    let mut res = httparse::Response::new(&mut slots);
    assert_eq!(res.parse(data), Ok(httparse::Status::Complete(len)));
    assert_eq!(Some(head.status.as_u16()), res.code);
    let coded = res
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    match head.framing {
        Framing::Length(n) => {
            assert!(!coded && head.length == Some(n) && n > 0);
        }
        Framing::Chunked => assert!(coded && head.length.is_none()),
        Framing::Close => assert!(!head.reusable),
        Framing::Empty => {}
    }
    // No framing or hop-by-hop line is passed on.
    for (name, _) in head.headers.iter() {
        let kind = h1::field(name);
        assert!(!kind.is_hop_by_hop() && kind != h1::Field::ContentLength);
    }
});
