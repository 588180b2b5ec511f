//! Which records of a partition a processing loop has taken and which it has finished, so that
//! a commit never passes a record that is not done, whatever order records finish in.
//!
//! A loop that processes many records at once (several keys of one partition in parallel)
//! finishes them out of order: offset 7 may be done while offset 5 still waits on a slow call.
//! Committing 8 then would skip 5 after a crash. The partition's commit point is therefore the
//! first record taken and not done, or, when all are done, the one after the last.

use std::collections::VecDeque;

/// The records of one partition taken by a processing loop, in the order taken (offset order).
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    /// Taken and not yet settled, oldest first; done records at the front are dropped at once,
    /// so the front, if any, is the first record not done.
    records: VecDeque<Taken>,
}

#[derive(Debug)]
struct Taken {
    offset: i64,
    /// The consumer generation the record was fetched in: a record of an earlier ownership of
    /// the partition never settles one of the current one that has the same offset.
    generation: u64,
    done: bool,
}

impl Tracker {
    /// A record was taken for processing.
    pub(crate) fn take(&mut self, offset: i64, generation: u64) {
        self.records.push_back(Taken {
            offset,
            generation,
            done: false,
        });
    }

    /// A taken record was finished: processed (or dead-lettered) if `done`, else given up (its
    /// partition went, the loop stopped): then it stays, and commits never pass it.
    pub(crate) fn finish(&mut self, offset: i64, generation: u64, done: bool) {
        // Offsets are taken in increasing order: search; a rewind can break the order, so fall
        // back to a scan.
        let found = match self.records.binary_search_by_key(&offset, |t| t.offset) {
            Ok(i) if self.records[i].generation == generation => Some(i),
            _ => self
                .records
                .iter()
                .position(|t| t.offset == offset && t.generation == generation),
        };
        let Some(i) = found else {
            return; // an earlier ownership's record: nothing of the current one
        };
        if done {
            self.records[i].done = true;
        }
        while self.records.front().is_some_and(|t| t.done) {
            self.records.pop_front();
        }
    }

    /// The first record taken and not done: no commit of the partition may pass it.
    pub(crate) fn first_unfinished(&self) -> Option<i64> {
        self.records.front().map(|t| t.offset)
    }

    /// Whether nothing is taken and unsettled.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_point_waits_for_the_first_record_not_done() {
        let mut tracker = Tracker::default();
        for offset in 5..10 {
            tracker.take(offset, 1);
        }
        assert_eq!(tracker.first_unfinished(), Some(5));
        tracker.finish(7, 1, true);
        tracker.finish(6, 1, true);
        assert_eq!(tracker.first_unfinished(), Some(5));
        tracker.finish(5, 1, true);
        assert_eq!(tracker.first_unfinished(), Some(8));
        tracker.finish(9, 1, true);
        tracker.finish(8, 1, true);
        assert_eq!(tracker.first_unfinished(), None);
        assert!(tracker.is_empty());
    }

    #[test]
    fn a_record_given_up_blocks_the_commit_point_for_good() {
        let mut tracker = Tracker::default();
        tracker.take(1, 1);
        tracker.take(2, 1);
        tracker.finish(1, 1, false);
        tracker.finish(2, 1, true);
        assert_eq!(tracker.first_unfinished(), Some(1));
    }

    #[test]
    fn records_of_another_generation_or_unknown_offsets_settle_nothing() {
        let mut tracker = Tracker::default();
        tracker.take(3, 2);
        tracker.finish(3, 1, true);
        tracker.finish(4, 2, true);
        assert_eq!(tracker.first_unfinished(), Some(3));
        // After a rewind offsets repeat out of order: found all the same.
        tracker.take(1, 3);
        tracker.finish(1, 3, true);
        tracker.finish(3, 2, true);
        assert!(tracker.is_empty());
    }
}
