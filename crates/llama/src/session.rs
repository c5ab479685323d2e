//! The bounded set of cached sessions: llama.cpp contexts, each with the tokens
//! its KV cache holds, handed out by longest common token prefix.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::token::LlamaToken;

/// A context and the tokens in its KV cache (positions `0..tokens.len()`).
pub(crate) struct Session {
    pub(crate) ctx: LlamaContext<'static>,
    pub(crate) tokens: Vec<LlamaToken>,
    /// Length of the prompt of the last request (0 if none).
    pub(crate) prompt_len: usize,
}

/// Shorter shared prefixes do not make a session preferable to the least recently used one.
pub(crate) const MIN_SHARED: usize = 16;

struct Slot {
    /// `None` while the session is leased out.
    session: Option<Session>,
    last_used: u64,
}

struct State {
    slots: Vec<Slot>,
    clock: u64,
}

/// At most `capacity` sessions; callers beyond that wait for one to come back.
pub(crate) struct Pool {
    state: Mutex<State>,
    returned: Condvar,
    capacity: usize,
}

/// A leased session; goes back to its slot when dropped (also on panic).
pub(crate) struct Lease<'p> {
    pool: &'p Pool,
    slot: usize,
    session: Option<Session>,
}

impl Lease<'_> {
    pub(crate) fn session(&mut self) -> &mut Session {
        self.session.as_mut().expect("a lease holds its session until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        state.clock += 1;
        let clock = state.clock;
        let slot = &mut state.slots[self.slot];
        slot.session = self.session.take();
        slot.last_used = clock;
        drop(state);
        self.pool.returned.notify_one();
    }
}

pub(crate) fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Pool {
    pub(crate) fn new(capacity: usize) -> Self {
        Pool { state: Mutex::new(State { slots: Vec::new(), clock: 0 }), returned: Condvar::new(), capacity: capacity.max(1) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the slot list half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Leases a session for `prompt`:
    /// 1. an idle session whose last prompt is a prefix of `prompt` (the same
    ///    conversation, one turn later), the longest such;
    /// 2. else a new session while under capacity (made by `create`, called under
    ///    the pool lock so that contexts are never created concurrently);
    /// 3. else the idle session sharing the longest prefix (at least
    ///    [`MIN_SHARED`] tokens, e.g. the same system prompt), or failing that the
    ///    least recently used idle session;
    /// 4. else waits until a session comes back.
    pub(crate) fn lease<E>(
        &self,
        prompt: &[LlamaToken],
        create: impl Fn() -> Result<Session, E>,
    ) -> Result<Lease<'_>, E> {
        let mut state = self.lock();
        loop {
            let idle: Vec<(usize, usize, bool, u64)> = state
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, slot)| {
                    let s = slot.session.as_ref()?;
                    let shared = common_prefix(&s.tokens, prompt);
                    Some((i, shared, s.prompt_len > 0 && shared >= s.prompt_len, slot.last_used))
                })
                .collect();
            let continuation = idle.iter().filter(|c| c.2).max_by_key(|c| c.1).map(|c| c.0);
            let chosen = match continuation {
                Some(i) => Some(i),
                None if state.slots.len() < self.capacity => {
                    let session = create()?;
                    state.slots.push(Slot { session: Some(session), last_used: 0 });
                    Some(state.slots.len() - 1)
                }
                None => idle
                    .iter()
                    .max_by_key(|c| (if c.1 >= MIN_SHARED { c.1 } else { 0 }, std::cmp::Reverse(c.3)))
                    .map(|c| c.0),
            };
            if let Some(i) = chosen {
                let session = state.slots[i].session.take();
                return Ok(Lease { pool: self, slot: i, session });
            }
            state = self.returned.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Number of sessions created so far.
    pub(crate) fn len(&self) -> usize {
        self.lock().slots.len()
    }
}
