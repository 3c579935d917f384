//! Tracking tokens at the hub: confirmed with the origin before a stream opens, and asked about
//! again while their streams stay open (see the hub's module documentation for the rules).

use std::time::Duration;

use futures_util::future::join_all;
use ridecast_protocol::Id;
use worker::Delay;

use super::{Hub, RECHECK_MIN_WAIT};
use crate::{
    error::EdgeError,
    limits::TokenKey,
    tracking::{self, Confirmation},
};

impl Hub {
    /// A tracking token is honoured only once the origin confirmed it, and a confirmation is
    /// reused for at most [`tracking::CONFIRMATION_TTL`]. Fails closed: no answer is a refusal
    /// (with a retry), never a pass.
    pub(super) async fn confirm_tracking(
        &self,
        raw_token: &str,
        token: TokenKey,
        driver: &Id,
    ) -> Result<(), EdgeError> {
        if self.inner.borrow().confirmed.is_fresh(token) {
            return Ok(());
        }
        let asked_at = tracking::now_ms();
        let answer = tracking::ask_origin(&self.env, raw_token, driver).await;
        let mut inner = self.inner.borrow_mut();
        match answer {
            Confirmation::Confirmed => inner.confirmed.remember(token, asked_at),
            // The same token's open streams end too, without waiting for their own question.
            Confirmation::Refused(_) => inner.end_token(token),
            Confirmation::Unanswered(_) => {}
        }
        answer.into_result()
    }

    /// Starts the task that asks the origin again about the tracking tokens of open streams, unless
    /// it runs. One task per object, sleeping until the next confirmation runs out: an idle stream
    /// costs nothing between questions. It ends when no tracking token has a stream left.
    pub(super) fn ensure_recheck(&self) {
        if std::mem::replace(&mut self.inner.borrow_mut().recheck_task, true) {
            return;
        }
        let hub = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            loop {
                let wait_ms = {
                    let mut inner = hub.inner.borrow_mut();
                    inner.prune_tracked();
                    let now = tracking::now_ms();
                    let next = inner.tracked.iter().map(|(token, t)| inner.due_ms(*token, t)).min();
                    let Some(next) = next else {
                        inner.recheck_task = false;
                        return;
                    };
                    next.saturating_sub(now)
                };
                Delay::from(Duration::from_millis(wait_ms).max(RECHECK_MIN_WAIT)).await;
                hub.recheck_due().await;
            }
        });
    }

    /// Asks the origin, all at once, about every tracking token whose confirmation ran out.
    async fn recheck_due(&self) {
        let (driver, due) = {
            let mut inner = self.inner.borrow_mut();
            inner.prune_tracked();
            let now = tracking::now_ms();
            let due: Vec<(TokenKey, String)> = inner
                .tracked
                .iter()
                .filter(|(token, t)| inner.due_ms(**token, t) <= now)
                .map(|(token, t)| (*token, t.raw.clone()))
                .collect();
            for (token, _) in &due {
                if let Some(t) = inner.tracked.get_mut(token) {
                    t.last_asked_ms = now;
                }
            }
            (inner.key.clone(), due)
        };
        let Some(driver) = driver else { return };
        let questions = due.into_iter().map(|(token, raw)| {
            let (env, driver) = (&self.env, &driver);
            async move {
                let asked_at = tracking::now_ms();
                (token, asked_at, tracking::ask_origin(env, &raw, driver).await)
            }
        });
        for (token, asked_at, answer) in join_all(questions).await {
            let mut inner = self.inner.borrow_mut();
            match answer {
                Confirmation::Confirmed => inner.confirmed.remember(token, asked_at),
                Confirmation::Refused(_) => inner.end_token(token),
                // Kept open, asked again in 5 s (see the module's documentation).
                Confirmation::Unanswered(why) => {
                    worker::console_warn!("the origin could not confirm a tracking token again: {why}");
                }
            }
        }
    }
}
