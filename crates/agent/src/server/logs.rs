//! Reading container logs in the CRI format (`<RFC3339Nano> stdout|stderr F|P <content>`), as
//! upstream's kubelet serves them: tail, since, timestamps, limitBytes, stream, follow.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

/// Which output stream a log record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One record of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// When the runtime read it.
    pub time: DateTime<FixedOffset>,
    /// Its stream.
    pub stream: Stream,
    /// `P`: the line continues in the next record (no newline after `content`).
    pub partial: bool,
    /// The bytes, without the newline.
    pub content: &'a [u8],
}

/// Parses one line of a CRI log file (without its trailing newline).
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut it = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(it.next()?).ok()?;
    let time = DateTime::parse_from_rfc3339(time).ok()?;
    let stream = match it.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let tag = it.next()?;
    // Tags may carry more flags after a ':'; the first says full or partial.
    let partial = match tag.split(|b| *b == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(Record {
        time,
        stream,
        partial,
        content: it.next().unwrap_or(b""),
    })
}

/// What to read, as upstream's `PodLogOptions` reach the kubelet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming as the container writes.
    pub follow: bool,
    /// Only records at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only the last N lines of the file.
    pub tail_lines: Option<usize>,
    /// Prefix each line with its RFC 3339 time (nanoseconds).
    pub timestamps: bool,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
    /// Only this stream (both when `None`).
    pub stream: Option<Stream>,
}

impl LogOptions {
    /// Parses the agent's `containerLogs` query parameters. `now` resolves `sinceSeconds`.
    pub fn from_query(
        pairs: &[(String, String)],
        now: DateTime<Utc>,
    ) -> Result<(LogOptions, bool), String> {
        let get = |k: &str| {
            pairs
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        let flag = |k: &str| get(k).is_some_and(|v| matches!(v, "" | "true" | "1" | "True"));
        let num = |k: &str| -> Result<Option<i64>, String> {
            get(k)
                .filter(|v| !v.is_empty())
                .map(|v| v.parse::<i64>().map_err(|_| format!("invalid {k}: {v:?}")))
                .transpose()
        };
        let mut o = LogOptions {
            follow: flag("follow"),
            timestamps: flag("timestamps"),
            ..Default::default()
        };
        if let Some(t) = num("tailLines")? {
            o.tail_lines = Some(t.max(0) as usize);
        }
        if let Some(l) = num("limitBytes")? {
            o.limit_bytes = Some(l.max(0) as u64);
        }
        if let Some(s) = num("sinceSeconds")? {
            o.since = Some(now - chrono::Duration::seconds(s));
        }
        if let Some(t) = get("sinceTime").filter(|v| !v.is_empty()) {
            let t = DateTime::parse_from_rfc3339(t)
                .map_err(|e| format!("invalid sinceTime {t:?}: {e}"))?;
            o.since = Some(t.with_timezone(&Utc));
        }
        o.stream = match get("stream") {
            Some("Stdout") => Some(Stream::Stdout),
            Some("Stderr") => Some(Stream::Stderr),
            _ => None,
        };
        Ok((o, flag("previous")))
    }
}

/// Turns records into the bytes the client sees, counting `limitBytes`.
struct Writer {
    opts: LogOptions,
    at_line_start: bool,
    written: u64,
}

impl Writer {
    fn new(opts: LogOptions) -> Self {
        Writer {
            opts,
            at_line_start: true,
            written: 0,
        }
    }

    fn done(&self) -> bool {
        self.opts.limit_bytes.is_some_and(|l| self.written >= l)
    }

    /// Renders one file line into `out`; false once `limitBytes` is reached.
    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) -> bool {
        if self.done() {
            return false;
        }
        let Some(r) = parse_record(line) else {
            tracing::debug!("skipping a malformed log line");
            return true;
        };
        if self.opts.stream.is_some_and(|s| s != r.stream) {
            return true;
        }
        if self.opts.since.is_some_and(|s| r.time < s) {
            return true;
        }
        let start = out.len();
        if self.opts.timestamps && self.at_line_start {
            out.extend_from_slice(
                r.time
                    .to_rfc3339_opts(SecondsFormat::Nanos, true)
                    .as_bytes(),
            );
            out.push(b' ');
        }
        out.extend_from_slice(r.content);
        if !r.partial {
            out.push(b'\n');
        }
        self.at_line_start = !r.partial;
        let mut n = (out.len() - start) as u64;
        if let Some(limit) = self.opts.limit_bytes {
            let left = limit - self.written;
            if n > left {
                out.truncate(start + left as usize);
                n = left;
            }
        }
        self.written += n;
        !self.done()
    }
}

