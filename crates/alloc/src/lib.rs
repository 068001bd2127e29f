//! The allocator of the `skiff` binary, chosen once per process by its subcommand.
//!
//! The API server and the other control-plane processes allocate and free at a high rate on
//! many threads: under `skiff bench scheduler` glibc's malloc (arena locks, free-list
//! consolidation) took about a third of the server's CPU, and mimalloc lifts end-to-end
//! scheduling by about a third. The node agent allocates little and is judged by its resident
//! memory, where mimalloc's per-thread pages cost it several MiB; it keeps the C library's.
//!
//! Every allocation and free of a process must go to the same allocator, so the choice is
//! made before any Rust code allocates: glibc calls `.init_array` entries with the process's
//! arguments before `main`. An allocation that came first (there is none in skiff) would fix
//! the choice on the C library's allocator, which stays consistent.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::{c_char, c_int, CStr};
use std::sync::atomic::{AtomicU8, Ordering};

use mimalloc::MiMalloc;

const UNDECIDED: u8 = 0;
const SYSTEM: u8 = 1;
const MIMALLOC: u8 = 2;

static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// Subcommands that run with the C library's allocator.
const SYSTEM_ALLOCATOR_SUBCOMMANDS: &[&[u8]] = &[b"agent"];

/// The global allocator; see the crate documentation.
pub struct Allocator;

fn decide(choice: u8) {
    // Only the first decision counts: a later one must not split the process between two
    // allocators.
    let _ = CHOICE.compare_exchange(UNDECIDED, choice, Ordering::Relaxed, Ordering::Relaxed);
}

#[inline]
fn uses_mimalloc() -> bool {
    match CHOICE.load(Ordering::Relaxed) {
        MIMALLOC => true,
        SYSTEM => false,
        _ => {
            decide(SYSTEM);
            CHOICE.load(Ordering::Relaxed) == MIMALLOC
        }
    }
}

/// The allocator for a process whose first argument (the subcommand) is `subcommand`.
fn choice_for(subcommand: Option<&[u8]>) -> u8 {
    match subcommand {
        Some(s) if !SYSTEM_ALLOCATOR_SUBCOMMANDS.contains(&s) => MIMALLOC,
        _ => SYSTEM,
    }
}

extern "C" fn choose(argc: c_int, argv: *const *const c_char, _envp: *const *const c_char) {
    let subcommand = if argc > 1 && !argv.is_null() {
        // SAFETY: glibc passes `.init_array` entries the process's argc and argv, whose first
        // `argc` entries are NUL-terminated strings that live as long as the process.
        let arg = unsafe { *argv.add(1) };
        (!arg.is_null()).then(|| unsafe { CStr::from_ptr(arg) }.to_bytes())
    } else {
        None
    };
    decide(choice_for(subcommand));
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[used]
#[unsafe(link_section = ".init_array")]
static CHOOSE: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = choose;

// SAFETY: every call goes to one allocator for the life of the process (`CHOICE` never
// changes once set), so each block is freed or resized by the allocator that made it.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            if uses_mimalloc() {
                MiMalloc.alloc(layout)
            } else {
                System.alloc(layout)
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if uses_mimalloc() {
                MiMalloc.alloc_zeroed(layout)
            } else {
                System.alloc_zeroed(layout)
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as `alloc`; `ptr` came from the same allocator.
        unsafe {
            if uses_mimalloc() {
                MiMalloc.dealloc(ptr, layout)
            } else {
                System.dealloc(ptr, layout)
            }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `dealloc`.
        unsafe {
            if uses_mimalloc() {
                MiMalloc.realloc(ptr, layout, new_size)
            } else {
                System.realloc(ptr, layout, new_size)
            }
        }
    }
}

#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: Allocator = Allocator;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_keeps_the_c_library_allocator_and_the_rest_use_mimalloc() {
        assert_eq!(choice_for(Some(b"agent")), SYSTEM);
        assert_eq!(choice_for(None), SYSTEM);
        for sub in [
            &b"server"[..],
            b"scheduler",
            b"bench",
            b"sim",
            b"controller-manager",
        ] {
            assert_eq!(
                choice_for(Some(sub)),
                MIMALLOC,
                "{}",
                String::from_utf8_lossy(sub)
            );
        }
    }

    #[test]
    fn blocks_round_trip_through_the_chosen_allocator() {
        // The test harness's own arguments decided this process's allocator before main
        // (mimalloc when a test filter is given, as `cargo test -p skiff-alloc blocks` does).
        assert_ne!(CHOICE.load(Ordering::Relaxed), UNDECIDED);
        let v: Vec<u64> = (0..10_000).collect();
        let mut w = v.clone();
        w.extend(0..10_000);
        assert_eq!(w.len(), 20_000);
        assert_eq!(w[..10_000], v[..]);
    }
}
