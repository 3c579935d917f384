//! A ride as stored, and the changes its status can take: the vocabulary shared by the ride
//! handle, its stores and whoever reads a ride.

use bytes::Bytes;
use ridecast_protocol::{Claims, Id, LatLng, RideState, RideStatus, RideStep, Role, chat::ChatRole};

/// Random bytes in a ride id: 128 bits, so that ids cannot be guessed (a ride's id is not a
/// secret, but knowing one should not be how anyone finds a stranger's ride).
const RIDE_ID_BYTES: usize = 16;

/// A fresh ride id: `RIDE_ID_BYTES` (16) from the OS's random source, as lowercase hex (32
/// characters of the id alphabet).
///
/// # Errors
/// When the OS has no randomness to give.
pub fn new_ride_id() -> Result<Id, getrandom::Error> {
    let hex = crate::base::random::hex::<RIDE_ID_BYTES>()?;
    Ok(Id::parse(&hex).expect("32 hex digits are a valid id"))
}

/// What a new ride is made of; the store adds status, times and JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRide {
    pub id: Id,
    /// The creating rider's `sub`.
    pub rider: Id,
    pub pickup: LatLng,
    pub dropoff: LatLng,
}

/// A ride as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Ride {
    pub id: Id,
    /// The `sub` of the rider who created it.
    pub rider: Id,
    pub pickup: LatLng,
    pub dropoff: LatLng,
    pub status: RideStatus,
    /// The driver the ride was assigned to. Kept after a cancellation (the JSON then no longer
    /// names it), so that whoever tells that driver can find it.
    pub driver: Option<Id>,
    /// When it was created, epoch milliseconds.
    pub created_ms: u64,
    /// The status version: the `ts` (and SSE id) of its current status, epoch milliseconds,
    /// strictly growing per ride.
    pub ts: u64,
    /// The current status as published ([`RideState`] JSON, tracking token included): SSE data
    /// and the answer to `DELETE`.
    pub json: Bytes,
}

impl Ride {
    /// Whether `claims` may follow, cancel and chat on this ride (PROTOCOL v1.1, "Token
    /// scopes"): a rider token with a `ride` claim opens that ride only, whatever its `sub`; a
    /// rider token with neither `ride` nor `drv` opens the rides its `sub` created. A token with
    /// `drv` (a tracking token, or an operator's) opens no ride: it is for one driver's position,
    /// and is the one a rider is most likely to share.
    pub fn allows(&self, claims: &Claims) -> bool {
        if claims.role != Role::Rider || claims.drv.is_some() {
            return false;
        }
        match &claims.ride {
            Some(ride) => ride == &self.id,
            None => claims.sub == self.rider,
        }
    }

    /// Whether the ride is under way with `driver` (`driver_assigned`, `driver_arrived` or
    /// `in_progress`): while it is, its tracking token works.
    pub fn is_on_with(&self, driver: &Id) -> bool {
        self.status.is_under_way() && self.driver.as_ref() == Some(driver)
    }

    /// Who `claims` is in this ride's chat: its rider (as [`Ride::allows`]) or the driver
    /// assigned to it (also after a cancel, so the two can still settle things); `None` for
    /// anyone else.
    pub fn chat_role(&self, claims: &Claims) -> Option<ChatRole> {
        if self.allows(claims) {
            Some(ChatRole::Rider)
        } else if claims.role == Role::Driver && self.driver.as_ref() == Some(&claims.sub) {
            Some(ChatRole::Driver)
        } else {
            None
        }
    }
}

/// The statuses a rider may cancel from: any before the ride ended. `in_progress` included: a
/// rider whose driver's app died mid-trip must be able to end the ride (one open ride per
/// rider would otherwise keep them from requesting another until it expired).
const CANCELLABLE: &[RideStatus] =
    &[RideStatus::Searching, RideStatus::DriverAssigned, RideStatus::DriverArrived, RideStatus::InProgress];

/// A change of a ride's status, as the matcher, the assigned driver and the cancel endpoint ask
/// for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RideChange {
    /// `searching` → `driver_assigned`: `driver` took the ride; `tracking_token` (a rider
    /// token with `drv` = `driver`, see [`Rides::tracking_token`](super::Rides::tracking_token)) goes out with the status.
    Assign { driver: Id, tracking_token: String },
    /// The assigned `driver` reports `step` ([`RideStep::from_statuses`]: forward only). Only
    /// the ride's own driver may: the store checks it in the same atomic step. While the ride
    /// is still under way afterwards, `tracking_token` goes out with the status again.
    Progress { step: RideStep, driver: Id, tracking_token: String },
    /// `searching` → `no_driver`: nobody took it.
    NoDriver,
    /// Any status before the ride ended → `cancelled`: the rider cancelled ([`CANCELLABLE`]).
    Cancel,
}

impl RideChange {
    /// The status the ride has after the change.
    pub fn target(&self) -> RideStatus {
        match self {
            Self::Assign { .. } => RideStatus::DriverAssigned,
            Self::Progress { step, .. } => step.status(),
            Self::NoDriver => RideStatus::NoDriver,
            Self::Cancel => RideStatus::Cancelled,
        }
    }

    /// The statuses the change applies to; from any other it is refused.
    pub fn from_statuses(&self) -> &'static [RideStatus] {
        match self {
            Self::Assign { .. } | Self::NoDriver => &[RideStatus::Searching],
            Self::Progress { step, .. } => step.from_statuses(),
            Self::Cancel => CANCELLABLE,
        }
    }

    /// The driver the ride must be assigned to for the change to apply, if any.
    pub fn required_driver(&self) -> Option<&Id> {
        match self {
            Self::Progress { driver, .. } => Some(driver),
            Self::Assign { .. } | Self::NoDriver | Self::Cancel => None,
        }
    }

    /// Whether a ride in `status`, assigned to `driver`, may take this change.
    pub fn applies_to(&self, status: RideStatus, driver: Option<&Id>) -> bool {
        self.from_statuses().contains(&status) && self.required_driver().is_none_or(|required| Some(required) == driver)
    }

    /// The status value the change publishes for `ride` at `ts`.
    pub fn state(&self, ride: &Id, ts: u64) -> RideState {
        let (driver_id, tracking_token) = match self {
            Self::Assign { driver, tracking_token } => (Some(driver.clone()), Some(tracking_token.clone())),
            Self::Progress { step, driver, tracking_token } if step.status().is_under_way() => {
                (Some(driver.clone()), Some(tracking_token.clone()))
            }
            Self::Progress { .. } | Self::NoDriver | Self::Cancel => (None, None),
        };
        RideState { ride_id: ride.clone(), status: self.target(), driver_id, tracking_token, ts }
    }
}

/// What [`RideStore::create`](super::store::RideStore::create) did.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    /// Stored and published (or found stored by this very request, replayed): the new ride.
    Created(Ride),
    /// A ride with this id exists already: nothing stored; try another id.
    IdTaken,
    /// The rider has this ride open (`searching` or under way): nothing stored. A rider has
    /// one open ride at a time.
    RiderHasOpenRide(Id),
}

/// What [`RideStore::change`](super::store::RideStore::change) did.
#[derive(Debug, Clone, PartialEq)]
pub enum RideChangeOutcome {
    /// Changed, stored and published: the ride as it is now.
    Applied(Ride),
    /// Not changed: its status does not allow it. The ride as it is (unchanged).
    Refused(Ride),
    /// No such ride (never created, or expired).
    Unknown,
}
