//! [`ProducerBuilder`]: the options of a [`Producer`], and the client's creation.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::BaseProducer;

use super::client::Client;
use super::delivery::{Handled, Handler, KitContext, Shared};
use super::{Inner, Producer};
use crate::config::KafkaConfig;
use crate::error::Result;
use crate::partitioner::{Md5Partitioner, Partitioning};

/// Builds a [`Producer`].
#[must_use = "a builder does nothing until `build()` is called"]
pub struct ProducerBuilder<C = ()> {
    pub(super) config: KafkaConfig,
    pub(super) partitioning: Partitioning,
    pub(super) queue_full_timeout: Duration,
    pub(super) close_timeout: Duration,
    pub(super) handler: Option<Handler<C>>,
    pub(super) _context: PhantomData<fn() -> C>,
}

impl<C> fmt::Debug for ProducerBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerBuilder")
            .field("config", &self.config)
            .field("partitioning", &self.partitioning)
            .field("queue_full_timeout", &self.queue_full_timeout)
            .field("close_timeout", &self.close_timeout)
            .field("on_delivery", &self.handler.is_some())
            .finish()
    }
}

impl<C> ProducerBuilder<C> {
    /// The configuration the producer will be created with.
    pub(crate) fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Replaces the configuration (a builder that wraps this one adds its properties).
    pub(crate) fn with_config(mut self, config: KafkaConfig) -> Self {
        self.config = config;
        self
    }
}

impl<C: Send + 'static> ProducerBuilder<C> {
    /// How messages without an explicit partition are routed (default: [`Partitioning::Md5`]).
    pub fn partitioning(mut self, partitioning: Partitioning) -> Self {
        self.partitioning = partitioning;
        self
    }

    /// How long a send waits for room when the local queue is full before it fails and hands the
    /// message back (default 30 s). Zero is allowed and fails at once, without waiting: for callers
    /// that would rather retry or shed load themselves. `Duration::MAX` waits with no deadline.
    pub fn queue_full_timeout(mut self, timeout: Duration) -> Self {
        self.queue_full_timeout = timeout;
        self
    }

    /// How long [`Producer::close`], and dropping the producer, wait for messages in flight
    /// (default 30 s). Zero is allowed: `close` then only reports whether anything was still in
    /// flight, and dropping purges at once (the purged messages' results still reach their futures
    /// and callbacks). `Duration::MAX`, or anything above librdkafka's limit of `i32::MAX`
    /// milliseconds (about 24.8 days), waits with no deadline. Dropping takes up to 0.6 s more:
    /// the polling thread's current poll ends (up to 0.1 s), and the purged messages' reports are
    /// handed out (up to 0.5 s).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// The producer's delivery handler: called with the report of every record sent with
    /// [`Producer::send_to_handler`], with the record's context, and with nothing to allocate or
    /// copy per message (the report is borrowed: a [`Delivered`](super::Delivered)). The fastest
    /// way to handle each message's result; [`Producer::send_with_callback`] takes a closure per
    /// message instead, which costs an allocation and an owned report per message.
    ///
    /// It runs where delivery reports are served: on the producer's polling thread, or inline in
    /// a send while the sender is busy. Keep it short. A panic in it is caught and logged.
    pub fn on_delivery<F>(mut self, handler: F) -> Self
    where
        F: Fn(Handled<'_, C>) + Send + Sync + 'static,
    {
        self.handler = Some(Box::new(handler));
        self
    }

    /// Creates the producer.
    pub fn build(self) -> Result<Producer<C>> {
        let (config, partitioner) = match self.partitioning.librdkafka_name() {
            None => {
                let mut extra = Vec::new();
                // librdkafka hands keyless messages to a custom partitioner only without sticky
                // partitioning; keep the user's choice if they made one.
                if self.config.get("sticky.partitioning.linger.ms").is_none() {
                    extra.push(("sticky.partitioning.linger.ms", "0"));
                }
                // rdkafka 0.39 installs a custom partitioner on librdkafka's default topic
                // configuration, which exists only once a topic-level property is set: without
                // one it dereferences NULL. Setting librdkafka's own default makes sure it exists.
                if self.config.get("message.timeout.ms").is_none()
                    && self.config.get("delivery.timeout.ms").is_none()
                {
                    extra.push(("message.timeout.ms", "300000"));
                }
                (self.config.with(extra)?, Some(Md5Partitioner::new()))
            }
            Some(name) => (self.config.with([("partitioner", name)])?, None),
        };
        let context = KitContext {
            partitioner,
            forget: Arc::new(std::sync::Mutex::new(super::delivery::Completion::Forget)),
            handler: self.handler,
            shared: Shared::default(),
            _context: PhantomData,
        };
        let producer: BaseProducer<KitContext<C>, Md5Partitioner> =
            config.to_client_config().create_with_context(context)?;
        let client = Client::start(producer).map_err(|e| {
            KafkaError::ClientCreation(format!("could not start the polling thread: {e}"))
        })?;
        tracing::debug!(bootstrap = config.bootstrap_servers(), partitioning = ?self.partitioning, "kafka_kit: producer created");
        Ok(Producer {
            inner: Arc::new(Inner {
                client,
                queue_full_timeout: self.queue_full_timeout,
                close_timeout: self.close_timeout,
            }),
        })
    }
}
