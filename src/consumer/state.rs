//! The consumer's decisions, with no I/O: which partitions it owns and since when, what was
//! processed and what is confirmed committed, what a revoke waits for, what is queued for the
//! application (records and errors, in order), when to pause, and where seeks and stops apply.
//!
//! The polling thread and the application call into one [`State`] under a lock; only they call
//! librdkafka. Every method here returns at once, so the lock is never held across a wait.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::record::{CommitOffsets, ConsumerRecord, NextOffset};
use super::replay::StopAt;
use super::tracker::Tracker;
use crate::error::Error;

/// How often the polling thread serves librdkafka's events (rebalances) at the least, whatever
/// the application does.
pub(crate) const SERVE_EVENTS_EVERY: Duration = Duration::from_millis(100);
/// Records waiting beyond the channel before the partitions are paused.
pub(crate) const PAUSE_BACKLOG: usize = 1024;
/// Errors waiting for the application at most: past that, new ones are only logged (a broker
/// that stays down repeats the same few errors every few milliseconds).
pub(crate) const MAX_QUEUED_ERRORS: usize = 64;

/// A map keyed by topic then partition, looked up by `&str`: a lookup never allocates, and an
/// insert allocates only for a topic not seen before.
#[derive(Debug)]
pub(crate) struct PartitionMap<V> {
    by_topic: HashMap<String, HashMap<i32, V>>,
}

impl<V> Default for PartitionMap<V> {
    fn default() -> Self {
        PartitionMap {
            by_topic: HashMap::new(),
        }
    }
}

impl<V> PartitionMap<V> {
    pub(crate) fn get(&self, topic: &str, partition: i32) -> Option<&V> {
        self.by_topic.get(topic)?.get(&partition)
    }

    pub(crate) fn contains(&self, topic: &str, partition: i32) -> bool {
        self.get(topic, partition).is_some()
    }

    fn get_mut(&mut self, topic: &str, partition: i32) -> Option<&mut V> {
        self.by_topic.get_mut(topic)?.get_mut(&partition)
    }

    /// Sets a partition's value.
    pub(crate) fn insert_value(&mut self, topic: &str, partition: i32, value: V) {
        let partitions = match self.by_topic.get_mut(topic) {
            Some(partitions) => partitions,
            None => self.by_topic.entry(topic.to_owned()).or_default(),
        };
        partitions.insert(partition, value);
    }

    pub(crate) fn remove(&mut self, topic: &str, partition: i32) -> Option<V> {
        let partitions = self.by_topic.get_mut(topic)?;
        let value = partitions.remove(&partition);
        if partitions.is_empty() {
            self.by_topic.remove(topic);
        }
        value
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_topic.is_empty()
    }
}

/// What the polling thread does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The application is behind and librdkafka was served a moment ago: wait a little for room
    /// in the channel rather than fetch more.
    Wait,
    /// Poll librdkafka, first pausing (`Some(true)`) or resuming (`Some(false)`) the assignment.
    Poll {
        timeout: Duration,
        pause: Option<bool>,
    },
}

/// What happened to a record the polling thread fetched.
#[derive(Debug)]
pub(crate) enum Fetched {
    /// Queued for the application.
    Queued,
    /// Past the stop, and the first of its partition to be: pause the partition. The record is
    /// handed back (it is not for the application) to name it.
    FirstPastStop(ConsumerRecord),
    /// Past the stop again: dropped.
    PastStop,
}

/// The consumer's state. See the [module documentation](self).
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Bumped on every assignment change and seek; records carry the generation they were
    /// fetched in.
    generation: u64,
    /// Owned partitions, with the generation since which each is owned at its current position.
    owned: PartitionMap<u64>,
    /// Partitions being revoked: no new record of them is handed out, but records already being
    /// processed may still be marked, and their offsets are committed before they go.
    revoking: PartitionMap<()>,
    /// The highest offsets marked processed, per partition. Commits send those above
    /// `committed`; nothing is removed until the partition goes, so a failed commit is simply
    /// sent again by the next one.
    processed: CommitOffsets,
    /// The highest offsets the group confirmed committing.
    committed: CommitOffsets,
    /// Holds on partitions: records handed to a processing loop and not yet finished, or an
    /// open transaction. A revoke waits for them.
    in_flight: PartitionMap<usize>,
    /// Records taken by a processing loop, per partition: commits never pass one not done.
    trackers: PartitionMap<Tracker>,
    /// Records and errors fetched but not yet handed over, in order.
    queue: VecDeque<Result<ConsumerRecord, Error>>,
    queued_errors: usize,
    /// Whether the assignment is paused for backpressure.
    paused: bool,
    /// Partitions a processing loop asked to pause (a key's queue is full), with how many times.
    held_back: PartitionMap<usize>,
    /// Partitions whose hold-back changed, for the polling thread to pause or resume.
    held_back_changes: Vec<(String, i32)>,
    /// Partitions that reached the stop.
    stopped: PartitionMap<()>,
    stop_at: Option<StopAt>,
}

