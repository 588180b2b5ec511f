//! The polling thread and everything that runs on it: fetching, handing records over, serving
//! rebalances, seeks and stops. It never waits on the application: records and errors queue in
//! [`State`], and go out only as far as the channel has room.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use super::rebalance::{commit_offsets, KitContext};
use super::record::{key_and_value_len, SHARED_BUFFER};
use super::replay;
use super::state::{Fetched, State, Step};
use super::{CheckpointStore, CommitOffsets, ConsumerRecord};
use super::{OffsetReset, StopAt};
use crate::error::{catch_panic, Error, Result};
use crate::lock;

/// What the polling thread hands the application: a batch of records, or an error.
pub(super) type Handover = Result<Vec<ConsumerRecord>>;

/// How long lookups (times, committed offsets, watermarks) and synchronous commits may take.
pub(super) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);
/// How much longer than the revoke timeout closing may take (the final commit, leaving the
/// group) before `drop` and `close` return anyway.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(1);

type SeekRequest = (CommitOffsets, oneshot::Sender<Result<()>>);

/// State shared by the polling thread (and its rebalance callbacks) and the application.
pub(super) struct Shared {
    state: Mutex<State>,
    /// The state's generation, readable without the lock: a record of the current generation
    /// is current, which is the common case.
    generation: AtomicU64,
    /// Notified when records finish processing (a revoke may be waiting for them).
    finished: Condvar,
    pub(super) revoke_timeout: Duration,
    pub(super) stats: crate::monitoring::StatsHub,
    /// Seeks asked for by the application, served by the polling thread; `None` once that
    /// thread is gone.
    seeks: Mutex<Option<Vec<SeekRequest>>>,
    /// Woken when a revoke starts, so that a transaction holding the partitions ends early.
    pub(super) revoke_started: tokio::sync::Notify,
    /// Why the polling thread ended, if it was not asked to: the stream's last item.
    ended: Mutex<Option<Error>>,
}

/// The state, locked; the generation is published when the lock is released.
pub(super) struct StateGuard<'a> {
    state: MutexGuard<'a, State>,
    generation: &'a AtomicU64,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        self.generation
            .store(self.state.generation(), Ordering::Release);
    }
}

impl Shared {
    pub(super) fn new(revoke_timeout: Duration, stop_at: Option<StopAt>) -> Self {
        Shared {
            state: Mutex::new(State::new(stop_at)),
            generation: AtomicU64::new(0),
            finished: Condvar::new(),
            revoke_timeout,
            stats: crate::monitoring::StatsHub::default(),
            seeks: Mutex::new(Some(Vec::new())),
            revoke_started: tokio::sync::Notify::new(),
            ended: Mutex::default(),
        }
    }

    pub(super) fn state(&self) -> StateGuard<'_> {
        StateGuard {
            state: lock(&self.state),
            generation: &self.generation,
        }
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether a record may still be handed out (see [`State::is_current`]).
    pub(super) fn is_current(&self, record: &ConsumerRecord) -> bool {
        record.generation == self.generation() || self.state().is_current(record)
    }

    /// Ends one hold on a partition, and wakes a revoke that may be waiting for it.
    pub(super) fn release(&self, topic: &str, partition: i32) {
        self.state().release(topic, partition);
        self.notify_finished();
    }

    /// Wakes a revoke that may be waiting for work to finish.
    pub(super) fn notify_finished(&self) {
        self.finished.notify_all();
    }

    /// Queues an error for the application, after the records before it.
    pub(super) fn report(&self, error: Error) {
        if !self.state().failed(error) {
            tracing::debug!("kafka_kit: consumer error not queued: a repeat, or too many waiting");
        }
    }

    /// Asks the polling thread to seek, or `None` if it is gone.
    pub(super) fn request_seek(
        &self,
        offsets: CommitOffsets,
    ) -> Option<oneshot::Receiver<Result<()>>> {
        let (reply, answer) = oneshot::channel();
        lock(&self.seeks).as_mut()?.push((offsets, reply));
        Some(answer)
    }

    /// Why the polling thread ended, once, if it was not asked to.
    pub(super) fn take_ended(&self) -> Option<Error> {
        lock(&self.ended).take()
    }

