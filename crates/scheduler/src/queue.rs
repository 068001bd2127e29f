//! The scheduling queue (upstream's `PriorityQueue`): activeQ ordered by priority then queue
//! time, backoffQ with exponential backoff, and unschedulable pods that wait for a cluster
//! event (or the five-minute flush) to be tried again.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::types::PodInfo;

/// Unschedulable pods are retried at the latest after this long.
pub const UNSCHEDULABLE_FLUSH: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Active,
    Backoff,
    Unschedulable,
    InFlight,
}

struct Entry {
    info: Arc<PodInfo>,
    seq: u64,
    attempts: u32,
    backoff_until: Option<Instant>,
    unschedulable_since: Instant,
    place: Place,
    gen: u64,
    cycle: u64,
    /// The pod changed while in flight: retry it at once.
    updated_in_flight: bool,
}

#[derive(PartialEq, Eq)]
struct ActiveItem {
    priority: i32,
    seq: u64,
    gen: u64,
    key: String,
}

impl Ord for ActiveItem {
    fn cmp(&self, o: &Self) -> Ordering {
        self.priority
            .cmp(&o.priority)
            .then_with(|| o.seq.cmp(&self.seq))
    }
}
impl PartialOrd for ActiveItem {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// A pod handed out for a scheduling cycle.
#[derive(Clone, Debug)]
pub struct Popped {
    /// The pod.
    pub info: Arc<PodInfo>,
    /// Scheduling attempts before this one.
    pub attempts: u32,
}

/// The queue.
pub struct SchedulingQueue {
    entries: HashMap<String, Entry>,
    active: BinaryHeap<ActiveItem>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    next_seq: u64,
    next_gen: u64,
    cycle: u64,
    move_request_cycle: u64,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl SchedulingQueue {
    /// An empty queue with the given backoff bounds.
    pub fn new(initial_backoff: Duration, max_backoff: Duration) -> SchedulingQueue {
        SchedulingQueue {
            entries: HashMap::new(),
            active: BinaryHeap::new(),
            backoff: BinaryHeap::new(),
            next_seq: 0,
            next_gen: 0,
            cycle: 0,
            move_request_cycle: 0,
            initial_backoff,
            max_backoff,
        }
    }

    fn backoff_duration(&self, attempts: u32) -> Duration {
        let mut d = self.initial_backoff;
        for _ in 1..attempts {
            d *= 2;
            if d > self.max_backoff {
                return self.max_backoff;
            }
        }
        d.min(self.max_backoff)
    }

    fn push_active(&mut self, key: &str) {
        self.next_gen += 1;
        let gen = self.next_gen;
        let e = self.entries.get_mut(key).expect("entry");
        e.place = Place::Active;
        e.gen = gen;
        self.active.push(ActiveItem {
            priority: e.info.priority,
            seq: e.seq,
            gen,
            key: key.to_string(),
        });
    }

    fn push_backoff(&mut self, key: &str, now: Instant) {
        let e = self.entries.get_mut(key).expect("entry");
        match e.backoff_until {
            Some(t) if t > now => {
                self.next_gen += 1;
                e.place = Place::Backoff;
                e.gen = self.next_gen;
                self.backoff
                    .push(Reverse((t, self.next_gen, key.to_string())));
            }
            _ => self.push_active(key),
        }
    }

    /// Adds a new pending pod, or updates a queued one (moving it to be retried when its
    /// spec or labels changed while it waited as unschedulable).
    pub fn add_or_update(&mut self, info: Arc<PodInfo>) {
        let key = info.key.clone();
        if let Some(e) = self.entries.get_mut(&key) {
            let changed = e.info.pod.spec != info.pod.spec
                || e.info.pod.metadata.labels != info.pod.metadata.labels;
            e.info = info;
            if changed {
                match e.place {
                    Place::Unschedulable => self.push_backoff(&key, Instant::now()),
                    Place::InFlight => e.updated_in_flight = true,
                    _ => {}
                }
            }
            return;
        }
        self.next_seq += 1;
        self.entries.insert(
            key.clone(),
            Entry {
                info,
                seq: self.next_seq,
                attempts: 0,
                backoff_until: None,
                unschedulable_since: Instant::now(),
                place: Place::Active,
                gen: 0,
                cycle: 0,
                updated_in_flight: false,
            },
        );
        self.push_active(&key);
    }

    /// Forgets a pod (deleted, or bound by someone else).
    pub fn delete(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Whether the queue knows the pod.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The next pod to schedule, moving due backoff pods first.
    pub fn pop(&mut self) -> Option<Popped> {
        self.flush_backoff(Instant::now());
        while let Some(item) = self.active.pop() {
            let Some(e) = self.entries.get_mut(&item.key) else {
                continue;
            };
            if e.gen != item.gen || e.place != Place::Active {
                continue;
            }
            self.cycle += 1;
            e.place = Place::InFlight;
            e.cycle = self.cycle;
            e.updated_in_flight = false;
            return Some(Popped {
                info: e.info.clone(),
                attempts: e.attempts,
            });
        }
        None
    }

    /// The pod was bound (or handed to binding): it leaves the queue.
    pub fn done(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// The pod did not fit: it waits for a cluster event, or goes to backoff if an event
    /// arrived while it was being scheduled.
    pub fn unschedulable(&mut self, key: &str) {
        let now = Instant::now();
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        e.attempts += 1;
        let attempts = e.attempts;
        let d = self.backoff_duration(attempts);
        let e = self.entries.get_mut(key).expect("entry");
        e.backoff_until = Some(now + d);
        if self.move_request_cycle >= e.cycle || e.updated_in_flight {
            self.push_backoff(key, now);
        } else {
            e.place = Place::Unschedulable;
            e.unschedulable_since = now;
        }
    }

    /// The cycle failed with an error (or the bind failed): retry after backoff.
    pub fn error(&mut self, info: Arc<PodInfo>) {
        let key = info.key.clone();
        if !self.entries.contains_key(&key) {
            self.next_seq += 1;
            self.entries.insert(
                key.clone(),
                Entry {
                    info,
                    seq: self.next_seq,
                    attempts: 0,
                    backoff_until: None,
                    unschedulable_since: Instant::now(),
                    place: Place::InFlight,
                    gen: 0,
                    cycle: 0,
                    updated_in_flight: false,
                },
            );
        }
        let now = Instant::now();
        let e = self.entries.get_mut(&key).expect("entry");
        e.attempts += 1;
        let attempts = e.attempts;
        let d = self.backoff_duration(attempts);
        self.entries.get_mut(&key).expect("entry").backoff_until = Some(now + d);
        self.push_backoff(&key, now);
    }

    /// A cluster event that may make unschedulable pods fit: move them all back.
    pub fn move_all(&mut self) {
        self.move_request_cycle = self.cycle;
        let now = Instant::now();
        let keys: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.place == Place::Unschedulable)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.push_backoff(&k, now);
        }
    }

    fn flush_backoff(&mut self, now: Instant) {
        while let Some(Reverse((t, gen, _))) = self.backoff.peek() {
            if *t > now {
                break;
            }
            let gen = *gen;
            let Reverse((_, _, key)) = self.backoff.pop().expect("peeked");
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.gen == gen && e.place == Place::Backoff)
            {
                self.push_active(&key);
            }
        }
    }

