//! A consumer whose rebalances are handled on time, whose commits cannot be off by one, and whose
//! processing loop loses nothing.
//!
//! [`Consumer`] reads records ([`ConsumerRecord`]: key, value, typed headers, topic, partition,
//! offset, timestamp) as an async [`Stream`], or one at a time with
//! [`Consumer::recv`]. Commits are manual, and always of the *next* offset to read.
//!
//! # Reading
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use kafka_kit::config::KafkaConfig;
//! use kafka_kit::consumer::{Consumer, OffsetReset};
//!
//! # async fn run() -> anyhow::Result<()> {
//! let config = KafkaConfig::builder().build()?;
//! let mut consumer = Consumer::builder(&config)
//!     .group_id("billing")
//!     .topics(["user-events"])
//!     .offset_reset(OffsetReset::Earliest)
//!     .build()?;
//! while let Some(item) = consumer.next().await {
//!     let record = match item {
//!         Ok(record) => record,
//!         // A broker restarting, a group the broker does not know yet: reported, not the end.
//!         Err(e) if !e.ends_processing() => {
//!             eprintln!("reading on: {e}");
//!             continue;
//!         }
//!         Err(e) => return Err(e.into()),
//!     };
//!     let event: serde_json::Value = record.json()?;
//!     println!("{:?}@{}: {event}", record.key_str(), record.offset());
//!     consumer.commit(&record).await?; // commits offset + 1: the next one to read
//! }
//! # Ok(()) }
//! ```
//!
//! For processing with batched commits, retries and a dead-letter topic, use
//! [`AtLeastOnce`](processing::AtLeastOnce).
//!
//! # Rebalances that happen on time
//!
//! librdkafka runs rebalance callbacks only while the application polls, and rdkafka's
//! `StreamConsumer` polls only inside `recv`: a busy application delays its own rebalance, and can
//! be thrown out of the group. kafka-kit polls on a thread of its own, and hands records over
//! through a bounded buffer; when the buffer is full it stops fetching but still serves
//! librdkafka's events at least every 100 ms (and pauses the partitions if the backlog keeps
//! growing), so every rebalance is served on time while the application works at its own pace.
//! On a rebalance:
//!
//! - **revoke**: records of the revoked partitions still buffered are dropped (their new owner
//!   reads them), processing of them in an [`AtLeastOnce`](processing::AtLeastOnce) loop is waited
//!   for (up to [`ConsumerBuilder::revoke_timeout`]), the offsets marked processed are committed
//!   synchronously, and then [`RebalanceListener::on_revoked`] runs;
//! - **lost** (the group moved on without this member): nothing is committed, and
//!   [`RebalanceListener::on_lost`] runs;
//! - **assign**: each partition starts at its saved checkpoint
//!   ([`ConsumerBuilder::checkpoints`]), else where [`StartAt`] says, resolved now that the
//!   assignment is known; then [`RebalanceListener::on_assigned`] runs.
//!
//! kafka-kit sets `fetch.queue.backoff.ms` to 100 ms unless you set it (librdkafka's default, 1 s,
//! leaves a consumer that fell behind for a moment idle for up to a second once it catches up).
//!
//! The hooks run on the polling thread, never on the async runtime, and the polling thread never
//! waits for the application except for that bounded wait: they cannot deadlock against the
//! consuming task. Eager and cooperative (`cooperative-sticky`) assignment both work.
//!
//! # Errors, panics and shutdown
//!
//! - The stream carries errors in order with the records. Most are transient (a broker
//!   restarting, a group the broker does not know yet): read on after them, and stop only where
//!   [`Error::ends_processing`] says. The polling thread never waits for the application to take
//!   them: a repeated error is queued once, and at most 64 wait.
//! - A panic in a [`RebalanceListener`] hook or a [`CheckpointStore`] is caught: it reaches the
//!   stream as [`Error::Panicked`] (and a `tracing` error), and the consumer goes on serving the
//!   group. A polling thread that dies for any reason ends the stream with an error, never with a
//!   silent `None`.
//! - [`Consumer::close`] and dropping a consumer return within
//!   [`revoke_timeout`](ConsumerBuilder::revoke_timeout) plus one second, whatever the
//!   application or the cluster does; a close still waiting for an unreachable coordinator
//!   finishes in the background.
//! - After a crash, a member is noticed only when its session times out, and one killed during a
//!   rebalance holds the group up to `max.poll.interval.ms`. [`ConsumerBuilder::instance_id`]
//!   (static membership) lets a restarted member take its old place at once.
//!
//! # Replay from a time
//!
//! [`StartAt::Time`] (or [`StartAt::ago`]) starts each partition at its first record at or after a
//! time, looked up when the partition is assigned, not right after `subscribe`; partitions without
//! such a record start at the end. [`StopAt`] ends the stream at a time or an offset.
//!
//! # Lag
//!
//! [`Consumer::lag`] gives each assigned partition's lag; [`group_lag`] the lag of any group,
//! from outside it; [`lag_reports`] the same, periodically.

