//! Revocation checks of the keys that opened live calls, shared by the calls of an
//! instance. Each call asks every half `key_check`; an answer at most half
//! `key_check` old is reused, so a revoked key ends its calls within `key_check`
//! as before, and the database sees one read per key and half period however many
//! calls the key opened (a public key in a web page opens all of them): 1,000
//! calls on one key were 100 reads a second at the default 10 s.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use voxgate_store::{Store, StoreError};

/// Keys remembered at most; past it, answers older than their freshness go.
const REMEMBERED: usize = 10_000;

/// The latest answer about each key.
#[derive(Debug)]
pub struct KeyChecks {
    /// How long an answer is reused.
    fresh: Duration,
    last: Mutex<HashMap<String, (Instant, bool)>>,
}

impl KeyChecks {
    /// Answers reused for `fresh`.
    pub fn new(fresh: Duration) -> KeyChecks {
        KeyChecks { fresh, last: Mutex::new(HashMap::new()) }
    }

    /// How long an answer is reused.
    pub fn fresh(&self) -> Duration {
        self.fresh
    }

    /// Whether key `id` is revoked or gone: from an answer younger than
    /// [`KeyChecks::fresh`], or else from the database. A database that does not
    /// answer is not a revocation (and its silence is not remembered).
    pub async fn revoked(&self, store: &Store, id: &str) -> bool {
        let now = Instant::now();
        if let Some(&(at, revoked)) = self.lock().get(id)
            && now.saturating_duration_since(at) < self.fresh
        {
            return revoked;
        }
        let revoked = match store.get_key(id).await {
            Ok(k) => k.revoked_at.is_some(),
            Err(StoreError::NotFound) => true,
            Err(_) => return false,
        };
        let mut last = self.lock();
        if last.len() >= REMEMBERED {
            let fresh = self.fresh;
            last.retain(|_, (at, _)| now.saturating_duration_since(*at) < fresh);
        }
        last.insert(id.to_string(), (Instant::now(), revoked));
        revoked
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, bool)>> {
        // Poisoned only if a holder panicked mid-insert; the map is still usable.
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}