/// The start of the last `n` lines of `data` (a whole file).
fn tail_start(data: &[u8], n: usize) -> usize {
    if n == 0 {
        return data.len();
    }
    // A final line without its newline still counts as a line.
    let mut end = data.len();
    if data.last() == Some(&b'\n') {
        end -= 1;
    }
    let mut seen = 0;
    for i in (0..end).rev() {
        if data[i] == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

/// Reads a whole log file into the rendered output (no follow). Used by tests and by
/// [`stream`] for the initial read.
pub fn render(data: &[u8], opts: &LogOptions) -> Vec<u8> {
    let mut w = Writer::new(opts.clone());
    let mut out = Vec::new();
    let start = opts.tail_lines.map_or(0, |n| tail_start(data, n));
    for line in data[start..].split(|b| *b == b'\n') {
        if line.is_empty() {
            continue;
        }
        if !w.line(line, &mut out) {
            break;
        }
    }
    out
}

const POLL: Duration = Duration::from_millis(100);
const RUNNING_CHECK: Duration = Duration::from_secs(1);

/// Streams the log file at `path` to `tx` as the options say. With `follow`, keeps reading as
/// the file grows (and from the start again after a rotation) until `running` says the
/// container stopped and everything was read, or the receiver goes away.
pub async fn stream<F, Fut>(
    path: PathBuf,
    opts: LogOptions,
    running: F,
    tx: mpsc::Sender<Bytes>,
) -> std::io::Result<()>
where
    F: Fn() -> Fut + Send,
    Fut: std::future::Future<Output = bool> + Send,
{
    let mut w = Writer::new(opts.clone());
    let mut file = tokio::fs::File::open(&path).await?;
    let mut data = Vec::new();
    file.read_to_end(&mut data).await?;
    let mut pos = data.len() as u64;
    let start = opts.tail_lines.map_or(0, |n| tail_start(&data, n));
    // Only complete lines are rendered; a trailing fragment waits for its newline.
    let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut pending: Vec<u8> = data[complete.max(start)..].to_vec();
    let mut out = Vec::new();
    let mut more = true;
    for line in data[start..complete.max(start)].split(|b| *b == b'\n') {
        if !line.is_empty() && !w.line(line, &mut out) {
            more = false;
            break;
        }
    }
    drop(data);
    if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
        return Ok(());
    }
    if !opts.follow || !more {
        return Ok(());
    }
    let mut idle = Duration::ZERO;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            let len = tokio::fs::metadata(&path).await.map(|m| m.len()).ok();
            if len.is_some_and(|l| l < pos) {
                // Rotated or truncated: read the new file from its start.
                file = tokio::fs::File::open(&path).await?;
                file.seek(std::io::SeekFrom::Start(0)).await?;
                pos = 0;
                pending.clear();
                continue;
            }
            if tx.is_closed() {
                return Ok(());
            }
            if idle >= RUNNING_CHECK {
                idle = Duration::ZERO;
                if !running().await {
                    // One last read: the container may have written just before it exited.
                    let n = file.read(&mut buf).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    pending.extend_from_slice(&buf[..n]);
                    pos += n as u64;
                    continue;
                }
            }
            tokio::time::sleep(POLL).await;
            idle += POLL;
            continue;
        }
        idle = Duration::ZERO;
        pos += n as u64;
        pending.extend_from_slice(&buf[..n]);
        let Some(last_nl) = pending.iter().rposition(|b| *b == b'\n') else {
            continue;
        };
        let mut out = Vec::new();
        let mut more = true;
        for line in pending[..last_nl].split(|b| *b == b'\n') {
            if !line.is_empty() && !w.line(line, &mut out) {
                more = false;
                break;
            }
        }
        pending.drain(..=last_nl);
        if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
            return Ok(());
        }
        if !more {
            return Ok(());
        }
    }
}

