//! One instance-wide task that ticks every SSE stream's heartbeat and tells every stream when
//! the instance drains, so that tens of thousands of streams need no timer each.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What every stream hears from the one instance-wide signal task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamSignal {
    /// Serving; each send of this value is a heartbeat tick.
    Running,
    /// The instance drains: end the stream so the rider reconnects elsewhere.
    Draining,
}

/// Streams are spread over this many heartbeat groups, ticking at staggered moments, so that
/// an instance with tens of thousands of streams does not write all their heartbeats at once
/// (a burst that would delay the location events queued behind it).
const HEARTBEAT_GROUPS: usize = 16;

/// The receiving ends of the instance-wide stream signals. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StreamSignals {
    groups: Arc<[watch::Receiver<StreamSignal>]>,
    next: Arc<std::sync::atomic::AtomicUsize>,
}

impl StreamSignals {
    /// Starts the task that ticks every stream's heartbeat and tells them all when draining
    /// starts. One timer for all streams: a stream waits on a shared watch instead of owning
    /// a timer and a cancellation registration of its own.
    pub fn spawn(heartbeat: Duration, drain: CancellationToken) -> Self {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..HEARTBEAT_GROUPS).map(|_| watch::channel(StreamSignal::Running)).unzip();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(heartbeat / HEARTBEAT_GROUPS as u32);
            every.tick().await;
            for group in (0..HEARTBEAT_GROUPS).cycle() {
                tokio::select! {
                    () = drain.cancelled() => break,
                    _ = every.tick() => { let _ = senders[group].send(StreamSignal::Running); }
                }
            }
            for sender in &senders {
                let _ = sender.send(StreamSignal::Draining);
            }
        });
        Self { groups: receivers.into(), next: Arc::default() }
    }

    /// The signals for one new stream, from the next group in turn.
    pub(super) fn join(&self) -> watch::Receiver<StreamSignal> {
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.groups[turn % self.groups.len()].clone()
    }
}
