//! Key-ordered concurrency: many records at once, the records of one key one after another in
//! offset order. (Partition-ordered processing, `parallel_partitions`, is the same with one lane
//! per partition.)
//!
//! Each key with work has a *lane*: a queue of its records and one task that processes them in
//! order, taking a permit of the loop's concurrency for each. A record whose key has no lane
//! starts one. Lanes are found by a hash of (topic, partition, key), so a record costs no
//! allocation to place; two keys whose hashes collide share a lane, which only orders them
//! (never reorders).
//!
//! Memory stays bounded: the records in flight, plus at most [`MAX_WAITING_PER_KEY`] waiting per
//! key (past it, the key's partition is held back: the consumer stops fetching it until the
//! queue is half empty), plus at most [`MAX_WAITING`] waiting in all (past it, the loop stops
//! reading until there is room).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::sync::{Notify, Semaphore};

use super::super::{ConsumerHandle, ConsumerRecord, InFlight};
use crate::lock;

/// Records one key may have waiting before its partition is held back.
pub(crate) const MAX_WAITING_PER_KEY: usize = 256;
/// Records that may wait in all lanes before the loop stops reading.
pub(crate) const MAX_WAITING: usize = 16_384;

/// How records without a key are ordered under [`concurrency`](super::AtLeastOnce::concurrency).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeylessOrder {
    /// In offset order within their partition, like one key per partition (the default).
    #[default]
    Partition,
    /// In no order: each keyless record is processed as soon as there is a permit.
    Free,
}

/// What a lane is for: one key (and its partition), or one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LaneBy {
    /// Records of one key in order; keyless ones as [`KeylessOrder`] says.
    Key(KeylessOrder),
    /// Records of one partition in order (`parallel_partitions`).
    Partition,
}

/// The lanes of a loop, and its permits.
pub(crate) struct Keyed {
    lanes: Mutex<HashMap<u64, Lane>>,
    permits: Semaphore,
    concurrency: usize,
    by: LaneBy,
    /// Records waiting in lanes (not running).
    waiting: AtomicUsize,
    /// Woken when records stop waiting, for a loop that stopped reading.
    room: Notify,
    handle: ConsumerHandle,
}

struct Lane {
    queue: VecDeque<InFlight>,
    /// Whether this lane holds its partition back.
    holding: bool,
}

/// Where a dispatched record went.
pub(crate) enum Placed {
    /// Queued behind its key's earlier records.
    Queued,
    /// Its lane is new (or it has none: keyless and free): run [`Keyed::run_lane`] for it.
    NewLane(Option<u64>, InFlight),
}

impl Keyed {
    pub(crate) fn new(concurrency: usize, by: LaneBy, handle: ConsumerHandle) -> Self {
        let concurrency = concurrency.min(Semaphore::MAX_PERMITS);
        Keyed {
            lanes: Mutex::default(),
            permits: Semaphore::new(concurrency),
            concurrency,
            by,
            waiting: AtomicUsize::new(0),
            room: Notify::new(),
            handle,
        }
    }

    /// The lane of a record: its key's, its partition's (keyless, in order) or none (keyless,
    /// free).
    fn lane_of(&self, record: &ConsumerRecord) -> Option<u64> {
        let mut hasher = DefaultHasher::new();
        record.topic().hash(&mut hasher);
        record.partition().hash(&mut hasher);
        match (self.by, record.key()) {
            (LaneBy::Partition, _) => {}
            (LaneBy::Key(_), Some(key)) => {
                true.hash(&mut hasher);
                key.hash(&mut hasher);
            }
            (LaneBy::Key(KeylessOrder::Partition), None) => false.hash(&mut hasher),
            (LaneBy::Key(KeylessOrder::Free), None) => return None,
        }
        Some(hasher.finish())
    }

    /// Places a record taken from the consumer: behind its key's earlier records, or in a new
    /// lane the caller runs.
    pub(crate) fn place(&self, in_flight: InFlight) -> Placed {
        let Some(id) = self.lane_of(in_flight.record()) else {
            return Placed::NewLane(None, in_flight); // keyless, free: a lane of one
        };
        let mut lanes = lock(&self.lanes);
        match lanes.get_mut(&id) {
            Some(lane) => {
                if lane.queue.len() + 1 >= MAX_WAITING_PER_KEY && !lane.holding {
                    lane.holding = true;
                    let record = in_flight.record();
                    self.handle.hold_back(record.topic(), record.partition());
                }
                lane.queue.push_back(in_flight);
                self.waiting.fetch_add(1, Ordering::Relaxed);
                Placed::Queued
            }
            None => {
                lanes.insert(
                    id,
                    Lane {
                        queue: VecDeque::new(),
                        holding: false,
                    },
                );
                Placed::NewLane(Some(id), in_flight)
            }
        }
    }

    /// Whether the loop should wait for room before reading more.
    pub(crate) fn is_full(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) >= MAX_WAITING
    }

    /// Waits until records stopped waiting (check [`is_full`](Self::is_full) again).
    pub(crate) async fn room(&self) {
        self.room.notified().await;
    }

    /// The lane's next record, or `None` once it is empty (the lane is then gone).
    fn next(&self, id: Option<u64>) -> Option<InFlight> {
        let id = id?;
        let mut lanes = lock(&self.lanes);
        let lane = lanes.get_mut(&id)?;
        let Some(next) = lane.queue.pop_front() else {
            lanes.remove(&id);
            return None;
        };
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        if lane.holding && lane.queue.len() <= MAX_WAITING_PER_KEY / 2 {
            lane.holding = false;
            let record = next.record();
            self.handle.let_go(record.topic(), record.partition());
        }
        drop(lanes);
        self.room.notify_one();
        Some(next)
    }

    /// Runs a lane: its records one after another, each with a permit. A record whose partition
    /// went meanwhile is given up without one. Stops at the first error `process` returns (the
    /// loop then stops too; what waits is given up).
    pub(crate) async fn run_lane<P, Fut>(
        &self,
        id: Option<u64>,
        first: InFlight,
        process: P,
    ) -> crate::Result<()>
    where
        P: Fn(InFlight) -> Fut,
        Fut: std::future::Future<Output = crate::Result<()>>,
    {
        let mut next = Some(first);
        while let Some(in_flight) = next {
            if self.handle.is_current(in_flight.record()) {
                let Ok(_permit) = self.permits.acquire().await else {
                    break; // closed: the loop is stopping
                };
                process(in_flight).await?;
            }
            next = self.next(id);
        }
        Ok(())
    }

    /// What the lanes hold now: records being processed, records waiting, and the most waiting
    /// for one key.
    pub(crate) fn load(&self) -> (usize, usize, usize) {
        let most = lock(&self.lanes)
            .values()
            .map(|l| l.queue.len())
            .max()
            .unwrap_or(0);
        let running = self.concurrency - self.permits.available_permits();
        (running, self.waiting.load(Ordering::Relaxed), most)
    }

    /// Gives up every record still waiting (the loop stops), and lets go of the partitions the
    /// lanes hold back; records in processing finish.
    pub(crate) fn clear(&self) {
        let lanes = std::mem::take(&mut *lock(&self.lanes));
        for lane in lanes.into_values() {
            if let (true, Some(first)) = (lane.holding, lane.queue.front()) {
                let record = first.record();
                self.handle.let_go(record.topic(), record.partition());
            }
        }
        self.waiting.store(0, Ordering::Relaxed);
        self.permits.close();
    }
}
