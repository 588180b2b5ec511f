//! The rdkafka context: rebalances are decided here, on the polling thread. Every hook of the
//! application runs under `catch_panic`, and the assignment is applied whatever the hooks do.

use std::sync::Arc;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, RebalanceProtocol,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::poll::{Shared, LOOKUP_TIMEOUT};
use super::replay::{self, PartitionStart, StartAt, StartReason};
use super::{
    Assigned, CheckpointStore, CommitOffsets, OffsetReset, RebalanceListener, Revoked,
    TopicPartition,
};
use crate::error::{catch_panic, Error, Result};

/// The rdkafka context: rebalances are decided here, on the polling thread.
pub(super) struct KitContext {
    pub(super) shared: Arc<Shared>,
    pub(super) start_at: StartAt,
    pub(super) offset_reset: OffsetReset,
    pub(super) checkpoints: Option<Arc<dyn CheckpointStore>>,
    pub(super) listener: Option<Arc<dyn RebalanceListener>>,
}

impl ClientContext for KitContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.shared.stats.publish(statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        use rdkafka::error::RDKafkaErrorCode::PartitionEOF;
        match error.rdkafka_error_code() {
            // The end of a partition is news for a bounded replay, not an error.
            Some(PartitionEOF) => tracing::debug!(reason, "kafka_kit: end of partition"),
            _ => tracing::error!(error = %error, reason, "kafka_kit: consumer error"),
        }
    }
}

impl KitContext {
    /// Runs a listener hook; a panic in it reaches the application as an error on the stream.
    fn hook(&self, name: &'static str, call: impl FnOnce(&dyn RebalanceListener)) {
        if let Some(listener) = &self.listener {
            if let Err(e) = catch_panic(name, || call(&**listener)) {
                self.shared.report(e);
            }
        }
    }

    /// Decides where newly assigned `partitions` start: a checkpoint, else `start_at`. If that
    /// cannot be decided (a lookup failed, the checkpoint store failed or panicked), they start
    /// at the committed offsets rather than stall the group.
    fn starts(
        &self,
        consumer: &BaseConsumer<KitContext>,
        partitions: &[(String, i32)],
    ) -> Vec<PartitionStart> {
        let checkpoint = |topic: &str, partition: i32| match &self.checkpoints {
            Some(store) => store.load(topic, partition),
            None => Ok(None),
        };
        let by_time = |asked: &[(String, i32)], time: i64| -> KafkaResult<Vec<Option<i64>>> {
            let mut list = TopicPartitionList::with_capacity(asked.len());
            for (topic, partition) in asked {
                list.add_partition_offset(topic, *partition, Offset::Offset(time))?;
            }
            let found = consumer.offsets_for_times(list, LOOKUP_TIMEOUT)?;
            Ok(asked
                .iter()
                .map(|(t, p)| {
                    found
                        .find_partition(t, *p)
                        .and_then(|e| e.offset().to_raw())
                })
                .collect())
        };
        let decided = catch_panic("CheckpointStore::load", || {
            replay::start_offsets(partitions, self.start_at, checkpoint, by_time)
        });
        let error = match decided {
            Ok(Ok(starts)) => return starts,
            Ok(Err(replay::StartError::Checkpoint(e))) => Error::Checkpoint(e),
            Ok(Err(replay::StartError::Lookup(e))) => Error::Kafka(e),
            Err(panicked) => panicked,
        };
        tracing::error!(error = %error, "kafka_kit: could not decide starting offsets; using the committed ones");
        if error.ends_processing() {
            self.shared.report(error);
        }
        partitions
            .iter()
            .map(|(topic, partition)| PartitionStart {
                topic: topic.clone(),
                partition: *partition,
                offset: Offset::Stored,
                reason: StartReason::Fallback,
            })
            .collect()
    }

    /// Decides where `partitions` start, assigns them with `assign`, then tells the listener.
    pub(super) fn assign(
        &self,
        consumer: &BaseConsumer<KitContext>,
        partitions: &[(String, i32)],
        assign: impl FnOnce(&TopicPartitionList) -> KafkaResult<()>,
    ) -> KafkaResult<()> {
        let starts = self.starts(consumer, partitions);
        let mut list = TopicPartitionList::with_capacity(starts.len());
        for start in &starts {
            // Cannot fail: a plain, special or absolute offset.
            let _ = list.add_partition_offset(&start.topic, start.partition, start.offset);
            tracing::info!(topic = %start.topic, partition = start.partition, offset = ?start.offset,
                reason = ?start.reason, "kafka_kit: partition assigned");
        }
        let paused = self
            .shared
            .state()
            .assign(starts.iter().map(|s| (s.topic.as_str(), s.partition)));
        if paused {
            let _ = consumer.pause(&list);
        }
        assign(&list)?;
        self.hook("RebalanceListener::on_assigned", |l| {
            l.on_assigned(&Assigned { starts });
        });
        Ok(())
    }

