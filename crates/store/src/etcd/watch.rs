//! Watch streams on etcd that survive a member going away.
//!
//! One task per watch reads etcd's watch stream and hands events to the caller through a bounded
//! queue. When the stream breaks (the member died, lost its leader, or the connection reset) the
//! task opens a new one on whichever member answers, starting right after the last event it
//! delivered: etcd replays history from any uncompacted revision, so nothing is lost, and events
//! at or before the last delivered revision are dropped, so nothing is repeated.
//!
//! Progress notifications are requested (they keep an idle stream observably alive) but never
//! used to move the resume point: etcd before 3.4.25/3.5.8 could send one ahead of events it had
//! not delivered yet.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, EventType as EtcdEventType, WatchOptions};
use tokio::sync::{mpsc, oneshot};

use super::{convert_kv, is_unavailable};
use crate::fanout::prefix_end;
use crate::{Error, Event, EventType, Result, Revision, WatchStream};

/// Why the forwarding task stopped, reported after the queue is drained.
#[derive(Default)]
struct End {
    lagged: AtomicBool,
    error: Mutex<Option<Error>>,
}

impl End {
    fn fail(&self, e: Error) {
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
    }

    fn take(&self) -> Option<Error> {
        if self.lagged.load(Ordering::Acquire) {
            return Some(Error::WatchLagged);
        }
        self.error.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Opens a watch of `prefix` for events after `after`; returns once etcd has accepted it.
pub(super) async fn start(
    client: Client,
    prefix: &str,
    after: Revision,
    buffer: usize,
    compacted_hint: Arc<AtomicI64>,
) -> Result<WatchStream> {
    let (tx, rx) = mpsc::channel::<Event>(buffer.max(1));
    let end = Arc::new(End::default());
    let (ready_tx, ready_rx) = oneshot::channel();
    let task = Forwarder {
        client,
        prefix: prefix.to_owned(),
        next: after + 1,
        tx,
        end: end.clone(),
        compacted_hint,
    };
    tokio::spawn(task.run(ready_tx));
    ready_rx
        .await
        .map_err(|_| Error::Backend("etcd watch task ended".into()))??;
    let stream = futures::stream::unfold(Some((rx, end)), |state| async move {
        let (mut rx, end) = state?;
        match rx.recv().await {
            Some(ev) => Some((Ok(ev), Some((rx, end)))),
            None => end.take().map(|e| (Err(e), None)),
        }
    });
    Ok(Box::pin(stream))
}

struct Forwarder {
    client: Client,
    prefix: String,
    /// The first revision not delivered yet: where a new etcd watch starts.
    next: Revision,
    tx: mpsc::Sender<Event>,
    end: Arc<End>,
    compacted_hint: Arc<AtomicI64>,
}

/// How one etcd watch stream ended.
enum Broken {
    /// The caller went away or the watch is over for good.
    Done,
    /// The stream broke; open another.
    Retry(String),
}

impl Forwarder {
    fn options(&self) -> (Vec<u8>, WatchOptions) {
        let key = if self.prefix.is_empty() {
            vec![0]
        } else {
            self.prefix.as_bytes().to_vec()
        };
        let end = prefix_end(&self.prefix)
            .map(String::into_bytes)
            .unwrap_or_else(|| vec![0]);
        let opts = WatchOptions::new()
            .with_range(end)
            .with_start_revision(self.next)
            .with_prev_key()
            .with_progress_notify();
        (key, opts)
    }

    async fn run(mut self, ready: oneshot::Sender<Result<()>>) {
        let mut ready = Some(ready);
        let mut delay = Duration::from_millis(50);
        loop {
            let (key, opts) = self.options();
            let mut wc = self
                .client
                .watch_client()
                .max_decoding_message_size(super::MAX_RESPONSE);
            let opened = tokio::select! {
                r = wc.watch(key, Some(opts)) => r,
                _ = self.tx.closed() => return,
            };
            let broken = match opened {
                Ok(stream) => self.forward(stream, &mut ready).await,
                Err(e) if ready.is_none() && is_unavailable(&e) => Broken::Retry(e.to_string()),
                Err(e) => {
                    let e = Error::Backend(format!("etcd watch: {e}"));
                    match ready.take() {
                        Some(r) => {
                            let _ = r.send(Err(e));
                        }
                        None => self.end.fail(e),
                    }
                    return;
                }
            };
            match broken {
                Broken::Done => return,
                Broken::Retry(why) => {
                    tracing::warn!(
                        prefix = %self.prefix,
                        resume_at = self.next,
                        reason = %why,
                        "etcd watch broke; resuming"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.tx.closed() => return,
                    }
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn forward(
        &mut self,
        mut stream: etcd_client::WatchStream,
        ready: &mut Option<oneshot::Sender<Result<()>>>,
    ) -> Broken {
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = self.tx.closed() => return Broken::Done,
            };
            let resp = match msg {
                Ok(Some(resp)) => resp,
                Ok(None) => return Broken::Retry("stream ended".into()),
                Err(e) => return Broken::Retry(e.to_string()),
            };
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    let compacted = resp.compact_revision();
                    self.compacted_hint.fetch_max(compacted, Ordering::AcqRel);
                    let e = Error::Compacted {
                        requested: self.next - 1,
                        compacted,
                    };
                    match ready.take() {
                        Some(r) => {
                            let _ = r.send(Err(e));
                        }
                        None => self.end.fail(e),
                    }
                    return Broken::Done;
                }
                // No leader, or the member is going away: another member can serve it.
                return Broken::Retry(format!("canceled: {}", resp.cancel_reason()));
            }
            if resp.created() {
                if let Some(r) = ready.take() {
                    let _ = r.send(Ok(()));
                }
            }
            for ev in resp.events() {
                let event = match convert_event(ev) {
                    Ok(event) => event,
                    Err(e) => {
                        self.end.fail(e);
                        return Broken::Done;
                    }
                };
                let rev = event.revision();
                if rev < self.next {
                    // Replayed after a resume: already delivered.
                    continue;
                }
                match self.tx.try_send(event) {
                    Ok(()) => self.next = rev + 1,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.end.lagged.store(true, Ordering::Release);
                        return Broken::Done;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return Broken::Done,
                }
            }
        }
    }
}

fn convert_event(ev: &etcd_client::Event) -> Result<Event> {
    let kv = ev
        .kv()
        .ok_or_else(|| Error::Backend("etcd watch event without a key".into()))?;
    let kv = convert_kv(kv)?;
    let prev = ev.prev_kv().map(convert_kv).transpose()?;
    Ok(match ev.event_type() {
        EtcdEventType::Put if kv.create_revision == kv.mod_revision => Event {
            event_type: EventType::Create,
            kv,
            prev: None,
        },
        EtcdEventType::Put => Event {
            event_type: EventType::Update,
            kv,
            prev,
        },
        EtcdEventType::Delete => {
            // Upstream refuses a delete without its last value too: the watcher could not tell
            // what was deleted.
            let prev = prev.ok_or_else(|| {
                Error::Backend(format!(
                    "etcd event received with PrevKv=nil (key={:?}, modRevision={})",
                    kv.key, kv.mod_revision
                ))
            })?;
            Event {
                event_type: EventType::Delete,
                kv: crate::KeyValue {
                    mod_revision: kv.mod_revision,
                    ..prev.clone()
                },
                prev: Some(prev),
            }
        }
    })
}
