//! Signed-in sessions, in memory: a random id in an HttpOnly cookie maps to
//! the operator, a CSRF token and a one-shot message for the next page.
//! The store has a limit and every session an idle and an absolute expiry;
//! time is a parameter, so tests move it without sleeping.

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::password_hash::rand_core::{OsRng, RngCore};

use crate::payment::Outcome;

/// Random bytes in a session id or CSRF token: 256 bits, never guessed.
const TOKEN_BYTES: usize = 32;

/// A fresh random token, hex.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equality that takes the same time wherever the first difference is, for
/// comparing a submitted token with the expected one.
pub(crate) fn tokens_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// What the next page shows once, after a redirect (post/redirect/get).
#[derive(Clone, Debug)]
pub(crate) enum Flash {
    /// An action succeeded.
    Notice(String),
    /// An action failed; the text never holds card data.
    Error(String),
    /// A payment's result: masked card only.
    Payment(Box<Outcome>),
}

/// One signed-in operator's session.
#[derive(Debug)]
struct Session {
    /// Who signed in, for the page header and the log.
    operator: String,
    /// The operator's epoch in the store at sign-in: a block, role change
    /// or reset raises it, which ends this session.
    epoch: u64,
    /// Whether the second factor was given (or is not needed).
    second_factor: bool,
    /// A TOTP secret shown for enrolment, not yet confirmed.
    enrolling: Option<String>,
    /// The token every form of this session must carry.
    csrf: String,
    /// Sign-in time, for the absolute expiry.
    created_s: u64,
    /// Last request, for the idle expiry.
    seen_s: u64,
    /// Shown once by the next page.
    flash: Option<Flash>,
}

/// What a request learns of its session.
#[derive(Clone, Debug)]
pub(crate) struct SessionView {
    /// The signed-in operator.
    pub(crate) operator: String,
    /// The operator's epoch at sign-in.
    pub(crate) epoch: u64,
    /// Whether the second factor was given.
    pub(crate) second_factor: bool,
    /// The TOTP secret being enrolled, if any.
    pub(crate) enrolling: Option<String>,
    /// The session's CSRF token, for forms and to check posts against.
    pub(crate) csrf: String,
}

/// Why no session could be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("too many signed-in sessions (sessions_max): try again later")]
pub(crate) struct SessionsFull;

/// Every session, keyed by id.
#[derive(Debug)]
pub(crate) struct Sessions {
    /// id → session. A mutex: sessions are touched once per page, far from
    /// the switch's hot path.
    by_id: Mutex<HashMap<String, Session>>,
    /// Most sessions at once (`sessions_max`).
    sessions_max: usize,
    /// Idle expiry (`session_idle_s`).
    idle_s: u64,
    /// Absolute expiry (`session_lifetime_s`).
    lifetime_s: u64,
}

impl Session {
    fn expired(&self, now_s: u64, idle_s: u64, lifetime_s: u64) -> bool {
        now_s >= self.seen_s.saturating_add(idle_s)
            || now_s >= self.created_s.saturating_add(lifetime_s)
    }
}

