//! The embedded default backend: one SQLite write log in the manner of kine.
//!
//! - `schema`: the table, its indexes and connection setup;
//! - `writer`: the one thread that owns the write connection (group commit, event publication,
//!   compaction, WAL checkpoints);
//! - `read`: the read queries, run on a small pool of read connections off the async runtime.
//!
//! The database file belongs to one process: watchers are fed in-process by the writer, right
//! after each commit. A new watcher subscribes first, noting the last published revision `L`,
//! then reads the history up to `L` from the table and switches to the live events, which all
//! come after `L`: no gap, no duplicate.

mod read;
mod schema;
mod writer;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use rusqlite::Connection;
use tokio::sync::{oneshot, Semaphore};

use crate::fanout::{Fanout, Subscription};
use crate::{Error, Event, KeyValue, ListResult, Result, Revision, Store, WatchStream};
use writer::Op;

/// Events read per watch catch-up query.
const CATCH_UP_PAGE: usize = 1000;

/// How to open a [`SqliteStore`].
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// The database file; its directory is created if missing.
    pub path: PathBuf,
    /// How often the background compaction runs.
    pub compaction_interval: Duration,
    /// Revisions of history kept by the background compaction.
    pub compaction_keep: i64,
    /// Live events a watcher may leave unread before it is cut off with `WatchLagged`.
    pub watch_buffer: usize,
    /// Read connections (and concurrent reads).
    pub read_connections: usize,
    /// Most writes committed in one transaction.
    pub max_batch: usize,
    /// Bytes of WAL file kept after a checkpoint (`PRAGMA journal_size_limit`).
    pub journal_size_limit: i64,
}

impl SqliteOptions {
    /// Defaults for a database at `path`: compaction every 5 minutes keeping 1000 revisions,
    /// as kine does.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteOptions {
            path: path.into(),
            compaction_interval: Duration::from_secs(300),
            compaction_keep: 1000,
            watch_buffer: crate::DEFAULT_WATCH_BUFFER,
            read_connections: 4,
            max_batch: 1000,
            journal_size_limit: 64 << 20,
        }
    }
}

/// State shared by the store handle, the writer thread and the readers.
struct Shared {
    opts: SqliteOptions,
    /// Revision of the last committed and published write.
    current: AtomicI64,
    compacted: AtomicI64,
    fanout: Mutex<Fanout>,
    readers: Mutex<Vec<Connection>>,
    read_permits: Semaphore,
}

impl Shared {
    fn fanout(&self) -> MutexGuard<'_, Fanout> {
        self.fanout.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on a pooled read connection on a blocking thread.
    async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let _permit = self
            .read_permits
            .acquire()
            .await
            .map_err(|_| Error::Closed)?;
        let shared = self.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = shared
                .readers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop();
            let conn = match pooled {
                Some(c) => c,
                None => schema::open_reader(&shared.opts)?,
            };
            let res = f(&conn);
            shared
                .readers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
            res
        })
        .await
        .map_err(|e| Error::Backend(format!("read task failed: {e}")))?
    }
}

fn db(e: rusqlite::Error) -> Error {
    Error::Backend(e.to_string())
}

