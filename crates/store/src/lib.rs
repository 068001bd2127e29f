//! A revisioned key-value store with etcd's semantics.
//!
//! Layout:
//! - this file: the [`Store`] trait, its value types and [`Error`];
//! - `memory`: an in-memory backend for unit tests;
//! - `sqlite`: the embedded default backend (one write-log table in the manner of kine);
//! - `etcd`: the etcd v3 backend, for clusters of several servers or an existing etcd;
//! - `tools`: snapshots and copying between stores (`skiff datastore`);
//! - `conformance`: the contract suite every backend must pass.
//!
//! Every write gets a store-wide, strictly increasing revision. The API server uses the revision
//! of the last write to an object (its `mod_revision`) as the object's `resourceVersion`.

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod etcd;
mod fanout;
pub mod memory;
pub mod sqlite;
pub mod tools;

pub use etcd::{EtcdOptions, EtcdStore};
pub use memory::MemoryStore;
pub use sqlite::{SqliteOptions, SqliteStore};

/// Live events a watcher may leave unread before it is cut off with [`Error::WatchLagged`],
/// unless a backend is configured otherwise.
pub const DEFAULT_WATCH_BUFFER: usize = 10_000;

/// A store revision. Revisions start at 1; 0 means "latest" where a revision is an argument.
pub type Revision = i64;

/// One key at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key, e.g. `/registry/configmaps/default/foo`.
    pub key: String,
    /// The stored bytes (JSON for API objects).
    pub value: Bytes,
    /// Revision of the write that created this incarnation of the key.
    pub create_revision: Revision,
    /// Revision of the last write to the key (for a delete event: the delete's revision).
    pub mod_revision: Revision,
}

/// What a watch event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// The key was created.
    Create,
    /// The key was updated.
    Update,
    /// The key was deleted.
    Delete,
}

/// One change, as seen by a watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Create, update or delete.
    pub event_type: EventType,
    /// The key after the change. For a delete: the last value, with `mod_revision` set to the
    /// revision of the delete.
    pub kv: KeyValue,
    /// The key before the change (absent for a create).
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision at which this change happened.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// One page of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListResult {
    /// Keys in ascending byte order.
    pub kvs: Vec<KeyValue>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// True when more keys under the prefix follow the last one returned.
    pub more: bool,
}

/// A watch: every event after the start revision, in revision order, then new ones as they
/// happen. The stream yields an error and ends if the watcher falls too far behind
/// ([`Error::WatchLagged`]) or the store shuts down.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event>> + Send>>;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A create found the key already present.
    #[error("key already exists: {0}")]
    AlreadyExists(String),
    /// An update or delete found no such key.
    #[error("key not found: {0}")]
    NotFound(String),
    /// A compare-and-swap found another revision than expected; `current` is what is there now.
    #[error("revision conflict on {key}")]
    Conflict {
        /// The key written.
        key: String,
        /// The current value of the key.
        current: Box<Option<KeyValue>>,
    },
    /// The requested revision has been compacted away.
    #[error("required revision {requested} has been compacted (compacted revision {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The store's compacted revision.
        compacted: Revision,
    },
    /// The requested revision is newer than the store's current revision.
    #[error("required revision {requested} is a future revision (current revision {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// A watcher did not keep up and was cut off.
    #[error("watcher fell behind and was cut off")]
    WatchLagged,
    /// The store is shutting down.
    #[error("store is closed")]
    Closed,
    /// A backend failure (I/O, database).
    #[error("store backend: {0}")]
    Backend(String),
}

/// `Result` with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A revisioned key-value store with etcd's semantics.
///
/// Contract (checked by `conformance`):
/// - each successful write (create, update, delete) gets the next revision;
/// - `create` fails with `AlreadyExists` if the key exists;
/// - `update` and `delete` with `expected != 0` fail with `Conflict` unless the key's current
///   `mod_revision` equals `expected`; with `expected == 0` they are unconditional; both fail
///   with `NotFound` if the key is absent;
/// - `get` and `list` at `revision == 0` read the latest state; at an older revision they see the
///   state as it was then, or fail with `Compacted` if that is before the compacted revision,
///   or `FutureRevision` if it is after the current one;
/// - `watch(prefix, after)` yields every event with revision `> after` under the prefix, in order,
///   exactly once; it fails with `Compacted` if `after < compacted_revision()`;
/// - `compact(rev)` drops history older than `rev`: reads at revisions `< rev` then fail.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The revision of the latest write (0 for an empty store that was never written).
    async fn current_revision(&self) -> Result<Revision>;

    /// The store's compacted revision (0 if never compacted).
    async fn compacted_revision(&self) -> Result<Revision>;

    /// Reads one key at `revision` (0 = latest).
    async fn get(&self, key: &str, revision: Revision) -> Result<Option<KeyValue>>;

    /// Lists keys that start with `prefix` and are `>= start` (`start` empty: from the prefix),
    /// at `revision` (0 = latest), at most `limit` of them (0 = all).
    async fn list(
        &self,
        prefix: &str,
        start: &str,
        limit: usize,
        revision: Revision,
    ) -> Result<ListResult>;

    /// Counts the live keys under `prefix` at the latest revision.
    async fn count(&self, prefix: &str) -> Result<i64>;

    /// Creates `key`; fails with `AlreadyExists` if present. Returns the new key-value.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue>;

    /// Replaces `key` if its `mod_revision` is `expected` (0 = any). Returns the new key-value.
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue>;

    /// Deletes `key` if its `mod_revision` is `expected` (0 = any). Returns the deleted value with
    /// `mod_revision` set to the revision of the delete.
    async fn delete(&self, key: &str, expected: Revision) -> Result<KeyValue>;

    /// Watches `prefix` for every event with revision `> after`.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// Drops history before `revision`.
    async fn compact(&self, revision: Revision) -> Result<()>;
}
