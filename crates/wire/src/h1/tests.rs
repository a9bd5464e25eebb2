//! Unit tests of the wire code.
use super::*;

fn decode_all(wire: &[u8], split: usize) -> Result<(Vec<u8>, Vec<u8>), H1Error> {
    let mut d = ChunkedDecoder::default();
    let mut out = Vec::new();
    let mut buf = Bytes::new();
    let mut rest = wire;
    loop {
        match d.decode(&mut buf)? {
            Decoded::Data(b) => out.extend_from_slice(&b),
            Decoded::Done => return Ok((out, [&buf[..], rest].concat())),
            Decoded::NeedMore if rest.is_empty() => return Err(H1Error::Chunked),
            Decoded::NeedMore => {
                let n = split.min(rest.len()).max(1);
                let mut joined = buf.to_vec();
                joined.extend_from_slice(&rest[..n]);
                buf = Bytes::from(joined);
                rest = &rest[n..];
            }
        }
    }
}

#[test]
fn header_names_are_classified_in_any_case_and_only_when_exact() {
    for (name, expected) in [
        ("Host", Field::Host),
        ("HOST", Field::Host),
        ("x-Api-KEY", Field::XApiKey),
        ("Content-Length", Field::ContentLength),
        ("X-Forwarded-Proto", Field::XForwardedProto),
        ("Transfer-Encoding", Field::TransferEncoding),
        ("X-Tessera-Account-Id", Field::Identity),
        ("RateLimit-Remaining", Field::RateLimit),
        ("TE", Field::HopByHop),
        // One byte off, in a place OR-ing 0x20 could blur: other names.
        ("x_api-key", Field::Lookalike),
        ("x-api_key", Field::Lookalike),
        ("hosu", Field::Other),
        ("x-api-keyy", Field::Other),
        ("ratelimit_x", Field::Other),
        ("ratelimit-", Field::Other),
        ("content-lengtH", Field::ContentLength),
        ("content-length0", Field::Other),
        ("Forwarded", Field::ClientAddress),
        ("X-Real-IP", Field::ClientAddress),
        ("True-Client-IP", Field::ClientAddress),
        ("X-Forwarded-Port", Field::ClientAddress),
        ("x-forwarded-", Field::Other),
        ("X_Tessera_Token_Id", Field::Lookalike),
        ("x-tessera_account-id", Field::Lookalike),
        ("X_API_KEY", Field::Lookalike),
        ("X_Forwarded_For", Field::Lookalike),
        ("x_real_ip", Field::Lookalike),
        ("X_Forwarded_Port", Field::Lookalike),
        ("x_custom", Field::Other),
        ("content_length", Field::Other),
    ] {
        assert_eq!(field(name.as_bytes()), expected, "{name}");
    }
}

#[test]
fn chunked_bodies_decode_whatever_the_reads_split_them_into() {
    let wire =
        b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
    for split in 1..wire.len() {
        let (body, after) = decode_all(wire, split).unwrap();
        assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz");
        assert_eq!(after, b"NEXT", "split {split}");
    }
}

