//! Where reading starts and stops: committed offsets, checkpoints, the beginning, the end, or a time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::Offset;

use crate::consumer::checkpoint::CheckpointError;

/// Where a consumer starts reading a partition when it is assigned one. A checkpoint saved in the
/// consumer's [`CheckpointStore`](crate::consumer::CheckpointStore) wins over this.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartAt {
    /// The group's committed offset, or `auto.offset.reset` where there is none.
    #[default]
    Committed,
    /// The oldest record the partition holds.
    Beginning,
    /// Only records produced from now on.
    End,
    /// The first record whose timestamp is at or after this many milliseconds since the Unix
    /// epoch; the end of the partition where there is none. Resolved when the partition is
    /// assigned, never before.
    Time(i64),
}

impl StartAt {
    /// The first record at or after `time`.
    pub fn time(time: SystemTime) -> Self {
        StartAt::Time(millis(time))
    }

    /// The first record of the last `window` (e.g. the last five minutes).
    pub fn ago(window: Duration) -> Self {
        StartAt::time(SystemTime::now().checked_sub(window).unwrap_or(UNIX_EPOCH))
    }
}

/// Where a consumer stops handing out a partition's records; when every assigned partition has
/// stopped, its stream ends. With a stop time in the past, a partition that has nothing left to
/// read stops too (there can be nothing before the stop any more); with a stop offset, a
/// partition stops only when it reaches the offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopAt {
    /// Before the first record whose timestamp is after this many milliseconds since the epoch.
    Time(i64),
    /// Before this offset (exclusive) in every partition.
    Offset(i64),
}

impl StopAt {
    /// Before the first record after `time`.
    pub fn time(time: SystemTime) -> Self {
        StopAt::Time(millis(time))
    }

    /// Whether a record at `offset` with `timestamp` (milliseconds) is past the stop.
    pub(crate) fn is_past(self, offset: i64, timestamp: Option<i64>) -> bool {
        match self {
            StopAt::Time(stop) => timestamp.is_some_and(|t| t > stop),
            StopAt::Offset(stop) => offset >= stop,
        }
    }
}

pub(crate) use crate::unix_millis as millis;

/// Where a newly assigned partition starts, and why.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionStart {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The starting offset; `Offset::Stored` is the group's committed offset (or
    /// `auto.offset.reset` without one), and `Offset::End`/`Beginning` are looked up by librdkafka
    /// when fetching starts.
    pub offset: Offset,
    /// Why it starts there.
    pub reason: StartReason,
}

/// Why a partition starts where it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartReason {
    /// A checkpoint saved in the consumer's checkpoint store.
    Checkpoint,
    /// [`StartAt::Committed`].
    Committed,
    /// [`StartAt::Beginning`].
    Beginning,
    /// [`StartAt::End`].
    End,
    /// [`StartAt::Time`]: the first record at or after the time.
    Time,
    /// [`StartAt::Time`], but the partition has no record at or after the time: its end.
    NoRecordAfterTime,
    /// The starting positions could not be decided (a checkpoint store or the time lookup
    /// failed): the group's committed offset, rather than stall the group.
    Fallback,
}

