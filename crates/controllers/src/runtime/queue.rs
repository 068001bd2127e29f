//! The work queue (client-go's workqueue): a key is queued at most once, is never handed
//! to two workers at the same time, and failed keys come back after a rate-limited delay.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Upstream's default controller rate limiter: the larger of a per-item exponential
/// backoff (5 ms doubling up to 1000 s) and an overall token bucket (10 qps, burst 100).
pub struct RateLimiter {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::new(
            Duration::from_millis(5),
            Duration::from_secs(1000),
            10.0,
            100,
        )
    }
}

impl RateLimiter {
    /// A limiter with per-item backoff `base..max` and a bucket of `qps` refilling `burst`.
    pub fn new(base: Duration, max: Duration, qps: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            base,
            max,
            failures: Mutex::default(),
            bucket: Mutex::new(Bucket {
                qps,
                burst: burst as f64,
                tokens: burst as f64,
                last: Instant::now(),
            }),
        }
    }

    /// How long `key` must wait before its next retry; counts one more failure.
    pub fn when(&self, key: &str) -> Duration {
        let per_item = {
            let mut f = self.failures.lock().unwrap();
            let n = f.entry(key.to_string()).or_insert(0);
            let exp = *n;
            *n += 1;
            let factor = 2f64.powi(exp.min(62) as i32);
            let d = self.base.as_secs_f64() * factor;
            if d > self.max.as_secs_f64() {
                self.max
            } else {
                Duration::from_secs_f64(d)
            }
        };
        let overall = {
            let mut b = self.bucket.lock().unwrap();
            let now = Instant::now();
            let elapsed = now.duration_since(b.last).as_secs_f64();
            b.last = now;
            b.tokens = (b.tokens + elapsed * b.qps).min(b.burst);
            b.tokens -= 1.0;
            if b.tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-b.tokens / b.qps)
            }
        };
        per_item.max(overall)
    }

    /// Forgets the failures of `key` (after a successful sync).
    pub fn forget(&self, key: &str) {
        self.failures.lock().unwrap().remove(key);
    }

    /// How many failures `key` has had since it was last forgotten.
    pub fn num_requeues(&self, key: &str) -> u32 {
        self.failures.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<String>,
    dirty: HashSet<String>,
    processing: HashSet<String>,
    shutting_down: bool,
}

struct Inner {
    state: Mutex<State>,
    notify: Notify,
    limiter: RateLimiter,
}

/// A deduplicating, rate-limited queue of keys (cheap to clone).
#[derive(Clone)]
pub struct WorkQueue {
    inner: Arc<Inner>,
}

impl Default for WorkQueue {
    fn default() -> Self {
        WorkQueue::new(RateLimiter::default())
    }
}

impl WorkQueue {
    /// An empty queue retrying through `limiter`.
    pub fn new(limiter: RateLimiter) -> WorkQueue {
        WorkQueue {
            inner: Arc::new(Inner {
                state: Mutex::default(),
                notify: Notify::new(),
                limiter,
            }),
        }
    }

