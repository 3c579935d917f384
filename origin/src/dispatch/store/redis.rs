//! Dispatch state in Redis: the same transitions as the book, as the Lua scripts of
//! [`redis_scripts`], shared by every instance.

use std::{fmt::Debug, sync::Arc, time::Duration};

use async_trait::async_trait;
use fred::{prelude::Client, types::scripts::Script};
use ridecast_protocol::{Id, messages::LatLng};

use super::{DispatchStore, redis_scripts};
use crate::{
    base::clock::millis,
    bus::BackendError,
    dispatch::{AcceptOutcome, AckOutcome, Offer, OfferAttempt, OfferLimits, OfferState, RejectOutcome},
};

/// Dispatch state in Redis, shared by every instance.
#[derive(Clone)]
pub struct RedisDispatch {
    client: Client,
    ttl_ms: u64,
    scripts: Arc<Scripts>,
}

struct Scripts {
    set_available: Script,
    set_position: Script,
    candidates: Script,
    try_offer: Script,
    current_offer: Script,
    ack: Script,
    accept: Script,
    reject: Script,
    due: Script,
    expire: Script,
    close_ride: Script,
    live_offers: Script,
    is_available: Script,
    wait: Script,
    waiting_due: Script,
}

impl Debug for RedisDispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDispatch").field("ttl_ms", &self.ttl_ms).finish_non_exhaustive()
    }
}

impl RedisDispatch {
    /// Dispatch through `client` (a connected command client); keys live `ttl` after their
    /// last change.
    pub fn new(client: Client, ttl: Duration) -> Self {
        let script = |body: &str| Script::from_lua(redis_scripts::with_prelude(body));
        let scripts = Scripts {
            set_available: script(redis_scripts::SET_AVAILABLE),
            set_position: script(redis_scripts::SET_POSITION),
            candidates: script(redis_scripts::CANDIDATES),
            try_offer: script(redis_scripts::TRY_OFFER),
            current_offer: script(redis_scripts::CURRENT_OFFER),
            ack: script(redis_scripts::ACK),
            accept: script(redis_scripts::ACCEPT),
            reject: script(redis_scripts::REJECT),
            due: script(redis_scripts::DUE),
            expire: script(redis_scripts::EXPIRE),
            close_ride: script(redis_scripts::CLOSE_RIDE),
            live_offers: script(redis_scripts::LIVE_OFFERS),
            is_available: script(redis_scripts::IS_AVAILABLE),
            wait: script(redis_scripts::WAIT),
            waiting_due: script(redis_scripts::WAITING_DUE),
        };
        Self { client, ttl_ms: millis(ttl), scripts: Arc::new(scripts) }
    }

    async fn run<R: fred::types::FromValue>(&self, script: &Script, args: Vec<String>) -> Result<R, BackendError> {
        Ok(script.evalsha_with_reload(&self.client, redis_scripts::KEY_PREFIX, args).await?)
    }

    fn ttl(&self) -> String {
        self.ttl_ms.to_string()
    }
}

/// An offer's stored JSON, back as an [`Offer`].
fn parse_offer(json: &str) -> Result<Offer, BackendError> {
    // Not quoted: an offer holds the rider's pickup and dropoff.
    serde_json::from_str(json).map_err(|_| BackendError::UnexpectedReply("an offer whose JSON is garbled".into()))
}

fn parse_state(raw: Option<&String>) -> Result<OfferState, BackendError> {
    let raw = raw.ok_or_else(|| BackendError::UnexpectedReply("an offer state is missing".into()))?;
    serde_json::from_value(serde_json::Value::String(raw.clone()))
        .map_err(|_| BackendError::UnexpectedReply(format!("offer state {raw:?}")))
}

fn parse_id(raw: Option<&String>) -> Result<Id, BackendError> {
    let raw = raw.ok_or_else(|| BackendError::UnexpectedReply("an id is missing".into()))?;
    Id::parse(raw).map_err(|_| BackendError::UnexpectedReply(format!("id {raw:?}")))
}

fn unexpected(reply: &[String]) -> BackendError {
    BackendError::UnexpectedReply(crate::bus::reply_shape(reply))
}

#[async_trait]
impl DispatchStore for RedisDispatch {
    async fn set_available(&self, driver: &Id, available: bool, now: u64) -> Result<(), BackendError> {
        let args = vec![driver.to_string(), u8::from(available).to_string(), now.to_string(), self.ttl()];
        self.run::<i64>(&self.scripts.set_available, args).await.map(drop)
    }

    async fn set_position(&self, driver: &Id, at: LatLng, now: u64) -> Result<(), BackendError> {
        let args = vec![driver.to_string(), at.lat.to_string(), at.lng.to_string(), now.to_string(), self.ttl()];
        self.run::<i64>(&self.scripts.set_position, args).await.map(drop)
    }

    async fn is_available(&self, driver: &Id) -> Result<bool, BackendError> {
        Ok(self.run::<i64>(&self.scripts.is_available, vec![driver.to_string()]).await? == 1)
    }

    async fn candidates(
        &self,
        pickup: LatLng,
        radius_m: f64,
        _now: u64,
        _limits: OfferLimits,
        count: usize,
    ) -> Result<Vec<Id>, BackendError> {
        let args = vec![pickup.lng.to_string(), pickup.lat.to_string(), radius_m.to_string(), count.to_string()];
        let ids: Vec<String> = self.run(&self.scripts.candidates, args).await?;
        ids.iter().map(|raw| parse_id(Some(raw))).collect()
    }