    /// Moves due backoff pods, and pods unschedulable for five minutes, to activeQ.
    pub fn flush(&mut self, now: Instant) {
        self.flush_backoff(now);
        let stale: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.place == Place::Unschedulable
                    && now.duration_since(e.unschedulable_since) >= UNSCHEDULABLE_FLUSH
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.push_backoff(&k, now);
        }
    }

    /// When the earliest backoff ends.
    pub fn next_backoff(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Pods waiting in activeQ (including stale heap items).
    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// The number of queued pods in each place: (active, backoff, unschedulable).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for e in self.entries.values() {
            match e.place {
                Place::Active => c.0 += 1,
                Place::Backoff => c.1 += 1,
                Place::Unschedulable => c.2 += 1,
                Place::InFlight => {}
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{info, pod};
    use serde_json::json;

    fn p(name: &str, prio: i32) -> Arc<PodInfo> {
        Arc::new(info(pod(
            name,
            "0",
            "0",
            json!({"spec": {"priority": prio}}),
        )))
    }

    #[test]
    fn priority_then_fifo() {
        let mut q = SchedulingQueue::new(Duration::from_secs(1), Duration::from_secs(10));
        q.add_or_update(p("a", 0));
        q.add_or_update(p("b", 5));
        q.add_or_update(p("c", 0));
        let order: Vec<String> =
            std::iter::from_fn(|| q.pop().map(|p| p.info.name.clone())).collect();
        assert_eq!(order, vec!["b", "a", "c"]);
    }

    #[test]
    fn unschedulable_waits_for_events_then_backs_off() {
        let mut q = SchedulingQueue::new(Duration::from_millis(0), Duration::from_millis(0));
        q.add_or_update(p("a", 0));
        let a = q.pop().unwrap();
        q.unschedulable(&a.info.key);
        assert!(q.pop().is_none());
        assert_eq!(q.counts(), (0, 0, 1));
        q.move_all();
        let again = q.pop().unwrap();
        assert_eq!(again.attempts, 1);
        // An event during the cycle sends the pod to backoff rather than waiting.
        q.move_all();
        q.unschedulable(&again.info.key);
        assert!(q.pop().is_some());
    }

    #[test]
    fn backoff_grows_and_caps() {
        let q = SchedulingQueue::new(Duration::from_secs(1), Duration::from_secs(10));
        let d: Vec<u64> = (1..=6).map(|a| q.backoff_duration(a).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 10, 10]);
        let mut q = SchedulingQueue::new(Duration::from_secs(1), Duration::from_secs(10));
        q.add_or_update(p("a", 0));
        let a = q.pop().unwrap();
        q.unschedulable(&a.info.key);
        q.move_all();
        // Still backing off for a second.
        assert!(q.pop().is_none());
        assert!(q.next_backoff().is_some());
        q.flush(Instant::now() + Duration::from_secs(2));
        assert!(q.pop().is_some());
    }

    #[test]
    fn updates_and_deletes() {
        let mut q = SchedulingQueue::new(Duration::from_millis(0), Duration::from_millis(0));
        q.add_or_update(p("a", 0));
        let a = q.pop().unwrap();
        q.unschedulable(&a.info.key);
        // A status-only update leaves it waiting; a spec change retries it.
        q.add_or_update(p("a", 0));
        assert!(q.pop().is_none());
        q.add_or_update(Arc::new(info(pod("a", "1", "0", json!({})))));
        assert!(q.pop().is_some());
        q.delete("default/a");
        assert!(!q.contains("default/a"));
        q.flush(Instant::now() + UNSCHEDULABLE_FLUSH);
    }
}
