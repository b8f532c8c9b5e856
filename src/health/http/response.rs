//! Reading a probe's HTTP/1.x response: the head within [`HEADER_LIMIT`], then, only when a
//! body match is configured, up to [`BODY_LIMIT`] of the body (`Content-Length`, chunked,
//! or until the connection closes).
//!
//! A probe needs the status code and, sometimes, whether the body holds a text: not a
//! general HTTP client. Parsing the head by hand from one small buffer costs a fraction of
//! a general client's per-request machinery (header maps, channels between a connection
//! task and its sender, 8 KiB buffers), which at 10,000 probes a second was most of the
//! probe engine's user CPU. What is not understood fails the probe with reason `protocol`
//! and says why; nothing is guessed.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::{BODY_LIMIT, HEADER_LIMIT};

/// At most this many header lines per response head (hyper's default, kept).
pub const MAX_HEADERS: usize = 100;
/// The first read's size: a health answer's head is a few hundred bytes.
pub const FIRST_READ: usize = 1024;
/// The longest chunk-size line accepted (size, extensions): no server sends kilobytes.
const MAX_CHUNK_LINE: usize = 1024;

/// Why reading a response failed.
#[derive(Debug)]
pub enum Failure {
    Io(io::Error),
    /// The head is over [`HEADER_LIMIT`] or [`MAX_HEADERS`].
    TooLarge,
    /// Not HTTP/1.x as a probe understands it: why.
    Protocol(&'static str),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

/// How the body of a response is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body: a HEAD request, 204, 304.
    None,
    Length(u64),
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub body: Body,
    /// Bytes of the buffer the head took, its blank line included.
    pub len: usize,
    /// HTTP/1.1 (or later minor) without `Connection: close`: the connection may carry
    /// another request once this response has been read to its end.
    pub keep_alive: bool,
}

/// Parses the response head at the start of `buf`: `Ok(None)` if it is not complete yet.
/// `head_request`: the request was HEAD (no body follows whatever the headers say).
pub fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<Head>, Failure> {
    let mut lines = Lines { buf, pos: 0 };
    let Some(status_line) = lines.next() else {
        return incomplete(buf);
    };
    let (minor, status) = parse_status_line(status_line)?;
    let mut close = false;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut encoded = false;
    let mut count = 0;
    loop {
        let Some(line) = lines.next() else {
            return incomplete(buf);
        };
        if line.is_empty() {
            break;
        }
        count += 1;
        if count > MAX_HEADERS {
            return Err(Failure::TooLarge);
        }
        let (name, value) = parse_header(line)?;
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length(value)?;
            if length.is_some_and(|l| l != n) {
                return Err(Failure::Protocol("conflicting Content-Length headers"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encoded = true;
            // The last coding decides whether the body is chunked.
            chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|c| trim(c).eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= value
                .split(|&b| b == b',')
                .any(|t| trim(t).eq_ignore_ascii_case(b"close"));
        }
    }
    if lines.pos > HEADER_LIMIT {
        return Err(Failure::TooLarge);
    }
    let body = if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        Body::None
    } else if encoded {
        // Transfer-Encoding overrides Content-Length; a coding other than chunked last
        // means the body ends with the connection.
        if chunked {
            Body::Chunked
        } else {
            Body::UntilClose
        }
    } else {
        match length {
            Some(n) => Body::Length(n),
            None => Body::UntilClose,
        }
    };
    Ok(Some(Head {
        status,
        body,
        len: lines.pos,
        keep_alive: minor != b'0' && !close && status != 101,
    }))
}

/// An incomplete head: over the limit already, or wait for more bytes.
fn incomplete(buf: &[u8]) -> Result<Option<Head>, Failure> {
    if buf.len() >= HEADER_LIMIT {
        Err(Failure::TooLarge)
    } else {
        Ok(None)
    }
}

/// Lines ending in LF (a CR before it dropped); the rest after the last LF is not a line.
struct Lines<'a> {
    buf: &'a [u8],
    /// Where the next line starts.
    pos: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = &self.buf[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n')?;
        self.pos += end + 1;
        let line = &rest[..end];
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

/// `HTTP/1.x NNN[ reason]`: the minor version digit and the status code.
fn parse_status_line(line: &[u8]) -> Result<(u8, u16), Failure> {
    let bad = Failure::Protocol("invalid status line");
    let rest = line.strip_prefix(b"HTTP/1.").ok_or(bad)?;
    let [minor, b' ', c1, c2, c3, tail @ ..] = rest else {
        return Err(Failure::Protocol("invalid status line"));
    };
    if !minor.is_ascii_digit()
        || !(b'1'..=b'9').contains(c1)
        || tail.first().is_some_and(|&b| b != b' ')
    {
        return Err(Failure::Protocol("invalid status line"));
    }
    let digit = |c: &u8| -> Result<u16, Failure> {
        c.is_ascii_digit()
            .then(|| u16::from(c - b'0'))
            .ok_or(Failure::Protocol("invalid status line"))
    };
    Ok((*minor, digit(c1)? * 100 + digit(c2)? * 10 + digit(c3)?))
}

/// `name: value`, the value without surrounding blanks.
fn parse_header(line: &[u8]) -> Result<(&[u8], &[u8]), Failure> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(Failure::Protocol("invalid response header"))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    // A token (RFC 9110 §5.6.2): no blanks, so obsolete line folding fails here too.
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if name.is_empty() || !name.iter().all(token) {
        return Err(Failure::Protocol("invalid response header"));
    }
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(Failure::Protocol("invalid response header"));
    }
    Ok((name, trim(value)))
}

fn parse_length(value: &[u8]) -> Result<u64, Failure> {
    let bad = Failure::Protocol("invalid Content-Length");
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(bad);
    }
    Ok(value
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A response being read from `io` through one buffer that grows only as far as needed.
pub struct Response<'a, R> {
    io: &'a mut R,
    buf: Vec<u8>,
    /// Bytes of `buf` already used.
    pos: usize,
    /// Some byte arrived.
    received: bool,
}

/// Where the reading of a body stands: what comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rest {
    /// The body has ended.
    Done,
    /// This many bytes of a `Content-Length` body.
    Length(u64),
    UntilClose,
    /// A chunk-size line.
    ChunkSize,
    /// This many bytes of the current chunk.
    ChunkData(u64),
    /// The CR LF after a chunk's data.
    ChunkEnd,
    /// Trailer lines after the last chunk, this many read so far, until a blank line.
    Trailers(usize),
}

