//! The simulator: drivers `sim-01`, `sim-02`, ... driving the demo city as real WebSocket
//! clients of this very origin, and an operator moving downtown's surge now and then through
//! `POST /api/surge/{zone}`.
//!
//! Each driver is one task: a [`SimDriver`] (its behaviour, no I/O) and the connections it
//! drives: its `/ws/rides` socket and, during a ride, the ride's chat and its status stream
//! (`/api/sse/rides/{id}`, which tells it when the rider cancels: the driver's socket has no
//! frame for that). A socket that drops is opened again with backoff; the task ends when the
//! instance drains. Everything is logged at debug
//! level: thirty drivers sending a fix a second would drown the origin's own log otherwise.

use ridecast_rng::Rng;
use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use ridecast_protocol::{Id, Multiplier, Role, chat::ChatServerFrame, messages::ServerMessage, ride::RideState};
use tokio::{sync::oneshot, time::Instant};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::{
    sync::{CancellationToken, DropGuard},
    task::TaskTracker,
};
use tracing::Instrument;

use super::{
    chatter::Chatter,
    city::{City, DOWNTOWN},
    client::{OriginClient, Socket, send_json},
    driver::{Action, SimDriver, Tick},
    fleet::Fleet,
};

/// Drivers connect this far apart at start, rather than all at once.
const STAGGER: Duration = Duration::from_millis(50);
/// A ride's status stream that dropped, or could not be opened, is opened again after this long.
const RIDE_STREAM_RETRY: Duration = Duration::from_secs(3);
/// A chat socket that dropped is opened again after this long.
const CHAT_RETRY: Duration = Duration::from_secs(2);
/// Reconnect backoff: from the first wait, doubling up to the longest.
const FIRST_RETRY: Duration = Duration::from_millis(250);
const LONGEST_RETRY: Duration = Duration::from_secs(10);
/// A socket that stayed up this long resets the backoff.
const STABLE: Duration = Duration::from_secs(10);
/// How often the surge moves, in seconds (about every 20 s), and its range in tenths.
const SURGE_EVERY_S: (f64, f64) = (18.0, 22.0);
const SURGE_TENTHS: (usize, usize) = (10, 25);
/// The operator the simulated surge is set as.
const OPERATOR: &str = "sim-ops";

/// What the simulation runs with.
#[derive(Debug)]
pub struct Simulation {
    pub drivers: u32,
    pub seed: u64,
    pub city: Arc<City>,
    pub fleet: Fleet,
    pub client: OriginClient,
    /// The instance's drain signal: everything stops when it fires.
    pub shutdown: CancellationToken,
    /// Where the tasks run, so that the drain waits for them.
    pub tracker: TaskTracker,
}

impl Simulation {
    /// Starts every driver and the surge operator; they stop when the instance drains.
    pub fn spawn(self) {
        let tracker = &self.tracker;
        for n in 1..=self.drivers {
            let Ok(id) = Id::parse(&format!("sim-{n:02}")) else { continue };
            let mut rng = Rng::stream(self.seed, u64::from(n));
            let driver = SimDriver::new(id.clone(), self.city.clone(), Rng::new(rng.next_u64()), Instant::now());
            let task = DriverTask {
                driver,
                rng,
                fleet: self.fleet.clone(),
                client: self.client.clone(),
                shutdown: self.shutdown.clone(),
                tracker: self.tracker.clone(),
                chat: None,
                ride_watch: None,
            };
            let span = tracing::debug_span!("sim", driver.id = %id);
            tracker.spawn(task.run(STAGGER * n).instrument(span));
        }
        let rng = Rng::stream(self.seed, 0);
        tracker.spawn(move_surge(self.client, rng, self.shutdown));
    }
}

/// Why a driver's session ended.
#[derive(Debug)]
enum SessionEnd {
    Shutdown,
    Dropped(Option<tungstenite::Error>),
}

/// A ride's chat: its driver's side, and the socket when it is open.
#[derive(Debug)]
struct ChatLink {
    chatter: Chatter,
    socket: Option<Socket>,
    retry_at: Instant,
}

/// The status stream of the ride a driver is on, followed by its own task.
#[derive(Debug)]
struct RideWatch {
    ride: Id,
    /// Fires when the ride is no longer on with this driver.
    ended: oneshot::Receiver<()>,
    /// Stops the task when the driver moves on.
    _stop: DropGuard,
}

/// One simulated driver and its connections.
#[derive(Debug)]
struct DriverTask {
    driver: SimDriver,
    /// Backoff jitter and each chat's dice.
    rng: Rng,
    fleet: Fleet,
    client: OriginClient,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// Kept across reconnects of the ride socket.
    chat: Option<ChatLink>,
    /// Kept across reconnects of the ride socket.
    ride_watch: Option<RideWatch>,
}

