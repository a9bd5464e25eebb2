//! HTTP/1.1 on the wire, for the gateway's own connection handling (the server's
//! `proxy::conn` downstream, `proxy::upstream` upstream): message heads parsed by httparse (requests
//! into `http` types, responses into their header lines, [`HeaderBlock`]), the body
//! framing rules of RFC 9112 §6, a chunked decoder, and the writing of heads.
//!
//! Why not hyper here: with hyper on both sides, every proxied request went through the
//! client's request channel, a second task driving the upstream connection and a
//! channel for the response body, and cost 1.6 times nginx's CPU (user time). These pieces let one task
//! read a request, forward it and stream the answer back. hyper still serves whatever
//! this path does not take (TLS, HTTP/2, upgrades, request bodies, HTTP/1.0).

mod chunked;
mod fields;
mod write;

pub use chunked::{ChunkedDecoder, Decoded};
use fields::is_name;
pub use fields::{field, Field};
pub use write::{
    chunk_size_line, write_chunked_codings, write_framing, write_header, write_response_head,
    write_status_line, CHUNK_END, LAST_CHUNK,
};

use bytes::{Buf, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use std::mem::MaybeUninit;
use tessera_core::ErrorCode;

/// At most this many header lines in a message head.
pub const MAX_HEADERS: usize = 100;
/// A message head larger than this is refused (requests: by hyper's path, which answers
/// 431; responses: 502).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Room for the headers the gateway adds to an upstream's answer that goes out through
/// hyper (`RateLimit-*`, `Content-Length`, `Date`, `Connection`). Sized for them up front,
/// a map does not grow (re-hash every entry) halfway through a request: growing cost
/// about 1,100 instructions a proxied request (callgrind).
const ADDED_HEADERS: usize = 6;

#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("malformed message head: {0}")]
    Parse(#[from] httparse::Error),
    #[error("message head over {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("invalid header value or name")]
    Header,
    #[error("invalid or conflicting Content-Length")]
    ContentLength,
    #[error("malformed chunked body")]
    Chunked,
    #[error("unsupported status {0}")]
    Status(u16),
}

/// How a message's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

/// A request head the gateway's own path serves: HTTP/1.1, origin-form target, no
/// body, no upgrade. Anything else is left to hyper (see [`parse_request`]).
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub headers: RequestHeaders,
    /// The client asked for `Connection: close`.
    pub close: bool,
}

/// What the bytes read so far hold.
#[derive(Debug)]
pub enum Parsed<T> {
    /// A whole head, and how many bytes it took.
    Head(T, usize),
    /// Not a whole head yet.
    Partial,
    /// Not for this path: hand the connection (bytes included) to hyper.
    Elsewhere,
    /// A head no server should act on: answered with this code (400 or 431), and the
    /// connection closed.
    Refused(ErrorCode),
}

/// Room for a head's headers, left uninitialised: the parser writes only what it finds,
/// and zeroing all the slots (3 KiB) for every head cost about 300 instructions a head
/// (callgrind), 1.3% of a proxied request.
fn header_slots<'b>() -> [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS] {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// Reads the request head at the start of `buf` as every HTTP/1 path of Tessera reads
/// it (this module's and, through the server's `http::guard`, hyper's): complete, refused
/// with the contract's code, or not all there yet.
pub fn read_request_head<'h, 'b>(
    buf: &'b [u8],
    slots: &'h mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Option<(httparse::Request<'h, 'b>, usize)>, ErrorCode> {
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(len)) => Ok(Some((req, len))),
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => Ok(None),
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
            Err(ErrorCode::HeadersTooLarge)
        }
        Err(_) => Err(ErrorCode::InvalidRequest),
    }
}

/// How the body of a parsed request is framed (RFC 9112 §6.3), or `invalid_request`
/// for a head whose framing could be read two ways: a `Content-Length` that is not one
/// number, a `Transfer-Encoding` that does not end in `chunked` (or is on HTTP/1.0),
/// or both headers at once (the classic smuggling pair, refused rather than resolved).
/// Its method and target must also be what `http` accepts, as hyper will parse them.
pub fn request_framing(req: &httparse::Request<'_, '_>) -> Result<Framing, ErrorCode> {
    let bad = ErrorCode::InvalidRequest;
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(bad);
    };
    if Method::from_bytes(method.as_bytes()).is_err() || target.parse::<Uri>().is_err() {
        return Err(bad);
    }
    let (mut length, mut codings, mut coded) = (None::<u64>, Vec::<&[u8]>::new(), false);
    for h in req.headers.iter() {
        match field(h.name.as_bytes()) {
            Field::ContentLength => {
                for piece in h.value.split(|&b| b == b',') {
                    let n = parse_length(piece.trim_ascii()).ok_or(bad)?;
                    if length.is_some_and(|l| l != n) {
                        return Err(bad);
                    }
                    length = Some(n);
                }
            }
            Field::TransferEncoding => {
                coded = true;
                codings.extend(
                    h.value
                        .split(|&b| b == b',')
                        .map(<[u8]>::trim_ascii)
                        .filter(|c| !c.is_empty()),
                );
            }
            _ => {}
        }
    }
    if !coded {
        return Ok(match length {
            None | Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
        });
    }
    let chunked_last = codings
        .iter()
        .position(|c| c.eq_ignore_ascii_case(b"chunked"))
        .is_some_and(|i| i == codings.len() - 1);
    if length.is_some() || !chunked_last || req.version != Some(1) {
        return Err(bad);
    }
    Ok(Framing::Chunked)
}