mod builder;
mod checkpoint;
mod lag;
mod poll;
pub mod processing;
mod rebalance;
mod record;
mod replay;
mod state;
mod tracker;

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::sync::mpsc;

use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use poll::{Handover, Inner, LOOKUP_TIMEOUT};

pub use builder::ConsumerBuilder;
pub use checkpoint::{CheckpointError, CheckpointStore, FileCheckpoints, MemoryCheckpoints};
pub use lag::{group_lag, lag_reports, PartitionLag};
pub use rdkafka::consumer::ConsumerGroupMetadata;
pub use record::{CommitOffsets, ConsumerRecord, DecodeError, NextOffset};
pub use replay::{PartitionStart, StartAt, StartReason, StopAt};

/// Where to start a partition the group has no committed offset for (`auto.offset.reset`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OffsetReset {
    /// The oldest record.
    Earliest,
    /// Only new records (Kafka's default).
    #[default]
    Latest,
    /// Fail instead of guessing.
    Error,
}

/// Which records of transactional producers a consumer sees (`isolation.level`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Isolation {
    /// Only records of committed transactions (librdkafka's default).
    #[default]
    ReadCommitted,
    /// Everything, aborted transactions included.
    ReadUncommitted,
}

/// How a group spreads partitions over its members (`partition.assignment.strategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Assignment {
    /// Eager `range,roundrobin` (librdkafka's default): every rebalance revokes everything first.
    #[default]
    Eager,
    /// Incremental `cooperative-sticky`: a rebalance moves only the partitions that change owner.
    CooperativeSticky,
}

/// A partition of a topic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

impl TopicPartition {
    /// A partition of a topic.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

/// Application hooks for rebalances. They run on the consumer's polling thread: they may block
/// briefly, but should not wait for the consuming task.
pub trait RebalanceListener: Send + Sync + 'static {
    /// Partitions were assigned, and will start where [`starts`](Assigned::starts) says.
    fn on_assigned(&self, assigned: &Assigned) {
        let _ = assigned;
    }
    /// Partitions were revoked, after kafka-kit tried to commit their processed offsets.
    fn on_revoked(&self, revoked: &Revoked) {
        let _ = revoked;
    }
    /// Partitions were lost: another member may already own them. Nothing was committed.
    fn on_lost(&self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }
}

/// What an assignment gave this consumer (already applied when the listener hears of it).
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct Assigned {
    /// Each new partition, where it starts, and why.
    pub starts: Vec<PartitionStart>,
}

/// What a revocation took from this consumer.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct Revoked {
    /// The partitions revoked.
    pub partitions: Vec<TopicPartition>,
    /// The processed offsets committed for them before they went, or why that commit failed (the
    /// new owner then reads those records again: at least once).
    pub committed: std::result::Result<CommitOffsets, String>,
    /// The offsets that commit sent, whether or not it succeeded: for each partition, the
    /// processed prefix (never past a record still in processing).
    pub offsets: CommitOffsets,
}

