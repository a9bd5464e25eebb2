//! Every HTTP/1 request head that hyper serves is read here first, so that a malformed
//! or oversized one gets the contract's JSON answer rather than hyper's empty 400/431.
//!
//! [`Guarded`] sits between a connection and hyper. It passes bytes to hyper only once
//! it has read them as what they are: a whole request head that [`h1::read_request_head`]
//! and [`h1::request_framing`] accept (the same checks as the gateway's own loop), then
//! that request's body, measured by its framing, then the next head. A head it refuses
//! is never passed on: hyper gets in its place a short request of our own, carrying a
//! per-process secret and the code, and nothing after it. [`Refusals`], in
//! front of the service, answers that request with the error and `Connection: close`.
//! So hyper writes the answer in order, after those of any pipelined requests before it.
//!
//! Knowing where each message starts and ends, the guard also times the client: a head
//! must arrive within [`Timeouts::header_read`] of when the server began waiting for it
//! (an idle keep-alive connection included, but not while a request is being answered),
//! and a body must keep up a minimum pace ([`MIN_BODY_RATE`] after
//! [`Timeouts::body_grace`]). A client that falls behind gets the end of the stream.
//!
//! HTTP/2 (its preface) and upgraded connections are passed through as they are: their
//! framing is not HTTP/1's.

use super::error::ApiError;
use super::listen::Timeouts;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use tessera_core::ErrorCode;
use tessera_wire::h1::{self, ChunkedDecoder, Decoded, Framing, MAX_HEADERS};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";
const READ_SIZE: usize = 8 * 1024;
/// The header that carries a refusal to [`Refusals`]: `<secret> <code>`.
const REFUSAL: &str = "x-tessera-refusal";

/// A random value per process, so that no client can make its own request look like
/// a refusal.
fn secret() -> &'static str {
    static SECRET: OnceLock<String> = OnceLock::new();
    SECRET.get_or_init(|| {
        let mut bytes = [0u8; 16];
        // Start-up: without the OS's randomness nothing else works either.
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut bytes).expect("the OS random number generator");
        hex::encode(bytes)
    })
}

/// Where in the stream of requests the guard is.
#[derive(Debug)]
enum State {
    /// At the start of a connection: a head, or HTTP/2's preface.
    Start,
    /// At the start of a request head.
    Head,
    /// In a body of this many more bytes.
    Length(u64),
    /// In a chunked body.
    Chunked(ChunkedDecoder),
    /// Not HTTP/1 framing any more (HTTP/2, an upgrade): everything goes through.
    Through,
    /// A refusal was passed on: the stream ends.
    Ended,
}

/// A body must arrive at this many bytes a second at least, on average, once its
/// [`Timeouts::body_grace`] is over: a client sending a byte every few seconds cannot
/// hold a connection for ever.
pub const MIN_BODY_RATE: u64 = 1024;

/// Requests of one connection handed to the service and not yet answered to the end
/// (their response bodies not yet written out): while there are any, the connection is
/// not idle, whatever it reads.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn start(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    fn any(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 0
    }
}

/// One request in flight, until dropped (with its response body).
#[derive(Debug)]
struct InFlightGuard(InFlight);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// When the client must have sent what the server waits for.
#[derive(Debug, Default)]
enum Deadline {
    /// Not waiting on the client.
    #[default]
    None,
    /// A whole head by then.
    Head(tokio::time::Instant),
    /// The body at [`MIN_BODY_RATE`]: `received` bytes since `started`.
    Body {
        started: tokio::time::Instant,
        received: u64,
    },
}

/// A connection whose request heads are read before hyper reads them.
pub struct Guarded<I> {
    io: I,
    timeouts: Timeouts,
    in_flight: InFlight,
    deadline: Deadline,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    state: State,
    /// Read from `io`, not yet passed on.
    read: BytesMut,
    /// Ready to be passed on.
    ready: Bytes,
    /// `io` has ended.
    eof: bool,
    /// After a refusal: the end of the [`LINGER`] and the bytes dropped so far.
    linger: Option<(Pin<Box<tokio::time::Sleep>>, usize)>,
}