    /// Takes revoked (or lost) partitions away, before librdkafka unassigns them: waits (up to
    /// the revoke timeout) for their records in processing, commits what was processed, then
    /// tells the listener. A lost partition commits nothing.
    fn revoke(
        &self,
        consumer: &BaseConsumer<KitContext>,
        partitions: &[(String, i32)],
        lost: bool,
    ) {
        let shared = &self.shared;
        shared.state().begin_revoke(partitions, lost);
        shared.revoke_started.notify_one();
        let listed: Vec<TopicPartition> = partitions
            .iter()
            .map(|(topic, partition)| TopicPartition {
                topic: topic.clone(),
                partition: *partition,
            })
            .collect();
        if lost {
            tracing::warn!(partitions = ?listed, "kafka_kit: partitions lost; their processed offsets were not committed");
            self.hook("RebalanceListener::on_lost", |l| l.on_lost(&listed));
            return;
        }
        if !shared.wait_for_in_flight(partitions) {
            tracing::warn!(partitions = ?listed, timeout = ?shared.revoke_timeout,
                "kafka_kit: records of revoked partitions still processing; committing what is done");
        }
        let to_commit = shared.state().revoke_commits(partitions);
        let result = commit_offsets(
            consumer,
            self.checkpoints.as_deref(),
            &to_commit,
            CommitMode::Sync,
        );
        shared.state().end_revoke(partitions);
        let committed = match result {
            Ok(()) => {
                tracing::info!(partitions = ?listed, committed = ?to_commit, "kafka_kit: partitions revoked");
                Ok(to_commit.clone())
            }
            Err(e) => {
                tracing::warn!(partitions = ?listed, error = %e, offsets = ?to_commit,
                    "kafka_kit: partitions revoked, but their processed offsets could not be committed: the new owner reads those records again");
                let text = e.to_string();
                if e.ends_processing() {
                    shared.report(e);
                }
                Err(text)
            }
        };
        self.hook("RebalanceListener::on_revoked", |l| {
            l.on_revoked(&Revoked {
                partitions: listed,
                committed,
                offsets: to_commit,
            });
        });
    }
}

impl ConsumerContext for KitContext {
    /// Every commit's result, synchronous or not: confirmed offsets are recorded, so that only
    /// what is above them is sent again.
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => record_committed(&self.shared, offsets),
            Err(error) => {
                tracing::warn!(error = %error, "kafka_kit: commit failed; the next commit sends its offsets again");
            }
        }
    }

    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assign(consumer, &partitions, |list| {
                    if cooperative {
                        consumer.incremental_assign(list)
                    } else {
                        consumer.assign(list)
                    }
                })
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoke(consumer, &partitions, consumer.assignment_lost());
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::error!(error = ?other, "kafka_kit: rebalance error; unassigning");
                self.revoke(consumer, &partitions, true);
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "kafka_kit: could not apply the rebalance");
        }
    }
}

fn record_committed(shared: &Shared, offsets: &TopicPartitionList) {
    let elements = offsets.elements();
    shared.state().record_committed(
        elements
            .iter()
            .filter_map(|e| Some((e.topic(), e.partition(), e.offset().to_raw()?))),
    );
}

/// Commits `offsets` and saves them as checkpoints (a panicking store is an error).
pub(super) fn commit_offsets(
    consumer: &BaseConsumer<KitContext>,
    checkpoints: Option<&dyn CheckpointStore>,
    offsets: &CommitOffsets,
    mode: CommitMode,
) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let list = offsets.to_list();
    consumer.commit(&list, mode)?;
    if let CommitMode::Sync = mode {
        record_committed(&consumer.context().shared, &list);
    }
    if let Some(store) = checkpoints {
        let saved: Vec<(&str, i32, i64)> =
            offsets.iter().map(|(t, p, o)| (t, p, o.get())).collect();
        catch_panic("CheckpointStore::save", || store.save(&saved))??;
    }
    Ok(())
}
