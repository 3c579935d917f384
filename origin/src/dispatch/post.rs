//! Getting a frame to a driver's socket, on whatever instance it is connected to.
//!
//! Each driver session registers here while it is connected. A frame for a driver connected to
//! this instance goes straight to its session; otherwise, with Redis, the instance looks up
//! where the driver is (`dispatch:conn:{driver}`, refreshed by the session, expiring on its own
//! when an instance dies) and publishes the frame on that instance's inbox channel, which only
//! that instance subscribes to. A frame can still be lost (the driver between two instances):
//! what matters is never only in a frame, since offers are stored and a (re)connecting driver
//! is sent its pending offer, and resent until it acknowledges.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use fred::{
    prelude::{Client, KeysInterface},
    types::Expiration,
};
use ridecast_protocol::{Id, messages::ServerMessage};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::bus::{BackendError, pubsub::PubSub, redis::RedisBackend};

/// Frames waiting for one driver session; beyond this a frame is dropped (offers are resent).
pub const SESSION_QUEUE: usize = 16;

/// Frames waiting for one driver session: a queue that allocates only when something arrives,
/// and a wake-up. Lighter than a channel, which preallocates a block of slots for every
/// connected driver although most never get a frame.
#[derive(Debug, Default)]
pub struct Mailbox {
    frames: Mutex<VecDeque<ServerMessage>>,
    /// Frames for this session may have been lost on the way (the inbox was resubscribed):
    /// the session should look its offer up in the store.
    look_up: AtomicBool,
    arrived: Notify,
}

/// What a driver session is handed.
#[derive(Debug)]
pub enum Posted {
    /// A frame to send.
    Frame(ServerMessage),
    /// Frames may have been lost: compare the offer the session holds with the stored one.
    LookUpOffer,
}

impl Mailbox {
    fn queue(&self) -> MutexGuard<'_, VecDeque<ServerMessage>> {
        self.frames.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `frame`; `false` (and dropped) when [`SESSION_QUEUE`] frames already wait.
    fn put(&self, frame: ServerMessage) -> bool {
        let mut queue = self.queue();
        if queue.len() >= SESSION_QUEUE {
            return false;
        }
        queue.push_back(frame);
        drop(queue);
        // A permit is kept if the session is not waiting yet, so no wake-up is lost.
        self.arrived.notify_one();
        true
    }

    /// Asks the session to look its offer up in the store.
    fn ask_to_look_up(&self) {
        self.look_up.store(true, Relaxed);
        self.arrived.notify_one();
    }

    /// The next thing for the session, waiting for one: a look-up request before frames, since
    /// the store is newer than any frame still queued.
    pub async fn next(&self) -> Posted {
        loop {
            if self.look_up.swap(false, Relaxed) {
                return Posted::LookUpOffer;
            }
            if let Some(frame) = self.queue().pop_front() {
                return Posted::Frame(frame);
            }
            self.arrived.notified().await;
        }
    }
}

/// Parcels that may wait for the inbox task before it counts as lagging (fred preallocates it).
const INBOX_BUFFER: usize = 1024;

/// How long a session's registration survives without a refresh (a dead instance's drivers
/// are found elsewhere after this).
pub const REGISTRATION_TTL: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct LocalSession {
    generation: u64,
    mailbox: Arc<Mailbox>,
}

/// A frame on its way through another instance's inbox.
#[derive(Debug, Serialize, Deserialize)]
struct Parcel {
    driver: Id,
    frame: ServerMessage,
}

#[derive(Clone)]
struct Remote {
    commands: Client,
    pubsub: PubSub,
    instance: String,
}

/// Delivery of frames to driver sessions, here or on other instances. Cheap to clone.
#[derive(Clone, Default)]
pub struct DriverPost {
    local: Arc<Mutex<HashMap<Id, LocalSession>>>,
    generations: Arc<AtomicU64>,
    remote: Option<Remote>,
}

impl std::fmt::Debug for DriverPost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverPost")
            .field("instance", &self.remote.as_ref().map(|r| r.instance.as_str()))
            .finish_non_exhaustive()
    }
}

/// A session's place in the post; dropping it unregisters (unless a newer session of the same
/// driver took the place meanwhile).
#[derive(Debug)]
pub struct Registration {
    post: DriverPost,
    driver: Id,
    generation: u64,
}

/// A name for this instance's inbox: random, so a restarted instance never gets a dead one's
/// frames.
fn instance_id() -> String {
    crate::base::random::hex_or_clock::<12>()
}

fn conn_key(driver: &Id) -> String {
    format!("dispatch:conn:{{{driver}}}")
}

fn inbox_channel(instance: &str) -> String {
    format!("dispatch:inbox:{{{instance}}}")
}

impl DriverPost {
    /// Delivery within this process only (the embedded mode).
    pub fn local() -> Self {
        Self::default()
    }

