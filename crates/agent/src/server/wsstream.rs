//! Exec and attach over WebSocket, as upstream's API server `StreamTranslator` serves them:
//! the client speaks the channel protocol `v5.channel.k8s.io` (or `v4.channel.k8s.io`) over
//! RFC 6455 WebSocket, and the agent speaks SPDY/3.1 with `v4.channel.k8s.io` to the
//! runtime's streaming server, whose own WebSocket support predates v5.
//!
//! Every binary message carries one stream's bytes behind a one-byte stream id: 0 stdin,
//! 1 stdout, 2 stderr, 3 error (the final `Status` as JSON), 4 resize (`{"Width","Height"}`
//! JSON); v5 adds 255, whose payload names a stream the client has finished writing (stdin),
//! which becomes a SPDY half-close. Once the runtime has sent the status and closed its
//! output streams, the status goes out on channel 3 and the WebSocket is closed normally.
//!
//! Port-forward over WebSocket is upstream's `TunnelingHandler` instead: the client offers
//! `SPDY/3.1+portforward.k8s.io` and speaks SPDY itself inside binary messages, so the agent
//! upgrades to SPDY towards the runtime with the offered protocols and relays the bytes.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use super::spdy;
use super::{full, HttpError, Resp};

/// The channel protocol with the stream-close signal (kubectl v1.30+ offers only this one).
pub const V5: &str = "v5.channel.k8s.io";
/// The channel protocol with JSON statuses and resizing, without the close signal.
pub const V4: &str = "v4.channel.k8s.io";
/// The subprotocol prefix of SPDY tunneled through WebSocket (port-forward).
pub const SPDY_TUNNEL_PREFIX: &str = "SPDY/3.1+";
/// RFC 6455's key suffix for `Sec-WebSocket-Accept`.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE_STREAM: u8 = 255;

const OP_CONTINUATION: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;
const OP_PING: u8 = 9;
const OP_PONG: u8 = 10;

const CLOSE_NORMAL: u16 = 1000;
const CLOSE_PROTOCOL_ERROR: u16 = 1002;
const CLOSE_TOO_BIG: u16 = 1009;
/// Frames larger than this are refused (stdin chunks and resizes are small).
const MAX_FRAME: u64 = 32 << 20;
/// How long to wait for the client to answer our close frame before dropping the connection.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Whether the request asks to upgrade to WebSocket.
pub fn is_websocket(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
        })
}

/// The client's `Sec-WebSocket-Protocol` offers, in its order.
fn offers(headers: &http::HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// The channel protocol to speak: the first of the client's offers, in its order, that the
/// translation supports; `None` leaves the request to the runtime's own WebSocket server.
pub fn negotiate(headers: &http::HeaderMap) -> Option<&'static str> {
    offers(headers).find_map(|p| match p {
        V5 => Some(V5),
        V4 => Some(V4),
        _ => None,
    })
}

