//! Status changes fanned out to subscriptions in this process.
//!
//! Subscriptions also re-read the database periodically, so a change made by another bridge
//! instance reaches them within that period even without this bus.

use tokio::sync::broadcast;

/// A status change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A delivery changed status.
    Delivery {
        /// Delivery id.
        id: String,
    },
    /// A push for a delivery went out (or the development sink handed it over): the
    /// account's companions may fetch it.
    Incoming {
        /// The delivery's account.
        account_id: String,
        /// Delivery id.
        delivery_id: String,
    },
    /// A pairing changed status.
    Pairing {
        /// Pairing id.
        id: String,
    },
}

/// The in-process bus.
#[derive(Debug, Clone)]
pub struct EventBus(broadcast::Sender<Event>);

impl Default for EventBus {
    fn default() -> Self {
        Self(broadcast::channel(1024).0)
    }
}

impl EventBus {
    /// Announces a change (nobody listening is fine).
    pub fn publish(&self, event: Event) {
        let _ = self.0.send(event);
    }

    /// Listens for changes.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.0.subscribe()
    }
}