    /// Delivery across instances through `redis`: its command connection for lookups and
    /// publishing, and a subscriber of its own that only this instance's inbox channel uses,
    /// kept subscribed across reconnects and (on a cluster) slot moves.
    ///
    /// # Errors
    /// [`BackendError`] if the subscriber cannot be built.
    pub async fn through_redis(redis: &RedisBackend, shutdown: CancellationToken) -> Result<Self, BackendError> {
        let subscriber = redis.new_subscriber(INBOX_BUFFER)?;
        subscriber.connect(shutdown.clone());
        if tokio::time::timeout(Duration::from_secs(5), subscriber.wait_for_connect()).await.is_err() {
            tracing::error!("redis is not reachable yet for the driver inbox; reconnecting in the background");
        }
        let instance = instance_id();
        let remote = Remote { commands: redis.command_client(), pubsub: redis.pubsub(), instance: instance.clone() };
        let post = Self { remote: Some(remote), ..Self::default() };
        let channel = inbox_channel(&instance);
        let mut messages = subscriber.messages();
        if let Err(error) = subscriber.subscribe(vec![channel.clone()]).await {
            tracing::warn!(%error, "driver inbox not subscribed yet; retrying");
            let (retrying, inbox, stop) = (subscriber.clone(), channel.clone(), shutdown.clone());
            tokio::spawn(async move { retrying.subscribe_until_done(vec![inbox], &stop).await });
        }
        // Frames published while the inbox was not subscribed are gone; offers are stored, so
        // every local session looks its own up.
        let sessions = post.clone();
        subscriber.keep_subscribed(shutdown.clone(), move || sessions.ask_everyone_to_look_up_offers());
        let receiver = post.clone();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    () = shutdown.cancelled() => break,
                    message = messages.recv() => message,
                };
                match message {
                    Ok(message) if message.channel == channel => {
                        let parcel =
                            message.value.as_bytes().and_then(|raw| serde_json::from_slice::<Parcel>(raw).ok());
                        match parcel {
                            Some(parcel) => {
                                // Gone meanwhile: it gets its stored offer when it reconnects.
                                let _ = receiver.deliver_here(&parcel.driver, parcel.frame);
                            }
                            None => tracing::warn!("unreadable parcel on the driver inbox ignored"),
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "driver inbox fell behind; offers are resent");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
            subscriber.quit().await;
        });
        Ok(post)
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<Id, LocalSession>> {
        // Single map operations; see `Hubs::lock` on poisoning.
        self.local.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers `driver`'s session here and returns where its frames arrive.
    ///
    /// # Errors
    /// [`BackendError`] if the registration cannot be written to Redis.
    pub async fn register(&self, driver: &Id) -> Result<(Registration, Arc<Mailbox>), BackendError> {
        let mailbox = Arc::new(Mailbox::default());
        let generation = self.generations.fetch_add(1, Relaxed);
        self.sessions().insert(driver.clone(), LocalSession { generation, mailbox: mailbox.clone() });
        self.refresh(driver).await?;
        Ok((Registration { post: self.clone(), driver: driver.clone(), generation }, mailbox))
    }

    /// Renews the driver's registration in Redis (sessions do it on every ping).
    ///
    /// # Errors
    /// [`BackendError`] if Redis fails.
    pub async fn refresh(&self, driver: &Id) -> Result<(), BackendError> {
        if let Some(remote) = &self.remote {
            let ttl = i64::try_from(REGISTRATION_TTL.as_secs()).unwrap_or(60);
            let () = remote
                .commands
                .set(conn_key(driver), remote.instance.as_str(), Some(Expiration::EX(ttl)), None, false)
                .await?;
        }
        Ok(())
    }

    /// Sends `frame` to `driver`'s session wherever it is; `false` if it is not connected
    /// anywhere we know of (the frame is then dropped: stored offers reach it on connect).
    ///
    /// # Errors
    /// [`BackendError`] if Redis fails.
    pub async fn send(&self, driver: &Id, frame: ServerMessage) -> Result<bool, BackendError> {
        let frame = match self.deliver_here(driver, frame) {
            Ok(()) => return Ok(true),
            Err(frame) => frame,
        };
        let Some(remote) = &self.remote else { return Ok(false) };
        let instance: Option<String> = remote.commands.get(conn_key(driver)).await?;
        let Some(instance) = instance.filter(|i| *i != remote.instance) else { return Ok(false) };
        let parcel = serde_json::to_string(&Parcel { driver: driver.clone(), frame })
            .map_err(|e| BackendError::UnexpectedReply(e.to_string()))?;
        let receivers = remote.pubsub.publish(&remote.commands, &inbox_channel(&instance), parcel).await?;
        Ok(receivers > 0)
    }

    /// Asks every local session to compare its offer with the stored one.
    fn ask_everyone_to_look_up_offers(&self) {
        for session in self.sessions().values() {
            session.mailbox.ask_to_look_up();
        }
    }

    /// Hands `frame` to the local session of `driver`, or gives it back.
    fn deliver_here(&self, driver: &Id, frame: ServerMessage) -> Result<(), ServerMessage> {
        let sessions = self.sessions();
        let Some(session) = sessions.get(driver) else { return Err(frame) };
        if !session.mailbox.put(frame) {
            tracing::warn!(driver.id = %driver, "driver session queue full; frame dropped (offers are resent)");
        }
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut sessions = self.post.sessions();
        if sessions.get(&self.driver).is_some_and(|s| s.generation == self.generation) {
            sessions.remove(&self.driver);
        }
    }
}
