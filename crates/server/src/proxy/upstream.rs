//! Upstreams and their keep-alive connections: one pool of HTTP/1.1 connections per
//! upstream base URL, and the client that sends a request on one of them and streams
//! the answer back ([`tessera_wire::h1`] says why not hyper's client).
//!
//! A connection goes back to its pool when the response body has been read to its end
//! (see [`UpstreamBody`]); a request takes the most recently returned one. Idle
//! connections are not polled by any task: the runtime still sees a close on them, so
//! a checkout skips one the upstream closed without a system call.

use axum::body::Body;
use axum::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use axum::http::uri::Authority;
use axum::http::{HeaderValue, Method, Response};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use quanta::Instant;
use std::collections::VecDeque;
use std::io::ErrorKind;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;
use tessera_core::gateway::split_upstream;
use tessera_wire::h1::{self, ChunkedDecoder, Decoded, Framing, ResponseHead};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Idle connections kept per upstream; more are closed when they come back.
const MAX_IDLE: usize = 1024;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Read buffer room per read.
const READ_SIZE: usize = 16 * 1024;

/// Why a request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// The upstream closed the connection before any answer: on a reused connection,
    /// it went stale between two requests.
    #[error("the connection closed before an answer")]
    Closed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Protocol(#[from] h1::H1Error),
    #[error("reading the request body: {0}")]
    RequestBody(axum::Error),
    /// No response head within the service's `timeout_ms`.
    #[error("no answer in time")]
    Timeout,
}

/// A request ready to go upstream.
pub struct UpstreamRequest {
    /// The head as it goes on the wire: the request line
    /// ([`Upstream::write_request_line`]), the header lines, the lines of `framing`
    /// ([`h1::write_framing`]) and the empty line.
    pub head: Vec<u8>,
    pub method: Method,
    pub framing: Framing,
    pub body: Body,
}

/// One upstream base URL (`http://host:port[/base]`) and its idle connections.
pub struct Upstream {
    /// The base URL as configured, for logs.
    pub base: String,
    authority: Authority,
    host: String,
    /// The base URL's path, without a trailing `/` (often empty).
    base_path: String,
    idle: Mutex<VecDeque<Idle>>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// A connection and what was read from it but not used yet.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    /// The timer of the request on this connection, kept from one request to the next
    /// (taken out while a request waits on it): moving a registered timer later is an
    /// atomic store, where a new one per request (`tokio::time::timeout`) was a timer
    /// wheel insertion and removal, about 900 instructions a request (callgrind).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// `base` is a URL the configuration validated when it was stored.
    pub fn new(base: &str) -> Result<Self, String> {
        let url = split_upstream(base)?;
        let unusable = |e: &dyn std::fmt::Display| format!("'{base}' cannot be used: {e}");
        Ok(Self {
            base: base.to_owned(),
            authority: url.authority.parse().map_err(|e| unusable(&e))?,
            host: url.authority.to_owned(),
            base_path: url.path.to_owned(),
            idle: Mutex::new(VecDeque::new()),
        })
    }

