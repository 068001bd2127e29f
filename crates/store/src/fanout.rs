//! In-process fan-out of committed events to watchers, shared by the backends.
//!
//! Each watcher owns a bounded queue. Publishing never blocks: a watcher whose queue is full is
//! marked lagged and dropped from the fan-out, so its stream drains what it has and then ends
//! with [`Error::WatchLagged`]; the writer and the other watchers are unaffected.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::{Error, Event, Revision};

const OPEN: u8 = 0;
const LAGGED: u8 = 1;
const CLOSED: u8 = 2;

/// Why a subscription's queue stopped receiving.
#[derive(Debug)]
pub(crate) struct SubState(AtomicU8);

impl SubState {
    /// The error a stream ends with once its queue is drained, if any.
    pub(crate) fn end_error(&self) -> Option<Error> {
        match self.0.load(Ordering::Acquire) {
            LAGGED => Some(Error::WatchLagged),
            CLOSED => Some(Error::Closed),
            _ => None,
        }
    }
}

struct Sub {
    prefix: String,
    tx: mpsc::Sender<Event>,
    state: Arc<SubState>,
}

/// The receiving end of a subscription.
pub(crate) struct Subscription {
    pub(crate) rx: mpsc::Receiver<Event>,
    pub(crate) state: Arc<SubState>,
}

/// The set of live watchers and the revision of the last event handed to them.
pub(crate) struct Fanout {
    subs: Vec<Sub>,
    buffer: usize,
    last_published: Revision,
    closed: bool,
}

impl Fanout {
    pub(crate) fn new(buffer: usize, last_published: Revision) -> Self {
        Fanout {
            subs: Vec::new(),
            buffer: buffer.max(1),
            last_published,
            closed: false,
        }
    }

    /// The revision of the last published event: every later event reaches new subscribers.
    pub(crate) fn last_published(&self) -> Revision {
        self.last_published
    }

    /// Registers a watcher of `prefix` that receives every event published from now on.
    pub(crate) fn subscribe(&mut self, prefix: &str) -> Result<Subscription, Error> {
        if self.closed {
            return Err(Error::Closed);
        }
        let (tx, rx) = mpsc::channel(self.buffer);
        let state = Arc::new(SubState(AtomicU8::new(OPEN)));
        self.subs.retain(|s| !s.tx.is_closed());
        self.subs.push(Sub {
            prefix: prefix.to_owned(),
            tx,
            state: state.clone(),
        });
        Ok(Subscription { rx, state })
    }

    /// Hands one committed event to every matching watcher, in commit order.
    pub(crate) fn publish(&mut self, event: &Event) {
        self.last_published = self.last_published.max(event.revision());
        self.subs.retain(|sub| {
            if !event.kv.key.starts_with(&sub.prefix) {
                return !sub.tx.is_closed();
            }
            match sub.tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    sub.state.0.store(LAGGED, Ordering::Release);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    /// Ends every watch with [`Error::Closed`] and refuses new ones.
    pub(crate) fn close(&mut self) {
        self.closed = true;
        for sub in self.subs.drain(..) {
            sub.state.0.store(CLOSED, Ordering::Release);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.subs.len()
    }
}

/// The live half of a watch stream: events from the subscription with revision `> after`, then
/// the error the subscription ended with, if any.
pub(crate) fn live_stream(
    sub: Subscription,
    after: Revision,
) -> impl futures::Stream<Item = crate::Result<Event>> + Send {
    futures::stream::unfold(Some(sub), move |sub| async move {
        let mut sub = sub?;
        loop {
            match sub.rx.recv().await {
                Some(ev) if ev.revision() <= after => continue,
                Some(ev) => return Some((Ok(ev), Some(sub))),
                None => return sub.state.end_error().map(|e| (Err(e), None)),
            }
        }
    })
}

/// The first key after every key that starts with `prefix`, or `None` if there is none (empty
/// prefix, or a prefix of only `char::MAX`).
///
/// UTF-8 orders strings by code point, so bumping the last character gives an exclusive upper
/// bound for the prefix range.
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..0xE000).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bumps_last_char() {
        assert_eq!(
            prefix_end("/registry/pods/").as_deref(),
            Some("/registry/pods0")
        );
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
    }
}