/// A [`Store`] on an SQLite database file.
pub struct SqliteStore {
    shared: Arc<Shared>,
    writes: Mutex<Option<mpsc::Sender<Op>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl SqliteStore {
    /// Opens (or creates) the database and starts the writer thread. An existing database
    /// continues its revision sequence.
    pub fn open(opts: SqliteOptions) -> Result<Arc<SqliteStore>> {
        let conn = schema::open_writer(&opts)?;
        let (current, compacted) = schema::revisions(&conn)?;
        let shared = Arc::new(Shared {
            current: AtomicI64::new(current),
            compacted: AtomicI64::new(compacted),
            fanout: Mutex::new(Fanout::new(opts.watch_buffer, current)),
            readers: Mutex::new(Vec::new()),
            read_permits: Semaphore::new(opts.read_connections.max(1)),
            opts,
        });
        let (tx, rx) = mpsc::channel();
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("skiff-store-writer".into())
                .spawn(move || writer::run(conn, shared, rx, current))
                .map_err(|e| Error::Backend(format!("starting the writer thread: {e}")))?
        };
        tracing::debug!(path = %shared.opts.path.display(), current, compacted, "store opened");
        Ok(Arc::new(SqliteStore {
            shared,
            writes: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        }))
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &SqliteOptions {
        &self.shared.opts
    }

    /// Checkpoints the WAL into the database file and truncates it.
    pub async fn checkpoint(&self) -> Result<()> {
        self.send(|reply| Op::Checkpoint { reply }).await
    }

    /// Stops the writer after the writes already queued, and ends every watch with
    /// [`Error::Closed`]. Later calls fail with [`Error::Closed`].
    pub fn close(&self) {
        self.writes.lock().unwrap_or_else(|e| e.into_inner()).take();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }

    async fn send<T>(&self, op: impl FnOnce(oneshot::Sender<Result<T>>) -> Op) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        {
            let writes = self.writes.lock().unwrap_or_else(|e| e.into_inner());
            let tx = writes.as_ref().ok_or(Error::Closed)?;
            tx.send(op(reply)).map_err(|_| Error::Closed)?;
        }
        rx.await.map_err(|_| Error::Closed)?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.shared.current.load(Ordering::Acquire))
    }

    async fn compacted_revision(&self) -> Result<Revision> {
        Ok(self.shared.compacted.load(Ordering::Acquire))
    }

    async fn get(&self, key: &str, revision: Revision) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        self.shared
            .read(move |c| read::get(c, &key, revision))
            .await
    }

    async fn list(
        &self,
        prefix: &str,
        start: &str,
        limit: usize,
        revision: Revision,
    ) -> Result<ListResult> {
        let (prefix, start) = (prefix.to_owned(), start.to_owned());
        self.shared
            .read(move |c| read::list(c, &prefix, &start, limit, revision))
            .await
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        let prefix = prefix.to_owned();
        self.shared.read(move |c| read::count(c, &prefix)).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let key = key.to_owned();
        self.send(|reply| Op::Create { key, value, reply }).await
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue> {
        let key = key.to_owned();
        self.send(|reply| Op::Update {
            key,
            value,
            expected,
            reply,
        })
        .await
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<KeyValue> {
        let key = key.to_owned();
        self.send(|reply| Op::Delete {
            key,
            expected,
            reply,
        })
        .await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let (sub, until) = {
            let mut fanout = self.shared.fanout();
            (fanout.subscribe(prefix)?, fanout.last_published())
        };
        // The first page is read here so that a compacted start fails the call itself.
        let first = {
            let prefix = prefix.to_owned();
            self.shared
                .read(move |c| read::events_after(c, &prefix, after, until, CATCH_UP_PAGE))
                .await?
        };
        let state = WatchState::CatchUp {
            shared: self.shared.clone(),
            prefix: prefix.to_owned(),
            cursor: first.last().map_or(after, |e| e.revision()),
            exhausted: first.len() < CATCH_UP_PAGE,
            page: first.into(),
            until,
            sub,
            after,
        };
        Ok(Box::pin(futures::stream::unfold(state, WatchState::next)))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.send(|reply| Op::Compact { revision, reply }).await
    }
}

/// A watch: catch-up from the table up to the subscription point, then live events.
enum WatchState {
    CatchUp {
        shared: Arc<Shared>,
        prefix: String,
        page: VecDeque<Event>,
        /// Revision of the last event read from the table.
        cursor: Revision,
        /// The last revision published before the subscription: catch-up ends there.
        until: Revision,
        exhausted: bool,
        sub: Subscription,
        after: Revision,
    },
    Live {
        sub: Subscription,
        /// Live events at or before this were already delivered (or not asked for).
        after: Revision,
    },
    Done,
}

impl WatchState {
    async fn next(mut self) -> Option<(Result<Event>, WatchState)> {
        loop {
            match self {
                WatchState::CatchUp {
                    ref mut page,
                    exhausted,
                    ..
                } if !page.is_empty() || exhausted => {
                    if let Some(ev) = page.pop_front() {
                        return Some((Ok(ev), self));
                    }
                    let WatchState::CatchUp {
                        sub, until, after, ..
                    } = self
                    else {
                        unreachable!()
                    };
                    self = WatchState::Live {
                        sub,
                        after: after.max(until),
                    };
                }
                WatchState::CatchUp {
                    ref shared,
                    ref prefix,
                    ref mut page,
                    ref mut cursor,
                    until,
                    ref mut exhausted,
                    ..
                } => {
                    let (shared, prefix, from) = (shared.clone(), prefix.clone(), *cursor);
                    let res = shared
                        .read(move |c| read::events_after(c, &prefix, from, until, CATCH_UP_PAGE))
                        .await;
                    match res {
                        Ok(events) => {
                            *exhausted = events.len() < CATCH_UP_PAGE;
                            *cursor = events.last().map_or(until, |e| e.revision());
                            page.extend(events);
                        }
                        Err(e) => return Some((Err(e), WatchState::Done)),
                    }
                }
                WatchState::Live { ref mut sub, after } => match sub.rx.recv().await {
                    Some(ev) if ev.revision() <= after => continue,
                    Some(ev) => return Some((Ok(ev), self)),
                    None => {
                        let end = sub.state.end_error();
                        return end.map(|e| (Err(e), WatchState::Done));
                    }
                },
                WatchState::Done => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests;