/// Decides where each newly assigned partition starts: a saved checkpoint first, then `start_at`.
/// Partitions that start at a time are looked up together through `offsets_for_time`, which
/// answers, for each, the first offset at or after the time, or `None`/a negative offset when the
/// partition has no such record (it then starts at the end).
pub(crate) fn start_offsets<E>(
    partitions: &[(String, i32)],
    start_at: StartAt,
    checkpoint: impl Fn(&str, i32) -> Result<Option<i64>, CheckpointError>,
    offsets_for_time: impl FnOnce(&[(String, i32)], i64) -> Result<Vec<Option<i64>>, E>,
) -> Result<Vec<PartitionStart>, StartError<E>> {
    let mut starts = Vec::with_capacity(partitions.len());
    let mut by_time = Vec::new();
    for (topic, partition) in partitions {
        let (offset, reason) =
            match checkpoint(topic, *partition).map_err(StartError::Checkpoint)? {
                Some(offset) => (Offset::Offset(offset), StartReason::Checkpoint),
                None => match start_at {
                    StartAt::Committed => (Offset::Stored, StartReason::Committed),
                    StartAt::Beginning => (Offset::Beginning, StartReason::Beginning),
                    StartAt::End => (Offset::End, StartReason::End),
                    StartAt::Time(_) => {
                        by_time.push(starts.len());
                        (Offset::End, StartReason::Time)
                    }
                },
            };
        starts.push(PartitionStart {
            topic: topic.clone(),
            partition: *partition,
            offset,
            reason,
        });
    }
    if let (StartAt::Time(time), false) = (start_at, by_time.is_empty()) {
        let asked: Vec<(String, i32)> = by_time
            .iter()
            .map(|&i| (starts[i].topic.clone(), starts[i].partition))
            .collect();
        let found = offsets_for_time(&asked, time).map_err(StartError::Lookup)?;
        for (&i, offset) in by_time.iter().zip(found) {
            if let Some(offset) = offset.filter(|&o| o >= 0) {
                starts[i].offset = Offset::Offset(offset);
            } else {
                starts[i].reason = StartReason::NoRecordAfterTime;
            }
        }
    }
    Ok(starts)
}

/// Why starting positions could not be decided.
#[derive(Debug)]
pub(crate) enum StartError<E> {
    Checkpoint(CheckpointError),
    Lookup(E),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(n: i32) -> Vec<(String, i32)> {
        (0..n).map(|p| ("events".to_string(), p)).collect()
    }

    #[test]
    fn checkpoints_win_then_start_at_applies() {
        let starts = start_offsets::<()>(
            &parts(3),
            StartAt::Beginning,
            |_, p| Ok((p == 1).then_some(42)),
            |_, _| panic!("no time lookup without StartAt::Time"),
        )
        .unwrap();
        let offsets: Vec<Offset> = starts.iter().map(|s| s.offset).collect();
        assert_eq!(
            offsets,
            [Offset::Beginning, Offset::Offset(42), Offset::Beginning]
        );
        assert_eq!(starts[1].reason, StartReason::Checkpoint);
    }

    #[test]
    fn time_lookup_is_one_call_and_partitions_without_later_records_start_at_the_end() {
        let mut calls = 0;
        let starts = start_offsets::<()>(
            &parts(4),
            StartAt::Time(1_000),
            |_, p| Ok((p == 0).then_some(7)),
            |asked, time| {
                calls += 1;
                assert_eq!(time, 1_000);
                // Partition 0 has a checkpoint, so it is not asked about.
                assert_eq!(asked.iter().map(|a| a.1).collect::<Vec<_>>(), [1, 2, 3]);
                Ok(vec![Some(15), None, Some(-1)])
            },
        )
        .unwrap();
        assert_eq!(calls, 1);
        let offsets: Vec<Offset> = starts.iter().map(|s| s.offset).collect();
        assert_eq!(
            offsets,
            [
                Offset::Offset(7),
                Offset::Offset(15),
                Offset::End,
                Offset::End
            ]
        );
    }

    #[test]
    fn committed_start_defers_to_the_group() {
        let starts = start_offsets::<()>(
            &parts(1),
            StartAt::Committed,
            |_, _| Ok(None),
            |_, _| Ok(vec![]),
        )
        .unwrap();
        assert_eq!(starts[0].offset, Offset::Stored);
    }

    #[test]
    fn lookup_failures_are_reported() {
        let result = start_offsets(
            &parts(1),
            StartAt::Time(5),
            |_, _| Ok(None),
            |_, _| Err("no broker"),
        );
        assert!(matches!(result, Err(StartError::Lookup("no broker"))));
    }

    #[test]
    fn stop_rules() {
        assert!(StopAt::Offset(10).is_past(10, None) && !StopAt::Offset(10).is_past(9, None));
        assert!(
            StopAt::Time(100).is_past(0, Some(101)) && !StopAt::Time(100).is_past(0, Some(100))
        );
        assert!(!StopAt::Time(100).is_past(0, None));
        assert_eq!(millis(UNIX_EPOCH - Duration::from_millis(5)), -5);
    }
}