impl DriverTask {
    async fn run(mut self, start_after: Duration) {
        self.show(false);
        if self.sleep(start_after).await.is_err() {
            return;
        }
        let mut backoff = FIRST_RETRY;
        loop {
            let opened = tokio::select! {
                () = self.shutdown.cancelled() => return,
                opened = self.client.open(self.driver.id(), "/ws/rides") => opened,
            };
            match opened {
                Ok(socket) => {
                    tracing::debug!("simulated driver connected");
                    let connected = Instant::now();
                    let end = self.session(socket).await;
                    self.show(false);
                    match end {
                        SessionEnd::Shutdown => return,
                        SessionEnd::Dropped(error) => tracing::debug!(?error, "simulated driver's socket dropped"),
                    }
                    if connected.elapsed() >= STABLE {
                        backoff = FIRST_RETRY;
                    }
                }
                Err(error) => tracing::debug!(%error, "simulated driver could not connect"),
            }
            // Jittered, so that drivers dropped together do not all come back together.
            let wait = backoff.mul_f64(self.rng.between(0.5, 1.0));
            backoff = (backoff * 2).min(LONGEST_RETRY);
            if self.sleep(wait).await.is_err() {
                return;
            }
        }
    }

    /// Sleeps unless the instance drains first (`Err`).
    async fn sleep(&self, duration: Duration) -> Result<(), ()> {
        tokio::select! {
            () = self.shutdown.cancelled() => Err(()),
            () = tokio::time::sleep(duration) => Ok(()),
        }
    }

    /// Drives over one open ride socket until it drops or the instance drains.
    async fn session(&mut self, mut socket: Socket) -> SessionEnd {
        let shutdown = self.shutdown.clone();
        let mut actions = self.driver.connected(Tick::now());
        loop {
            if let Err(error) = self.perform(&mut socket, actions).await {
                return SessionEnd::Dropped(Some(error));
            }
            self.show(true);
            self.watch_ride();
            let mut wake = self.driver.next_wakeup();
            if let Some(chat) = self.chat.as_ref().and_then(ChatLink::next_wakeup) {
                wake = wake.min(chat);
            }
            actions = tokio::select! {
                biased;
                () = shutdown.cancelled() => return SessionEnd::Shutdown,
                frame = socket.next() => match frame {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(&text) {
                        Ok(frame) => self.driver.received(frame, Tick::now()),
                        Err(error) => {
                            tracing::debug!(%error, "a frame the simulated driver does not understand");
                            Vec::new()
                        }
                    },
                    Some(Ok(Message::Close(_))) | None => return SessionEnd::Dropped(None),
                    Some(Ok(_)) => Vec::new(),
                    Some(Err(error)) => return SessionEnd::Dropped(Some(error)),
                },
                frame = next_chat_frame(&mut self.chat) => {
                    self.chat_received(frame).await;
                    Vec::new()
                }
                ride = ride_ended(&mut self.ride_watch) => {
                    self.ride_watch = None;
                    if self.driver.ride() == Some(&ride) {
                        tracing::debug!(ride.id = %ride, "the simulated driver's ride has ended");
                        self.driver.ride_ended()
                    } else {
                        Vec::new()
                    }
                }
                () = tokio::time::sleep_until(wake) => {
                    let tick = Tick::now();
                    let actions = self.driver.poll(tick);
                    self.chat_due(tick.now).await;
                    actions
                }
            };
        }
    }

    async fn perform(&mut self, socket: &mut Socket, actions: Vec<Action>) -> Result<(), tungstenite::Error> {
        for action in actions {
            match action {
                Action::Send(frame) => send_json(socket, &frame).await?,
                Action::OpenChat(ride) => {
                    let chatter = Chatter::new(ride, Rng::new(self.rng.next_u64()));
                    self.chat = Some(ChatLink { chatter, socket: None, retry_at: Instant::now() });
                    self.chat_due(Instant::now()).await;
                }
                Action::CloseChat => {
                    if let Some(mut socket) = self.chat.take().and_then(|chat| chat.socket) {
                        let _ = socket.close(None).await;
                    }
                }
            }
        }
        Ok(())
    }

    /// Opens the chat when it is closed and due, and sends the replies whose moment has come.
    async fn chat_due(&mut self, now: Instant) {
        let Some(chat) = self.chat.as_mut() else { return };
        if chat.socket.is_none() && now >= chat.retry_at {
            let path = match chat.chatter.since() {
                Some(since) => format!("/ws/chat/{}?since={since}", chat.chatter.ride()),
                None => format!("/ws/chat/{}", chat.chatter.ride()),
            };
            match self.client.open(self.driver.id(), &path).await {
                Ok(mut socket) => match send_json(&mut socket, &chat.chatter.greeting()).await {
                    Ok(()) => chat.socket = Some(socket),
                    Err(error) => chat.dropped(now, &error),
                },
                Err(error) => {
                    tracing::debug!(%error, "simulated driver could not open the chat");
                    chat.retry_at = now + CHAT_RETRY;
                }
            }
        }
        if let Some(socket) = chat.socket.as_mut() {
            for reply in chat.chatter.due(now) {
                if let Err(error) = send_json(socket, &reply).await {
                    chat.dropped(now, &error);
                    return;
                }
            }
        }
    }

