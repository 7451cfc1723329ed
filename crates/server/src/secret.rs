//! Bearer secrets: API tokens, agent tokens, signaling tickets, and the browser's: login
//! cookies, launch codes and app credential cookies.
//!
//! Each is 32 random bytes, base64url without padding, behind a prefix that tells a person
//! (or a secret scanner) what it is. burrowd stores only the SHA-256 of a secret: a leaked
//! database does not let anyone act as a user or an agent.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Prefix of user API tokens.
pub const USER_TOKEN_PREFIX: &str = "bu_";
/// Prefix of agent tokens.
pub const AGENT_TOKEN_PREFIX: &str = "ba_";
/// Prefix of signaling tickets.
pub const TICKET_PREFIX: &str = "bt_";
/// Prefix of dashboard login (web session) cookies.
pub const WEB_SESSION_PREFIX: &str = "bw_";
/// Prefix of one-time launch codes.
pub const APP_CODE_PREFIX: &str = "bc_";
/// Prefix of app credential cookies.
pub const APP_CREDENTIAL_PREFIX: &str = "bp_";

/// A fresh random secret: `prefix` followed by 32 random bytes in base64url.
pub fn generate(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A fresh random identifier (16 bytes, base64url): unguessable, safe in URL paths.
pub fn generate_id() -> String {
    let bytes: [u8; 16] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of a secret: lowercase hex SHA-256.
///
/// Lookups compare these hashes, never the secrets, so how long a database comparison takes
/// tells nothing useful about a presented secret.
pub fn hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_prefix_and_43_base64url_chars() {
        let t = generate(USER_TOKEN_PREFIX);
        let body = t.strip_prefix("bu_").expect("prefix");
        assert_eq!(body.len(), 43);
        assert!(
            body.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(generate(USER_TOKEN_PREFIX), t);
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