    async fn try_offer(&self, offer: &Offer, now: u64, limits: OfferLimits) -> Result<OfferAttempt, BackendError> {
        let json = serde_json::to_string(offer).map_err(|e| BackendError::UnexpectedReply(e.to_string()))?;
        let args = vec![
            offer.offer_id.clone(),
            offer.driver.to_string(),
            offer.ride_id.to_string(),
            json,
            offer.expires_at.to_string(),
            now.to_string(),
            limits.max_attempts.to_string(),
            limits.fanout.to_string(),
            limits.stale_ms.to_string(),
            self.ttl(),
        ];
        match self.run::<i64>(&self.scripts.try_offer, args).await? {
            0 => Ok(OfferAttempt::Created),
            1 => Ok(OfferAttempt::DriverUnavailable),
            2 => Ok(OfferAttempt::RideFull),
            3 => Ok(OfferAttempt::RideClosed),
            4 => Ok(OfferAttempt::Exhausted),
            other => Err(BackendError::UnexpectedReply(other.to_string())),
        }
    }

    async fn current_offer(&self, driver: &Id) -> Result<Option<(Offer, bool)>, BackendError> {
        let reply: Option<Vec<String>> = self.run(&self.scripts.current_offer, vec![driver.to_string()]).await?;
        match reply.as_deref() {
            None | Some([]) => Ok(None),
            Some([json, acked]) => Ok(Some((parse_offer(json)?, acked == "1"))),
            Some(other) => Err(unexpected(other)),
        }
    }

    async fn ack(&self, offer_id: &str, driver: &Id) -> Result<AckOutcome, BackendError> {
        let reply: Vec<String> = self.run(&self.scripts.ack, vec![offer_id.to_owned(), driver.to_string()]).await?;
        match reply.first().map(String::as_str) {
            Some("acked") => Ok(AckOutcome::Acked),
            Some("not_pending") => Ok(AckOutcome::NotPending(parse_state(reply.get(1))?)),
            Some("not_yours") => Ok(AckOutcome::NotYours),
            Some("unknown") => Ok(AckOutcome::Unknown),
            _ => Err(unexpected(&reply)),
        }
    }

    async fn accept(&self, offer_id: &str, driver: &Id, now: u64) -> Result<AcceptOutcome, BackendError> {
        let args = vec![offer_id.to_owned(), driver.to_string(), now.to_string(), self.ttl()];
        let reply: Vec<String> = self.run(&self.scripts.accept, args).await?;
        match reply.first().map(String::as_str) {
            Some("confirmed") => {
                let ride = parse_id(reply.get(1))?;
                let taken = reply[2..].iter().map(|json| parse_offer(json)).collect::<Result<_, _>>()?;
                Ok(AcceptOutcome::Confirmed { ride, taken })
            }
            Some("expired") => Ok(AcceptOutcome::Expired { ride: parse_id(reply.get(1))? }),
            Some("ended") => Ok(AcceptOutcome::Ended(parse_state(reply.get(1))?)),
            Some("already") => Ok(AcceptOutcome::AlreadyAccepted),
            Some("not_yours") => Ok(AcceptOutcome::NotYours),
            Some("unknown") => Ok(AcceptOutcome::Unknown),
            _ => Err(unexpected(&reply)),
        }
    }

    async fn reject(&self, offer_id: &str, driver: &Id) -> Result<RejectOutcome, BackendError> {
        let args = vec![offer_id.to_owned(), driver.to_string(), self.ttl()];
        let reply: Vec<String> = self.run(&self.scripts.reject, args).await?;
        match reply.first().map(String::as_str) {
            Some("rejected") => Ok(RejectOutcome::Rejected { ride: parse_id(reply.get(1))? }),
            Some("not_pending") => Ok(RejectOutcome::NotPending(parse_state(reply.get(1))?)),
            Some("not_yours") => Ok(RejectOutcome::NotYours),
            Some("unknown") => Ok(RejectOutcome::Unknown),
            _ => Err(unexpected(&reply)),
        }
    }

    async fn due(&self, now: u64, limit: usize) -> Result<Vec<String>, BackendError> {
        self.run(&self.scripts.due, vec![now.to_string(), limit.to_string()]).await
    }

    async fn expire(&self, offer_id: &str, now: u64) -> Result<Option<Offer>, BackendError> {
        let args = vec![offer_id.to_owned(), now.to_string(), self.ttl()];
        let json: Option<String> = self.run(&self.scripts.expire, args).await?;
        json.as_deref().map(parse_offer).transpose()
    }

    async fn close_ride(&self, ride: &Id, _now: u64) -> Result<Vec<Offer>, BackendError> {
        let jsons: Vec<String> = self.run(&self.scripts.close_ride, vec![ride.to_string(), self.ttl()]).await?;
        jsons.iter().map(|json| parse_offer(json)).collect()
    }

    async fn has_live_offers(&self, ride: &Id) -> Result<bool, BackendError> {
        let live: i64 = self.run(&self.scripts.live_offers, vec![ride.to_string()]).await?;
        Ok(live > 0)
    }

    async fn wait(&self, ride: &Id, retry_at: u64) -> Result<(), BackendError> {
        self.run::<i64>(&self.scripts.wait, vec![ride.to_string(), retry_at.to_string()]).await.map(drop)
    }

    async fn waiting_due(&self, now: u64, limit: usize, lease: Duration) -> Result<Vec<Id>, BackendError> {
        let args = vec![now.to_string(), limit.to_string(), millis(lease).to_string()];
        let rides: Vec<String> = self.run(&self.scripts.waiting_due, args).await?;
        rides.iter().map(|raw| parse_id(Some(raw))).collect()
    }
}
