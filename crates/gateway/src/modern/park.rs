//! Calls parked while a stateless client answers an `InputRequiredResult`.
//!
//! A legacy upstream that asks the client something mid-call keeps that call
//! open upstream; the gateway holds it here until the client's retry resumes
//! it. Parked calls are bounded in number ([`MAX_PARKED`]) and in time
//! ([`PARK_TTL`]): past either, the call is cancelled upstream, so a client
//! that never retries (or floods) costs nothing lasting.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use switchboard_protocol::{code, ErrorObject, RequestId};

use crate::outbound::Outbound;
use crate::session::Session;
use crate::state::Shared;

/// Parked calls the whole gateway holds at most.
pub(crate) const MAX_PARKED: usize = 1024;
/// How long a parked call waits for the client's retry.
pub(crate) const PARK_TTL: Duration = Duration::from_secs(60);

/// One call waiting for the client's `inputResponses`.
#[derive(Debug)]
pub(crate) struct ParkedCall {
    /// The stateless session the call runs in; closing it cancels the call.
    pub(crate) session: Arc<Session>,
    /// The call's stream and how far the client has read it.
    pub(crate) stream: Arc<Outbound>,
    pub(crate) cursor: u64,
    /// `inputRequests` key → the id of the server→client request it answers.
    pub(crate) asked: Vec<(String, RequestId)>,
}

/// All parked calls, by handle.
#[derive(Debug, Default)]
pub(crate) struct Parked {
    calls: Mutex<HashMap<u64, ParkedCall>>,
}

impl Parked {
    /// Parks `call` and returns its handle; refuses past [`MAX_PARKED`].
    /// The call is cancelled if no retry takes it within [`PARK_TTL`].
    pub(crate) fn park(&self, shared: &Arc<Shared>, call: ParkedCall) -> Result<u64, ErrorObject> {
        self.park_for(shared, call, PARK_TTL)
    }

    fn park_for(
        &self,
        shared: &Arc<Shared>,
        call: ParkedCall,
        ttl: Duration,
    ) -> Result<u64, ErrorObject> {
        let handle = {
            let mut calls = self.calls.lock();
            if calls.len() >= MAX_PARKED {
                return Err(ErrorObject::new(
                    code::OVERLOADED,
                    format!(
                        "the gateway already holds {MAX_PARKED} calls waiting for client input; retry later"
                    ),
                ));
            }
            let mut handle: u64 = rand::random();
            while calls.contains_key(&handle) {
                handle = rand::random();
            }
            calls.insert(handle, call);
            handle
        };
        let (shared2, stop) = (shared.clone(), shared.shutdown.clone());
        shared.tasks.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(ttl) => {}
                () = stop.cancelled() => {}
            }
            if let Some(expired) = shared2.modern.parked.take(handle) {
                expired.session.close();
            }
        });
        Ok(handle)
    }

    /// Takes a parked call out; `None` when it was taken before or expired,
    /// so a replayed `requestState` finds nothing.
    pub(crate) fn take(&self, handle: u64) -> Option<ParkedCall> {
        self.calls.lock().remove(&handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::RouteId;
    use serde_json::json;

    fn shared() -> Arc<Shared> {
        let config = switchboard_config::parse("[server]\nlisten = \"127.0.0.1:0\"", "t").unwrap();
        Shared::start(config, crate::Services::default()).unwrap()
    }

    fn call() -> ParkedCall {
        ParkedCall {
            session: Arc::new(Session::stateless(
                RouteId::Federated,
                "2026-07-28",
                json!({}),
                None,
            )),
            stream: Arc::new(Outbound::new(4)),
            cursor: 0,
            asked: vec![("r1".into(), RequestId::Number(1))],
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_parked_calls_stops_at_the_bound() {
        let shared = shared();
        let parked = Parked::default();
        for _ in 0..MAX_PARKED {
            parked.park(&shared, call()).unwrap();
        }
        let refused = parked.park(&shared, call()).unwrap_err();
        assert_eq!(refused.code, code::OVERLOADED);
        assert_eq!(parked.calls.lock().len(), MAX_PARKED);
        shared.shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_parked_call_is_taken_once() {
        let shared = shared();
        let handle = shared.modern.parked.park(&shared, call()).unwrap();
        assert!(shared.modern.parked.take(handle).is_some());
        assert!(
            shared.modern.parked.take(handle).is_none(),
            "a replay finds nothing"
        );
        shared.shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn an_unclaimed_parked_call_is_cancelled_after_its_time() {
        let shared = shared();
        let c = call();
        let session = c.session.clone();
        let handle = shared.modern.parked.park(&shared, c).unwrap();
        tokio::time::sleep(PARK_TTL + Duration::from_secs(1)).await;
        assert!(shared.modern.parked.take(handle).is_none());
        assert!(
            session.closed.is_cancelled(),
            "the upstream call is cancelled"
        );
        shared.shutdown.cancel();
    }
}
