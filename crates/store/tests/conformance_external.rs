//! The exported suite as another crate uses it (run with `--features conformance`).
#![cfg(feature = "conformance")]

use skiff_store::conformance::{ConformanceOptions, TestStore};
use skiff_store::MemoryStore;

async fn memory(opts: ConformanceOptions) -> TestStore {
    TestStore::new(MemoryStore::with_watch_buffer(opts.watch_buffer))
}

skiff_store::store_conformance_tests!(memory);