/// Parses the request head at the start of `buf`.
pub fn parse_request(buf: &Bytes) -> Parsed<RequestHead> {
    let mut raw = header_slots();
    let (req, len) = match read_request_head(buf, &mut raw) {
        Ok(Some(head)) => head,
        Ok(None) => return Parsed::Partial,
        Err(code) => return Parsed::Refused(code),
    };
    match request_framing(&req) {
        Ok(Framing::Empty) => {}
        Ok(_) => return Parsed::Elsewhere,
        Err(code) => return Parsed::Refused(code),
    }
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Elsewhere;
    };
    if !target.starts_with('/') {
        return Parsed::Elsewhere;
    }
    let mut close = false;
    let mut headers = RequestHeaders {
        bytes: buf.clone(),
        lines: Vec::with_capacity(req.headers.len()),
    };
    for h in req.headers.iter() {
        let kind = field(h.name.as_bytes());
        if matches!(kind, Field::Upgrade | Field::Expect) {
            return Parsed::Elsewhere;
        }
        if kind == Field::Connection && has_token(h.value, "close") {
            close = true;
        }
        headers.lines.push(Line {
            name: span(buf, h.name.as_bytes()),
            value: span(buf, h.value),
            field: kind,
        });
    }
    let (Ok(method), Ok(uri)) = (
        Method::from_bytes(method.as_bytes()),
        Uri::from_maybe_shared(buf.slice_ref(target.as_bytes())),
    ) else {
        return Parsed::Refused(ErrorCode::InvalidRequest);
    };
    Parsed::Head(
        RequestHead {
            method,
            uri,
            headers,
            close,
        },
        len,
    )
}

/// An upstream's response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    /// The header lines to pass on: all but the hop-by-hop ones and the body's framing.
    pub headers: HeaderBlock,
    /// The upstream's `Content-Length`, unless a transfer coding overrides it.
    pub length: Option<u64>,
    /// The transfer codings other than `chunked` (`gzip`), as the upstream listed
    /// them: passed on in front of the `chunked` the answer goes out with.
    pub codings: Option<Vec<u8>>,
    pub framing: Framing,
    /// The connection can carry another request after this response's body.
    pub reusable: bool,
}

/// Header lines as they go on the wire (`name: value` and CRLF each), parsed and
/// checked by httparse (a name is a token, a value has no CR or LF) but not taken apart
/// into a `HeaderMap`.
///
/// Why: an upstream's answer is mostly passed on as it came. Building a map of its
/// headers (each name looked up, each value checked again, each entry hashed), then
/// writing it out and dropping it, was about a tenth of what a proxied request cost in
/// user space (callgrind). The gateway's own connections write the block out as it
/// is; hyper's path builds the map from it ([`HeaderBlock::to_map`]).
#[derive(Debug, Clone, Default)]
pub struct HeaderBlock {
    lines: Vec<u8>,
    /// It has a `Date` line.
    has_date: bool,
    /// It has a `RateLimit-*` line (which the gateway's own replace).
    has_rate_limit: bool,
}

impl HeaderBlock {
    /// The lines, CRLF after each.
    pub fn as_bytes(&self) -> &[u8] {
        &self.lines
    }

    pub fn has_date(&self) -> bool {
        self.has_date
    }

    /// Adds a line, and notes what [`Field`] it is.
    fn push(&mut self, name: &[u8], value: &[u8], field: Field) {
        self.has_date |= field == Field::Date;
        self.has_rate_limit |= field == Field::RateLimit;
        write_header(name, value, &mut self.lines);
    }

    /// Writes the lines out, without the `RateLimit-*` ones if the gateway writes its own.
    pub fn write_to(&self, out: &mut Vec<u8>, own_rate_limit: bool) {
        if !(own_rate_limit && self.has_rate_limit) {
            out.extend_from_slice(&self.lines);
            return;
        }
        for (name, value) in self.iter() {
            if !is_rate_limit_name(name) {
                write_header(name, value, out);
            }
        }
    }

