//! The pod sandbox's pause process: holds the pod's namespaces, reaps orphaned children (it is
//! PID 1 when the pod shares one process namespace) and exits on SIGINT or SIGTERM.
//!
//! Built by the agent's build script as a static executable with only `core`/`std` and a few
//! libc declarations, so that the pause image needs no shared libraries.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;
const SIGCHLD: i32 = 17;
const WNOHANG: i32 = 1;

extern "C" {
    fn signal(sig: i32, handler: usize) -> usize;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    fn pause() -> i32;
}

extern "C" fn on_stop(_: i32) {
    STOP.store(true, Ordering::SeqCst);
}

extern "C" fn on_child(_: i32) {
    let mut status = 0;
    // SAFETY: waitpid is async-signal-safe and `status` is a valid pointer.
    while unsafe { waitpid(-1, &mut status, WNOHANG) } > 0 {}
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("-v") {
        println!("pause (skiff)");
        return;
    }
    // SAFETY: installing async-signal-safe handlers.
    unsafe {
        signal(SIGINT, on_stop as *const () as usize);
        signal(SIGTERM, on_stop as *const () as usize);
        signal(SIGCHLD, on_child as *const () as usize);
    }
    while !STOP.load(Ordering::SeqCst) {
        // SAFETY: pause only suspends the thread until a signal arrives.
        unsafe { pause() };
    }
}
