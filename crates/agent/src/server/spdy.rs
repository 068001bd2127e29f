//! The client half of SPDY/3.1 as the Kubernetes streaming protocols use it (upstream's
//! `httpstream/spdy` over moby's spdystream): an HTTP/1.1 `Upgrade: SPDY/3.1` handshake,
//! then client-initiated streams (odd ids) opened with `SYN_STREAM`, `DATA` frames with `FIN`
//! for half-close, `PING` echoed, and `GOAWAY`/`RST_STREAM` ending things.
//!
//! Header blocks we send are zlib-compressed as one stream per connection (sync-flushed per
//! frame) but without the SPDY/3 preset dictionary: the zlib backend in the tree cannot set
//! one, and the stream header says so (no `FDICT`), which Go's zlib reader accepts. Header
//! blocks we receive are skipped: the streaming protocols carry nothing in replies that the
//! translation needs. Flow control is not enforced in either direction, as spdystream does
//! not send `WINDOW_UPDATE` frames.

use anyhow::{bail, Context as _};
use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const FLAG_FIN: u8 = 0x01;
/// The largest payload a frame's 24-bit length can describe.
const MAX_PAYLOAD: usize = 0xff_ffff;

/// A frame received from the server, reduced to what a streaming client acts on.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Stream data; `fin` half-closes the server's side of the stream.
    Data { stream: u32, fin: bool, data: Bytes },
    /// `SYN_REPLY` or `HEADERS`, possibly half-closing the server's side.
    Reply { stream: u32, fin: bool },
    /// The server aborted a stream.
    Reset { stream: u32, status: u32 },
    /// A ping to echo (server pings have even ids, replies to ours odd).
    Ping(u32),
    /// The server stops accepting streams and is going away.
    GoAway { last_stream: u32, status: u32 },
    /// Anything else (`SETTINGS`, `WINDOW_UPDATE`, `NOOP`, server pushes): no action needed.
    Other,
}

/// Reads the next frame; `None` at a clean end of the connection.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..]).await?;
    let flags = head[4];
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    let word = |i: usize| -> u32 {
        payload
            .get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0)
    };
    let fin = flags & FLAG_FIN != 0;
    if head[0] & 0x80 == 0 {
        let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
        return Ok(Some(Frame::Data {
            stream,
            fin,
            data: Bytes::from(payload),
        }));
    }
    let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
    if version != VERSION {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unsupported spdy version {version}"),
        ));
    }
    let stream = word(0) & 0x7fff_ffff;
    Ok(Some(match u16::from_be_bytes([head[2], head[3]]) {
        SYN_REPLY | HEADERS => Frame::Reply { stream, fin },
        RST_STREAM => Frame::Reset {
            stream,
            status: word(4),
        },
        PING => Frame::Ping(word(0)),
        GOAWAY => Frame::GoAway {
            last_stream: stream,
            status: word(4),
        },
        _ => Frame::Other,
    }))
}

/// The sending half of a client connection: opens streams and writes frames.
pub struct Writer<W> {
    w: W,
    deflate: Compress,
    next_stream: u32,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// A writer for a fresh connection (first stream id 1).
    pub fn new(w: W) -> Self {
        Writer {
            w,
            deflate: Compress::new(Compression::default(), true),
            next_stream: 1,
        }
    }

    async fn control(&mut self, kind: u16, flags: u8, body: &[u8]) -> std::io::Result<()> {
        if body.len() > MAX_PAYLOAD {
            return Err(std::io::Error::other("spdy control frame too large"));
        }
        let mut frame = Vec::with_capacity(8 + body.len());
        frame.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
        frame.extend_from_slice(&kind.to_be_bytes());
        frame.push(flags);
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(body);
        self.w.write_all(&frame).await?;
        self.w.flush().await
    }

    /// Opens a stream with `headers` (names are lower-cased, as SPDY requires) and returns
    /// its id.
    pub async fn syn_stream(&mut self, headers: &[(&str, &str)]) -> std::io::Result<u32> {
        let id = self.next_stream;
        self.next_stream += 2;
        let block = self.compress(&header_block(headers))?;
        let mut body = Vec::with_capacity(10 + block.len());
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(&0u32.to_be_bytes());
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&block);
        self.control(SYN_STREAM, 0, &body).await?;
        Ok(id)
    }

    /// Sends `data` on `stream`, half-closing our side when `fin`.
    pub async fn data(&mut self, stream: u32, data: &[u8], fin: bool) -> std::io::Result<()> {
        let mut chunks: Vec<&[u8]> = data.chunks(MAX_PAYLOAD).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut head = [0u8; 8];
            head[..4].copy_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
            head[4] = if fin && i == last { FLAG_FIN } else { 0 };
            head[5..].copy_from_slice(&(chunk.len() as u32).to_be_bytes()[1..]);
            self.w.write_all(&head).await?;
            self.w.write_all(chunk).await?;
        }
        self.w.flush().await
    }

    /// Answers (or sends) a ping.
    pub async fn ping(&mut self, id: u32) -> std::io::Result<()> {
        self.control(PING, 0, &id.to_be_bytes()).await
    }

    /// Announces the end of the session (status `OK`) and closes our side of the connection.
    pub async fn go_away(&mut self) -> std::io::Result<()> {
        self.control(GOAWAY, 0, &[0; 8]).await?;
        self.w.shutdown().await
    }

    fn compress(&mut self, raw: &[u8]) -> std::io::Result<Vec<u8>> {
        let start = self.deflate.total_in();
        let mut out = Vec::with_capacity(raw.len() + 64);
        loop {
            let used = (self.deflate.total_in() - start) as usize;
            out.reserve(64);
            self.deflate
                .compress_vec(&raw[used..], &mut out, FlushCompress::Sync)
                .map_err(std::io::Error::other)?;
            let done = (self.deflate.total_in() - start) as usize == raw.len();
            if done && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// The uncompressed SPDY/3 name/value block: 32-bit counts and lengths.
fn header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        b.extend_from_slice(&(name.len() as u32).to_be_bytes());
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&(value.len() as u32).to_be_bytes());
        b.extend_from_slice(value.as_bytes());
    }
    b
}

