//! TURN REST credentials: the time-limited scheme of coturn's `use-auth-secret`.
//!
//! burrowd and the relay share a secret. For each session burrowd mints
//!
//! ```text
//! username = "<unix expiry seconds>:<id>"
//! password = base64(HMAC-SHA1(secret, username))
//! ```
//!
//! and the relay recomputes the password from the username, refusing it once the expiry has
//! passed. No per-user state is kept on the relay, so coturn and burrowd's embedded relay
//! verify the same credentials.
//!
//! # Security considerations
//!
//! - The expiry is inside the signed username, so it cannot be extended without the secret.
//! - A credential is a bearer secret until it expires: keep lifetimes short (minutes) and
//!   never log passwords.
//! - HMAC-SHA1 is what the scheme (and coturn) specifies; it is used as a MAC, where SHA-1's
//!   collision weakness does not apply.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// A TURN username and password pair.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnCredential {
    /// `"<unix expiry>:<id>"`.
    pub username: String,
    /// `base64(HMAC-SHA1(secret, username))`.
    pub password: String,
}

impl std::fmt::Debug for TurnCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnCredential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why a TURN username was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TurnAuthError {
    /// The username is not `"<unix expiry>:<id>"`.
    #[error("TURN username is not of the form <unix-expiry>:<id>")]
    Malformed,
    /// The expiry in the username has passed.
    #[error("TURN credential expired at {expired_at} (now {now})")]
    Expired {
        /// Expiry in the username, Unix seconds.
        expired_at: u64,
        /// The time it was checked at, Unix seconds.
        now: u64,
    },
}

impl TurnCredential {
    /// Mints a credential for `id` that expires at `expires_at` (Unix seconds).
    ///
    /// `id` names the holder (a session or agent) for the relay's logs; a `:` in it is kept,
    /// since only the first `:` separates the expiry.
    pub fn mint(secret: &[u8], id: &str, expires_at: u64) -> Self {
        let username = format!("{expires_at}:{id}");
        let password = password_for(secret, &username);
        Self { username, password }
    }
}

/// Computes the password of `username` under `secret`.
pub fn password_for(secret: &[u8], username: &str) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = match Hmac::<Sha1>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(username.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// Checks that `username` has not expired at `now` (Unix seconds) and returns the password
/// the holder must prove, for the relay's long-term credential check.
///
/// The relay then verifies the request's MESSAGE-INTEGRITY with this password, which proves
/// the username was minted with `secret`.
pub fn verify(secret: &[u8], username: &str, now: u64) -> Result<String, TurnAuthError> {
    let (expiry, _id) = username.split_once(':').ok_or(TurnAuthError::Malformed)?;
    let expired_at: u64 = expiry.parse().map_err(|_| TurnAuthError::Malformed)?;
    if expired_at <= now {
        return Err(TurnAuthError::Expired { expired_at, now });
    }
    Ok(password_for(secret, username))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_matches_coturn_rest_api_vector() {
        // Computed independently: printf '1700000000:alice' | openssl dgst -sha1 -hmac north -binary | base64
        let c = TurnCredential::mint(b"north", "alice", 1_700_000_000);
        assert_eq!(c.username, "1700000000:alice");
        assert_eq!(c.password, "Cd/49soE35ICqcJF/bCTn8Z4OyE=");
    }

    #[test]
    fn fresh_credential_verifies_to_its_password() {
        let c = TurnCredential::mint(b"secret", "session-1", 1_000);
        assert_eq!(verify(b"secret", &c.username, 999), Ok(c.password));
    }

    #[test]
    fn expired_credential_is_refused() {
        let c = TurnCredential::mint(b"secret", "session-1", 1_000);
        assert_eq!(
            verify(b"secret", &c.username, 1_000),
            Err(TurnAuthError::Expired {
                expired_at: 1_000,
                now: 1_000
            })
        );
    }

    #[test]
    fn other_secret_gives_other_password() {
        let c = TurnCredential::mint(b"secret", "s", 1_000);
        assert_ne!(verify(b"other", &c.username, 0), Ok(c.password));
    }

    #[test]
    fn malformed_usernames_are_refused() {
        for u in ["", "alice", "soon:alice", "-1:alice", ":alice"] {
            assert_eq!(verify(b"s", u, 0), Err(TurnAuthError::Malformed), "{u:?}");
        }
    }

    #[test]
    fn id_may_contain_colons() {
        let c = TurnCredential::mint(b"s", "a:b", 10);
        assert_eq!(verify(b"s", "10:a:b", 5), Ok(c.password));
    }

    #[test]
    fn password_is_not_in_debug_output() {
        let c = TurnCredential::mint(b"s", "a", 10);
        assert!(!format!("{c:?}").contains(&c.password));
    }
}