impl State {
    pub(crate) fn new(stop_at: Option<StopAt>) -> Self {
        State {
            stop_at,
            ..State::default()
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    // --- Ownership ---------------------------------------------------------------------------

    /// Partitions were assigned: owned from a new generation on. Returns whether the assignment
    /// must start paused (backpressure is on).
    pub(crate) fn assign<'a>(
        &mut self,
        partitions: impl IntoIterator<Item = (&'a str, i32)>,
    ) -> bool {
        let generation = self.next_generation();
        for (topic, partition) in partitions {
            self.owned.insert_value(topic, partition, generation);
            self.stopped.remove(topic, partition);
        }
        self.paused
    }

    /// Partitions are being taken away, before librdkafka unassigns them. Their queued records
    /// are dropped (their new owner reads them). A lost partition forgets its offsets at once;
    /// a revoked one stays committable until [`end_revoke`](Self::end_revoke).
    pub(crate) fn begin_revoke(&mut self, partitions: &[(String, i32)], lost: bool) {
        self.next_generation();
        for (topic, partition) in partitions {
            self.owned.remove(topic, *partition);
            self.held_back.remove(topic, *partition);
            if lost {
                self.forget(topic, *partition);
            } else {
                self.revoking.insert_value(topic, *partition, ());
            }
        }
        self.drop_queued(|t, p| partitions.iter().any(|(rt, rp)| rt == t && *rp == p));
    }

    /// Whether records of `partitions` are still being processed.
    pub(crate) fn busy(&self, partitions: &[(String, i32)]) -> bool {
        partitions
            .iter()
            .any(|(t, p)| self.in_flight.get(t, *p).is_some_and(|&n| n > 0))
    }

    /// The offsets to commit for revoked `partitions` (processed, not yet confirmed), which are
    /// then forgotten.
    pub(crate) fn revoke_commits(&mut self, partitions: &[(String, i32)]) -> CommitOffsets {
        let mut to_commit = self.pending_commits();
        to_commit.retain(|t, p| partitions.iter().any(|(rt, rp)| rt == t && *rp == p));
        for (topic, partition) in partitions {
            self.forget(topic, *partition);
        }
        to_commit
    }

    /// The revoke is over: `partitions` are no longer committable.
    pub(crate) fn end_revoke(&mut self, partitions: &[(String, i32)]) {
        for (topic, partition) in partitions {
            self.revoking.remove(topic, *partition);
        }
    }

    fn forget(&mut self, topic: &str, partition: i32) {
        let other = |t: &str, p: i32| t != topic || p != partition;
        self.processed.retain(other);
        self.committed.retain(other);
        self.trackers.remove(topic, partition);
    }

    /// Whether a revoke is under way (waiting for work on its partitions to finish).
    pub(crate) fn revoke_pending(&self) -> bool {
        !self.revoking.is_empty()
    }

    /// Whether a record may still be handed out: its partition is owned at this position since
    /// before it was fetched.
    pub(crate) fn is_current(&self, record: &ConsumerRecord) -> bool {
        record.generation == self.generation
            || self
                .owned
                .get(record.topic(), record.partition())
                .is_some_and(|&since| since <= record.generation)
    }

    pub(crate) fn owns(&self, topic: &str, partition: i32) -> bool {
        self.owned.contains(topic, partition)
    }

    /// Whether a processed record of this partition may still be committed: it is owned, or
    /// being revoked (and the revoke waits for its work).
    pub(crate) fn may_commit(&self, topic: &str, partition: i32) -> bool {
        self.owns(topic, partition) || self.revoking.contains(topic, partition)
    }

    // --- Processing and commits --------------------------------------------------------------

    /// Work on this partition is under way: a revoke waits for it.
    pub(crate) fn hold(&mut self, topic: &str, partition: i32) {
        match self.in_flight.get_mut(topic, partition) {
            Some(n) => *n += 1,
            None => self.in_flight.insert_value(topic, partition, 1),
        }
    }

    /// Ends one [`hold`](Self::hold).
    pub(crate) fn release(&mut self, topic: &str, partition: i32) {
        let done = match self.in_flight.get_mut(topic, partition) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if done {
            self.in_flight.remove(topic, partition);
        }
    }

    /// A processing loop took `record`: a revoke waits for it, and commits do not pass it until
    /// it is [finished](Self::finish) as done.
    pub(crate) fn take_record(&mut self, record: &ConsumerRecord) {
        let (topic, partition) = (record.topic(), record.partition());
        self.hold(topic, partition);
        match self.trackers.get_mut(topic, partition) {
            Some(tracker) => tracker.take(record.offset(), record.generation),
            None => {
                let mut tracker = Tracker::default();
                tracker.take(record.offset(), record.generation);
                self.trackers.insert_value(topic, partition, tracker);
            }
        }
    }

    /// A taken record is finished: processed or dead-lettered (`done`), or given up (its
    /// partition went, the loop stopped), which commits never pass.
    pub(crate) fn finish(&mut self, record: &ConsumerRecord, done: bool) {
        let (topic, partition) = (record.topic(), record.partition());
        if let Some(tracker) = self.trackers.get_mut(topic, partition) {
            tracker.finish(record.offset(), record.generation, done);
        }
        if done {
            self.mark_processed(record);
        }
        self.release(topic, partition);
    }

    /// `record` was processed: its partition commits past it, if still committable (and not
    /// past a record taken by a processing loop and not done).
    pub(crate) fn mark_processed(&mut self, record: &ConsumerRecord) {
        if self.may_commit(record.topic(), record.partition()) {
            self.processed.insert_after(record);
        }
    }

    /// The processed offsets not yet confirmed committed, of partitions still committable; never
    /// past a record taken and not done.
    pub(crate) fn pending_commits(&self) -> CommitOffsets {
        let mut pending = CommitOffsets::new();
        for (topic, partition, offset) in self.processed.iter() {
            let offset = match self.commit_limit(topic, partition) {
                Some(limit) => offset.min(limit),
                None => offset,
            };
            let done = self
                .committed
                .get(topic, partition)
                .is_some_and(|c| c >= offset);
            if !done && self.may_commit(topic, partition) {
                pending.insert(topic, partition, offset);
            }
        }
        pending
    }

    /// The first record of a partition taken by a processing loop and not done.
    fn commit_limit(&self, topic: &str, partition: i32) -> Option<NextOffset> {
        self.trackers
            .get(topic, partition)?
            .first_unfinished()
            .map(NextOffset)
    }

    /// Each owned partition's commit point: the next-to-read offset a commit would send now
    /// (processed, and not past a record not done), or the committed one.
    pub(crate) fn commit_points(&self) -> CommitOffsets {
        let mut points = self.committed.clone();
        for (topic, partition, offset) in self.pending_commits().iter() {
            points.insert(topic, partition, offset);
        }
        points.retain(|t, p| self.owns(t, p));
        points
    }

    /// The group confirmed these next-to-read offsets.
    pub(crate) fn record_committed<'a>(
        &mut self,
        offsets: impl IntoIterator<Item = (&'a str, i32, i64)>,
    ) {
        for (topic, partition, offset) in offsets {
            if offset >= 0 {
                self.committed.insert(topic, partition, NextOffset(offset));
            }
        }
    }

    // --- The queue to the application --------------------------------------------------------

    /// A record was fetched: queue it, or drop it if it is past the stop.
    pub(crate) fn fetched(&mut self, record: ConsumerRecord) -> Fetched {
        match self.stop_at {
            Some(stop) if stop.is_past(record.offset(), record.timestamp().to_millis()) => {
                if self.stop(record.topic(), record.partition()) {
                    Fetched::FirstPastStop(record)
                } else {
                    Fetched::PastStop
                }
            }
            _ => {
                self.queue.push_back(Ok(record));
                Fetched::Queued
            }
        }
    }

    /// An error to hand over after the records before it. The same error as the last one
    /// queued is not queued again, and past [`MAX_QUEUED_ERRORS`] waiting, new ones are dropped:
    /// errors must never grow the queue without bound while the application is not reading.
    /// (An error that stops the processing loops, a panic, is always queued.)
    /// Returns whether it was queued.
    pub(crate) fn failed(&mut self, error: Error) -> bool {
        let repeated =
            matches!(self.queue.back(), Some(Err(last)) if last.to_string() == error.to_string());
        let crowded = self.queued_errors >= MAX_QUEUED_ERRORS && !error.ends_processing();
        if repeated || crowded {
            return false;
        }
        self.queued_errors += 1;
        self.queue.push_back(Err(error));
        true
    }

    /// The next hand-over: up to `max` records (stopping before an error), or one error.
    pub(crate) fn take(&mut self, max: usize) -> Option<Result<Vec<ConsumerRecord>, Error>> {
        match self.queue.front()? {
            Err(_) => {
                self.queued_errors -= 1;
                self.queue.pop_front().map(|e| e.map(|r| vec![r]))
            }
            Ok(_) => {
                let n = self
                    .queue
                    .iter()
                    .take(max)
                    .take_while(|item| item.is_ok())
                    .count();
                Some(Ok(self.queue.drain(..n).filter_map(Result::ok).collect()))
            }
        }
    }

    /// Records and errors waiting.
    #[cfg(test)]
    pub(crate) fn backlog(&self) -> usize {
        self.queue.len()
    }

    fn drop_queued(&mut self, drop: impl Fn(&str, i32) -> bool) {
        self.queue
            .retain(|item| !matches!(item, Ok(r) if drop(r.topic(), r.partition())));
    }

    // --- Backpressure ------------------------------------------------------------------------

    /// What the polling thread does next, `since_poll` after it last polled librdkafka.
    ///
    /// With nothing waiting it polls, waiting up to [`SERVE_EVENTS_EVERY`] for a record. With a
    /// backlog it waits for room, but polls (without waiting) at least every
    /// [`SERVE_EVENTS_EVERY`], so rebalances and `max.poll.interval.ms` are served however slow
    /// the application is. Pausing makes librdkafka drop what it prefetched, so only a backlog
    /// that keeps growing past [`PAUSE_BACKLOG`] pauses; an empty queue resumes.
    pub(crate) fn next_step(&self, since_poll: Duration) -> Step {
        let backlog = self.queue.len();
        if backlog > 0 && since_poll < SERVE_EVENTS_EVERY {
            return Step::Wait;
        }
        let pause = if backlog >= PAUSE_BACKLOG && !self.paused {
            Some(true)
        } else if backlog == 0 && self.paused {
            Some(false)
        } else {
            None
        };
        let timeout = if backlog > 0 {
            Duration::ZERO
        } else {
            SERVE_EVENTS_EVERY
        };
        Step::Poll { timeout, pause }
    }

    /// Whether the assignment is paused for backpressure.
    pub(crate) fn paused(&self) -> bool {
        self.paused
    }

    /// A processing loop asks to stop fetching a partition (one of its keys has too much
    /// waiting), until as many [`let_go`](Self::let_go)s.
    pub(crate) fn hold_back(&mut self, topic: &str, partition: i32) {
        match self.held_back.get_mut(topic, partition) {
            Some(n) => *n += 1,
            None => {
                self.held_back.insert_value(topic, partition, 1);
                self.held_back_changes.push((topic.to_owned(), partition));
            }
        }
    }

    /// Ends one [`hold_back`](Self::hold_back).
    pub(crate) fn let_go(&mut self, topic: &str, partition: i32) {
        let last = match self.held_back.get_mut(topic, partition) {
            Some(n) => {
                *n -= 1;
                *n == 0
            }
            None => false,
        };
        if last {
            self.held_back.remove(topic, partition);
            self.held_back_changes.push((topic.to_owned(), partition));
        }
    }

    /// Whether a partition is held back by a processing loop.
    pub(crate) fn is_held_back(&self, topic: &str, partition: i32) -> bool {
        self.held_back.contains(topic, partition)
    }

    /// The partitions whose hold-back changed since the last call, each with whether it is
    /// held back now (pause) or not (resume, unless the whole assignment is paused).
    pub(crate) fn take_held_back_changes(&mut self) -> Vec<(String, i32, bool)> {
        let changes = std::mem::take(&mut self.held_back_changes);
        changes
            .into_iter()
            .map(|(t, p)| {
                let held = self.held_back.contains(&t, p);
                (t, p, held)
            })
            .collect()
    }

    /// The assignment was paused or resumed.
    pub(crate) fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    // --- Seeks and stops ---------------------------------------------------------------------

    /// A seek begins: records fetched from now on belong to a new generation.
    pub(crate) fn begin_seek(&mut self) -> u64 {
        self.next_generation()
    }

    /// An owned partition was moved in the seek of `generation`: its records fetched before are
    /// no longer current, and those queued are dropped.
    pub(crate) fn moved(&mut self, topic: &str, partition: i32, generation: u64) {
        if let Some(since) = self.owned.get_mut(topic, partition) {
            *since = generation;
        }
        self.drop_queued(|t, p| t == topic && p == partition);
    }

    /// A partition reached its stop; `true` the first time.
    pub(crate) fn stop(&mut self, topic: &str, partition: i32) -> bool {
        if self.stopped.contains(topic, partition) {
            return false;
        }
        self.stopped.insert_value(topic, partition, ());
        true
    }

    /// Whether reaching a partition's end means it is done: the stop is a time already past
    /// (`now_millis`), so nothing later can still be before it.
    pub(crate) fn end_is_stop(&self, now_millis: i64) -> bool {
        matches!(self.stop_at, Some(StopAt::Time(stop)) if stop <= now_millis)
    }

    /// Whether the stream may be over: a stop is set and nothing is waiting (then
    /// [`all_stopped`](Self::all_stopped) decides, given the assignment).
    pub(crate) fn may_be_over(&self) -> bool {
        self.stop_at.is_some() && self.queue.is_empty()
    }

    /// Whether the stream is over: a stop is set, nothing is waiting, and every assigned
    /// partition has stopped.
    pub(crate) fn all_stopped<'a>(
        &self,
        mut assignment: impl Iterator<Item = (&'a str, i32)>,
    ) -> bool {
        if self.stop_at.is_none() || !self.queue.is_empty() {
            return false;
        }
        let mut any = false;
        assignment.all(|(t, p)| {
            any = true;
            self.stopped.contains(t, p)
        }) && any
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::message::OwnedMessage;
    use rdkafka::Timestamp;

    use super::*;

    fn record(state: &State, topic: &str, partition: i32, offset: i64) -> ConsumerRecord {
        record_at(state.generation(), topic, partition, offset, 5)
    }

    fn record_at(
        generation: u64,
        topic: &str,
        partition: i32,
        offset: i64,
        ts: i64,
    ) -> ConsumerRecord {
        let message = OwnedMessage::new(
            Some(b"v".to_vec()),
            None,
            topic.to_owned(),
            Timestamp::CreateTime(ts),
            partition,
            offset,
            None,
        );
        ConsumerRecord::new(&message, generation)
    }

    fn parts(list: &[(&str, i32)]) -> Vec<(String, i32)> {
        list.iter().map(|(t, p)| ((*t).to_owned(), *p)).collect()
    }

    fn kafka_error(code: RDKafkaErrorCode) -> Error {
        Error::Kafka(KafkaError::MessageConsumption(code))
    }

    fn offsets(c: &CommitOffsets) -> Vec<(String, i32, i64)> {
        c.iter()
            .map(|(t, p, o)| (t.to_owned(), p, o.get()))
            .collect()
    }

    #[test]
    fn records_of_an_earlier_generation_are_current_only_while_their_partition_stays() {
        let mut state = State::new(None);
        state.assign([("t", 0), ("t", 1)]);
        let before = record(&state, "t", 0, 1);
        let other = record(&state, "t", 1, 1);
        // A second assignment (cooperative: more partitions) keeps the old ones current.
        state.assign([("t", 2)]);
        assert!(state.is_current(&before) && state.is_current(&other));
        // A revoke of partition 0 makes its records stale, not partition 1's.
        state.begin_revoke(&parts(&[("t", 0)]), false);
        assert!(!state.is_current(&before));
        assert!(state.is_current(&other));
        // Assigned again later: records fetched before the new assignment stay stale.
        state.end_revoke(&parts(&[("t", 0)]));
        state.assign([("t", 0)]);
        assert!(!state.is_current(&before));
        assert!(state.is_current(&record(&state, "t", 0, 1)));
    }

    #[test]
    fn processed_offsets_commit_once_and_only_while_committable() {
        let mut state = State::new(None);
        state.assign([("t", 0), ("t", 1)]);
        for offset in [3, 1, 4] {
            let r = record(&state, "t", 0, offset);
            state.mark_processed(&r);
        }
        let r = record(&state, "t", 1, 9);
        state.mark_processed(&r);
        assert_eq!(
            offsets(&state.pending_commits()),
            [("t".into(), 0, 5), ("t".into(), 1, 10)]
        );
        // Confirmed: nothing is pending until something new is processed.
        state.record_committed([("t", 0, 5), ("t", 1, 10)]);
        assert!(state.pending_commits().is_empty());
        // A failed commit (nothing confirmed) leaves the offset pending for the next one.
        let r = record(&state, "t", 0, 5);
        state.mark_processed(&r);
        assert_eq!(offsets(&state.pending_commits()), [("t".into(), 0, 6)]);
        // A partition no longer owned is never committed, and marking it does nothing.
        state.begin_revoke(&parts(&[("t", 1)]), true);
        let r = record_at(0, "t", 1, 20, 5);
        state.mark_processed(&r);
        assert_eq!(offsets(&state.pending_commits()), [("t".into(), 0, 6)]);
    }

    #[test]
    fn a_revoke_waits_for_work_in_flight_and_commits_what_was_done_before_it_goes() {
        let mut state = State::new(None);
        state.assign([("t", 0), ("t", 1)]);
        let (a, b) = (record(&state, "t", 0, 7), record(&state, "t", 0, 8));
        state.hold("t", 0);
        state.hold("t", 0);
        state.mark_processed(&a);
        state.release("t", 0);
        let revoked = parts(&[("t", 0)]);
        state.begin_revoke(&revoked, false);
        // Still processing b: the revoke waits, and b may still be marked and committed.
        assert!(state.busy(&revoked));
        assert!(!state.busy(&parts(&[("t", 1)])));
        assert!(state.revoke_pending() && state.may_commit("t", 0) && !state.owns("t", 0));
        state.mark_processed(&b);
        state.release("t", 0);
        assert!(!state.busy(&revoked));
        assert_eq!(
            offsets(&state.revoke_commits(&revoked)),
            [("t".into(), 0, 9)]
        );
        state.end_revoke(&revoked);
        // Gone: nothing of it is committable or pending any more.
        assert!(!state.revoke_pending() && !state.may_commit("t", 0));
        assert!(state.pending_commits().is_empty());
    }

    #[test]
    fn commits_never_pass_a_taken_record_that_is_not_done() {
        let mut state = State::new(None);
        state.assign([("t", 0)]);
        let records: Vec<_> = (0..5).map(|o| record(&state, "t", 0, o)).collect();
        for r in &records {
            state.take_record(r);
        }
        // Out of order: 1, 3 and 4 finish; 0 and 2 are still being processed.
        for o in [1, 3, 4] {
            state.finish(&records[o], true);
        }
        // 0 is not done: a commit sends 0 at the most.
        assert_eq!(offsets(&state.pending_commits()), [("t".into(), 0, 0)]);
        state.finish(&records[0], true);
        assert_eq!(offsets(&state.pending_commits()), [("t".into(), 0, 2)]);
        assert_eq!(offsets(&state.commit_points()), [("t".into(), 0, 2)]);
        // 2 is given up (its task was cancelled): the commit point stays before it for good.
        state.finish(&records[2], false);
        assert_eq!(offsets(&state.pending_commits()), [("t".into(), 0, 2)]);
        assert!(!state.busy(&parts(&[("t", 0)])));
        // A revoke commits exactly the finished prefix, and the partition starts afresh.
        state.begin_revoke(&parts(&[("t", 0)]), false);
        assert_eq!(
            offsets(&state.revoke_commits(&parts(&[("t", 0)]))),
            [("t".into(), 0, 2)]
        );
        state.end_revoke(&parts(&[("t", 0)]));
        state.assign([("t", 0)]);
        let again = record(&state, "t", 0, 2);
        state.take_record(&again);
        state.finish(&again, true);
        assert_eq!(offsets(&state.pending_commits()), [("t".into(), 0, 3)]);
    }

    #[test]
    fn hold_backs_count_and_report_their_changes_once() {
        let mut state = State::new(None);
        state.assign([("t", 0)]);
        state.hold_back("t", 0);
        state.hold_back("t", 0);
        assert_eq!(state.take_held_back_changes(), [("t".to_owned(), 0, true)]);
        state.let_go("t", 0);
        assert!(state.is_held_back("t", 0));
        assert!(state.take_held_back_changes().is_empty());
        state.let_go("t", 0);
        assert_eq!(state.take_held_back_changes(), [("t".to_owned(), 0, false)]);
        // A revoke forgets it; a late let go is harmless.
        state.hold_back("t", 0);
        state.begin_revoke(&parts(&[("t", 0)]), true);
        state.let_go("t", 0);
        assert!(!state.is_held_back("t", 0));
    }

    #[test]
    fn a_lost_partition_commits_nothing_and_forgets_its_offsets() {
        let mut state = State::new(None);
        state.assign([("t", 0)]);
        let r = record(&state, "t", 0, 3);
        state.mark_processed(&r);
        let lost = parts(&[("t", 0)]);
        state.begin_revoke(&lost, true);
        assert!(!state.revoke_pending() && !state.may_commit("t", 0));
        assert!(state.pending_commits().is_empty());
        // Assigned again: the old processed offset does not come back.
        state.assign([("t", 0)]);
        assert!(state.pending_commits().is_empty());
    }

    #[test]
    fn a_release_without_a_hold_or_after_a_lost_partition_is_harmless() {
        let mut state = State::new(None);
        state.release("t", 0);
        state.assign([("t", 0)]);
        state.hold("t", 0);
        state.begin_revoke(&parts(&[("t", 0)]), true);
        state.release("t", 0);
        state.release("t", 0);
        assert!(!state.busy(&parts(&[("t", 0)])));
    }

    #[test]
    fn a_revoke_drops_queued_records_of_its_partitions_only() {
        let mut state = State::new(None);
        state.assign([("t", 0), ("t", 1)]);
        for (p, o) in [(0, 1), (1, 1), (0, 2)] {
            let r = record(&state, "t", p, o);
            state.fetched(r);
        }
        state.begin_revoke(&parts(&[("t", 0)]), false);
        let Some(Ok(batch)) = state.take(10) else {
            panic!("a batch")
        };
        assert_eq!(batch.len(), 1);
        assert_eq!((batch[0].partition(), batch[0].offset()), (1, 1));
    }

    #[test]
    fn errors_go_out_in_order_with_the_records() {
        let mut state = State::new(None);
        state.assign([("t", 0)]);
        for o in 0..3 {
            let r = record(&state, "t", 0, o);
            state.fetched(r);
        }
        assert!(state.failed(kafka_error(RDKafkaErrorCode::AllBrokersDown)));
        let r = record(&state, "t", 0, 3);
        state.fetched(r);
        let first = state.take(2).unwrap().unwrap();
        assert_eq!(
            first
                .iter()
                .map(super::super::record::ConsumerRecord::offset)
                .collect::<Vec<_>>(),
            [0, 1]
        );
        let second = state.take(10).unwrap().unwrap();
        assert_eq!(
            second
                .iter()
                .map(super::super::record::ConsumerRecord::offset)
                .collect::<Vec<_>>(),
            [2]
        );
        assert!(state.take(10).unwrap().is_err());
        assert_eq!(state.take(10).unwrap().unwrap()[0].offset(), 3);
        assert!(state.take(10).is_none());
    }

    #[test]
    fn errors_never_grow_the_queue_without_bound() {
        let mut state = State::new(None);
        // A broker that stays down repeats itself: one copy is enough.
        assert!(state.failed(kafka_error(RDKafkaErrorCode::AllBrokersDown)));
        assert!(!state.failed(kafka_error(RDKafkaErrorCode::AllBrokersDown)));
        assert_eq!(state.backlog(), 1);
        // Alternating errors: bounded all the same.
        for i in 0..10 * MAX_QUEUED_ERRORS {
            let code = if i % 2 == 0 {
                RDKafkaErrorCode::BrokerTransportFailure
            } else {
                RDKafkaErrorCode::AllBrokersDown
            };
            state.failed(kafka_error(code));
        }
        assert_eq!(state.backlog(), MAX_QUEUED_ERRORS);
        // A panic is always reported, however many errors wait.
        assert!(state.failed(Error::Panicked {
            callback: "hook",
            message: "boom".into()
        }));
        // Handing errors over makes room again.
        while state.take(10).is_some() {}
        assert!(state.failed(kafka_error(RDKafkaErrorCode::AllBrokersDown)));
    }

    #[test]
    fn backpressure_serves_librdkafka_every_interval_and_pauses_only_a_growing_backlog() {
        let mut state = State::new(None);
        state.assign([("t", 0)]);
        let idle = state.next_step(Duration::ZERO);
        assert_eq!(
            idle,
            Step::Poll {
                timeout: SERVE_EVENTS_EVERY,
                pause: None
            }
        );
        let r = record(&state, "t", 0, 0);
        state.fetched(r);
        // Behind: wait for room, but never longer than the interval without a poll.
        assert_eq!(state.next_step(Duration::from_millis(10)), Step::Wait);
        assert_eq!(
            state.next_step(SERVE_EVENTS_EVERY),
            Step::Poll {
                timeout: Duration::ZERO,
                pause: None
            }
        );
        // However long the application stalls, the answer is the same: poll, without waiting.
        assert_eq!(
            state.next_step(Duration::MAX),
            Step::Poll {
                timeout: Duration::ZERO,
                pause: None
            }
        );
        for o in 1..PAUSE_BACKLOG as i64 {
            let r = record(&state, "t", 0, o);
            state.fetched(r);
        }
        assert_eq!(
            state.next_step(SERVE_EVENTS_EVERY),
            Step::Poll {
                timeout: Duration::ZERO,
                pause: Some(true)
            }
        );
        state.set_paused(true);
        // An assignment while paused starts paused.
        assert!(state.assign([("t", 1)]));
        // Errors count as backlog too, and the pause holds until everything is handed over.
        while state.take(256).is_some() {}
        assert_eq!(
            state.next_step(Duration::ZERO),
            Step::Poll {
                timeout: SERVE_EVENTS_EVERY,
                pause: Some(false)
            }
        );
        state.set_paused(false);
        assert!(!state.assign([("t", 2)]));
    }

    #[test]
    fn a_seek_makes_earlier_records_of_the_partition_stale_and_drops_them() {
        let mut state = State::new(None);
        state.assign([("t", 0), ("t", 1)]);
        let (a, b) = (record(&state, "t", 0, 5), record(&state, "t", 1, 5));
        state.fetched(record(&state, "t", 0, 6));
        state.fetched(record(&state, "t", 1, 6));
        let generation = state.begin_seek();
        state.moved("t", 0, generation);
        assert!(!state.is_current(&a));
        assert!(state.is_current(&b));
        let batch = state.take(10).unwrap().unwrap();
        assert_eq!(
            batch
                .iter()
                .map(super::super::record::ConsumerRecord::partition)
                .collect::<Vec<_>>(),
            [1]
        );
        assert!(state.is_current(&record(&state, "t", 0, 5)));
        // A partition revoked before the seek is served is not moved (not owned).
        state.begin_revoke(&parts(&[("t", 1)]), false);
        assert!(!state.owns("t", 1));
    }

    #[test]
    fn stops_end_the_stream_once_every_assigned_partition_reached_them() {
        let mut state = State::new(Some(StopAt::Offset(10)));
        state.assign([("t", 0), ("t", 1)]);
        assert!(matches!(
            state.fetched(record(&state, "t", 0, 9)),
            Fetched::Queued
        ));
        assert!(matches!(
            state.fetched(record(&state, "t", 0, 10)),
            Fetched::FirstPastStop(_)
        ));
        assert!(matches!(
            state.fetched(record(&state, "t", 0, 11)),
            Fetched::PastStop
        ));
        let assignment = [("t", 0), ("t", 1)];
        // Records still waiting: not over.
        assert!(!state.may_be_over());
        state.take(10);
        assert!(state.may_be_over());
        assert!(!state.all_stopped(assignment.into_iter()));
        assert!(state.stop("t", 1));
        assert!(state.all_stopped(assignment.into_iter()));
        // Nothing assigned is not "all stopped".
        assert!(!state.all_stopped(std::iter::empty()));
        // A partition assigned again starts afresh.
        state.assign([("t", 1)]);
        assert!(!state.all_stopped(assignment.into_iter()));
    }

    #[test]
    fn a_stop_time_applies_to_timestamps_and_to_partition_ends_once_past() {
        let mut state = State::new(Some(StopAt::Time(1_000)));
        state.assign([("t", 0)]);
        let generation = state.generation();
        assert!(matches!(
            state.fetched(record_at(generation, "t", 0, 0, 1_000)),
            Fetched::Queued
        ));
        assert!(matches!(
            state.fetched(record_at(generation, "t", 0, 1, 1_001)),
            Fetched::FirstPastStop(_)
        ));
        assert!(!state.end_is_stop(999));
        assert!(state.end_is_stop(1_000));
        assert!(!State::new(Some(StopAt::Offset(3))).end_is_stop(i64::MAX));
        assert!(!State::new(None).may_be_over());
    }

    #[test]
    fn partition_maps_look_up_by_str_and_drop_empty_topics() {
        let mut map = PartitionMap::default();
        map.insert_value("t", 0, 1u64);
        map.insert_value("t", 1, 2);
        assert_eq!(map.get("t", 1), Some(&2));
        assert_eq!(map.remove("t", 0), Some(1));
        assert!(!map.is_empty());
        assert_eq!(map.remove("t", 1), Some(2));
        assert!(map.is_empty());
        assert_eq!(map.remove("u", 0), None);
    }
}
