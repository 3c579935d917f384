//! How the local registries (hubs, chat rooms) ask for bus subscriptions: requests go into a
//! queue that the [`SubscriptionManager`](super::subscriptions::SubscriptionManager) applies in
//! order. Apart from both, so that the registries and the manager do not import each other.

use tokio::sync::mpsc;

#[derive(Debug)]
pub(crate) enum Command {
    /// The local interest in this channel changed: subscribe or unsubscribe to match.
    Reconcile(String),
    /// The bus may have missed messages (reconnect, lag): recover every channel from the store.
    RefreshAll,
}

/// Where registries ask for bus subscriptions. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SubscriptionRequests(
    // Unbounded on purpose: requests are sent from `Drop`, which cannot wait, and there is at
    // most one per hub or room created or removed, so the queue is bounded by connection churn.
    mpsc::UnboundedSender<Command>,
);

impl SubscriptionRequests {
    /// The local interest in `channel` changed.
    pub fn reconcile(&self, channel: String) {
        let _ = self.0.send(Command::Reconcile(channel));
    }

    /// Asks for every channel to be recovered from the store (after a bus reconnect).
    pub fn refresh_all(&self) {
        let _ = self.0.send(Command::RefreshAll);
    }
}

/// The receiving end of the registries' subscription requests.
#[derive(Debug)]
pub struct SubscriptionCommands(pub(crate) mpsc::UnboundedReceiver<Command>);

/// A pair of ends for requests.
pub fn channel() -> (SubscriptionRequests, SubscriptionCommands) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (SubscriptionRequests(sender), SubscriptionCommands(receiver))
}