impl Sessions {
    /// An empty store.
    pub(crate) fn new(sessions_max: usize, idle_s: u64, lifetime_s: u64) -> Sessions {
        assert!(sessions_max > 0 && idle_s > 0 && lifetime_s >= idle_s);
        Sessions {
            by_id: Mutex::new(HashMap::with_capacity(sessions_max)),
            sessions_max,
            idle_s,
            lifetime_s,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves the map consistent (every
        // change is one insert or remove), so poisoning is ignored.
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a session for `operator` at `epoch`, with the second factor
    /// given or still due; returns its id (for the cookie).
    ///
    /// # Errors
    /// [`SessionsFull`] when `sessions_max` sessions are live even after
    /// dropping the expired ones.
    pub(crate) fn open(
        &self,
        operator: &str,
        epoch: u64,
        second_factor: bool,
        now_s: u64,
    ) -> Result<String, SessionsFull> {
        let mut by_id = self.lock();
        if by_id.len() >= self.sessions_max {
            let (idle_s, lifetime_s) = (self.idle_s, self.lifetime_s);
            by_id.retain(|_, s| !s.expired(now_s, idle_s, lifetime_s));
        }
        if by_id.len() >= self.sessions_max {
            tracing::warn!(
                sessions_max = self.sessions_max,
                "session limit reached: sign-in refused"
            );
            return Err(SessionsFull);
        }
        let id = random_token();
        let session = Session {
            operator: operator.to_string(),
            epoch,
            second_factor,
            enrolling: None,
            csrf: random_token(),
            created_s: now_s,
            seen_s: now_s,
            flash: None,
        };
        by_id.insert(id.clone(), session);
        assert!(by_id.len() <= self.sessions_max);
        Ok(id)
    }

    /// The live session with this id, marked as seen now; an expired one is
    /// dropped and `None`.
    pub(crate) fn touch(&self, id: &str, now_s: u64) -> Option<SessionView> {
        let mut by_id = self.lock();
        let session = by_id.get_mut(id)?;
        if session.expired(now_s, self.idle_s, self.lifetime_s) {
            by_id.remove(id);
            return None;
        }
        session.seen_s = now_s;
        Some(SessionView {
            operator: session.operator.clone(),
            epoch: session.epoch,
            second_factor: session.second_factor,
            enrolling: session.enrolling.clone(),
            csrf: session.csrf.clone(),
        })
    }

    /// Records the second factor given, at the operator's `epoch` (a
    /// change of one's own password moves it too).
    pub(crate) fn confirm(&self, id: &str, epoch: u64) {
        if let Some(session) = self.lock().get_mut(id) {
            session.second_factor = true;
            session.epoch = epoch;
            session.enrolling = None;
        }
    }

    /// Keeps the TOTP secret shown for enrolment.
    pub(crate) fn set_enrolling(&self, id: &str, secret: String) {
        if let Some(session) = self.lock().get_mut(id) {
            session.enrolling = Some(secret);
        }
    }

    /// Ends a session (sign-out).
    pub(crate) fn close(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Leaves a message for the session's next page.
    pub(crate) fn set_flash(&self, id: &str, flash: Flash) {
        if let Some(session) = self.lock().get_mut(id) {
            session.flash = Some(flash);
        }
    }

    /// Takes the message left for this page, if any.
    pub(crate) fn take_flash(&self, id: &str) -> Option<Flash> {
        self.lock().get_mut(id)?.flash.take()
    }

    /// Live and expired sessions not yet dropped.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_and_at_their_lifetime() {
        let sessions = Sessions::new(10, 100, 250);
        let id = sessions.open("alice", 0, true, 1_000).expect("room");
        assert_eq!(sessions.touch(&id, 1_099).expect("live").operator, "alice");
        assert!(sessions.touch(&id, 1_198).is_some(), "idle time restarts");
        assert!(sessions.touch(&id, 1_249).is_some());
        assert!(sessions.touch(&id, 1_250).is_none(), "lifetime reached");
        assert_eq!(sessions.len(), 0, "an expired session is dropped");
        let id = sessions.open("alice", 0, true, 2_000).expect("room");
        assert!(sessions.touch(&id, 2_100).is_none(), "idle expiry");
    }

    #[test]
    fn the_limit_holds_and_expired_sessions_make_room() {
        let sessions = Sessions::new(2, 100, 1_000);
        let a = sessions.open("a", 0, true, 0).expect("room");
        sessions.open("b", 0, true, 50).expect("room");
        assert_eq!(sessions.open("c", 0, true, 60), Err(SessionsFull));
        assert!(sessions.touch(&a, 60).is_some());
        assert_eq!(
            sessions.open("c", 0, true, 120),
            Err(SessionsFull),
            "both still live"
        );
        sessions.open("c", 0, true, 151).expect("b expired at 150");
        assert_eq!(sessions.len(), 2);
    }

    #[test]
    fn ids_and_tokens_are_random_and_compared_whole() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 2 * TOKEN_BYTES);
        assert_ne!(a, b);
        assert!(tokens_equal(&a, &a.clone()));
        assert!(!tokens_equal(&a, &b));
        assert!(!tokens_equal(&a, &a[1..]));
        assert!(!tokens_equal("", &a));
    }

    #[test]
    fn flash_is_shown_once() {
        let sessions = Sessions::new(1, 100, 100);
        let id = sessions.open("a", 0, true, 0).expect("room");
        sessions.set_flash(&id, Flash::Notice("done".into()));
        assert!(matches!(sessions.take_flash(&id), Some(Flash::Notice(t)) if t == "done"));
        assert!(sessions.take_flash(&id).is_none());
    }
}