    /// Writes the request line for `path` (already normalized) and the original query,
    /// in origin form (`/base/path?query`, the form a server expects from a client), and
    /// this upstream's `Host`. `None`: the target has bytes a request line cannot hold
    /// (the path and query come from a parsed URI and the base path from a validated
    /// URL, so this is a guard, not a path any request is known to take).
    pub fn write_request_line(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        out: &mut Vec<u8>,
    ) -> Option<()> {
        out.extend_from_slice(method.as_str().as_bytes());
        out.push(b' ');
        let start = out.len();
        out.extend_from_slice(self.base_path.as_bytes());
        out.extend_from_slice(path.as_bytes());
        if let Some(q) = query {
            out.push(b'?');
            out.extend_from_slice(q.as_bytes());
        }
        // What `http`'s URI parser takes: no space, control byte or DEL.
        if !out[start..].iter().all(|&b| b > b' ' && b != 0x7f) {
            return None;
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        h1::write_header(b"host", self.host.as_bytes(), out);
        Some(())
    }

    /// Sends `req` on an idle connection or a new one, and answers once the response
    /// head has arrived (within `timeout`, from now); the body streams after. A bodiless
    /// idempotent request that a reused connection closed on is sent once more on
    /// another.
    pub async fn send(
        self: &Arc<Self>,
        req: UpstreamRequest,
        timeout: Duration,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let UpstreamRequest {
            head,
            method,
            framing,
            mut body,
        } = req;
        let head_request = method == Method::HEAD;
        let mut replay = framing == Framing::Empty && method.is_idempotent();
        loop {
            // Connecting is the rare path: boxed, so that its future does not make every
            // request's future bigger (see `exchange`).
            let (mut conn, reused) = match self.checkout() {
                Some(c) => (c, true),
                None => (
                    Box::pin(tokio::time::timeout_at(deadline, self.connect()))
                        .await
                        .map_err(|_| UpstreamError::Timeout)??,
                    false,
                ),
            };
            let mut timer = conn
                .timer
                .take()
                .unwrap_or_else(|| Box::pin(tokio::time::sleep_until(deadline)));
            timer.as_mut().reset(deadline);
            let answer = tokio::select! {
                biased;
                answer = conn.exchange(&head, framing, &mut body, head_request) => answer,
                () = timer.as_mut() => Err(UpstreamError::Timeout),
            };
            conn.timer = Some(timer);
            match answer {
                Ok((mut response, rest, whole)) => {
                    response.reusable &= whole;
                    return Ok(self.clone().response(conn, response, rest));
                }
                Err(UpstreamError::Closed) if reused && replay => replay = false,
                Err(e) => return Err(e),
            }
        }
    }

    fn response(self: Arc<Self>, conn: Conn, head: ResponseHead, rest: Bytes) -> UpstreamResponse {
        let state = match head.framing {
            Framing::Empty => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked(ChunkedDecoder::default()),
            Framing::Close => BodyState::Close,
        };
        let mut body = UpstreamBody {
            conn: Some(conn),
            rest,
            state,
            reusable: head.reusable,
            upstream: self,
        };
        if body.state == BodyState::Done {
            body.finish();
        }
        UpstreamResponse { head, body }
    }

    /// The most recently returned connection the upstream has not closed; stale ones
    /// (by age, at the front, or closed) are dropped on the way.
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        while idle
            .front()
            .is_some_and(|c| now.duration_since(c.since) >= IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        while let Some(Idle { conn, .. }) = idle.pop_back() {
            if conn.is_open() {
                return Some(conn);
            }
        }
        None
    }

    fn give_back(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let host = self.authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = self.authority.port_u16().unwrap_or(80);
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(UpstreamError::Connect)?;
        stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(READ_SIZE),
            timer: None,
        })
    }
}