/// Whether `path` is inside `dir` (log paths come from the runtime; never serve others).
pub fn is_within(path: &Path, dir: &Path) -> bool {
    path.components()
        .all(|c| c != std::path::Component::ParentDir)
        && path.starts_with(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2024-05-01T10:00:00.000000001Z stdout F one\n\
2024-05-01T10:00:01.5Z stderr F two\n\
2024-05-01T10:00:02Z stdout P thr\n\
2024-05-01T10:00:02.1Z stdout F ee\n\
2024-05-01T10:00:03+02:00 stdout F four\n";

    fn opts() -> LogOptions {
        LogOptions::default()
    }

    #[test]
    fn parses_records() {
        let r = parse_record(b"2024-05-01T10:00:00.123456789Z stderr P a b c").unwrap();
        assert_eq!(r.stream, Stream::Stderr);
        assert!(r.partial);
        assert_eq!(r.content, b"a b c");
        assert_eq!(r.time.timestamp_subsec_nanos(), 123456789);
        let r = parse_record(b"2024-05-01T10:00:00Z stdout F").unwrap();
        assert_eq!(r.content, b"");
        assert!(parse_record(b"garbage").is_none());
        assert!(parse_record(b"2024-05-01T10:00:00Z stdin F x").is_none());
    }

    #[test]
    fn renders_partial_lines_joined() {
        let out = render(LOG.as_bytes(), &opts());
        assert_eq!(String::from_utf8(out).unwrap(), "one\ntwo\nthree\nfour\n");
    }

    #[test]
    fn tail_counts_file_lines() {
        let o = LogOptions {
            tail_lines: Some(2),
            ..opts()
        };
        assert_eq!(render(LOG.as_bytes(), &o), b"ee\nfour\n");
        let o = LogOptions {
            tail_lines: Some(0),
            ..opts()
        };
        assert_eq!(render(LOG.as_bytes(), &o), b"");
        let o = LogOptions {
            tail_lines: Some(100),
            ..opts()
        };
        assert_eq!(render(LOG.as_bytes(), &o), b"one\ntwo\nthree\nfour\n");
        assert_eq!(tail_start(b"a\nb", 1), 2);
    }

    #[test]
    fn since_filters_by_time() {
        let o = LogOptions {
            since: Some("2024-05-01T10:00:01.5Z".parse().unwrap()),
            ..opts()
        };
        // 10:00:03+02:00 is 08:00:03Z, before the cut-off.
        assert_eq!(render(LOG.as_bytes(), &o), b"two\nthree\n");
    }

    #[test]
    fn timestamps_prefix_each_line_once() {
        let o = LogOptions {
            timestamps: true,
            tail_lines: Some(3),
            ..opts()
        };
        assert_eq!(
            String::from_utf8(render(LOG.as_bytes(), &o)).unwrap(),
            "2024-05-01T10:00:02.000000000Z three\n2024-05-01T10:00:03.000000000+02:00 four\n"
        );
    }

    #[test]
    fn limit_bytes_truncates() {
        let o = LogOptions {
            limit_bytes: Some(6),
            ..opts()
        };
        assert_eq!(render(LOG.as_bytes(), &o), b"one\ntw");
    }

    #[test]
    fn stream_filter() {
        let o = LogOptions {
            stream: Some(Stream::Stderr),
            ..opts()
        };
        assert_eq!(render(LOG.as_bytes(), &o), b"two\n");
    }

    #[test]
    fn query_parsing() {
        let q = |s: &[(&str, &str)]| {
            s.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        };
        let now: DateTime<Utc> = "2024-05-01T10:00:10Z".parse().unwrap();
        let (o, prev) = LogOptions::from_query(
            &q(&[
                ("follow", "true"),
                ("previous", "true"),
                ("tailLines", "3"),
                ("sinceSeconds", "10"),
            ]),
            now,
        )
        .unwrap();
        assert!(o.follow && prev);
        assert_eq!(o.tail_lines, Some(3));
        assert_eq!(o.since, Some("2024-05-01T10:00:00Z".parse().unwrap()));
        assert!(LogOptions::from_query(&q(&[("sinceTime", "x")]), now).is_err());
    }

    async fn collect(mut rx: mpsc::Receiver<Bytes>) -> Vec<u8> {
        let mut v = Vec::new();
        while let Some(b) = rx.recv().await {
            v.extend_from_slice(&b);
        }
        v
    }

    #[tokio::test]
    async fn follow_streams_appended_lines_until_the_container_stops() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        use tokio::io::AsyncWriteExt;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(
            &path,
            "2024-05-01T10:00:00Z stdout F first\n2024-05-01T10:00:00Z stdout F sec",
        )
        .unwrap();
        let running = Arc::new(AtomicBool::new(true));
        let (tx, mut rx) = mpsc::channel(16);
        let r = running.clone();
        let task = tokio::spawn(stream(
            path.clone(),
            LogOptions {
                follow: true,
                ..opts()
            },
            move || {
                let r = r.clone();
                async move { r.load(Ordering::SeqCst) }
            },
            tx,
        ));
        assert_eq!(&rx.recv().await.unwrap()[..], b"first\n");
        let mut f = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .await
            .unwrap();
        f.write_all(b"ond\n2024-05-01T10:00:01Z stdout F third\n")
            .await
            .unwrap();
        f.flush().await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got[..], b"second\nthird\n");
        f.write_all(b"2024-05-01T10:00:02Z stderr F last\n")
            .await
            .unwrap();
        f.flush().await.unwrap();
        running.store(false, Ordering::SeqCst);
        let rest = tokio::time::timeout(Duration::from_secs(10), collect(rx))
            .await
            .unwrap();
        assert_eq!(rest, b"last\n");
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn follow_respects_limit_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(&path, LOG).unwrap();
        let (tx, rx) = mpsc::channel(16);
        let o = LogOptions {
            follow: true,
            limit_bytes: Some(3),
            ..opts()
        };
        // The stream ends at the limit although the container still runs.
        stream(path, o, || async { true }, tx).await.unwrap();
        assert_eq!(collect(rx).await, b"one");
    }
}