    /// The block less the lines named in `names` (in any case).
    fn without(&self, names: &[&[u8]]) -> Self {
        let mut kept = Self::default();
        for (name, value) in self.iter() {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                kept.push(name, value, field(name));
            }
        }
        kept
    }

    /// Each line's name and value.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.lines
            .split(|&b| b == b'\n')
            .filter_map(|line| line.strip_suffix(b"\r"))
            .filter_map(|line| {
                let colon = line.iter().position(|&b| b == b':')?;
                Some((&line[..colon], line[colon + 1..].trim_ascii()))
            })
    }

    /// The lines as a `HeaderMap`, for hyper's path.
    pub fn to_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.iter().count() + ADDED_HEADERS);
        for (name, value) in self.iter() {
            // httparse has checked both; what `http` refuses (nothing) is left out.
            if let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
            {
                map.append(name, value);
            }
        }
        map
    }
}

/// A request's header lines as they were read: each name and value as a place in the
/// bytes they came in (not copied out), with its [`Field`].
///
/// Why not a `HeaderMap`: the gateway reads three or four of a request's headers and
/// passes the rest on as they came. Building a map (each name looked up, each value a
/// shared `Bytes`, each entry hashed), taking a dozen names out of it and putting
/// others in, writing it out and dropping it was the largest user-space cost of a
/// proxied request left, about 2,500 instructions of 21,500 (callgrind).
#[derive(Clone, Default)]
pub struct RequestHeaders {
    /// The bytes the lines are in: the request head as read, or the lines of a map
    /// written out ([`RequestHeaders::from_map`]).
    bytes: Bytes,
    lines: Vec<Line>,
}

/// Names only: the values hold the request's credential.
impl std::fmt::Debug for RequestHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.iter()
                    .map(|(_, name, _)| String::from_utf8_lossy(name)),
            )
            .finish()
    }
}

/// One header line of [`RequestHeaders`]: where its name and value are.
#[derive(Debug, Clone, Copy)]
struct Line {
    name: (u32, u32),
    value: (u32, u32),
    field: Field,
}

/// Where `part` (a slice of `buf`) is in `buf`. A head is at most [`MAX_HEAD_BYTES`]
/// and a map's lines are bounded by the listener's header limit, so `u32` holds it.
fn span(buf: &[u8], part: &[u8]) -> (u32, u32) {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    (start as u32, (start + part.len()) as u32)
}

impl RequestHeaders {
    /// The headers of a request hyper read (TLS, HTTP/2, a body, HTTP/1.0), written out
    /// once as lines so that the proxy has one form to read.
    pub fn from_map(map: &HeaderMap) -> Self {
        let mut bytes = Vec::with_capacity(map.len() * 32);
        let mut lines = Vec::with_capacity(map.len());
        for (name, value) in map {
            let start = bytes.len();
            bytes.extend_from_slice(name.as_str().as_bytes());
            let middle = bytes.len();
            bytes.extend_from_slice(value.as_bytes());
            lines.push(Line {
                name: (start as u32, middle as u32),
                value: (middle as u32, bytes.len() as u32),
                field: field(name.as_str().as_bytes()),
            });
        }
        Self {
            bytes: bytes.into(),
            lines,
        }
    }

    /// Each line's [`Field`], name and value, in the order they came.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (Field, &[u8], &[u8])> {
        self.lines
            .iter()
            .map(|l| (l.field, self.at(l.name), self.at(l.value)))
    }

    /// The values of the lines that are `field`, in order.
    pub fn values(&self, field: Field) -> impl DoubleEndedIterator<Item = &[u8]> {
        self.lines
            .iter()
            .filter(move |l| l.field == field)
            .map(|l| self.at(l.value))
    }

    /// The value of the first line named `name` (in any case).
    #[cfg(test)]
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(_, n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, _, v)| v)
    }

    /// The size of the lines as the listener's header limit counts it: name, value and
    /// four bytes each.
    pub fn size(&self) -> usize {
        self.lines
            .iter()
            .map(|l| (l.name.1 - l.name.0 + l.value.1 - l.value.0) as usize + 4)
            .sum()
    }

    fn at(&self, (start, end): (u32, u32)) -> &[u8] {
        &self.bytes[start as usize..end as usize]
    }
}

fn is_rate_limit_name(name: &[u8]) -> bool {
    name.len() > 10 && is_name(&name[..10], b"ratelimit-")
}