impl Conn {
    /// Whether an idle connection is still usable: the upstream has neither closed it
    /// nor sent anything unasked. No system call unless the runtime saw an event on it.
    fn is_open(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                matches!(self.stream.try_read(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock)
            }
        }
    }

    /// Writes the request and reads up to the end of the response head (past any 1xx);
    /// hands back the head, the bytes read after it, and whether the whole request
    /// body went out (if not, the connection cannot carry another request).
    async fn exchange(
        &mut self,
        head: &[u8],
        framing: Framing,
        body: &mut Body,
        head_request: bool,
    ) -> Result<(ResponseHead, Bytes, bool), UpstreamError> {
        self.stream.write_all(head).await.map_err(closed)?;
        if framing == Framing::Empty {
            let (response, rest) = read_head(&mut self.stream, &mut self.buf, head_request).await?;
            return Ok((response, rest, true));
        }
        // Boxed: rustc builds a future and then copies it into its caller's, so the
        // size of this one is paid by every request, and bodiless requests (most)
        // have no use for the body's futures.
        Box::pin(self.send_with_body(framing, body, head_request)).await
    }

    /// The rest of [`Conn::exchange`] for a request with a body.
    async fn send_with_body(
        &mut self,
        framing: Framing,
        body: &mut Body,
        head_request: bool,
    ) -> Result<(ResponseHead, Bytes, bool), UpstreamError> {
        // The body goes while the answer is awaited: an upstream may answer (a 413, say)
        // before it has read all of it, and that answer is the one to pass on.
        let (mut reader, mut writer) = self.stream.split();
        let send = send_body(&mut writer, framing, body);
        let answer = read_head(&mut reader, &mut self.buf, head_request);
        tokio::pin!(send, answer);
        let (mut sending, mut send_error) = (true, None);
        loop {
            tokio::select! {
                sent = &mut send, if sending => {
                    sending = false;
                    match sent {
                        // The client's body is malformed or cut short: answered at
                        // once, and the connection, with part of a body on it, closes.
                        Err(e @ UpstreamError::RequestBody(_)) => return Err(e),
                        sent => send_error = sent.err(),
                    }
                }
                answer = &mut answer => {
                    let whole = !sending && send_error.is_none();
                    return match (answer, send_error) {
                        (Ok((response, rest)), _) => Ok((response, rest, whole)),
                        (Err(_), Some(e)) | (Err(e), None) => Err(e),
                    };
                }
            }
        }
    }
}

/// Writes a request body framed as `framing` (a length, or chunked).
async fn send_body(
    writer: &mut (impl AsyncWrite + Unpin),
    framing: Framing,
    body: &mut Body,
) -> Result<(), UpstreamError> {
    let chunked = framing == Framing::Chunked;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(UpstreamError::RequestBody)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if chunked {
            let mut line = Vec::with_capacity(18);
            h1::chunk_size_line(data.len(), &mut line);
            writer.write_all(&line).await?;
            writer.write_all(&data).await?;
            writer.write_all(h1::CHUNK_END).await?;
        } else {
            writer.write_all(&data).await?;
        }
    }
    if chunked {
        writer.write_all(h1::LAST_CHUNK).await?;
    }
    Ok(())
}