impl From<Body> for Rest {
    fn from(body: Body) -> Self {
        match body {
            Body::None => Rest::Done,
            Body::Length(n) => Rest::Length(n),
            Body::Chunked => Rest::ChunkSize,
            Body::UntilClose => Rest::UntilClose,
        }
    }
}

impl<'a, R: AsyncRead + Unpin> Response<'a, R> {
    pub fn new(io: &'a mut R) -> Self {
        Self::with_buffer(io, Vec::new())
    }

    /// Reads into `buf` (emptied first): the request's buffer, reused.
    pub fn with_buffer(io: &'a mut R, mut buf: Vec<u8>) -> Self {
        buf.clear();
        Self {
            io,
            buf,
            pos: 0,
            received: false,
        }
    }

    /// Whether any byte of a response arrived.
    pub fn received(&self) -> bool {
        self.received
    }

    /// Whether bytes past what was read are already there (a server that sent more than
    /// one response).
    pub fn leftover(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// Reads more bytes after the unused ones, keeping at most `limit` in the buffer;
    /// false at the end of the stream.
    async fn fill(&mut self, limit: usize) -> Result<bool, Failure> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.buf.len();
        let want = len.max(FIRST_READ).min(limit.saturating_sub(len));
        if want == 0 {
            return Err(Failure::TooLarge);
        }
        self.buf.resize(len + want, 0);
        let read = self.io.read(&mut self.buf[len..]).await;
        let n = *read.as_ref().unwrap_or(&0);
        self.buf.truncate(len + n);
        self.received |= n > 0;
        Ok(read? > 0)
    }

    /// Reads the head of the final response (interim 1xx responses are skipped).
    pub async fn head(&mut self, head_request: bool) -> Result<Head, Failure> {
        loop {
            match parse_head(&self.buf[self.pos..], head_request)? {
                // 101 switches protocols: it is final for a probe (and not a success).
                Some(head) if (100..200).contains(&head.status) && head.status != 101 => {
                    self.pos += head.len;
                }
                Some(head) => {
                    self.pos += head.len;
                    return Ok(head);
                }
                None => {
                    if !self.fill(HEADER_LIMIT).await? {
                        return Err(Failure::Protocol(
                            "connection closed before the response head was complete",
                        ));
                    }
                }
            }
        }
    }