#[test]
fn malformed_chunked_bodies_are_refused() {
    for wire in [
        &b"\r\n"[..],
        b"zz\r\n",
        b"5\r\nhelloXX",
        b"5\nhello\r\n0\r\n\r\n",
        b"fffffffffffffffffff\r\n",
    ] {
        assert!(
            decode_all(wire, 64).is_err(),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn request_heads_this_path_takes_and_those_it_leaves() {
    let head = Bytes::from_static(
        b"GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\nX-API-KEY: k\r\nConnection: close\r\n\r\nGET",
    );
    let Parsed::Head(h, len) = parse_request(&head) else {
        panic!("not parsed")
    };
    assert_eq!(
        (h.method, h.uri.to_string(), h.close),
        (Method::GET, "/a/b?x=1".into(), true)
    );
    assert_eq!(h.headers.get("x-api-key"), Some(&b"k"[..]));
    let secret = Bytes::from_static(b"GET / HTTP/1.1\r\nX-API-KEY: tsr_secret\r\n\r\n");
    let Parsed::Head(with_key, _) = parse_request(&secret) else {
        panic!("not parsed")
    };
    let shown = format!("{with_key:?}");
    assert!(
        shown.contains("X-API-KEY") && !shown.contains("tsr_secret"),
        "{shown}"
    );
    let fields: Vec<Field> = h.headers.iter().map(|(f, _, _)| f).collect();
    assert_eq!(fields, [Field::Host, Field::XApiKey, Field::Connection]);
    assert_eq!(&head[len..], b"GET");
    assert!(matches!(
        parse_request(&Bytes::from_static(b"GET / HTTP/1.1\r\nHo")),
        Parsed::Partial
    ));
    for refused in [
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-Bad: a\x01b\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        // Found by fuzzing (request_head): an empty coding list is not "no coding".
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\n\r\n",
    ] {
        assert!(
            matches!(
                parse_request(&Bytes::copy_from_slice(refused)),
                Parsed::Refused(ErrorCode::InvalidRequest)
            ),
            "{:?}",
            String::from_utf8_lossy(refused)
        );
    }
    let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
    let many = Bytes::from(format!("GET / HTTP/1.1\r\n{many}\r\n"));
    assert!(matches!(
        parse_request(&many),
        Parsed::Refused(ErrorCode::HeadersTooLarge)
    ));
    let long = Bytes::from(format!("GET /{} HTTP/1.1", "a".repeat(MAX_HEAD_BYTES)));
    assert!(matches!(
        parse_request(&long),
        Parsed::Refused(ErrorCode::HeadersTooLarge)
    ));
    for other in [
        &b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"[..],
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
    ] {
        assert!(
            matches!(
                parse_request(&Bytes::copy_from_slice(other)),
                Parsed::Elsewhere
            ),
            "{:?}",
            String::from_utf8_lossy(other)
        );
    }
}

fn response(wire: &'static [u8], head: bool) -> Result<ResponseHead, H1Error> {
    Ok(parse_response(&Bytes::from_static(wire), head)?
        .expect("whole")
        .0)
}

#[test]
fn response_framing_follows_rfc_9112() {
    let r = |w| response(w, false).unwrap();
    assert_eq!(
        r(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n").framing,
        Framing::Length(12)
    );
    assert_eq!(
        r(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").framing,
        Framing::Empty
    );
    let chunked = r(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(chunked.framing, Framing::Chunked);
    assert!(chunked.length.is_none() && chunked.reusable);
    assert_eq!(chunked.headers.as_bytes(), b"");
    let close = r(b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!((close.framing, close.reusable), (Framing::Close, false));
    assert_eq!(
        r(b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n").framing,
        Framing::Empty
    );
    assert_eq!(
        r(b"HTTP/1.1 304 Not Modified\r\n\r\n").framing,
        Framing::Empty
    );
    let head = response(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", true).unwrap();
    assert_eq!(head.framing, Framing::Empty);
    assert!(!r(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n").reusable);
    assert!(!r(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").reusable);
    assert!(r(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n").reusable);
    // Codings other than `chunked` are kept, to be passed on.
    let gzip = r(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    assert_eq!(gzip.framing, Framing::Chunked);
    assert_eq!(gzip.codings.as_deref(), Some(&b"gzip"[..]));
    let gzip = r(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: br\r\n\r\n");
    assert_eq!(gzip.framing, Framing::Close);
    assert_eq!(gzip.codings.as_deref(), Some(&b"gzip, br"[..]));
    assert!(chunked.codings.is_none());
    assert!(response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        false
    )
    .is_err());
    assert_eq!(
        r(b"HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n").framing,
        Framing::Length(7)
    );
    for bad in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 7, 8\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
    ] {
        assert!(
            response(bad, false).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn a_response_head_passes_on_all_but_hop_by_hop_and_framing_lines() {
    let head = response(
        b"HTTP/1.1 200 OK\r\nServer: up\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\n\
          Keep-Alive: timeout=5\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\
          X-Empty:\r\nRateLimit-Limit: 9\r\nTE: trailers\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(head.headers.as_bytes()),
        "Server: up\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Empty: \r\nRateLimit-Limit: 9\r\n"
    );
    assert_eq!((head.length, head.framing), (Some(2), Framing::Length(2)));
    assert!(!head.headers.has_date() && head.headers.has_rate_limit);
    // The gateway's own rate-limit lines replace the upstream's.
    let mut out = Vec::new();
    head.headers.write_to(&mut out, true);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "Server: up\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Empty: \r\n"
    );
    // hyper's path gets the same lines as a map, repeated ones included.
    let map = head.headers.to_map();
    assert_eq!(map.len(), 5);
    assert_eq!(map.get_all("set-cookie").iter().count(), 2);
    assert_eq!(map["x-empty"], "");
    let dated = response(b"HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n", false).unwrap();
    assert!(dated.headers.has_date() && !dated.headers.has_rate_limit);
}