/// Reads into `buf` until it holds a final response head (1xx answers are passed over);
/// answers the head and the bytes after it.
async fn read_head(
    reader: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<(ResponseHead, Bytes), UpstreamError> {
    let mut answered = false;
    loop {
        if !buf.is_empty() {
            let bytes = buf.split().freeze();
            match h1::parse_response(&bytes, head_request)? {
                Some((response, _)) if response.status == 101 => {
                    return Err(h1::H1Error::Status(101).into());
                }
                // 100 Continue, 103 Early Hints: the final answer follows.
                Some((response, len)) if response.status.is_informational() => {
                    h1::put_back(buf, bytes.slice(len..));
                    continue;
                }
                Some((response, len)) => return Ok((response, bytes.slice(len..))),
                None => h1::put_back(buf, bytes),
            }
        }
        buf.reserve(READ_SIZE);
        if reader.read_buf(buf).await.map_err(closed)? == 0 {
            return Err(if answered {
                std::io::Error::from(ErrorKind::UnexpectedEof).into()
            } else {
                UpstreamError::Closed
            });
        }
        answered = true;
    }
}

/// A write or read error that means the upstream had closed the connection.
fn closed(e: std::io::Error) -> UpstreamError {
    match e.kind() {
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => {
            UpstreamError::Closed
        }
        _ => UpstreamError::Io(e),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum BodyState {
    Length(u64),
    Chunked(ChunkedDecoder),
    Close,
    Done,
}

/// An upstream's answer: its head, and its body still on the connection.
#[derive(Debug)]
pub struct UpstreamResponse {
    pub head: ResponseHead,
    pub body: UpstreamBody,
}

impl UpstreamResponse {
    /// As an `http` response, for hyper's path: the header map built from the block, and
    /// the upstream's length (hyper frames the body by it, and a `HEAD` answer keeps it).
    pub fn into_response(self) -> Response<Body> {
        let mut headers = self.head.headers.to_map();
        if let Some(n) = self.head.length {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
        }
        // hyper adds `chunked` after codings it is given (and HTTP/2 has none).
        let coded = matches!(self.head.framing, Framing::Chunked | Framing::Close);
        if let (true, Some(codings)) = (coded, &self.head.codings) {
            if let Ok(v) = HeaderValue::from_bytes(codings) {
                headers.insert(TRANSFER_ENCODING, v);
            }
        }
        let mut response = Response::new(Body::new(self.body));
        *response.status_mut() = self.head.status;
        *response.headers_mut() = headers;
        response
    }
}

/// An upstream response body, read from the connection as it is polled. Read to its
/// end, it hands the connection back to the pool; dropped earlier, it closes it, since
/// the rest of the body would still be on the wire.
pub struct UpstreamBody {
    conn: Option<Conn>,
    /// Bytes read and not handed out yet.
    rest: Bytes,
    state: BodyState,
    reusable: bool,
    upstream: Arc<Upstream>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl UpstreamBody {
    /// Ends the body; the connection goes back to the pool if it can carry another
    /// request and the upstream sent nothing past this answer (every read lands in
    /// `rest`, so `rest` says it).
    fn finish(&mut self) {
        self.state = BodyState::Done;
        if let Some(conn) = self.conn.take() {
            if self.reusable && self.rest.is_empty() {
                self.upstream.give_back(conn);
            }
        }
    }

    /// Reads more into `rest`; `Ok(false)` at the end of the stream.
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        loop {
            ready!(conn.stream.poll_read_ready(cx))?;
            conn.buf.reserve(READ_SIZE);
            match conn.stream.try_read_buf(&mut conn.buf) {
                Ok(0) => return Poll::Ready(Ok(false)),
                Ok(_) => {
                    self.rest = conn.buf.split().freeze();
                    return Poll::Ready(Ok(true));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Length(remaining) if !this.rest.is_empty() => {
                    let n = (*remaining).min(this.rest.len() as u64);
                    let data = this.rest.split_to(n as usize);
                    *remaining -= n;
                    if *remaining == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                BodyState::Close if !this.rest.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(std::mem::take(&mut this.rest)))));
                }
                BodyState::Chunked(decoder) => match decoder.decode(&mut this.rest) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Done) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(std::io::Error::new(
                            ErrorKind::InvalidData,
                            e,
                        ))));
                    }
                },
                _ => {}
            }
            match ready!(this.poll_more(cx)) {
                Ok(true) => {}
                Ok(false) if this.state == BodyState::Close => {
                    this.conn = None;
                    this.state = BodyState::Done;
                    return Poll::Ready(None);
                }
                Ok(false) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(ErrorKind::UnexpectedEof.into())));
                }
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == BodyState::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            BodyState::Done => SizeHint::with_exact(0),
            BodyState::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_line(base: &str, path: &str, query: Option<&str>) -> Option<String> {
        let mut out = Vec::new();
        Upstream::new(base)
            .unwrap()
            .write_request_line(&Method::GET, path, query, &mut out)?;
        Some(String::from_utf8(out).unwrap())
    }

    #[test]
    fn targets_join_the_base_path_the_path_and_the_query_in_origin_form() {
        assert_eq!(
            request_line("http://127.0.0.1:8080/base", "/a/b", Some("x=1&y")).unwrap(),
            "GET /base/a/b?x=1&y HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n"
        );
        assert_eq!(
            request_line("http://svc.internal", "/", None).unwrap(),
            "GET / HTTP/1.1\r\nhost: svc.internal\r\n"
        );
        // A target that would break the request line is refused.
        assert!(request_line("http://svc.internal", "/a b", None).is_none());
        assert!(request_line("http://svc.internal", "/a\r\nx: y", None).is_none());
    }
}
