//! The request-head parser against httparse used directly: a head the gateway serves
//! itself is one httparse reads to the same length with the same lines, and what it
//! frames as bodiless has no length or coding that says otherwise.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tessera_core::ErrorCode;
use tessera_wire::h1::{self, Parsed};

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    let ours = h1::parse_request(&buf);
    let mut slots = [httparse::EMPTY_HEADER; h1::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let theirs = req.parse(data);
    match ours {
        Parsed::Head(head, len) => {
            assert_eq!(theirs, Ok(httparse::Status::Complete(len)));
            let ours: Vec<(&[u8], &[u8])> = head.headers.iter().map(|(_, n, v)| (n, v)).collect();
            let theirs: Vec<(&[u8], &[u8])> = req
                .headers
                .iter()
                .map(|h| (h.name.as_bytes(), h.value))
                .collect();
            assert_eq!(ours, theirs);
            assert_eq!(Some(head.method.as_str()), req.method);
            assert_eq!(req.version, Some(1));
            for h in req.headers.iter() {
                let name = h.name.to_ascii_lowercase();
                assert!(name != "transfer-encoding", "a coded body taken as none");
                if name == "content-length" {
                    let zero = |v: &[u8]| !v.is_empty() && v.iter().all(|&b| b == b'0');
                    assert!(h.value.split(|&b| b == b',').all(|v| zero(v.trim_ascii())));
                }
            }
        }
        Parsed::Partial => {
            assert_eq!(theirs, Ok(httparse::Status::Partial));
            assert!(data.len() < h1::MAX_HEAD_BYTES);
        }
        Parsed::Elsewhere => assert!(matches!(theirs, Ok(httparse::Status::Complete(_)))),
        Parsed::Refused(ErrorCode::HeadersTooLarge) => assert!(
            data.len() >= h1::MAX_HEAD_BYTES || theirs == Err(httparse::Error::TooManyHeaders)
        ),
        Parsed::Refused(code) => assert_eq!(code, ErrorCode::InvalidRequest),
    }
});