    async fn chat_received(&mut self, frame: Option<Result<Message, tungstenite::Error>>) {
        let Some(chat) = self.chat.as_mut() else { return };
        let now = Instant::now();
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => return chat.dropped(now, &tungstenite::Error::ConnectionClosed),
            Some(Ok(_)) => return,
            Some(Err(error)) => return chat.dropped(now, &error),
        };
        let Ok(frame) = serde_json::from_str::<ChatServerFrame>(&text) else { return };
        if let (Some(typing), Some(socket)) = (chat.chatter.received(frame, now), chat.socket.as_mut())
            && let Err(error) = send_json(socket, &typing).await
        {
            chat.dropped(now, &error);
        }
    }

    /// Follows the status of the ride the driver is on, if it is not followed yet; stops
    /// following a ride the driver is no longer on.
    fn watch_ride(&mut self) {
        let ride = self.driver.ride();
        if self.ride_watch.as_ref().map(|watch| &watch.ride) == ride {
            return;
        }
        self.ride_watch = ride.map(|ride| {
            let (on_end, ended) = oneshot::channel();
            let stop = self.shutdown.child_token();
            let watcher =
                follow_ride(self.client.clone(), self.driver.id().clone(), ride.clone(), on_end, stop.clone());
            self.tracker.spawn(watcher.in_current_span());
            RideWatch { ride: ride.clone(), ended, _stop: stop.drop_guard() }
        });
    }

    /// Puts the driver's current entry on the fleet map.
    fn show(&self, online: bool) {
        self.fleet.update(self.driver.id(), self.driver.view(online));
    }
}

impl ChatLink {
    fn dropped(&mut self, now: Instant, error: &tungstenite::Error) {
        tracing::debug!(%error, "simulated driver's chat dropped");
        self.socket = None;
        self.retry_at = now + CHAT_RETRY;
    }

    fn next_wakeup(&self) -> Option<Instant> {
        match self.socket {
            Some(_) => self.chatter.next_due(),
            None => Some(self.retry_at),
        }
    }
}

/// The ride whose watch says it has ended, or never while no ride is watched.
async fn ride_ended(watch: &mut Option<RideWatch>) -> Id {
    match watch.as_mut() {
        Some(watch) => match (&mut watch.ended).await {
            Ok(()) => watch.ride.clone(),
            // The watcher stopped without a verdict (the instance drains): nothing to do.
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Follows `ride`'s status stream, as a rider token scoped to that ride, until the ride is no
/// longer on with `driver` (cancelled, gone, or someone else's); then says so on `ended`. A
/// stream that drops or cannot be opened is opened again: meanwhile the driver keeps driving.
async fn follow_ride(client: OriginClient, driver: Id, ride: Id, ended: oneshot::Sender<()>, stop: CancellationToken) {
    let path = format!("/api/sse/rides/{ride}");
    loop {
        let opened = match client.token(Role::Rider, &driver, Some(&ride)) {
            Ok(token) => tokio::select! {
                () = stop.cancelled() => return,
                opened = client.events(&path, &token) => opened,
            },
            Err(error) => Err(error.into()),
        };
        match opened {
            Ok(mut events) => loop {
                let event = tokio::select! {
                    () = stop.cancelled() => return,
                    event = events.next() => event,
                };
                let Some(event) = event else { break };
                let Ok(state) = serde_json::from_str::<RideState>(&event.data) else { continue };
                // The driver's own steps keep the ride under way; anything else ends it here.
                if !state.status.is_under_way() || state.driver_id.as_ref() != Some(&driver) {
                    let _ = ended.send(());
                    return;
                }
            },
            // Unknown: the ride has expired (or never was).
            Err(error) if error.status() == Some(404) => {
                let _ = ended.send(());
                return;
            }
            Err(error) => tracing::debug!(ride.id = %ride, %error, "could not follow the simulated driver's ride"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RIDE_STREAM_RETRY) => {}
        }
    }
}

/// The next frame on the chat socket, or never while there is none.
async fn next_chat_frame(chat: &mut Option<ChatLink>) -> Option<Result<Message, tungstenite::Error>> {
    match chat.as_mut().and_then(|chat| chat.socket.as_mut()) {
        Some(socket) => socket.next().await,
        None => std::future::pending().await,
    }
}

/// Sets downtown's surge to a random 1.0 to 2.5 (one decimal) about every 20 s, as an operator
/// would: `POST /api/surge/downtown` with an `ops` token, so riders on every instance see it.
async fn move_surge(client: OriginClient, mut rng: Rng, shutdown: CancellationToken) {
    let (Ok(zone), Ok(operator)) = (Id::parse(DOWNTOWN), Id::parse(OPERATOR)) else { return };
    loop {
        let tenths = SURGE_TENTHS.0 + rng.below(SURGE_TENTHS.1 - SURGE_TENTHS.0 + 1);
        if let Ok(multiplier) = Multiplier::new(tenths as f64 / 10.0) {
            match client.set_surge(&operator, &zone, multiplier).await {
                Ok(()) => tracing::debug!(zone.id = %zone, multiplier = multiplier.get(), "simulated surge set"),
                Err(error) => tracing::debug!(zone.id = %zone, %error, "simulated surge not set"),
            }
        }
        let wait = Duration::from_secs_f64(rng.between(SURGE_EVERY_S.0, SURGE_EVERY_S.1));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