/// The SPDY stream protocols a WebSocket request asks to tunnel, in its order
/// (`SPDY/3.1+portforward.k8s.io` asks for `portforward.k8s.io`), as upstream filters them.
pub fn tunneled_protocols(headers: &http::HeaderMap) -> Vec<String> {
    offers(headers)
        .filter_map(|p| p.strip_prefix(SPDY_TUNNEL_PREFIX))
        .filter(|p| p.ends_with(".k8s.io"))
        .map(str::to_string)
        .collect()
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut input = key.trim().as_bytes().to_vec();
    input.extend_from_slice(ACCEPT_GUID.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// Which streams the runtime's exec/attach session has (as given to CRI).
#[derive(Clone, Copy, Debug)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Answers a WebSocket exec/attach request speaking `protocol` by connecting to the runtime's
/// streaming `url` over SPDY first (so that failures are plain HTTP errors) and then
/// translating between the two for the life of the session.
pub(super) async fn serve(
    url: &str,
    streams: Streams,
    protocol: &'static str,
    mut req: http::Request<Incoming>,
) -> Result<Resp, HttpError> {
    let accept = handshake(req.headers())?;
    let (server, _) = spdy::connect(url, &[V4])
        .await
        .map_err(|e| HttpError(500, format!("{e:#}")))?;
    let client = hyper::upgrade::on(&mut req);
    tracing::debug!(protocol, "exec/attach over websocket");
    tokio::spawn(async move {
        match client.await {
            Ok(client) => {
                if let Err(e) = translate(
                    TokioIo::new(client),
                    TokioIo::new(server),
                    streams,
                    protocol,
                )
                .await
                {
                    tracing::debug!(error = %e, "websocket stream translation ended");
                }
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    Ok(switching(accept, protocol))
}

/// Answers a WebSocket port-forward request that tunnels SPDY with one of `protocols`: the
/// runtime's streaming `url` is asked for them over a SPDY upgrade, the client is answered
/// with the one it chose, and the two connections are relayed.
pub(super) async fn serve_tunnel(
    url: &str,
    protocols: &[String],
    mut req: http::Request<Incoming>,
) -> Result<Resp, HttpError> {
    let accept = handshake(req.headers())?;
    let offered: Vec<&str> = protocols.iter().map(String::as_str).collect();
    let (server, chosen) = spdy::connect(url, &offered)
        .await
        .map_err(|e| HttpError(500, format!("{e:#}")))?;
    let client = hyper::upgrade::on(&mut req);
    tracing::debug!(protocol = chosen, "spdy tunneled over websocket");
    tokio::spawn(async move {
        match client.await {
            Ok(client) => {
                if let Err(e) = tunnel(TokioIo::new(client), TokioIo::new(server)).await {
                    tracing::debug!(error = %e, "websocket tunnel ended");
                }
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    Ok(switching(accept, &format!("{SPDY_TUNNEL_PREFIX}{chosen}")))
}

/// Checks the client's handshake headers; returns the `Sec-WebSocket-Accept` value.
fn handshake(headers: &http::HeaderMap) -> Result<String, HttpError> {
    let key = headers
        .get(http::header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| HttpError::bad("missing Sec-WebSocket-Key header"))?;
    let version = headers
        .get(http::header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if version != Some("13") {
        return Err(HttpError::bad(format!(
            "unsupported websocket version {:?}, want 13",
            version.unwrap_or_default()
        )));
    }
    Ok(accept_key(key))
}

fn switching(accept: String, protocol: &str) -> Resp {
    http::Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::SEC_WEBSOCKET_ACCEPT, accept)
        .header(http::header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(full(Bytes::new()))
        .expect("valid response")
}

/// One frame from the client, unmasked.
#[derive(Debug)]
struct WsFrame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

/// Reads a client frame; `None` at a clean end of the connection.
async fn read_ws_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<WsFrame>> {
    let mut head = [0u8; 2];
    match r.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..]).await?;
    let fin = head[0] & 0x80 != 0;
    let opcode = head[0] & 0x0f;
    if head[0] & 0x70 != 0 {
        return Err(invalid("websocket frame with reserved bits set"));
    }
    if head[1] & 0x80 == 0 {
        return Err(invalid("unmasked websocket frame from the client"));
    }
    let len = match head[1] & 0x7f {
        126 => r.read_u16().await? as u64,
        127 => r.read_u64().await?,
        n => n as u64,
    };
    if opcode >= OP_CLOSE && (len > 125 || !fin) {
        return Err(invalid("fragmented or oversized websocket control frame"));
    }
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::OutOfMemory,
            "websocket frame too large",
        ));
    }
    let mut mask = [0u8; 4];
    r.read_exact(&mut mask).await?;
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Ok(Some(WsFrame {
        fin,
        opcode,
        payload,
    }))
}

/// The sending half towards the client (server frames are never masked).
struct WsWriter<W>(W);

impl<W: AsyncWrite + Unpin> WsWriter<W> {
    async fn send(&mut self, opcode: u8, parts: &[&[u8]]) -> std::io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut head = vec![0x80 | opcode];
        match len {
            0..=125 => head.push(len as u8),
            126..=0xffff => {
                head.push(126);
                head.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                head.push(127);
                head.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        self.0.write_all(&head).await?;
        for p in parts {
            self.0.write_all(p).await?;
        }
        self.0.flush().await
    }

    async fn channel(&mut self, id: u8, data: &[u8]) -> std::io::Result<()> {
        self.send(OP_BINARY, &[&[id], data]).await
    }

    async fn close(&mut self, code: u16) -> std::io::Result<()> {
        self.send(OP_CLOSE, &[&code.to_be_bytes()]).await
    }
}

/// Why one direction of a session stopped.
#[derive(Debug)]
enum End {
    /// The runtime is done (status in hand, outputs closed, or it went away).
    Finished,
    /// The client closed or went away: nothing more to tell it.
    ClientGone,
    /// The client broke the protocol: close with this code.
    ClientError(u16),
}

/// The close code for a client read error.
fn error_code(e: &std::io::Error) -> u16 {
    tracing::debug!(error = %e, "reading from the websocket client");
    if e.kind() == std::io::ErrorKind::OutOfMemory {
        CLOSE_TOO_BIG
    } else {
        CLOSE_PROTOCOL_ERROR
    }
}

/// What the client sent next: a data frame's payload (and whether it starts a message), or
/// how its side ended.
enum ClientData {
    Frame { payload: Vec<u8>, first: bool },
    End(End),
}

/// Reads the client's frames up to the next data frame, answering pings, checking message
/// framing (`in_message` carries across calls). Once `closing` is set (our close frame went
/// out), the client's close frame is the answer to ours and is not echoed.
async fn next_client_data<R, W>(
    r: &mut R,
    ws: &Mutex<WsWriter<W>>,
    closing: &AtomicBool,
    binary_only: bool,
    in_message: &mut bool,
) -> std::io::Result<ClientData>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let f = match read_ws_frame(r).await {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(ClientData::End(End::ClientGone)),
            Err(e) => return Ok(ClientData::End(End::ClientError(error_code(&e)))),
        };
        let data = match f.opcode {
            OP_PING => {
                ws.lock().await.send(OP_PONG, &[&f.payload]).await?;
                continue;
            }
            OP_PONG => continue,
            OP_CLOSE => {
                if !closing.swap(true, Ordering::SeqCst) {
                    // Echo the code, as RFC 6455 asks of the receiving side.
                    let code = f.payload.get(..2).unwrap_or(&[]);
                    let _ = ws.lock().await.send(OP_CLOSE, &[code]).await;
                }
                return Ok(ClientData::End(End::ClientGone));
            }
            OP_BINARY => !*in_message,
            OP_TEXT => !binary_only && !*in_message,
            OP_CONTINUATION => *in_message,
            _ => false,
        };
        if !data {
            return Ok(ClientData::End(End::ClientError(CLOSE_PROTOCOL_ERROR)));
        }
        let first = !*in_message;
        *in_message = !f.fin;
        return Ok(ClientData::Frame {
            payload: f.payload,
            first,
        });
    }
}

/// Finishes a session towards the client once either direction has stopped: on `Finished`
/// the status (if any) and a normal close, then a bounded wait for the client's close
/// (`uplink` still reading) so that dropping the connection cannot reset it before the
/// client has read everything.
async fn close_client<W, U>(
    ws: &Mutex<WsWriter<W>>,
    closing: &AtomicBool,
    end: End,
    status: &[u8],
    uplink: U,
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    U: Future<Output = std::io::Result<End>>,
{
    // A writer still held by the unpolled other direction means the client stopped reading.
    let Ok(mut ws) = ws.try_lock() else {
        return Ok(());
    };
    match end {
        End::ClientGone => {}
        End::ClientError(code) => {
            if !closing.swap(true, Ordering::SeqCst) {
                ws.close(code).await?;
            }
        }
        End::Finished => {
            if closing.swap(true, Ordering::SeqCst) {
                return Ok(());
            }
            if !status.is_empty() {
                ws.channel(ERROR, status).await?;
            }
            ws.close(CLOSE_NORMAL).await?;
            drop(ws);
            let _ = tokio::time::timeout(CLOSE_GRACE, uplink).await;
            return Ok(());
        }
    }
    Ok(())
}

/// Runs one session: `client` speaks WebSocket with `protocol`, `server` is an upgraded
/// SPDY/3.1 connection to the runtime's streaming server. The two directions run
/// concurrently, so that a stalled stdin cannot hold up the output.
async fn translate<C, S>(
    client: C,
    server: S,
    streams: Streams,
    protocol: &str,
) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite,
    S: AsyncRead + AsyncWrite,
{
    let (mut client_r, client_w) = tokio::io::split(client);
    let (mut server_r, server_w) = tokio::io::split(server);
    let ws = Mutex::new(WsWriter(client_w));
    let mut opener = spdy::Writer::new(server_w);

    // Streams in the order upstream's client creates them.
    let error = opener.syn_stream(&[("streamtype", "error")]).await?;
    let mut ids = [None; 5];
    for (slot, on, kind) in [
        (STDIN, streams.stdin, "stdin"),
        (STDOUT, streams.stdout, "stdout"),
        (STDERR, streams.stderr, "stderr"),
        (RESIZE, streams.tty, "resize"),
    ] {
        if on {
            ids[slot as usize] = Some(opener.syn_stream(&[("streamtype", kind)]).await?);
        }
    }
    let [stdin, stdout, stderr, _, resize] = ids;
    let spdy = Mutex::new(opener);
    let closing = AtomicBool::new(false);

    // Client to runtime: stdin, resizes, and v5's close signal for stdin.
    let uplink = async {
        let mut stdin_open = stdin.is_some();
        let mut in_message = false;
        // The stream of the message being received; `None` until its id byte arrived.
        let mut current: Option<u8> = None;
        loop {
            let (payload, first) =
                match next_client_data(&mut client_r, &ws, &closing, false, &mut in_message).await?
                {
                    ClientData::Frame { payload, first } => (payload, first),
                    ClientData::End(end) => return Ok::<_, std::io::Error>(end),
                };
            if first {
                current = None;
            }
            let mut data = &payload[..];
            if current.is_none() {
                let Some((id, rest)) = data.split_first() else {
                    continue;
                };
                current = Some(*id);
                data = rest;
            }
            match (current, stdin, resize) {
                (Some(STDIN), Some(s), _) if stdin_open && !data.is_empty() => {
                    spdy.lock().await.data(s, data, false).await?
                }
                (Some(RESIZE), _, Some(s)) if !data.is_empty() => {
                    spdy.lock().await.data(s, data, false).await?
                }
                (Some(CLOSE_STREAM), Some(s), _)
                    if protocol == V5 && stdin_open && data.first() == Some(&STDIN) =>
                {
                    stdin_open = false;
                    spdy.lock().await.data(s, &[], true).await?
                }
                // Other streams are not the client's to write; dropped, as upstream.
                _ => {}
            }
        }
    };

    // Runtime to client: output as it comes, the status once complete.
    let downlink = async {
        let mut status = Vec::new();
        let mut status_done = false;
        let mut outputs: Vec<u32> = [stdout, stderr].into_iter().flatten().collect();
        loop {
            let frame = match spdy::read_frame(&mut server_r).await {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(status),
                Err(e) => {
                    tracing::debug!(error = %e, "reading from the streaming server");
                    return Ok(status);
                }
            };
            match frame {
                spdy::Frame::Data { stream, fin, data } => {
                    if stream == error {
                        status.extend_from_slice(&data);
                        status_done |= fin;
                    } else if let Some(id) = [(stdout, STDOUT), (stderr, STDERR)]
                        .into_iter()
                        .find_map(|(s, id)| (s == Some(stream)).then_some(id))
                    {
                        if !data.is_empty() {
                            ws.lock().await.channel(id, &data).await?;
                        }
                        if fin {
                            outputs.retain(|s| *s != stream);
                        }
                    }
                }
                spdy::Frame::Reply { stream, fin: true } | spdy::Frame::Reset { stream, .. } => {
                    if stream == error {
                        status_done = true;
                    }
                    outputs.retain(|s| *s != stream);
                }
                // Not waited for: uplink may hold the writer behind a stalled stdin write,
                // and output must keep flowing; an unanswered ping only costs the runtime
                // a liveness sample.
                spdy::Frame::Ping(id) => {
                    if let Ok(mut w) = spdy.try_lock() {
                        w.ping(id).await?;
                    }
                }
                spdy::Frame::GoAway { .. } => return Ok(status),
                spdy::Frame::Reply { .. } | spdy::Frame::Other => {}
            }
            if status_done && outputs.is_empty() {
                return Ok::<_, std::io::Error>(status);
            }
        }
    };

    tokio::pin!(uplink, downlink);
    let (end, status, uplink_done) = tokio::select! {
        status = &mut downlink => (End::Finished, status?, false),
        end = &mut uplink => (end?, Vec::new(), true),
    };
    // uplink, no longer polled, may hold the writer mid-write: then dropping the
    // connection is the only goodbye.
    if let Ok(mut w) = spdy.try_lock() {
        let _ = w.go_away().await;
    }
    let uplink = async move {
        if uplink_done {
            Ok(End::ClientGone)
        } else {
            uplink.await
        }
    };
    let result = close_client(&ws, &closing, end, &status, uplink).await;
    if let Ok(mut w) = ws.try_lock() {
        let _ = w.0.shutdown().await;
    }
    result
}

/// Relays a SPDY connection tunneled in the client's binary messages to `server`.
async fn tunnel<C, S>(client: C, server: S) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite,
    S: AsyncRead + AsyncWrite,
{
    let (mut client_r, client_w) = tokio::io::split(client);
    let (mut server_r, server_w) = tokio::io::split(server);
    let ws = Mutex::new(WsWriter(client_w));
    let server_w = Mutex::new(server_w);
    let closing = AtomicBool::new(false);
    // The tunnel carries binary messages only, as upstream's tunneling connection.
    let uplink = async {
        let mut in_message = false;
        loop {
            match next_client_data(&mut client_r, &ws, &closing, true, &mut in_message).await? {
                ClientData::Frame { payload, .. } => {
                    let mut w = server_w.lock().await;
                    w.write_all(&payload).await?;
                    w.flush().await?;
                }
                ClientData::End(end) => return Ok::<_, std::io::Error>(end),
            }
        }
    };
    let downlink = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match server_r.read(&mut buf).await {
                Ok(0) => return Ok(End::Finished),
                Ok(n) => ws.lock().await.send(OP_BINARY, &[&buf[..n]]).await?,
                Err(e) => {
                    tracing::debug!(error = %e, "reading from the streaming server");
                    return Ok::<_, std::io::Error>(End::Finished);
                }
            }
        }
    };
    tokio::pin!(uplink, downlink);
    let (end, uplink_done) = tokio::select! {
        end = &mut downlink => (end?, false),
        end = &mut uplink => (end?, true),
    };
    if let Ok(mut w) = server_w.try_lock() {
        let _ = w.shutdown().await;
    }
    let uplink = async move {
        if uplink_done {
            Ok(End::ClientGone)
        } else {
            uplink.await
        }
    };
    let result = close_client(&ws, &closing, end, &[], uplink).await;
    if let Ok(mut w) = ws.try_lock() {
        let _ = w.0.shutdown().await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    #[test]
    fn accept_key_matches_rfc_6455() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn negotiation_takes_the_first_supported_offer() {
        let h = |v: &[&str]| {
            let mut m = http::HeaderMap::new();
            m.insert(http::header::UPGRADE, "WebSocket".parse().unwrap());
            for v in v {
                m.append(http::header::SEC_WEBSOCKET_PROTOCOL, v.parse().unwrap());
            }
            m
        };
        assert!(is_websocket(&h(&[])));
        assert!(!is_websocket(&http::HeaderMap::new()));
        assert_eq!(negotiate(&h(&[V5])), Some(V5));
        assert_eq!(
            negotiate(&h(&["channel.k8s.io, v4.channel.k8s.io", V5])),
            Some(V4)
        );
        assert_eq!(
            negotiate(&h(&["base64.channel.k8s.io", "channel.k8s.io"])),
            None
        );
    }

    async fn send_masked(c: &mut DuplexStream, opcode: u8, fin: bool, payload: &[u8]) {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut f = vec![
            if fin { 0x80 } else { 0 } | opcode,
            0x80 | payload.len() as u8,
        ];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        c.write_all(&f).await.unwrap();
    }

    async fn recv_unmasked(c: &mut DuplexStream) -> (u8, Vec<u8>) {
        let mut h = [0u8; 2];
        c.read_exact(&mut h).await.unwrap();
        assert_eq!(h[0] & 0x80, 0x80, "unfragmented");
        assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
        let len = match h[1] & 0x7f {
            126 => c.read_u16().await.unwrap() as usize,
            n => n as usize,
        };
        let mut p = vec![0u8; len];
        c.read_exact(&mut p).await.unwrap();
        (h[0] & 0x0f, p)
    }

    /// A raw SPDY frame as the fake runtime sees it: (control type or 0, stream, flags, data).
    async fn recv_spdy(s: &mut DuplexStream) -> (u16, u32, u8, Vec<u8>) {
        let mut h = [0u8; 8];
        s.read_exact(&mut h).await.unwrap();
        let len = u32::from_be_bytes([0, h[5], h[6], h[7]]) as usize;
        let mut p = vec![0u8; len];
        s.read_exact(&mut p).await.unwrap();
        if h[0] & 0x80 != 0 {
            let id = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
            (u16::from_be_bytes([h[2], h[3]]), id, h[4], p)
        } else {
            let id = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) & 0x7fff_ffff;
            (0, id, h[4], p)
        }
    }

    async fn send_spdy_data(s: &mut DuplexStream, stream: u32, fin: bool, data: &[u8]) {
        let mut f = stream.to_be_bytes().to_vec();
        f.push(fin as u8);
        f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(data);
        s.write_all(&f).await.unwrap();
    }

    #[tokio::test]
    async fn a_v5_session_is_translated_both_ways() {
        let (mut client, client_end) = tokio::io::duplex(1 << 16);
        let (mut runtime, runtime_end) = tokio::io::duplex(1 << 16);
        let streams = Streams {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        };
        let session = tokio::spawn(translate(client_end, runtime_end, streams, V5));

        // error, stdin, stdout, stderr are opened in that order; no resize without a TTY.
        let mut ids = Vec::new();
        for _ in 0..4 {
            let (kind, id, _, _) = recv_spdy(&mut runtime).await;
            assert_eq!(kind, 1, "SYN_STREAM");
            ids.push(id);
        }
        assert_eq!(ids, [1, 3, 5, 7]);

        // Output and a runtime ping.
        send_spdy_data(&mut runtime, 5, false, b"out\n").await;
        send_spdy_data(&mut runtime, 7, false, b"err\n").await;
        runtime
            .write_all(&[0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 2])
            .await
            .unwrap();
        assert_eq!(
            recv_unmasked(&mut client).await,
            (OP_BINARY, b"\x01out\n".to_vec())
        );
        assert_eq!(
            recv_unmasked(&mut client).await,
            (OP_BINARY, b"\x02err\n".to_vec())
        );
        let (kind, id, _, _) = recv_spdy(&mut runtime).await;
        assert_eq!((kind, id), (6, 2), "the ping is echoed");

        // stdin in a fragmented message, a ping, a resize (dropped: no TTY), then the close
        // signal for stdin.
        send_masked(&mut client, OP_BINARY, false, b"\x00h").await;
        send_masked(&mut client, OP_CONTINUATION, true, b"i\n").await;
        send_masked(&mut client, OP_PING, true, b"p").await;
        send_masked(
            &mut client,
            OP_BINARY,
            true,
            b"\x04{\"Width\":80,\"Height\":24}",
        )
        .await;
        send_masked(&mut client, OP_BINARY, true, &[CLOSE_STREAM, STDIN]).await;
        assert_eq!(recv_spdy(&mut runtime).await, (0, 3, 0, b"h".to_vec()));
        assert_eq!(recv_spdy(&mut runtime).await, (0, 3, 0, b"i\n".to_vec()));
        assert_eq!(recv_unmasked(&mut client).await, (OP_PONG, b"p".to_vec()));
        assert_eq!(
            recv_spdy(&mut runtime).await,
            (0, 3, 1, vec![]),
            "stdin FIN"
        );

        // The status, then the outputs end: channel 3 and a normal close.
        let status = br#"{"metadata":{},"status":"Failure","reason":"NonZeroExitCode"}"#;
        send_spdy_data(&mut runtime, 1, true, status).await;
        send_spdy_data(&mut runtime, 5, true, b"").await;
        send_spdy_data(&mut runtime, 7, true, b"").await;
        let (op, p) = recv_unmasked(&mut client).await;
        assert_eq!((op, p[0], &p[1..]), (OP_BINARY, ERROR, &status[..]));
        assert_eq!(
            recv_unmasked(&mut client).await,
            (OP_CLOSE, CLOSE_NORMAL.to_be_bytes().to_vec())
        );
        let (kind, _, _, _) = recv_spdy(&mut runtime).await;
        assert_eq!(kind, 7, "GOAWAY to the runtime");
        send_masked(&mut client, OP_CLOSE, true, &CLOSE_NORMAL.to_be_bytes()).await;
        session.await.unwrap().unwrap();
    }

    #[test]
    fn tunneled_protocols_are_the_prefixed_kubernetes_ones() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            "SPDY/3.1+portforward.k8s.io, SPDY/3.1+other, v4.channel.k8s.io"
                .parse()
                .unwrap(),
        );
        assert_eq!(tunneled_protocols(&h), ["portforward.k8s.io"]);
        assert_eq!(negotiate(&h), Some(V4));
    }

    #[tokio::test]
    async fn a_tunnel_relays_binary_messages_as_bytes() {
        let (mut client, client_end) = tokio::io::duplex(1 << 16);
        let (mut runtime, runtime_end) = tokio::io::duplex(1 << 16);
        let session = tokio::spawn(tunnel(client_end, runtime_end));
        send_masked(&mut client, OP_BINARY, false, b"ab").await;
        send_masked(&mut client, OP_PING, true, b"").await;
        send_masked(&mut client, OP_CONTINUATION, true, b"c").await;
        let mut got = [0u8; 3];
        runtime.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abc");
        assert_eq!(recv_unmasked(&mut client).await, (OP_PONG, vec![]));
        runtime.write_all(b"xyz").await.unwrap();
        assert_eq!(
            recv_unmasked(&mut client).await,
            (OP_BINARY, b"xyz".to_vec())
        );
        // The runtime hangs up: a normal close, answered by the client.
        drop(runtime);
        assert_eq!(
            recv_unmasked(&mut client).await,
            (OP_CLOSE, CLOSE_NORMAL.to_be_bytes().to_vec())
        );
        send_masked(&mut client, OP_CLOSE, true, &CLOSE_NORMAL.to_be_bytes()).await;
        session.await.unwrap().unwrap();

        // Text is not part of the tunnel protocol.
        let (mut client, client_end) = tokio::io::duplex(1 << 16);
        let (_runtime, runtime_end) = tokio::io::duplex(1 << 16);
        let session = tokio::spawn(tunnel(client_end, runtime_end));
        send_masked(&mut client, OP_TEXT, true, b"hi").await;
        assert_eq!(
            recv_unmasked(&mut client).await,
            (OP_CLOSE, CLOSE_PROTOCOL_ERROR.to_be_bytes().to_vec())
        );
        session.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn unmasked_client_frames_are_a_protocol_error() {
        let (mut client, client_end) = tokio::io::duplex(1 << 16);
        let (mut runtime, runtime_end) = tokio::io::duplex(1 << 16);
        let streams = Streams {
            stdin: false,
            stdout: true,
            stderr: false,
            tty: true,
        };
        let session = tokio::spawn(translate(client_end, runtime_end, streams, V4));
        // error, stdout, resize.
        for want in [1, 3, 5] {
            assert_eq!(recv_spdy(&mut runtime).await.1, want);
        }
        client.write_all(&[0x82, 1, STDIN]).await.unwrap();
        assert_eq!(
            recv_unmasked(&mut client).await,
            (OP_CLOSE, CLOSE_PROTOCOL_ERROR.to_be_bytes().to_vec())
        );
        session.await.unwrap().unwrap();
    }
}
