//! SPDY/3.1 framing, as far as Kubernetes' streaming protocols use it (the framing of
//! `k8s.io/apimachinery`'s httpstream/spdy): control frames (SYN_STREAM, SYN_REPLY,
//! RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE), data frames, and header
//! blocks compressed as one zlib stream per direction with the draft-3 preset dictionary.
//! The kubelet speaks it as a client to the runtime's streaming server when it bridges a
//! WebSocket `v5.channel.k8s.io` exec or attach (kubectl 1.37's default) to it.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest frame body read: header blocks and data from the runtime stay far below.
const MAX_FRAME: usize = 1 << 24;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;
const FLAG_FIN: u8 = 0x01;

/// RST_STREAM status: the stream is cancelled.
pub const CANCEL: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("reading a spdy frame: {0}")]
    Io(#[from] std::io::Error),
    #[error("spdy frame of {0} bytes is larger than allowed")]
    TooLarge(usize),
    #[error("malformed spdy {0} frame")]
    Malformed(&'static str),
    #[error("spdy header compression: {0}")]
    Zlib(String),
}

/// Header names and values of a stream (names lowercase).
pub type Headers = Vec<(String, String)>;

/// One frame, as read.
#[derive(Debug, PartialEq)]
pub enum Frame {
    SynStream {
        id: u32,
        headers: Headers,
        fin: bool,
    },
    SynReply {
        id: u32,
        headers: Headers,
        fin: bool,
    },
    RstStream {
        id: u32,
        status: u32,
    },
    /// SETTINGS, and frame types with no use here (CREDENTIAL).
    Other,
    Ping(u32),
    GoAway {
        last: u32,
        status: u32,
    },
    Headers {
        id: u32,
        headers: Headers,
        fin: bool,
    },
    WindowUpdate {
        id: u32,
        delta: u32,
    },
    Data {
        id: u32,
        fin: bool,
        data: Vec<u8>,
    },
}

/// The draft-3 header dictionary: length-prefixed header names and common values, then a
/// run of common status lines, dates and media types (1423 bytes).
fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
        "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
        "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
        "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
        "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8",
        "charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut out = Vec::with_capacity(1423);
    for w in WORDS {
        out.extend_from_slice(&(w.len() as u32).to_be_bytes());
        out.extend_from_slice(w.as_bytes());
    }
    out.extend_from_slice(TAIL.as_bytes());
    out
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(0x8000u16 | 3).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&((u32::from(flags) << 24) | body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A DATA frame (`fin` ends this side of the stream).
pub fn data(id: u32, fin: bool, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 8);
    out.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
    let flags = if fin { FLAG_FIN } else { 0 };
    out.extend_from_slice(&((u32::from(flags) << 24) | bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

/// A PING frame (the answer to the peer's is the same frame).
pub fn ping(id: u32) -> Vec<u8> {
    control(PING, 0, &id.to_be_bytes())
}

/// A RST_STREAM frame.
pub fn rst_stream(id: u32, status: u32) -> Vec<u8> {
    let mut body = (id & 0x7fff_ffff).to_be_bytes().to_vec();
    body.extend_from_slice(&status.to_be_bytes());
    control(RST_STREAM, 0, &body)
}

/// Writes frames with header blocks: the one compression stream of this side.
pub struct Encoder {
    deflate: Compress,
}

impl Encoder {
    pub fn new() -> Result<Self, SpdyError> {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(&dictionary())
            .map_err(|e| SpdyError::Zlib(e.to_string()))?;
        Ok(Encoder { deflate })
    }

    fn header_block(&mut self, headers: &[(&str, &str)]) -> Result<Vec<u8>, SpdyError> {
        let mut plain = (headers.len() as u32).to_be_bytes().to_vec();
        for (name, value) in headers {
            for s in [name.to_ascii_lowercase().as_str(), value] {
                plain.extend_from_slice(&(s.len() as u32).to_be_bytes());
                plain.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let start = self.deflate.total_in();
        loop {
            let used = (self.deflate.total_in() - start) as usize;
            self.deflate
                .compress_vec(&plain[used..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Zlib(e.to_string()))?;
            let used = (self.deflate.total_in() - start) as usize;
            if used == plain.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(256);
        }
    }

    /// A SYN_STREAM frame opening stream `id` (odd: the client's).
    pub fn syn_stream(
        &mut self,
        id: u32,
        headers: &[(&str, &str)],
        fin: bool,
    ) -> Result<Vec<u8>, SpdyError> {
        let mut body = (id & 0x7fff_ffff).to_be_bytes().to_vec();
        // No associated stream, priority 0, slot 0.
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        body.extend(self.header_block(headers)?);
        Ok(control(SYN_STREAM, if fin { FLAG_FIN } else { 0 }, &body))
    }
}

/// Reads frames from the peer, with its header decompression stream.
pub struct Decoder<R> {
    r: R,
    inflate: Decompress,
}

impl<R: AsyncRead + Unpin> Decoder<R> {
    pub fn new(r: R) -> Self {
        Decoder {
            r,
            inflate: Decompress::new(true),
        }
    }

    fn header_block(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let mut plain = Vec::with_capacity(block.len() * 4 + 64);
        let start = self.inflate.total_in();
        loop {
            let used = (self.inflate.total_in() - start) as usize;
            match self
                .inflate
                .decompress_vec(&block[used..], &mut plain, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&dictionary())
                        .map_err(|e| SpdyError::Zlib(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(SpdyError::Zlib(e.to_string())),
            }
            let used = (self.inflate.total_in() - start) as usize;
            if used == block.len() && plain.len() < plain.capacity() {
                break;
            }
            if plain.len() > MAX_FRAME {
                return Err(SpdyError::TooLarge(plain.len()));
            }
            plain.reserve(1024);
        }
        parse_headers(&plain)
    }

    /// The next frame; `None` once the connection ends.
    pub async fn next(&mut self) -> Result<Option<Frame>, SpdyError> {
        let mut head = [0u8; 8];
        match self.r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let word = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len > MAX_FRAME {
            return Err(SpdyError::TooLarge(len));
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).await?;
        let fin = flags & FLAG_FIN != 0;
        if word & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                id: word & 0x7fff_ffff,
                fin,
                data: body,
            }));
        }
        let u32_at = |i: usize| -> Option<u32> {
            body.get(i..i + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let kind = (word & 0xffff) as u16;
        let frame = match kind {
            SYN_STREAM => {
                let id = u32_at(0).ok_or(SpdyError::Malformed("SYN_STREAM"))? & 0x7fff_ffff;
                let block = body.get(10..).ok_or(SpdyError::Malformed("SYN_STREAM"))?;
                let headers = self.header_block(block)?;
                Frame::SynStream { id, headers, fin }
            }
            SYN_REPLY | HEADERS => {
                let id = u32_at(0).ok_or(SpdyError::Malformed("SYN_REPLY"))? & 0x7fff_ffff;
                let block = body.get(4..).ok_or(SpdyError::Malformed("SYN_REPLY"))?;
                let headers = self.header_block(block)?;
                if kind == SYN_REPLY {
                    Frame::SynReply { id, headers, fin }
                } else {
                    Frame::Headers { id, headers, fin }
                }
            }
            RST_STREAM => Frame::RstStream {
                id: u32_at(0).ok_or(SpdyError::Malformed("RST_STREAM"))? & 0x7fff_ffff,
                status: u32_at(4).ok_or(SpdyError::Malformed("RST_STREAM"))?,
            },
            PING => Frame::Ping(u32_at(0).ok_or(SpdyError::Malformed("PING"))?),
            GOAWAY => Frame::GoAway {
                last: u32_at(0).ok_or(SpdyError::Malformed("GOAWAY"))? & 0x7fff_ffff,
                status: u32_at(4).unwrap_or(0),
            },
            WINDOW_UPDATE => Frame::WindowUpdate {
                id: u32_at(0).ok_or(SpdyError::Malformed("WINDOW_UPDATE"))? & 0x7fff_ffff,
                delta: u32_at(4).ok_or(SpdyError::Malformed("WINDOW_UPDATE"))? & 0x7fff_ffff,
            },
            _ => Frame::Other,
        };
        Ok(Some(frame))
    }
}

fn parse_headers(plain: &[u8]) -> Result<Headers, SpdyError> {
    let bad = || SpdyError::Malformed("header block");
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        let s = plain.get(at..at + n).ok_or_else(bad)?;
        at += n;
        Ok(s)
    };
    let word = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = word(take(4)?);
    let mut out = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let n = word(take(4)?);
        let name = String::from_utf8_lossy(take(n)?).into_owned();
        let n = word(take(4)?);
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        out.push((name, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_draft_3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert!(d.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(d.ends_with(b"utf-,*,enq=0."));
    }

    #[tokio::test]
    async fn frames_written_are_read_back() {
        let mut enc = Encoder::new().expect("encoder");
        let mut wire = enc
            .syn_stream(1, &[("streamType", "error")], false)
            .expect("syn");
        wire.extend(
            enc.syn_stream(3, &[("streamtype", "stdin")], false)
                .expect("syn"),
        );
        wire.extend(data(3, false, b"hello"));
        wire.extend(data(3, true, b""));
        wire.extend(ping(2));
        wire.extend(rst_stream(5, CANCEL));
        let mut dec = Decoder::new(&wire[..]);
        let mut frames = Vec::new();
        while let Some(f) = dec.next().await.expect("frame") {
            frames.push(f);
        }
        assert_eq!(
            frames,
            vec![
                Frame::SynStream {
                    id: 1,
                    headers: vec![("streamtype".into(), "error".into())],
                    fin: false
                },
                Frame::SynStream {
                    id: 3,
                    headers: vec![("streamtype".into(), "stdin".into())],
                    fin: false
                },
                Frame::Data {
                    id: 3,
                    fin: false,
                    data: b"hello".to_vec()
                },
                Frame::Data {
                    id: 3,
                    fin: true,
                    data: vec![]
                },
                Frame::Ping(2),
                Frame::RstStream {
                    id: 5,
                    status: CANCEL
                },
            ]
        );
    }

    #[tokio::test]
    async fn malformed_frames_are_errors_not_panics() {
        // A SYN_REPLY too short to hold a stream id.
        let wire = control(SYN_REPLY, 0, &[0, 0]);
        assert!(Decoder::new(&wire[..]).next().await.is_err());
        // A header block claiming more pairs than it holds.
        assert!(parse_headers(&[0, 0, 0, 9, 0, 0, 0, 1]).is_err());
        // A frame cut short.
        let cut = &data(1, false, b"abc")[..9];
        assert!(Decoder::new(cut).next().await.is_err());
    }
}