/// A Kafka consumer. See the [module documentation](self).
pub struct Consumer {
    inner: Arc<Inner>,
    /// Batches of records from the polling thread, and the rest of the current batch.
    receiver: mpsc::Receiver<Handover>,
    pending: VecDeque<ConsumerRecord>,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer").finish_non_exhaustive()
    }
}

impl Consumer {
    /// Starts building a consumer from a checked configuration.
    pub fn builder(config: &KafkaConfig) -> ConsumerBuilder {
        ConsumerBuilder::new(config)
    }

    /// The next record; `None` once the consumer has stopped (see [`StopAt`]).
    pub async fn recv(&mut self) -> Option<Result<ConsumerRecord>> {
        std::future::poll_fn(|cx| self.poll_record(cx)).await
    }

    /// The next current record of the batch at hand, or of the next batch.
    fn poll_record(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<ConsumerRecord>>> {
        loop {
            while let Some(record) = self.pending.pop_front() {
                if self.inner.shared.is_current(&record) {
                    return Poll::Ready(Some(Ok(record)));
                }
            }
            match self.receiver.poll_recv(cx) {
                Poll::Ready(Some(Ok(batch))) => self.pending = batch.into(),
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                // The polling thread ended: at the stop, or by a panic, which is the last item.
                Poll::Ready(None) => return Poll::Ready(self.inner.shared.take_ended().map(Err)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Commits the offset after `record`, synchronously: when it returns, the group resumes after
    /// this record.
    pub async fn commit(&self, record: &ConsumerRecord) -> Result<()> {
        let mut offsets = CommitOffsets::new();
        offsets.insert_after(record);
        self.commit_offsets(&offsets, CommitMode::Sync).await
    }

    /// Commits explicit next-to-read offsets, synchronously or asynchronously.
    ///
    /// A synchronous commit, like Java's `commitSync`, retries retriable errors (a rebalance in
    /// progress, a coordinator moving) for up to 10 s.
    pub async fn commit_offsets(&self, offsets: &CommitOffsets, mode: CommitMode) -> Result<()> {
        self.inner.commit(offsets.clone(), mode).await
    }

    /// Marks `record` processed: [`commit_processed`](Self::commit_processed) and revocations
    /// commit the offset after it. Marking a record of a partition no longer owned does nothing.
    pub fn mark_processed(&self, record: &ConsumerRecord) {
        self.inner.shared.state().mark_processed(record);
    }

    /// Commits every offset marked processed since the last commit.
    pub async fn commit_processed(&self, mode: CommitMode) -> Result<()> {
        let pending = self.inner.shared.state().pending_commits();
        self.inner.commit(pending, mode).await
    }

    /// The committed offsets of the assigned partitions.
    pub async fn committed(&self) -> Result<CommitOffsets> {
        let inner = self.inner.clone();
        crate::blocking(move || {
            let list = inner.consumer.committed(LOOKUP_TIMEOUT)?;
            let mut offsets = CommitOffsets::new();
            for e in list.elements() {
                if let Some(offset) = e.offset().to_raw().filter(|&o| o >= 0) {
                    offsets.insert(e.topic(), e.partition(), NextOffset::resume_at(offset));
                }
            }
            Ok(offsets)
        })
        .await
    }

    /// Moves owned partitions to these next-to-read offsets (to rewind, or to skip ahead).
    /// Records of them already buffered are dropped: the next record of each partition is read
    /// from its new position. Partitions not owned (any more) are left alone.
    ///
    /// The polling thread does the move between two polls, so this may wait up to 100 ms.
    pub async fn seek(&self, offsets: &CommitOffsets) -> Result<()> {
        let answer = self
            .inner
            .shared
            .request_seek(offsets.clone())
            .ok_or(Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// The group's metadata (group, generation, member id), to send with offsets in a
    /// transaction ([`TransactionalProducer::send_offsets`](crate::transaction::TransactionalProducer::send_offsets)).
    /// `None` for a consumer that is not in a group. Take it afresh for each transaction: it
    /// carries the current generation, and the broker refuses offsets of an older one.
    pub fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.inner.consumer.group_metadata()
    }

    /// The partitions assigned now.
    pub fn assignment(&self) -> Result<Vec<TopicPartition>> {
        let list = self.inner.consumer.assignment()?;
        Ok(list
            .elements()
            .iter()
            .map(|e| TopicPartition {
                topic: e.topic().to_owned(),
                partition: e.partition(),
            })
            .collect())
    }

    /// Each assigned partition's lag: its high watermark minus the group's committed offset.
    pub async fn lag(&self) -> Result<Vec<PartitionLag>> {
        let inner = self.inner.clone();
        crate::blocking(move || {
            let assignment = inner.consumer.assignment()?;
            lag::lag_of(&*inner.consumer, assignment)
        })
        .await
    }

    /// The client's statistics reports, as they come (needs
    /// [`statistics_interval`](crate::config::ConfigBuilder::statistics_interval)); they include
    /// the lag of each partition as this consumer sees it.
    pub fn client_stats(
        &self,
    ) -> futures_util::stream::BoxStream<'static, Arc<crate::monitoring::ClientStats>> {
        self.inner.shared.stats.subscribe()
    }

    /// Checks that the cluster answers, like kafka-python's `bootstrap_connected()`: the number of
    /// brokers it reports.
    pub async fn check_connection(&self, timeout: Duration) -> Result<usize> {
        let inner = self.inner.clone();
        crate::blocking(move || {
            Ok(inner
                .consumer
                .fetch_metadata(None, timeout)?
                .brokers()
                .len())
        })
        .await
    }

    /// The rdkafka consumer, for what kafka-kit doesn't wrap. Don't poll it: the polling thread
    /// does.
    pub fn rdkafka(&self) -> &BaseConsumer<impl ConsumerContext> {
        &*self.inner.consumer
    }

    /// Stops polling, commits what was marked processed, and leaves the group.
    ///
    /// Returns within the revoke timeout plus a second, whatever the cluster does: a commit or a
    /// close still waiting for an unreachable coordinator then goes on in the background.
    /// Dropping a consumer closes it the same way, blocking the dropping thread for as long.
    pub async fn close(self) -> Result<()> {
        let Consumer {
            inner, receiver, ..
        } = self;
        let deadline = inner.close_deadline();
        // Commit while the polling thread still serves rebalances, so that a commit racing one
        // can be retried once the group has settled.
        let pending = inner.shared.state().pending_commits();
        let committed =
            tokio::time::timeout_at(deadline.into(), inner.commit(pending, CommitMode::Sync))
                .await
                .unwrap_or_else(|_| {
                    Err(Error::Kafka(KafkaError::ConsumerCommit(
                        RDKafkaErrorCode::OperationTimedOut,
                    )))
                });
        drop(receiver);
        crate::blocking(move || {
            inner.stop_polling_by(deadline);
            if Arc::strong_count(&inner) == 1 {
                *crate::lock(&inner.deadline) = Some(deadline);
            }
            // The last handle closes librdkafka's consumer: its revoke commits anything marked
            // since, and it leaves the group.
            drop(inner);
            Ok(())
        })
        .await?;
        committed
    }

    pub(crate) fn handle(&self) -> ConsumerHandle {
        ConsumerHandle {
            inner: self.inner.clone(),
        }
    }
}

impl Stream for Consumer {
    type Item = Result<ConsumerRecord>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_record(cx)
    }
}

/// What a processing loop needs of a consumer besides its records.
#[derive(Clone)]
pub(crate) struct ConsumerHandle {
    inner: Arc<Inner>,
}

/// A [`ConsumerHandle`] that does not keep the consumer open.
#[derive(Clone)]
pub(crate) struct WeakHandle(std::sync::Weak<Inner>);

impl WeakHandle {
    pub(crate) fn upgrade(&self) -> Option<ConsumerHandle> {
        Some(ConsumerHandle {
            inner: self.0.upgrade()?,
        })
    }
}

impl ConsumerHandle {
    pub(crate) fn downgrade(&self) -> WeakHandle {
        WeakHandle(Arc::downgrade(&self.inner))
    }

    pub(crate) fn is_current(&self, record: &ConsumerRecord) -> bool {
        self.inner.shared.is_current(record)
    }

    pub(crate) fn owns(&self, topic: &str, partition: i32) -> bool {
        self.inner.shared.state().owns(topic, partition)
    }

    /// Takes `record` for processing until the returned guard is finished or dropped: a revoke
    /// of its partition waits for it (up to the revoke timeout), and commits never pass it
    /// until it is finished as done. A processing task cancelled midway gives it up all the same.
    pub(crate) fn start(&self, record: Arc<ConsumerRecord>) -> InFlight {
        self.inner.shared.state().take_record(&record);
        InFlight {
            handle: self.clone(),
            record,
            settled: false,
        }
    }

    /// Asks the polling thread to stop fetching a partition (a key has too much waiting).
    pub(crate) fn hold_back(&self, topic: &str, partition: i32) {
        self.inner.shared.state().hold_back(topic, partition);
    }

    /// Ends one [`hold_back`](Self::hold_back).
    pub(crate) fn let_go(&self, topic: &str, partition: i32) {
        self.inner.shared.state().let_go(topic, partition);
    }

    /// Each owned partition's commit point (see [`CommitOffsets`]): what a commit would send now.
    pub(crate) fn commit_points(&self) -> CommitOffsets {
        self.inner.shared.state().commit_points()
    }

    /// Work on this partition is under way until the returned guard drops: a revoke waits for
    /// it (up to the revoke timeout).
    pub(crate) fn hold(&self, topic: &str, partition: i32) -> PartitionHold {
        self.inner.shared.state().hold(topic, partition);
        PartitionHold {
            handle: self.clone(),
            topic: topic.to_owned(),
            partition,
        }
    }

    /// Whether offsets of this partition may still be committed: it is owned, or being revoked
    /// (and the revoke waits for its work).
    pub(crate) fn may_commit(&self, topic: &str, partition: i32) -> bool {
        self.inner.shared.state().may_commit(topic, partition)
    }

    pub(crate) fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.inner.consumer.group_metadata()
    }

    /// Whether a revoke is waiting for work to finish.
    pub(crate) fn revoke_pending(&self) -> bool {
        self.inner.shared.state().revoke_pending()
    }

    /// Completes when a revoke starts (or spuriously: check [`revoke_pending`](Self::revoke_pending)).
    pub(crate) async fn revoke_started(&self) {
        self.inner.shared.revoke_started.notified().await;
    }

    pub(crate) async fn commit_processed(&self, mode: CommitMode) -> Result<()> {
        let pending = self.inner.shared.state().pending_commits();
        self.inner.commit(pending, mode).await
    }
}

/// A hold on a partition, released when dropped; see [`ConsumerHandle::hold`].
pub(crate) struct PartitionHold {
    handle: ConsumerHandle,
    topic: String,
    partition: i32,
}

impl Drop for PartitionHold {
    fn drop(&mut self) {
        self.handle
            .inner
            .shared
            .release(&self.topic, self.partition);
    }
}

/// A record being processed; see [`ConsumerHandle::start`].
pub(crate) struct InFlight {
    handle: ConsumerHandle,
    record: Arc<ConsumerRecord>,
    settled: bool,
}

impl InFlight {
    /// The record.
    pub(crate) fn record(&self) -> &Arc<ConsumerRecord> {
        &self.record
    }

    /// Ends processing: `done` (processed or dead-lettered: commits may pass it) or given up.
    pub(crate) fn finish(mut self, done: bool) {
        self.settle(done);
    }

    fn settle(&mut self, done: bool) {
        if !std::mem::replace(&mut self.settled, true) {
            let shared = &self.handle.inner.shared;
            shared.state().finish(&self.record, done);
            shared.notify_finished();
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.settle(false);
    }
}