impl<I> Guarded<I> {
    /// `io` guarded, its requests counted in `in_flight` (shared with the
    /// [`Refusals`] service in front of the connection's service).
    pub fn new(io: I, timeouts: Timeouts, in_flight: InFlight) -> Self {
        Self {
            io,
            timeouts,
            in_flight,
            deadline: Deadline::None,
            timer: None,
            state: State::Start,
            read: BytesMut::new(),
            ready: Bytes::new(),
            eof: false,
            linger: None,
        }
    }

    /// Moves what can be passed on from `read` to `ready`, as far as the state allows.
    /// `false`: more bytes are needed first.
    fn advance(&mut self) -> bool {
        match &mut self.state {
            State::Ended => true,
            State::Through => {
                if self.read.is_empty() {
                    return false;
                }
                self.ready = self.read.split().freeze();
                true
            }
            State::Start => {
                let n = self.read.len().min(H2_PREFACE.len());
                if self.read[..n] != H2_PREFACE[..n] {
                    self.state = State::Head;
                } else if n == H2_PREFACE.len() {
                    self.state = State::Through;
                } else if self.eof {
                    self.state = State::Head;
                } else {
                    return false;
                }
                self.advance()
            }
            State::Head => self.head(),
            State::Length(remaining) => {
                if self.read.is_empty() {
                    return false;
                }
                let n = (*remaining).min(self.read.len() as u64);
                if let Deadline::Body { received, .. } = &mut self.deadline {
                    *received += n;
                }
                *remaining -= n;
                if *remaining == 0 {
                    self.state = State::Head;
                }
                self.ready = self.read.split_to(n as usize).freeze();
                true
            }
            State::Chunked(decoder) => {
                if self.read.is_empty() {
                    return false;
                }
                let mut rest = self.read.clone().freeze();
                let before = rest.len();
                let done = loop {
                    match decoder.decode(&mut rest) {
                        Ok(Decoded::Data(_)) => continue,
                        Ok(Decoded::NeedMore) => break false,
                        Ok(Decoded::Done) => break true,
                        // hyper's own decoder refuses it too: the service answers 400
                        // and the connection closes. Nothing more is framed here.
                        Err(_) => {
                            self.state = State::Through;
                            return self.advance();
                        }
                    }
                };
                let used = before - rest.len();
                if let Deadline::Body { received, .. } = &mut self.deadline {
                    *received += used as u64;
                }
                if done {
                    self.state = State::Head;
                }
                self.ready = self.read.split_to(used).freeze();
                true
            }
        }
    }

    /// [`Guarded::advance`] at the start of a head.
    fn head(&mut self) -> bool {
        if self.read.is_empty() {
            return false;
        }
        let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let judged = match h1::read_request_head(&self.read, &mut slots) {
            Ok(Some((req, len))) => h1::request_framing(&req).map(|framing| {
                let upgrade = req.method == Some("CONNECT")
                    || req
                        .headers
                        .iter()
                        .any(|h| h.name.eq_ignore_ascii_case("upgrade"));
                (len, framing, upgrade)
            }),
            // A head cut short by the end of the stream goes to hyper as it is, which
            // closes the connection without an answer, as for any client gone.
            Ok(None) if self.eof => Ok((self.read.len(), Framing::Empty, false)),
            Ok(None) => return false,
            Err(code) => Err(code),
        };
        match judged {
            Ok((len, framing, upgrade)) => {
                self.state = match framing {
                    _ if upgrade => State::Through,
                    Framing::Length(n) => State::Length(n),
                    Framing::Chunked => State::Chunked(ChunkedDecoder::default()),
                    Framing::Empty | Framing::Close => State::Head,
                };
                self.deadline = match self.state {
                    State::Length(_) | State::Chunked(_) => Deadline::Body {
                        started: tokio::time::Instant::now(),
                        received: 0,
                    },
                    _ => Deadline::None,
                };
                self.ready = self.read.split_to(len).freeze();
            }
            Err(code) => {
                self.read.clear();
                self.state = State::Ended;
                self.ready = Bytes::from(format!(
                    "GET / HTTP/1.1\r\nhost: tessera\r\n{REFUSAL}: {} {}\r\n\
                     connection: close\r\n\r\n",
                    secret(),
                    code.as_str()
                ));
            }
        }
        true
    }
}

