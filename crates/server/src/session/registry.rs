//! The live calls of this process: call id → a handle on the call's session, to
//! resume it on a new socket or to send it control messages (from the API in this
//! process, or from another instance through PostgreSQL `NOTIFY`).
//!
//! A call registers when its socket is upgraded and leaves when its session ends
//! ([`Registration`] removes it on drop). The registry holds at most `MAX_CALLS`
//! entries, as admission does. A call's resume token is kept here, hashed, and is
//! single use: [`Registry::claim_resume`] consumes it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::Stream;
use tokio::sync::mpsc;
use voxgate_api::control::{ControlMessage, Delivery};
use voxgate_domain::key::{hash_secret, random_token};
use voxgate_transport::InputDecoder;
use voxgate_transport::protocol::Negotiated;
use voxgate_transport::relay::BoxSink;
use voxgate_transport::wire::{WireError, WireIn};

/// A socket's incoming messages, boxed so sockets opened anywhere share one type.
pub type BoxStream = Pin<Box<dyn Stream<Item = Result<WireIn, WireError>> + Send>>;

/// How many control messages may wait for one call.
const COMMANDS: usize = 16;

/// What a call's session is told from outside.
pub enum Command {
    /// A client resumed the call on a new socket and has sent `start` on it.
    Resume(Resumed),
    /// A control message from the API.
    Control(ControlMessage),
}

/// A resumed socket, ready to carry the call.
pub struct Resumed {
    pub stream: BoxStream,
    pub sink: BoxSink<axum::Error>,
    pub decoder: InputDecoder,
    /// This socket's formats.
    pub negotiated: Negotiated,
    /// The claim, given back if the call cannot take the socket.
    pub claim: ResumeClaim,
}

/// One call's entry.
pub struct Entry {
    commands: mpsc::Sender<Command>,
    /// The hash of the call's current resume token; `None` when there is none (not
    /// issued yet, resume off, or just used).
    token: Mutex<Option<String>>,
    /// A socket carries the call (or a resumed one is being handed over).
    attached: AtomicBool,
}

impl Entry {
    /// Issues a new resume token (the previous one stops working) and returns it.
    pub fn issue_token(&self) -> String {
        let token = format!("vg_rt_{}", random_token());
        *self.token.lock().expect("token lock") = Some(hash_secret(&token));
        token
    }

    pub fn set_attached(&self, attached: bool) {
        self.attached.store(attached, Ordering::SeqCst);
    }
}

/// Why a resume is refused before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No live call with that id on this instance.
    NotFound,
    /// The token is wrong, used, or was never issued.
    BadToken,
    /// The call's socket is still open.
    Attached,
}

/// A resume token accepted (and consumed) for a call.
pub struct ResumeClaim {
    entry: Arc<Entry>,
    hash: String,
}

impl ResumeClaim {
    /// The resumed socket never reached the call (it dropped, or never sent a good
    /// `start`): the token works again, unless a new one was issued meanwhile.
    pub fn restore(self) {
        let mut token = self.entry.token.lock().expect("token lock");
        if token.is_none() {
            *token = Some(self.hash);
        }
    }

    /// Hands the resumed socket to the call; gives it back if the call is over.
    pub async fn hand_over(
        self,
        stream: BoxStream,
        sink: BoxSink<axum::Error>,
        decoder: InputDecoder,
        negotiated: Negotiated,
    ) -> Result<(), Box<Resumed>> {
        let commands = self.entry.commands.clone();
        let resumed = Resumed { stream, sink, decoder, negotiated, claim: self };
        commands.send(Command::Resume(resumed)).await.map_err(|e| match e.0 {
            Command::Resume(r) => Box::new(r),
            Command::Control(_) => unreachable!("sent a resume"),
        })
    }
}

/// The live calls of this process. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    calls: Arc<Mutex<HashMap<String, Arc<Entry>>>>,
    max: usize,
}