    /// Queues `key` unless it is already waiting; a key being processed is re-queued
    /// when its worker calls [`WorkQueue::done`].
    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut s = self.inner.state.lock().unwrap();
        if s.shutting_down || s.dirty.contains(&key) {
            return;
        }
        s.dirty.insert(key.clone());
        if s.processing.contains(&key) {
            return;
        }
        s.queue.push_back(key);
        drop(s);
        self.inner.notify.notify_one();
    }

    /// Queues `key` after `delay`.
    pub fn add_after(&self, key: impl Into<String>, delay: Duration) {
        let key = key.into();
        if delay.is_zero() {
            return self.add(key);
        }
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(key);
        });
    }

    /// Queues `key` after its rate-limited backoff.
    pub fn add_rate_limited(&self, key: impl Into<String>) {
        let key = key.into();
        let delay = self.inner.limiter.when(&key);
        self.add_after(key, delay);
    }

    /// Resets the backoff of `key`.
    pub fn forget(&self, key: &str) {
        self.inner.limiter.forget(key);
    }

    /// How many times `key` was retried since it was last forgotten.
    pub fn num_requeues(&self, key: &str) -> u32 {
        self.inner.limiter.num_requeues(key)
    }

    /// Waits for the next key; `None` once the queue is shut down.
    pub async fn get(&self) -> Option<String> {
        loop {
            let notified = self.inner.notify.notified();
            {
                let mut s = self.inner.state.lock().unwrap();
                if let Some(key) = s.queue.pop_front() {
                    s.dirty.remove(&key);
                    s.processing.insert(key.clone());
                    if !s.queue.is_empty() {
                        self.inner.notify.notify_one();
                    }
                    return Some(key);
                }
                if s.shutting_down {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Marks `key` processed; re-queues it if it was added meanwhile.
    pub fn done(&self, key: &str) {
        let mut s = self.inner.state.lock().unwrap();
        s.processing.remove(key);
        if s.dirty.contains(key) {
            s.queue.push_back(key.to_string());
            drop(s);
            self.inner.notify.notify_one();
        }
    }

    /// Stops handing out keys; waiting workers get `None`.
    pub fn shut_down(&self) {
        self.inner.state.lock().unwrap().shutting_down = true;
        self.inner.notify.notify_waiters();
    }

    /// How many keys wait.
    pub fn len(&self) -> usize {
        self.inner.state.lock().unwrap().queue.len()
    }

    /// Whether no key waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Runs `workers` tasks that pop keys and call `sync`, until the queue shuts down.
///
/// `Ok(None)` forgets the key's failures; `Ok(Some(d))` also re-queues it after `d`
/// (upstream's AddAfter for time-based conditions); `Err` re-queues it rate-limited.
pub async fn run_workers<F, Fut>(name: &'static str, queue: WorkQueue, workers: usize, sync: F)
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Option<Duration>>> + Send,
{
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let sync = sync.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(key) = queue.get().await {
                match sync(key.clone()).await {
                    Ok(requeue) => {
                        queue.forget(&key);
                        if let Some(d) = requeue {
                            queue.add_after(key.clone(), d);
                        }
                    }
                    Err(e) => {
                        tracing::info!(controller = name, %key, error = %format!("{e:#}"), "sync failed, requeuing");
                        queue.add_rate_limited(key.clone());
                    }
                }
                queue.done(&key);
            }
        }));
    }
    struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            for t in &self.0 {
                t.abort();
            }
        }
    }
    // Dropping this future (shutdown) aborts the workers.
    let mut guard = AbortOnDrop(tasks);
    futures::future::join_all(guard.0.iter_mut()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_item_backoff_doubles_and_caps() {
        let l = RateLimiter::new(
            Duration::from_millis(5),
            Duration::from_secs(1000),
            1e9,
            1_000_000,
        );
        assert_eq!(l.when("a"), Duration::from_millis(5));
        assert_eq!(l.when("a"), Duration::from_millis(10));
        assert_eq!(l.when("a"), Duration::from_millis(20));
        assert_eq!(l.when("b"), Duration::from_millis(5));
        for _ in 0..40 {
            l.when("a");
        }
        assert_eq!(l.when("a"), Duration::from_secs(1000));
        l.forget("a");
        assert_eq!(l.num_requeues("a"), 0);
        assert_eq!(l.when("a"), Duration::from_millis(5));
    }

    #[test]
    fn overall_bucket_limits_bursts() {
        let l = RateLimiter::new(Duration::from_millis(1), Duration::from_millis(1), 10.0, 2);
        l.when("a");
        l.when("b");
        // The third retry within the same instant waits for a token (about 100 ms).
        assert!(l.when("c") >= Duration::from_millis(90));
    }

    #[tokio::test]
    async fn dedups_and_never_hands_a_key_to_two_workers() {
        let q = WorkQueue::default();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let k = q.get().await.unwrap();
        assert_eq!(k, "a");
        q.add("a"); // while processing: remembered, not queued
        assert_eq!(q.len(), 1);
        assert_eq!(q.get().await.unwrap(), "b");
        q.done("a");
        assert_eq!(q.get().await.unwrap(), "a");
        q.shut_down();
        assert_eq!(q.get().await, None);
    }
}