    /// Whether the body (delimited as `body` says) holds `needle` within its first
    /// [`BODY_LIMIT`] bytes. Stops reading as soon as the answer is known.
    pub async fn body_contains(&mut self, body: Body, needle: &[u8]) -> Result<bool, Failure> {
        self.find(&mut Rest::from(body), needle).await
    }

    /// [`Self::body_contains`] from where `rest` stands, which it leaves where reading
    /// stopped (the last chunk counts as the end: trailers are not read).
    pub async fn find(&mut self, rest: &mut Rest, needle: &[u8]) -> Result<bool, Failure> {
        let mut seen = Seen::new(needle);
        let mut found = false;
        self.body_bytes(rest, false, &mut |bytes| {
            found = seen.feed(bytes);
            found || seen.full()
        })
        .await?;
        Ok(found)
    }

    /// Reads the rest of the body (from where `rest` stands) to its end, trailers
    /// included, if that is at most `limit` more bytes: whether it ended there. What is
    /// read is discarded.
    pub async fn drain(&mut self, rest: &mut Rest, limit: u64) -> Result<bool, Failure> {
        if matches!(*rest, Rest::Length(n) if n > limit) {
            return Ok(false);
        }
        let mut left = limit;
        let mut over = false;
        let ended = self
            .body_bytes(rest, true, &mut |bytes| {
                over = bytes.len() as u64 > left;
                left = left.saturating_sub(bytes.len() as u64);
                over
            })
            .await?;
        Ok(ended && !over && *rest == Rest::Done)
    }

    /// Passes body bytes to `sink` from where `rest` stands until `sink` returns true
    /// (`Ok(false)`) or the body ends (`Ok(true)`; without `trailers`, the last chunk
    /// counts as the end).
    async fn body_bytes(
        &mut self,
        rest: &mut Rest,
        trailers: bool,
        sink: &mut (impl FnMut(&[u8]) -> bool + Send),
    ) -> Result<bool, Failure> {
        loop {
            match *rest {
                Rest::Done => return Ok(true),
                Rest::Length(0) => *rest = Rest::Done,
                Rest::ChunkData(0) => *rest = Rest::ChunkEnd,
                Rest::Length(n) | Rest::ChunkData(n) => {
                    if self.pos == self.buf.len() && !self.fill(FIRST_READ * 4).await? {
                        return Err(Failure::Protocol(
                            "connection closed before the body was complete",
                        ));
                    }
                    let available = &self.buf[self.pos..];
                    let take = available
                        .len()
                        .min(usize::try_from(n).unwrap_or(usize::MAX));
                    let stop = sink(&available[..take]);
                    self.pos += take;
                    let n = n - take as u64;
                    *rest = match *rest {
                        Rest::Length(_) => Rest::Length(n),
                        _ => Rest::ChunkData(n),
                    };
                    if stop {
                        return Ok(false);
                    }
                }
                Rest::UntilClose => {
                    if self.pos == self.buf.len() && !self.fill(FIRST_READ * 4).await? {
                        *rest = Rest::Done;
                        continue;
                    }
                    let stop = sink(&self.buf[self.pos..]);
                    self.pos = self.buf.len();
                    if stop {
                        return Ok(false);
                    }
                }
                Rest::ChunkSize => {
                    let size = self.chunk_size().await?;
                    *rest = if size == 0 {
                        Rest::Trailers(0)
                    } else {
                        Rest::ChunkData(size)
                    };
                }
                Rest::ChunkEnd => {
                    if !self.line(MAX_CHUNK_LINE).await?.is_empty() {
                        return Err(Failure::Protocol("invalid chunked body"));
                    }
                    *rest = Rest::ChunkSize;
                }
                Rest::Trailers(_) if !trailers => return Ok(true),
                Rest::Trailers(count) => {
                    if self.line(MAX_CHUNK_LINE).await?.is_empty() {
                        *rest = Rest::Done;
                    } else if count >= MAX_HEADERS {
                        return Err(Failure::TooLarge);
                    } else {
                        *rest = Rest::Trailers(count + 1);
                    }
                }
            }
        }
    }

