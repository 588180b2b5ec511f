//! The librdkafka client and who serves its delivery reports: a sender, inline, while it is busy
//! sending, and otherwise the polling thread.
//!
//! librdkafka allocates every message on the thread that sends it and frees it on the thread that
//! serves its delivery report. With reports served on a thread of their own (rdkafka's
//! `ThreadedProducer`), each message is freed across threads, and the two threads contend on
//! librdkafka's queue locks: that costs about a third more CPU per message than a loop that sends
//! and polls on one thread. So a busy sender serves the reports itself, every
//! [`SERVE_EVERY`] sends, and the polling thread steps aside while it does; when the sender slows
//! down or stops, the polling thread takes over within a millisecond or two. One mutex makes sure
//! only one thread serves at a time, so reports (and callbacks) still come one at a time, in order.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, Producer as _, PurgeConfig};

use super::delivery::{Counter, KitContext};
use super::rdkafka_timeout;
use crate::partitioner::Md5Partitioner;

/// A sender serves delivery reports once every this many sends.
pub(super) const SERVE_EVERY: u64 = 64;

/// How long the polling thread waits for reports at a time while nobody sends.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// How long it waits at a time while senders are busy but not serving (a slow sender).
const BUSY_POLL: Duration = Duration::from_millis(1);

/// How long a close waits for the reports of the messages it purged.
const PURGED_REPORTS: Duration = Duration::from_millis(500);

/// The client, and the right to serve its reports.
pub(super) struct Client<C: Send + 'static> {
    pub(super) producer: BaseProducer<KitContext<C>, Md5Partitioner>,
    /// Held by whoever serves delivery reports.
    serving: Mutex<()>,
    /// Reports served inline by senders, and the times a sender wanted to but found the polling
    /// thread serving: how the polling thread knows to step aside.
    served_inline: Counter,
    wanted_inline: Counter,
    stop: AtomicBool,
}

impl<C: Send + 'static> Client<C> {
    /// Wraps `producer` and starts its polling thread, which stops with [`Client::stop`].
    pub(super) fn start(
        producer: BaseProducer<KitContext<C>, Md5Partitioner>,
    ) -> std::io::Result<Arc<Self>> {
        let client = Arc::new(Client {
            producer,
            serving: Mutex::new(()),
            served_inline: Counter::default(),
            wanted_inline: Counter::default(),
            stop: AtomicBool::new(false),
        });
        let polling = client.clone();
        std::thread::Builder::new()
            .name("kafka-kit-producer".into())
            .spawn(move || polling.poll_until_stopped())?;
        Ok(client)
    }

    /// Serves the reports that are ready, if no other thread is serving: what a sender calls
    /// every [`SERVE_EVERY`] sends, and when the queue is full.
    pub(super) fn serve_inline(&self) {
        match self.serving.try_lock() {
            Ok(lock) => {
                let _serving = Serving::on_this_thread(self, lock);
                self.producer.poll(Duration::ZERO);
                self.served_inline.add();
            }
            Err(_) => {
                self.wanted_inline.add();
            }
        }
    }

    /// Asks librdkafka to send the batches that are still lingering. It serves nothing:
    /// rdkafka's `flush` with no timeout returns before it would poll.
    pub(super) fn nudge(&self) {
        let _ = self.producer.flush(Duration::ZERO);
    }

    /// Stops the polling thread (within one poll) and serves what is left here: it waits up to
    /// `timeout` for the messages in flight, then purges the rest, whose failures still reach their
    /// futures and callbacks. A polling thread stuck in a delivery callback past `timeout` is left
    /// to finish on its own, and the client goes with it.
    pub(super) fn stop(&self, timeout: Duration) {
        self.stop.store(true, Ordering::Release);
        if SERVING.with(Cell::get) == self.address() {
            // Dropped from a delivery callback: this thread is the one serving, and cannot wait
            // for itself. The polling thread ends after this poll, and the client with it.
            tracing::debug!(
                "kafka_kit: producer dropped in a delivery callback; closing without waiting"
            );
            return;
        }
        let deadline = crate::deadline(timeout);
        // The polling thread lets go at the end of its current poll (at most `IDLE_POLL`), unless a
        // callback holds it longer.
        let serving_by = crate::deadline(timeout.saturating_add(IDLE_POLL));
        let _serving = loop {
            match self.serving.try_lock() {
                Ok(lock) => break Serving::on_this_thread(self, lock),
                Err(_) if Instant::now() >= serving_by => {
                    tracing::warn!(
                        undelivered = self.producer.in_flight_count(),
                        "kafka_kit: a delivery callback held the producer's polling thread past the close timeout; the producer is left to it"
                    );
                    return;
                }
                Err(_) => {
                    // A bounded wait for the polling thread's current poll to end.
                    #[allow(clippy::disallowed_methods)]
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        };
        if self.producer.in_flight_count() == 0 {
            return;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = self.producer.flush(rdkafka_timeout(remaining)) {
            tracing::warn!(
                undelivered = self.producer.in_flight_count(),
                error = %e,
                "kafka_kit: producer dropped before every message was delivered; the rest are purged and reported as failed"
            );
            self.producer
                .purge(PurgeConfig::default().queue().inflight());
            // The purged messages' reports are ready at once: serve them.
            let _ = self.producer.flush(PURGED_REPORTS);
        }
    }

    /// This client's address, which tells it apart while it lives.
    fn address(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    fn poll_until_stopped(&self) {
        let mut served = self.served_inline.get();
        let mut wanted = self.wanted_inline.get();
        let mut busy = false;
        while !self.stop.load(Ordering::Acquire) {
            let (served_now, wanted_now) = (self.served_inline.get(), self.wanted_inline.get());
            if served_now != served || wanted_now != wanted {
                // A sender is serving, or wants to: step aside for a millisecond, and look again.
                // The thread's own pause: it holds nothing the application waits for.
                (served, wanted) = (served_now, wanted_now);
                busy = true;
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(BUSY_POLL);
                continue;
            }
            let _serving = Serving::on_this_thread(self, crate::lock(&self.serving));
            // Short polls while senders were just active, so that they can take over quickly.
            self.producer.poll(if busy { BUSY_POLL } else { IDLE_POLL });
            busy = self.wanted_inline.get() != wanted;
        }
    }
}

thread_local! {
    /// The client whose delivery reports this thread is serving (and so whose callbacks it may
    /// be running), by address; 0 when none.
    static SERVING: Cell<usize> = const { Cell::new(0) };
}

/// The right to serve a client's reports, held by this thread.
struct Serving<'a> {
    _lock: MutexGuard<'a, ()>,
    /// What `SERVING` was before (a callback of one client may send with another).
    outer: usize,
}

impl<'a> Serving<'a> {
    fn on_this_thread<C: Send + 'static>(client: &Client<C>, lock: MutexGuard<'a, ()>) -> Self {
        let outer = SERVING.with(|serving| serving.replace(client.address()));
        Serving { _lock: lock, outer }
    }
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        SERVING.with(|serving| serving.set(self.outer));
    }
}