/// A call's place in the registry; removes it when dropped.
pub struct Registration {
    registry: Registry,
    id: String,
    pub entry: Arc<Entry>,
    pub commands: mpsc::Receiver<Command>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.calls.lock().expect("registry lock").remove(&self.id);
    }
}

impl Registry {
    /// A registry for at most `max` calls (0: no limit).
    pub fn new(max: usize) -> Registry {
        Registry { calls: Arc::default(), max }
    }

    /// Registers a call whose socket was just upgraded; `None` when full.
    pub fn register(&self, call_id: &str) -> Option<Registration> {
        let mut calls = self.calls.lock().expect("registry lock");
        if self.max > 0 && calls.len() >= self.max {
            return None;
        }
        let (tx, rx) = mpsc::channel(COMMANDS);
        let entry = Arc::new(Entry { commands: tx, token: Mutex::new(None), attached: AtomicBool::new(true) });
        calls.insert(call_id.to_owned(), entry.clone());
        Some(Registration { registry: self.clone(), id: call_id.to_owned(), entry, commands: rx })
    }

    /// How many calls are live here.
    pub fn len(&self) -> usize {
        self.calls.lock().expect("registry lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the call `call_id` is live here.
    pub fn holds(&self, call_id: &str) -> bool {
        self.calls.lock().expect("registry lock").contains_key(call_id)
    }

    fn get(&self, call_id: &str) -> Option<Arc<Entry>> {
        self.calls.lock().expect("registry lock").get(call_id).cloned()
    }

    /// Checks a resume token for a call and consumes it.
    pub fn claim_resume(&self, call_id: &str, token: &str) -> Result<ResumeClaim, Refusal> {
        let entry = self.get(call_id).ok_or(Refusal::NotFound)?;
        let hash = hash_secret(token);
        let mut current = entry.token.lock().expect("token lock");
        if current.as_deref() != Some(hash.as_str()) {
            return Err(Refusal::BadToken);
        }
        if entry.attached.load(Ordering::SeqCst) {
            return Err(Refusal::Attached);
        }
        *current = None;
        drop(current);
        Ok(ResumeClaim { entry, hash })
    }

    /// Room for one control message in a call's queue, held until used or dropped
    /// (so what is taken from elsewhere for it can always be handed over).
    pub fn reserve(&self, call_id: &str) -> Result<mpsc::OwnedPermit<Command>, Delivery> {
        let Some(entry) = self.get(call_id) else { return Err(Delivery::NotLive) };
        entry.commands.clone().try_reserve_owned().map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Delivery::Busy,
            mpsc::error::TrySendError::Closed(_) => Delivery::NotLive,
        })
    }

    /// Hands a control message to a call of this process.
    pub fn control(&self, call_id: &str, msg: ControlMessage) -> Delivery {
        match self.reserve(call_id) {
            Ok(room) => {
                room.send(Command::Control(msg));
                Delivery::Local
            }
            Err(why) => why,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_and_entries_leave_with_their_call() {
        let r = Registry::new(2);
        let a = r.register("a").unwrap();
        let _b = r.register("b").unwrap();
        assert!(r.register("c").is_none(), "bounded");
        let token = a.entry.issue_token();
        assert!(token.len() >= 6 + 32, "at least 128 bits of randomness");
        assert_eq!(r.claim_resume("a", &token).err(), Some(Refusal::Attached), "the socket is open");
        a.entry.set_attached(false);
        assert_eq!(r.claim_resume("a", "vg_rt_wrong").err(), Some(Refusal::BadToken));
        assert_eq!(r.claim_resume("nope", &token).err(), Some(Refusal::NotFound));
        let claim = r.claim_resume("a", &token).ok().unwrap();
        assert_eq!(r.claim_resume("a", &token).err(), Some(Refusal::BadToken), "used");
        claim.restore();
        assert!(r.claim_resume("a", &token).is_ok(), "given back when the resume failed");
        drop(a);
        assert_eq!(r.len(), 1);
        assert_eq!(r.control("a", ControlMessage::End {}), Delivery::NotLive);
    }
}