/// Dials the runtime's streaming `url` (plain HTTP) and upgrades to SPDY/3.1 offering the
/// stream `protocols` (in preference order); returns the upgraded connection and the
/// protocol the server chose.
pub async fn connect(
    url: &str,
    protocols: &[&str],
) -> anyhow::Result<(hyper::upgrade::Upgraded, String)> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("runtime returned a bad streaming URL {url:?}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("unsupported streaming URL scheme in {url:?}");
    }
    let authority = uri
        .authority()
        .with_context(|| format!("streaming URL {url:?} has no host"))?
        .clone();
    let tcp = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .context("connecting to the streaming server")?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .context("connecting to the streaming server")?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut req = http::Request::post(path)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "SPDY/3.1");
    for p in protocols {
        req = req.header("X-Stream-Protocol-Version", *p);
    }
    let req = req.body(Empty::<Bytes>::new())?;
    let mut resp = sender.send_request(req).await.context("streaming server")?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        use http_body_util::BodyExt as _;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        bail!(
            "streaming server refused the upgrade ({status}): {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    let negotiated = resp
        .headers()
        .get("X-Stream-Protocol-Version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim()
        .to_string();
    if !protocols.contains(&negotiated.as_str()) {
        bail!("streaming server negotiated protocol {negotiated:?}, offered {protocols:?}");
    }
    let conn = hyper::upgrade::on(&mut resp)
        .await
        .context("upgrading to spdy")?;
    Ok((conn, negotiated))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    #[tokio::test]
    async fn frames_round_trip_through_the_wire_format() {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        assert_eq!(w.syn_stream(&[("streamType", "error")]).await.unwrap(), 1);
        assert_eq!(w.syn_stream(&[("streamType", "stdin")]).await.unwrap(), 3);
        w.data(3, b"hello", false).await.unwrap();
        w.data(3, b"", true).await.unwrap();
        w.ping(2).await.unwrap();
        drop(w);

        // Both header blocks decompress as one zlib stream, names lower-cased.
        let syn_len = |b: &[u8]| u32::from_be_bytes([0, b[5], b[6], b[7]]) as usize;
        let first = syn_len(&buf);
        assert_eq!(&buf[..4], &[0x80, 3, 0, 1]);
        let second_at = 8 + first;
        let second = syn_len(&buf[second_at..]);
        let mut z = Decompress::new(true);
        let mut blocks = Vec::new();
        for (at, len) in [(0, first), (second_at, second)] {
            let block = &buf[at + 18..at + 8 + len];
            let mut out = Vec::with_capacity(256);
            z.decompress_vec(block, &mut out, FlushDecompress::Sync)
                .unwrap();
            blocks.push(out);
        }
        let expect = |v: &str| {
            let mut b = vec![0, 0, 0, 1, 0, 0, 0, 10];
            b.extend_from_slice(b"streamtype");
            b.extend_from_slice(&(v.len() as u32).to_be_bytes());
            b.extend_from_slice(v.as_bytes());
            b
        };
        assert_eq!(blocks, [expect("error"), expect("stdin")]);

        let mut r = &buf[8 + first + 8 + second..];
        assert_eq!(
            read_frame(&mut r).await.unwrap(),
            Some(Frame::Data {
                stream: 3,
                fin: false,
                data: Bytes::from_static(b"hello")
            })
        );
        assert_eq!(
            read_frame(&mut r).await.unwrap(),
            Some(Frame::Data {
                stream: 3,
                fin: true,
                data: Bytes::new()
            })
        );
        assert_eq!(read_frame(&mut r).await.unwrap(), Some(Frame::Ping(2)));
        assert_eq!(read_frame(&mut r).await.unwrap(), None);
    }

    #[tokio::test]
    async fn control_frames_from_the_server_are_decoded() {
        let wire: &[u8] = &[
            0x80, 3, 0, 2, 1, 0, 0, 4, 0, 0, 0, 5, // SYN_REPLY 5, FIN
            0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 7, 0, 0, 0, 5, // RST_STREAM 7 CANCEL
            0x80, 3, 0, 7, 0, 0, 0, 8, 0, 0, 0, 9, 0, 0, 0, 0, // GOAWAY 9 OK
            0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 1, 0, // WINDOW_UPDATE
        ];
        let mut r = wire;
        let mut got = Vec::new();
        while let Some(f) = read_frame(&mut r).await.unwrap() {
            got.push(f);
        }
        assert_eq!(
            got,
            [
                Frame::Reply {
                    stream: 5,
                    fin: true
                },
                Frame::Reset {
                    stream: 7,
                    status: 5
                },
                Frame::GoAway {
                    last_stream: 9,
                    status: 0
                },
                Frame::Other,
            ]
        );
        let mut bad: &[u8] = &[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(read_frame(&mut bad).await.is_err());
    }
}