    /// The size line of the next chunk.
    async fn chunk_size(&mut self) -> Result<u64, Failure> {
        let bad = Failure::Protocol("invalid chunked body");
        let line = self.line(MAX_CHUNK_LINE).await?;
        let hex = trim(line.split(|&b| b == b';').next().unwrap_or_default());
        if hex.is_empty() || hex.len() > 15 {
            return Err(bad);
        }
        hex.iter().try_fold(0u64, |n, &d| {
            let v = (d as char)
                .to_digit(16)
                .ok_or(Failure::Protocol("invalid chunked body"))?;
            Ok(n * 16 + u64::from(v))
        })
    }

    /// The next line (without its CR LF), at most `max` bytes.
    async fn line(&mut self, max: usize) -> Result<&[u8], Failure> {
        loop {
            if let Some(end) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let start = self.pos;
                self.pos += end + 1;
                let line = &self.buf[start..start + end];
                return Ok(line.strip_suffix(b"\r").unwrap_or(line));
            }
            if self.buf.len() - self.pos > max {
                return Err(Failure::Protocol("invalid chunked body"));
            }
            if !self.fill(max + 2).await? {
                return Err(Failure::Protocol(
                    "connection closed before the body was complete",
                ));
            }
        }
    }
}

/// The body bytes kept for matching: the first [`BODY_LIMIT`].
struct Seen<'n> {
    needle: &'n [u8],
    kept: Vec<u8>,
}

impl<'n> Seen<'n> {
    fn new(needle: &'n [u8]) -> Self {
        Self {
            needle,
            kept: Vec::new(),
        }
    }

