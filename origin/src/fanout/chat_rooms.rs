//! A ride's chat participants on this instance, and the notices that wake them.
//!
//! One room per ride with local participants; each participant's session holds a [`Seat`].
//! The instance subscribes once per room to the ride's chat channel, on which every instance
//! publishes a [`Notice`]: "a message was stored" or "someone is typing". A notice is only a
//! wake-up: a session woken by `Stored` reads the ride's history from the store after the last
//! message it sent, so it delivers every message exactly once, in the store's order, even when
//! notices are lost, merged or reordered. (A lagging seat reads the store too.)

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use bytes::Bytes;
use ridecast_protocol::{
    Id, channels,
    chat::{ChatRole, MessageId},
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::fanout::requests::SubscriptionRequests;

/// What travels on a ride's chat channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Notice {
    /// A message is in the store: readers that have sent it already need not look.
    Stored { id: String },
    /// A participant is typing; relayed, never stored.
    Typing { from: ChatRole },
}

impl Notice {
    pub fn to_bytes(&self) -> Bytes {
        // Plain strings and a role: serializing cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// What a seat is woken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomEvent {
    /// New messages may be in the store: up to this one, if known.
    Stored(Option<MessageId>),
    /// The participant `from` is typing.
    Typing(ChatRole),
}

/// Events one room holds for a seat that has not read them; a seat further behind reads the
/// store instead (nothing but a typing indicator can be lost that way).
const ROOM_EVENTS: usize = 16;

#[derive(Debug)]
struct Room {
    events: broadcast::Sender<RoomEvent>,
    seats: usize,
}

/// The instance's chat rooms. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ChatRooms {
    inner: Arc<RoomsInner>,
}

#[derive(Debug)]
struct RoomsInner {
    rooms: Mutex<HashMap<Id, Room>>,
    requests: SubscriptionRequests,
}

impl ChatRooms {
    /// No rooms yet; rooms ask `requests` for their bus subscriptions.
    pub fn new(requests: SubscriptionRequests) -> Self {
        Self { inner: Arc::new(RoomsInner { rooms: Mutex::default(), requests }) }
    }

    /// Takes a seat in `ride`'s room, opening the room (and its subscription) for the first.
    pub fn join(&self, ride: &Id) -> Seat {
        let mut rooms = self.lock();
        let room = rooms.entry(ride.clone()).or_insert_with(|| {
            self.inner.requests.reconcile(channels::chat_ride(ride));
            Room { events: broadcast::channel(ROOM_EVENTS).0, seats: 0 }
        });
        room.seats += 1;
        let events = room.events.subscribe();
        drop(rooms);
        Seat { rooms: self.clone(), ride: ride.clone(), events }
    }

    /// Hands a notice from `ride`'s channel to its room, if the instance has one.
    pub fn deliver(&self, ride: &str, payload: &[u8]) {
        let event = match serde_json::from_slice::<Notice>(payload) {
            Ok(Notice::Stored { id }) => RoomEvent::Stored(MessageId::parse(&id)),
            Ok(Notice::Typing { from }) => RoomEvent::Typing(from),
            Err(error) => {
                tracing::warn!(ride.id = ride, %error, "unreadable chat notice ignored");
                return;
            }
        };
        self.send(ride, event);
    }

    /// Whether `ride` has participants here.
    pub fn has(&self, ride: &str) -> bool {
        self.lock().contains_key(ride)
    }

    /// Has `ride`'s participants read the store (notices may have been missed).
    pub fn wake(&self, ride: &str) {
        self.send(ride, RoomEvent::Stored(None));
    }

    /// Has every participant here read the store (after a bus reconnect).
    pub fn wake_all(&self) {
        for room in self.lock().values() {
            let _ = room.events.send(RoomEvent::Stored(None));
        }
    }

    /// Number of rooms (rides with participants here).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn send(&self, ride: &str, event: RoomEvent) {
        if let Some(room) = self.lock().get(ride) {
            // An error only means no seat is listening this instant.
            let _ = room.events.send(event);
        }
    }

    fn leave(&self, ride: &Id) {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(ride) else { return };
        room.seats -= 1;
        if room.seats == 0 {
            rooms.remove(ride);
            self.inner.requests.reconcile(channels::chat_ride(ride));
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Id, Room>> {
        // Single map operations, never held across an await; see `Hubs::lock` on poisoning.
        self.inner.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A participant's place in a room. Dropping it leaves the room.
#[derive(Debug)]
pub struct Seat {
    rooms: ChatRooms,
    ride: Id,
    events: broadcast::Receiver<RoomEvent>,
}

impl Seat {
    /// The next event; [`RoomEvent::Stored`] (`None`) when events were missed (the store has them).
    pub async fn next(&mut self) -> RoomEvent {
        match self.events.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(_)) => RoomEvent::Stored(None),
            // The room's sender lives as long as any seat, this one included.
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.rooms.leave(&self.ride);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fanout::requests::{self, Command, SubscriptionCommands};

    fn ride(raw: &str) -> Id {
        Id::parse(raw).expect("id")
    }

    #[tokio::test]
    async fn the_room_is_subscribed_for_the_first_seat_and_let_go_after_the_last() {
        let (requests, SubscriptionCommands(mut commands)) = requests::channel();
        let rooms = ChatRooms::new(requests);
        let a = rooms.join(&ride("r1"));
        let b = rooms.join(&ride("r1"));
        assert!(matches!(commands.try_recv(), Ok(Command::Reconcile(c)) if c == "chat:ride:{r1}"));
        assert!(commands.try_recv().is_err(), "one subscription per ride");
        drop(a);
        assert!(rooms.has("r1"));
        drop(b);
        assert!(!rooms.has("r1"));
        assert!(matches!(commands.try_recv(), Ok(Command::Reconcile(c)) if c == "chat:ride:{r1}"));
    }

    #[tokio::test]
    async fn notices_wake_every_seat_of_their_ride_only() {
        let rooms = ChatRooms::new(requests::channel().0);
        let (mut rider, mut driver, mut elsewhere) =
            (rooms.join(&ride("r1")), rooms.join(&ride("r1")), rooms.join(&ride("r2")));
        rooms.deliver("r1", &Notice::Typing { from: ChatRole::Rider }.to_bytes());
        rooms.deliver("r1", &Notice::Stored { id: "1-0".into() }.to_bytes());
        for seat in [&mut rider, &mut driver] {
            assert_eq!(seat.next().await, RoomEvent::Typing(ChatRole::Rider));
            assert_eq!(seat.next().await, RoomEvent::Stored(MessageId::parse("1-0")));
        }
        assert!(tokio::time::timeout(Duration::from_millis(20), elsewhere.next()).await.is_err());
    }

    #[tokio::test]
    async fn a_seat_that_fell_behind_is_told_to_read_the_store() {
        let rooms = ChatRooms::new(requests::channel().0);
        let mut seat = rooms.join(&ride("r1"));
        for _ in 0..ROOM_EVENTS * 2 {
            rooms.deliver("r1", &Notice::Typing { from: ChatRole::Driver }.to_bytes());
        }
        assert_eq!(seat.next().await, RoomEvent::Stored(None));
    }
}