    /// Waits until no record of `partitions` is being processed, or the revoke timeout passes.
    pub(super) fn wait_for_in_flight(&self, partitions: &[(String, i32)]) -> bool {
        let deadline = crate::deadline(self.revoke_timeout);
        let mut state = lock(&self.state);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if !state.busy(partitions) {
                return true;
            }
            if left.is_zero() {
                return false;
            }
            state = self
                .finished
                .wait_timeout(state, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

/// Starts the polling thread. When it ends (asked to, at the stop, or by a panic), pending
/// seeks are answered and the channel closes; a panic is kept as the stream's last item.
pub(super) fn spawn(
    consumer: Arc<BaseConsumer<KitContext>>,
    sender: mpsc::Sender<Handover>,
    stop: Arc<AtomicBool>,
    batch: usize,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kafka-kit-consumer".into())
        .spawn(move || {
            let shared = consumer.context().shared.clone();
            let polled = catch_panic("the consumer's polling thread", || {
                poll_loop(&consumer, &sender, &stop, batch);
            });
            if let Err(e) = polled {
                *lock(&shared.ended) = Some(e);
            }
            // Dropping the requests answers them: the consumer is closed.
            lock(&shared.seeks).take();
        })
}

/// The polling thread's loop: fetches records, hands them over as far as there is room, serves
/// rebalances and seeks, and never waits for the application.
fn poll_loop(
    consumer: &BaseConsumer<KitContext>,
    sender: &mpsc::Sender<Handover>,
    stop: &AtomicBool,
    batch: usize,
) {
    let shared = consumer.context().shared.clone();
    let mut last_poll: Option<Instant> = None;
    while !stop.load(Ordering::Acquire) {
        serve_seeks(consumer, &shared);
        serve_hold_backs(consumer, &shared);
        let (step, may_be_over) = {
            let mut state = shared.state();
            // Only this thread sends, so room seen is room had.
            while sender.capacity() > 0 {
                let Some(handover) = state.take(batch) else {
                    break;
                };
                if sender.try_send(handover).is_err() {
                    return; // the consumer was dropped
                }
            }
            let since = last_poll.map_or(Duration::MAX, |t| t.elapsed());
            (state.next_step(since), state.may_be_over())
        };
        if may_be_over && all_stopped(consumer, &shared) {
            return; // dropping the sender ends the stream
        }
        match step {
            // The polling thread is kafka-kit's own: nothing else runs on it.
            #[allow(clippy::disallowed_methods)]
            Step::Wait => std::thread::sleep(Duration::from_millis(1)),
            Step::Poll { timeout, pause } => {
                if let Some(pause) = pause {
                    set_paused(consumer, &shared, pause);
                }
                last_poll = Some(Instant::now());
                poll_batch(consumer, &shared, stop, timeout, batch);
            }
        }
    }
}

/// Polls librdkafka for up to `batch` records (up to [`SHARED_BUFFER`] bytes of them), waiting
/// `timeout` for the first and then taking what is ready, and queues them, copied together under
/// one lock; then handles the event or error that ended the batch, if one did.
fn poll_batch(
    consumer: &BaseConsumer<KitContext>,
    shared: &Shared,
    stop: &AtomicBool,
    mut timeout: Duration,
    batch: usize,
) {
    let mut messages = Vec::new();
    let mut bytes = 0;
    let mut ended_by = None;
    while messages.len() < batch && bytes < SHARED_BUFFER && !stop.load(Ordering::Acquire) {
        match consumer.poll(timeout) {
            None => break,
            Some(Ok(message)) => {
                bytes += key_and_value_len(&message);
                // Read after the poll: a rebalance served in it came before this record.
                messages.push((message, shared.generation()));
            }
            Some(Err(error)) => {
                ended_by = Some(error);
                break;
            }
        }
        timeout = Duration::ZERO;
    }
    queue(consumer, shared, &messages);
    match ended_by {
        None => {}
        Some(KafkaError::PartitionEOF(partition)) => reached_end(consumer, shared, partition),
        Some(error) => {
            tracing::warn!(error = %error, "kafka_kit: consumer error");
            if error.rdkafka_error_code() == Some(RDKafkaErrorCode::GroupIdNotFound) {
                start_unpositioned(consumer, shared);
            }
            shared.report(error.into());
        }
    }
}

/// Queues the records of `messages`, in order, and pauses the partitions they take past a stop.
fn queue(
    consumer: &BaseConsumer<KitContext>,
    shared: &Shared,
    messages: &[(BorrowedMessage<'_>, u64)],
) {
    if messages.is_empty() {
        return;
    }
    let mut past_stop = Vec::new();
    {
        let mut state = shared.state();
        for record in ConsumerRecord::fetched(messages) {
            if let Fetched::FirstPastStop(record) = state.fetched(record) {
                past_stop.push(record);
            }
        }
    }
    for record in past_stop {
        pause_partition(consumer, record.topic(), record.partition());
    }
}

/// Some brokers answer the committed-offset fetch of a group that does not exist yet with
/// GROUP_ID_NOT_FOUND, and librdkafka then leaves the partitions waiting for an offset that never
/// comes. Such a group has nothing committed: the owned partitions with no position yet start
/// where `auto.offset.reset` says, as they would have with an empty answer.
fn start_unpositioned(consumer: &BaseConsumer<KitContext>, shared: &Shared) {
    let reset = match consumer.context().offset_reset {
        OffsetReset::Earliest => Offset::Beginning,
        OffsetReset::Latest => Offset::End,
        OffsetReset::Error => return, // the application asked to hear of it, and it has
    };
    let Ok(positions) = consumer.position() else {
        return;
    };
    // A partition in that state cannot be moved by a seek: it is assigned again, at the reset
    // position, which needs no offset fetch. (Eager assignment is replaced whole: the partitions
    // already under way keep their positions.)
    let mut stalled = TopicPartitionList::new();
    let mut whole = TopicPartitionList::new();
    for e in positions.elements() {
        let (topic, partition) = (e.topic(), e.partition());
        if e.offset() == Offset::Invalid && shared.state().owns(topic, partition) {
            let _ = stalled.add_partition_offset(topic, partition, reset);
            let _ = whole.add_partition_offset(topic, partition, reset);
        } else {
            let _ = whole.add_partition_offset(topic, partition, e.offset());
        }
    }
    if stalled.count() == 0 {
        return;
    }
    let result = match consumer.rebalance_protocol() {
        RebalanceProtocol::Cooperative => consumer
            .incremental_unassign(&stalled)
            .and_then(|()| consumer.incremental_assign(&stalled)),
        _ => consumer.assign(&whole),
    };
    if shared.state().paused() {
        let _ = consumer.pause(&stalled);
    }
    match result {
        Ok(()) => tracing::info!(partitions = stalled.count(), offset = ?reset,
            "kafka_kit: the broker does not know the group yet; its partitions start where auto.offset.reset says"),
        Err(error) => tracing::warn!(%error,
            "kafka_kit: could not start the partitions of a group the broker does not know"),
    }
}

fn serve_seeks(consumer: &BaseConsumer<KitContext>, shared: &Shared) {
    let requests = match lock(&shared.seeks).as_mut() {
        Some(requests) if !requests.is_empty() => std::mem::take(requests),
        _ => return,
    };
    for (offsets, reply) in requests {
        // The application may have stopped waiting: nothing to tell it then.
        let _ = reply.send(seek(consumer, shared, &offsets));
    }
}

/// Moves owned partitions to `offsets`, on the polling thread: records polled after this are
/// from the new position (librdkafka drops what it fetched before), and records of these
/// partitions polled before, queued here or in the channel, belong to an older generation and
/// are dropped.
fn seek(
    consumer: &BaseConsumer<KitContext>,
    shared: &Shared,
    offsets: &CommitOffsets,
) -> Result<()> {
    let generation = shared.state().begin_seek();
    for (topic, partition, offset) in offsets.iter() {
        if !shared.state().owns(topic, partition) {
            continue; // revoked meanwhile: its new owner starts from the committed offset
        }
        consumer.seek(topic, partition, Offset::Offset(offset.get()), SEEK_TIMEOUT)?;
        shared.state().moved(topic, partition, generation);
        tracing::debug!(
            topic,
            partition,
            offset = offset.get(),
            "kafka_kit: partition moved"
        );
    }
    Ok(())
}

/// Pauses the partitions a processing loop holds back (a key with too much waiting), and resumes
/// those it let go of (unless the whole assignment is paused for backpressure).
fn serve_hold_backs(consumer: &BaseConsumer<KitContext>, shared: &Shared) {
    let (changes, paused) = {
        let mut state = shared.state();
        (state.take_held_back_changes(), state.paused())
    };
    for (topic, partition, held) in changes {
        let mut list = TopicPartitionList::new();
        list.add_partition(&topic, partition);
        let result = if held {
            consumer.pause(&list)
        } else if !paused {
            consumer.resume(&list)
        } else {
            Ok(())
        };
        match result {
            Ok(()) => tracing::debug!(
                topic,
                partition,
                held,
                "kafka_kit: a key's queue is full; partition held back"
            ),
            Err(e) => {
                tracing::warn!(topic, partition, error = %e, "kafka_kit: could not hold back or let go of a partition");
            }
        }
    }
}

fn set_paused(consumer: &BaseConsumer<KitContext>, shared: &Shared, pause: bool) {
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    let result = if pause {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    match result {
        Ok(()) => {
            let mut state = shared.state();
            state.set_paused(pause);
            if !pause {
                // Resuming the assignment resumed what a processing loop holds back too.
                let held = assignment.elements();
                let mut list = TopicPartitionList::new();
                for e in held
                    .iter()
                    .filter(|e| state.is_held_back(e.topic(), e.partition()))
                {
                    list.add_partition(e.topic(), e.partition());
                }
                drop(state);
                if list.count() > 0 {
                    let _ = consumer.pause(&list);
                }
            }
            tracing::debug!(paused = pause, "kafka_kit: buffer backpressure");
        }
        Err(e) => tracing::warn!(error = %e, "kafka_kit: could not pause or resume"),
    }
}

fn pause_partition(consumer: &BaseConsumer<KitContext>, topic: &str, partition: i32) {
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, partition);
    let _ = consumer.pause(&list);
    tracing::debug!(topic, partition, "kafka_kit: partition reached its stop");
}

/// A partition has nothing more to read now: with a stop time in the past, it is done. (The
/// event names only the partition number; with several topics it is applied only where that
/// number is unambiguous.)
fn reached_end(consumer: &BaseConsumer<KitContext>, shared: &Shared, partition: i32) {
    if !shared
        .state()
        .end_is_stop(replay::millis(std::time::SystemTime::now()))
    {
        return;
    }
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    let matching: Vec<String> = assignment
        .elements()
        .iter()
        .filter(|e| e.partition() == partition)
        .map(|e| e.topic().to_owned())
        .collect();
    if let [topic] = matching.as_slice() {
        if shared.state().stop(topic, partition) {
            pause_partition(consumer, topic, partition);
        }
    }
}

fn all_stopped(consumer: &BaseConsumer<KitContext>, shared: &Shared) -> bool {
    let Ok(assignment) = consumer.assignment() else {
        return false;
    };
    let elements = assignment.elements();
    shared
        .state()
        .all_stopped(elements.iter().map(|e| (e.topic(), e.partition())))
}

/// The consumer's resources, shared by the [`Consumer`](super::Consumer) and the processing
/// loops' handles.
pub(super) struct Inner {
    pub(super) consumer: Arc<BaseConsumer<KitContext>>,
    pub(super) shared: Arc<Shared>,
    pub(super) checkpoints: Option<Arc<dyn CheckpointStore>>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) thread: Mutex<Option<JoinHandle<()>>>,
    /// The deadline of the shutdown, when [`close`](super::Consumer::close) set one.
    pub(super) deadline: Mutex<Option<Instant>>,
    /// Declared last, so dropped last, after `consumer`: waits (up to the deadline) for
    /// librdkafka's close, which runs on a thread of its own.
    pub(super) closed: CloseWait,
}

impl Inner {
    pub(super) async fn commit(
        self: &Arc<Self>,
        offsets: CommitOffsets,
        mode: CommitMode,
    ) -> Result<()> {
        match mode {
            // librdkafka's asynchronous commit returns at once; saving checkpoints does file I/O,
            // which belongs off the async runtime.
            CommitMode::Async if self.checkpoints.is_none() => {
                commit_offsets(&self.consumer, None, &offsets, mode)
            }
            CommitMode::Async => {
                let inner = self.clone();
                crate::blocking(move || {
                    commit_offsets(
                        &inner.consumer,
                        inner.checkpoints.as_deref(),
                        &offsets,
                        mode,
                    )
                })
                .await
            }
            CommitMode::Sync => {
                let inner = self.clone();
                crate::blocking(move || inner.commit_sync(offsets)).await
            }
        }
    }

    /// Commits, retrying retriable errors for up to 10 s; each retry only for partitions this
    /// consumer may still commit, so that a late retry never overwrites a new owner's progress.
    /// A stale generation is retried too: the polling thread rejoins the group meanwhile.
    fn commit_sync(&self, mut offsets: CommitOffsets) -> Result<()> {
        use rdkafka::error::RDKafkaErrorCode::{IllegalGeneration, UnknownMemberId};
        let deadline = crate::deadline(LOOKUP_TIMEOUT);
        loop {
            let result = commit_offsets(
                &self.consumer,
                self.checkpoints.as_deref(),
                &offsets,
                CommitMode::Sync,
            );
            match result {
                Err(e)
                    if (e.is_retriable()
                        || matches!(e.code(), Some(IllegalGeneration | UnknownMemberId)))
                        && !offsets.is_empty()
                        && Instant::now() < deadline
                        && !self.stop.load(Ordering::Acquire) =>
                {
                    tracing::debug!(error = %e, "kafka_kit: commit failed; retrying");
                    // Runs on a blocking thread (`crate::blocking`) or the polling thread, never
                    // on an async worker.
                    #[allow(clippy::disallowed_methods)]
                    std::thread::sleep(Duration::from_millis(200));
                    let state = self.shared.state();
                    offsets.retain(|t, p| state.may_commit(t, p));
                }
                other => return other,
            }
        }
    }

    /// Stops the polling thread, waiting for it until `deadline` at the most: a polling thread
    /// still inside a listener hook is left to finish in the background.
    pub(super) fn stop_polling_by(&self, deadline: Instant) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = lock(&self.thread).take() {
            while !thread.is_finished() && Instant::now() < deadline {
                // A bounded wait (until `deadline`), by design: `drop` and `close` return only
                // once the polling thread stopped or the shutdown deadline passed, on whichever
                // thread the consumer is dropped.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(Duration::from_millis(2));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                tracing::warn!("kafka_kit: the polling thread did not stop in time (a listener hook still running?); leaving it");
            }
        }
    }

    /// The deadline of a shutdown starting now.
    pub(super) fn close_deadline(&self) -> Instant {
        crate::deadline(self.shared.revoke_timeout.saturating_add(CLOSE_GRACE))
    }
}

/// Closing librdkafka's consumer (its revoke commits what was processed, then it leaves the
/// group) happens when the last handle to it drops. [`Inner`]'s drop hands that to a thread of
/// its own, so that a close waiting for an unreachable coordinator does not hold the application
/// past the deadline.
impl Drop for Inner {
    fn drop(&mut self) {
        let deadline = lock(&self.deadline)
            .take()
            .unwrap_or_else(|| self.close_deadline());
        self.stop_polling_by(deadline);
        let consumer = self.consumer.clone();
        let (done, closed) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("kafka-kit-close".into())
            .spawn(move || {
                // `Inner`'s own handle goes right after this drop returns; another one (a
                // polling thread left behind) keeps the consumer open until it ends.
                while Arc::strong_count(&consumer) > 1 && Instant::now() < deadline {
                    // The "kafka-kit-close" thread is kafka-kit's own.
                    #[allow(clippy::disallowed_methods)]
                    std::thread::sleep(Duration::from_millis(1));
                }
                drop(consumer);
                drop(done);
            });
        if spawned.is_ok() {
            *lock(&self.closed.0) = Some((closed, deadline));
        }
    }
}

/// Waits, when dropped, for the close thread to finish, until the deadline at the most.
#[derive(Default)]
pub(super) struct CloseWait(Mutex<Option<(std::sync::mpsc::Receiver<()>, Instant)>>);

impl Drop for CloseWait {
    fn drop(&mut self) {
        if let Some((closed, deadline)) = lock(&self.0).take() {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = closed.recv_timeout(left) {
                tracing::warn!("kafka_kit: the consumer did not close in time (an unreachable group coordinator?); closing in the background");
            }
        }
    }
}