    /// Adds body bytes (those past the limit are ignored); true if the needle is in.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        let room = BODY_LIMIT - self.kept.len();
        let before = self.kept.len();
        self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        // Only where a match can end in the new bytes: one can span two reads.
        let from = before.saturating_sub(self.needle.len().saturating_sub(1));
        contains(&self.kept[from..], self.needle)
    }

    fn full(&self) -> bool {
        self.kept.len() >= BODY_LIMIT
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<Head>, Failure> {
        parse_head(text.as_bytes(), false)
    }

    fn status(text: &str) -> u16 {
        head(text).unwrap().unwrap().status
    }

    fn protocol(r: Result<Option<Head>, Failure>) -> &'static str {
        match r {
            Err(Failure::Protocol(why)) => why,
            other => panic!("expected a protocol failure, got {other:?}"),
        }
    }

    #[test]
    fn status_lines_are_read_strictly() {
        assert_eq!(status("HTTP/1.1 200 OK\r\n\r\n"), 200);
        assert_eq!(status("HTTP/1.0 503 Service Unavailable\r\n\r\n"), 503);
        // No reason phrase, and bare LF line ends (tolerated as hyper did).
        assert_eq!(status("HTTP/1.1 204\r\n\r\n"), 204);
        assert_eq!(status("HTTP/1.1 404 Not Found\n\n"), 404);
        for bad in [
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 099 OK\r\n\r\n",
            "HTTP/1.1 2x0 OK\r\n\r\n",
            "SSH-2.0-OpenSSH_9.2\r\n\r\n",
            "http/1.1 200 OK\r\n\r\n",
        ] {
            assert_eq!(protocol(head(bad)), "invalid status line", "{bad:?}");
        }
    }

    #[test]
    fn an_incomplete_head_waits_for_more_bytes() {
        assert!(head("").unwrap().is_none());
        assert!(head("HTTP/1.1 200 OK\r\n").unwrap().is_none());
        assert!(
            head("HTTP/1.1 200 OK\r\nServer: x\r\n\r")
                .unwrap()
                .is_none()
        );
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .unwrap()
            .unwrap();
        assert_eq!(h.len, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n".len());
        assert_eq!(h.body, Body::Length(2));
    }

    #[test]
    fn a_head_over_the_limits_is_too_large() {
        let mut big = String::from("HTTP/1.1 200 OK\r\n");
        while big.len() < HEADER_LIMIT {
            big.push_str(
                "X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        assert!(matches!(head(&big), Err(Failure::TooLarge)));
        // Complete, yet over the limit.
        big.push_str("\r\n");
        assert!(matches!(head(&big), Err(Failure::TooLarge)));
        let mut many = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("X-{i}: 1\r\n"));
        }
        many.push_str("\r\n");
        assert!(matches!(head(&many), Err(Failure::TooLarge)));
    }

    #[test]
    fn headers_decide_how_the_body_ends() {
        let body = |text: &str, head_request| {
            parse_head(text.as_bytes(), head_request)
                .unwrap()
                .unwrap()
                .body
        };
        assert_eq!(
            body("HTTP/1.1 200 OK\r\ncontent-length:  12 \r\n\r\n", false),
            Body::Length(12)
        );
        assert_eq!(
            body(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\nContent-Length: 5\r\n\r\n",
                false
            ),
            Body::Chunked
        );
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false),
            Body::UntilClose
        );
        assert_eq!(body("HTTP/1.1 200 OK\r\n\r\n", false), Body::UntilClose);
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            Body::None
        );
        assert_eq!(body("HTTP/1.1 204 No Content\r\n\r\n", false), Body::None);
        assert_eq!(
            body(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false
            ),
            Body::None
        );
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ] {
            assert!(protocol(head(bad)).contains("Content-Length"), "{bad:?}");
        }
        for bad in [
            "HTTP/1.1 200 OK\r\nNo colon\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n",
        ] {
            assert_eq!(protocol(head(bad)), "invalid response header", "{bad:?}");
        }
    }

    /// A reader handing out `parts` one read at a time.
    struct Parts(std::collections::VecDeque<Vec<u8>>);

    impl AsyncRead for Parts {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            if let Some(mut part) = self.0.pop_front() {
                let n = part.len().min(buf.remaining());
                buf.put_slice(&part[..n]);
                if n < part.len() {
                    self.0.push_front(part.split_off(n));
                }
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Reads a whole response given in `parts`: (status, whether the body holds `needle`).
    fn read(parts: &[&[u8]], needle: &str) -> Result<(u16, bool), Failure> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut io = Parts(parts.iter().map(|p| p.to_vec()).collect());
            let mut r = Response::new(&mut io);
            let head = r.head(false).await?;
            let found = r.body_contains(head.body, needle.as_bytes()).await?;
            Ok((head.status, found))
        })
    }

    #[test]
    fn the_body_match_spans_reads_and_encodings() {
        let ok = |parts: &[&[u8]], needle| read(parts, needle).unwrap();
        // Content-Length, the needle split over three reads, the head split too.
        assert_eq!(
            ok(
                &[
                    b"HTTP/1.1 200 OK\r\nContent-Le",
                    b"ngth: 11\r\n\r\nall f",
                    b"in",
                    b"e now"
                ],
                "fine"
            ),
            (200, true)
        );
        // Bytes past Content-Length do not count.
        assert_eq!(
            ok(
                &[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokfine"],
                "fine"
            ),
            (200, false)
        );
        // Chunked: the needle across two chunks, and a chunk extension.
        let chunked: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"3;ext=1\r\nsta\r\n",
            b"6\r\ntus o",
            b"k\r\n0\r\n\r\n",
        ];
        assert_eq!(ok(chunked, "status ok"), (200, true));
        assert_eq!(ok(chunked, "missing"), (200, false));
        // Until the connection closes; an interim 100 response skipped before.
        assert_eq!(
            ok(
                &[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nhealthy"],
                "healthy"
            ),
            (200, true)
        );
        // Only the first BODY_LIMIT bytes are searched.
        let mut late = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            BODY_LIMIT + 4
        );
        late.push_str(&"a".repeat(BODY_LIMIT));
        late.push_str("okay");
        assert_eq!(ok(&[late.as_bytes()], "okay"), (200, false));
    }

    #[test]
    fn a_truncated_or_malformed_response_is_a_protocol_failure() {
        let why = |parts: &[&[u8]]| match read(parts, "x") {
            Err(Failure::Protocol(why)) => why,
            other => panic!("expected a protocol failure, got {other:?}"),
        };
        assert_eq!(
            why(&[b"HTTP/1.1 200 OK\r\nServer"]),
            "connection closed before the response head was complete"
        );
        assert_eq!(
            why(&[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"]),
            "connection closed before the body was complete"
        );
        assert_eq!(
            why(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc"]),
            "invalid chunked body"
        );
        assert_eq!(
            why(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n"]),
            "invalid chunked body"
        );
    }

    #[test]
    fn a_head_sent_in_pieces_over_the_limit_is_too_large() {
        let pad = vec![b'a'; 8 * 1024];
        let mut parts: Vec<&[u8]> = vec![b"HTTP/1.1 200 OK\r\nX-A: "];
        parts.extend([&pad[..], &pad[..], &pad[..]]);
        assert!(matches!(read(&parts, "x"), Err(Failure::TooLarge)));
    }
}