impl<I> Guarded<I> {
    /// Whether the client has missed its deadline, now that the server waits on it; if
    /// not, the timer is set to wake the reader when it would.
    fn client_is_late(&mut self, cx: &mut Context<'_>) -> bool {
        let at_a_head = matches!(self.state, State::Start | State::Head);
        if at_a_head && self.in_flight.any() {
            // Waiting for the next request while one is answered is not idling.
            self.deadline = Deadline::None;
            return false;
        }
        let when = match self.deadline {
            Deadline::None if at_a_head => {
                let when = tokio::time::Instant::now() + self.timeouts.header_read;
                self.deadline = Deadline::Head(when);
                when
            }
            Deadline::None => return false,
            Deadline::Head(when) => when,
            Deadline::Body { started, received } => {
                started
                    + self.timeouts.body_grace
                    + std::time::Duration::from_secs(received / MIN_BODY_RATE)
            }
        };
        if matches!(self.state, State::Through | State::Ended) {
            return false;
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(when)));
        if timer.deadline() != when {
            timer.as_mut().reset(when);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if matches!(this.state, State::Ended) {
                // Not the end of the stream: hyper would take that for a client gone
                // and drop the refusal unanswered. It answers, sees `Connection:
                // close`, and closes without reading again.
                return Poll::Pending;
            }
            if this.advance() {
                continue;
            }
            if this.eof {
                // What is left cannot be framed: hyper sees the stream end.
                return Poll::Ready(Ok(()));
            }
            let start = this.read.len();
            this.read.resize(start + READ_SIZE, 0);
            let mut into = ReadBuf::new(&mut this.read[start..]);
            let polled = Pin::new(&mut this.io).poll_read(cx, &mut into);
            let n = into.filled().len();
            this.read.truncate(start + n);
            if polled.is_pending() {
                if this.client_is_late(cx) {
                    return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
                }
                return Poll::Pending;
            }
            ready!(polled)?;
            this.eof = n == 0;
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// After a refusal, the rest of what the client sent is read and dropped for a
    /// while ([`LINGER`]) once the answer is out: closing with it unread would reset
    /// the connection, and the client could lose the answer.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
        if !matches!(this.state, State::Ended) || this.eof {
            return Poll::Ready(Ok(()));
        }
        let linger = this
            .linger
            .get_or_insert_with(|| (Box::pin(tokio::time::sleep(LINGER.0)), 0));
        let mut sink = [0u8; 4096];
        loop {
            if linger.0.as_mut().poll(cx).is_ready() || linger.1 > LINGER.1 {
                return Poll::Ready(Ok(()));
            }
            let mut into = ReadBuf::new(&mut sink);
            match Pin::new(&mut this.io).poll_read(cx, &mut into) {
                Poll::Ready(Ok(())) if !into.filled().is_empty() => linger.1 += into.filled().len(),
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// How long, and for how many bytes at most, a refused connection is read and
/// dropped before it closes (nginx's `lingering_close` does the same).
pub const LINGER: (std::time::Duration, usize) = (std::time::Duration::from_secs(2), 1 << 20);

/// A service that answers [`Guarded`]'s refusals, passes every other request on, and
/// counts the connection's requests in flight until their response bodies are done.
#[derive(Clone, Debug)]
pub struct Refusals<S> {
    pub inner: S,
    pub in_flight: InFlight,
}

/// The code a request carries if it is a refusal from this process's guard.
fn refusal<B>(req: &hyper::Request<B>) -> Option<ErrorCode> {
    let value = req.headers().get(REFUSAL)?.to_str().ok()?;
    let (secret_part, code) = value.split_once(' ')?;
    if secret_part != secret() {
        return None;
    }
    ErrorCode::ALL.iter().copied().find(|c| c.as_str() == code)
}

impl<S, B> tower::Service<hyper::Request<B>> for Refusals<S>
where
    S: tower::Service<hyper::Request<B>, Response = Response>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: hyper::Request<B>) -> Self::Future {
        if let Some(code) = refusal(&req) {
            let mut response = ApiError::code(code).into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Box::pin(std::future::ready(Ok(response)));
        }
        let in_flight = self.in_flight.start();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| {
                axum::body::Body::new(Counted {
                    body,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// A response body that keeps its request counted in flight until it is dropped.
struct Counted {
    body: axum::body::Body,
    _in_flight: InFlightGuard,
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    /// What hyper would read through the guard from `wire`, fed in pieces of `split`.
    async fn through(wire: &[u8], split: usize) -> Vec<u8> {
        let mut builder = tokio_test_io(wire, split);
        let mut guarded = Guarded::new(&mut builder, Timeouts::default(), InFlight::default());
        let mut out = Vec::new();
        // After a refusal nothing more comes, and the stream does not end either.
        let read = tokio::time::timeout(Duration::from_millis(100), guarded.read_to_end(&mut out));
        if let Ok(result) = read.await {
            result.unwrap();
        }
        out
    }

    fn tokio_test_io(wire: &[u8], split: usize) -> impl AsyncRead + Unpin + '_ {
        // A reader that hands out at most `split` bytes a read.
        struct Pieces<'a>(&'a [u8], usize);
        impl AsyncRead for Pieces<'_> {
            fn poll_read(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                let n = self.1.min(self.0.len()).min(buf.remaining());
                buf.put_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Poll::Ready(Ok(()))
            }
        }
        Pieces(wire, split)
    }

    fn refusal_of(code: ErrorCode) -> Vec<u8> {
        format!(
            "GET / HTTP/1.1\r\nhost: tessera\r\n{REFUSAL}: {} {}\r\nconnection: close\r\n\r\n",
            secret(),
            code.as_str()
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn good_requests_pass_as_they_are_and_a_bad_head_becomes_a_refusal() {
        let good = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nGET /\
            POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
            5\r\nGET /\r\n0\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n";
        for split in [1, 3, 7, 64, 4096] {
            assert_eq!(through(good, split).await, good, "split {split}");
            let mut bad = good.to_vec();
            bad.extend_from_slice(b"GET /d HTTP/1.1\r\nBad Header\r\n\r\nGET /e HTTP/1.1\r\n\r\n");
            let mut expected = good.to_vec();
            expected.extend(refusal_of(ErrorCode::InvalidRequest));
            assert_eq!(through(&bad, split).await, expected, "split {split}");
        }
        let smuggle =
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(
            through(smuggle, 64).await,
            refusal_of(ErrorCode::InvalidRequest)
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            through(many.as_bytes(), 512).await,
            refusal_of(ErrorCode::HeadersTooLarge)
        );
        let huge = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(h1::MAX_HEAD_BYTES));
        assert_eq!(
            through(huge.as_bytes(), 4096).await,
            refusal_of(ErrorCode::HeadersTooLarge)
        );
    }

    #[tokio::test]
    async fn http2_and_upgrades_pass_through() {
        let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00garbage";
        assert_eq!(through(h2, 3).await, h2);
        let ws = b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x05hello";
        assert_eq!(through(ws, 5).await, ws);
        // A head cut short by the client's leaving goes on as it is.
        assert_eq!(
            through(b"GET / HTTP/1.1\r\nHo", 4).await,
            b"GET / HTTP/1.1\r\nHo"
        );
    }

    #[test]
    fn only_this_process_can_send_a_refusal() {
        let req = |value: &str| {
            hyper::Request::builder()
                .header(REFUSAL, value)
                .body(())
                .unwrap()
        };
        assert_eq!(
            refusal(&req(&format!("{} headers_too_large", secret()))),
            Some(ErrorCode::HeadersTooLarge)
        );
        assert_eq!(refusal(&req("0000 headers_too_large")), None);
        assert_eq!(refusal(&req(&format!("{} nonsense", secret()))), None);
    }
}