/// Parses the response head at the start of `buf`, for a request that was `HEAD` or not.
/// `Ok(None)`: not a whole head yet.
pub fn parse_response(
    buf: &Bytes,
    head_request: bool,
) -> Result<Option<(ResponseHead, usize)>, H1Error> {
    let mut raw = header_slots();
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut raw)?
    {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() < MAX_HEAD_BYTES => return Ok(None),
        httparse::Status::Partial => return Err(H1Error::HeadTooLarge),
    };
    let code = res.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| H1Error::Status(code))?;
    let mut reusable = res.version == Some(1);
    let (mut coded, mut length) = (false, None::<u64>);
    let mut codings: Vec<&[u8]> = Vec::new();
    // Names that `Connection` lists, to leave out as well (rare).
    let mut listed: Vec<&[u8]> = Vec::new();
    let mut headers = HeaderBlock {
        lines: Vec::with_capacity(len),
        ..HeaderBlock::default()
    };
    for h in res.headers.iter() {
        let kind = field(h.name.as_bytes());
        // The framing and the hop-by-hop lines are read here, not passed on.
        match kind {
            Field::Connection => {
                if has_token(h.value, "close") {
                    reusable = false;
                } else if has_token(h.value, "keep-alive") {
                    reusable = true;
                }
                listed.extend(connection_options(std::iter::once(h.value)));
            }
            Field::TransferEncoding => {
                coded = true;
                codings.extend(
                    h.value
                        .split(|&b| b == b',')
                        .map(<[u8]>::trim_ascii)
                        .filter(|c| !c.is_empty()),
                );
            }
            Field::ContentLength => {
                for piece in h.value.split(|&b| b == b',') {
                    let n = parse_length(piece.trim_ascii()).ok_or(H1Error::ContentLength)?;
                    if length.is_some_and(|l| l != n) {
                        return Err(H1Error::ContentLength);
                    }
                    length = Some(n);
                }
            }
            Field::Upgrade | Field::HopByHop => {}
            _ => headers.push(h.name.as_bytes(), h.value, kind),
        }
    }
    if !listed.is_empty() {
        headers = headers.without(&listed);
    }
    let is_chunked = |c: &&[u8]| c.eq_ignore_ascii_case(b"chunked");
    let chunked = codings.last().is_some_and(is_chunked);
    if chunked {
        codings.pop();
    }
    // `chunked` anywhere but last is not a framing a recipient can read (RFC 9112 §6.1).
    if codings.iter().any(is_chunked) {
        return Err(H1Error::Chunked);
    }
    let codings = (!codings.is_empty()).then(|| codings.join(&b", "[..]));
    let framing = if head_request || is_bodiless(status) {
        Framing::Empty
    } else if coded {
        // A length beside a transfer coding is ignored, and dropped (RFC 9112 §6.3).
        length = None;
        if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    if framing == Framing::Close {
        reusable = false;
    }
    Ok(Some((
        ResponseHead {
            status,
            headers,
            length,
            codings,
            framing,
            reusable,
        },
        len,
    )))
}

/// The header names that `Connection` values list, beyond `keep-alive` and `close`.
pub fn connection_options<'a>(
    values: impl Iterator<Item = &'a [u8]>,
) -> impl Iterator<Item = &'a [u8]> {
    values
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case(b"keep-alive")
                && !t.eq_ignore_ascii_case(b"close")
        })
}

/// Whether a response with this status never has a body, whatever its headers say
/// (RFC 9112 §6.3); a response to `HEAD` has none either.
pub fn is_bodiless(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// How `body` goes on the wire: nothing for a body already at its end, a length when
/// its size is known, chunked otherwise.
pub fn body_framing(body: &impl http_body::Body) -> Framing {
    if body.is_end_stream() {
        return Framing::Empty;
    }
    match body.size_hint().exact() {
        Some(n) => Framing::Length(n),
        None => Framing::Chunked,
    }
}

/// Sets the headers that say how `body` is framed ([`body_framing`]), and answers that
/// framing.
pub fn frame_body(headers: &mut HeaderMap, body: &impl http_body::Body) -> Framing {
    let framing = body_framing(body);
    match framing {
        Framing::Length(n) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        Framing::Chunked => {
            headers.remove(header::CONTENT_LENGTH);
            headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        Framing::Empty | Framing::Close => {}
    }
    framing
}

/// Gives bytes split off the front of `buf` (and not used) back to it, in front of
/// what it still holds: without a copy when nothing else holds them.
pub fn put_back(buf: &mut BytesMut, bytes: Bytes) {
    let mut front = bytes
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    front.unsplit(std::mem::take(buf));
    *buf = front;
}

fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Whether a comma-separated header value lists `token` (case-insensitively).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests;
