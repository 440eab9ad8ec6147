//! Sample WebAuthn options, as a relying party's server would send them, so the demo has files
//! to feed `register` and `sign-in` (`tether-demo options register|sign-in --rp-id …`).
//!
//! Both ask for a discoverable credential (a passkey) with user verification required; the
//! sign-in options have an empty `allowCredentials` (usernameless sign-in), so any passkey the
//! phone holds for the RP id answers. Challenges and user handles are fresh random bytes. A
//! real relying party keeps the challenge to check the response; these samples are for trying
//! the flow, and the end-to-end tests use a relying-party library's own options instead.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use thiserror::Error;

/// How long the sample options give the ceremony, milliseconds (the delivery's five minutes).
pub const TIMEOUT_MS: u64 = 300_000;

/// Why sample options could not be made.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// The RP id is not a plausible host name.
    #[error("invalid RP id {0:?}: expected a host name such as example.com")]
    RpId(String),
    /// The user name is empty or too long.
    #[error("invalid user name: 1 to 64 characters")]
    UserName,
    /// The operating system gave no randomness.
    #[error("the operating system's random source failed")]
    Randomness,
}

fn random_b64<const N: usize>() -> Result<String, OptionsError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| OptionsError::Randomness)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn check_rp_id(rp_id: &str) -> Result<(), OptionsError> {
    let ok = !rp_id.is_empty()
        && rp_id.len() <= 253
        && rp_id.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(OptionsError::RpId(rp_id.to_owned()))
    }
}

/// `PublicKeyCredentialCreationOptionsJSON` for a passkey of `user_name` at `rp_id`: ES256
/// (and RS256 as a fallback the phone will not pick), resident key and user verification
/// required, no attestation, hint `hybrid`.
///
/// # Errors
///
/// [`OptionsError`] for a bad RP id or user name, or no randomness.
pub fn registration(rp_id: &str, user_name: &str) -> Result<Value, OptionsError> {
    check_rp_id(rp_id)?;
    if user_name.is_empty() || user_name.chars().count() > 64 {
        return Err(OptionsError::UserName);
    }
    Ok(json!({
        "rp": {"id": rp_id, "name": rp_id},
        "user": {"id": random_b64::<16>()?, "name": user_name, "displayName": user_name},
        "challenge": random_b64::<32>()?,
        "pubKeyCredParams": [
            {"type": "public-key", "alg": -7},
            {"type": "public-key", "alg": -257}
        ],
        "timeout": TIMEOUT_MS,
        "excludeCredentials": [],
        "authenticatorSelection": {
            "residentKey": "required",
            "requireResidentKey": true,
            "userVerification": "required"
        },
        "attestation": "none",
        "hints": ["hybrid"]
    }))
}

/// `PublicKeyCredentialRequestOptionsJSON` for a usernameless sign-in at `rp_id` with user
/// verification required.
///
/// # Errors
///
/// [`OptionsError`] for a bad RP id or no randomness.
pub fn sign_in(rp_id: &str) -> Result<Value, OptionsError> {
    check_rp_id(rp_id)?;
    Ok(json!({
        "challenge": random_b64::<32>()?,
        "timeout": TIMEOUT_MS,
        "rpId": rp_id,
        "allowCredentials": [],
        "userVerification": "required",
        "hints": ["hybrid"]
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_parse_as_the_agent_reads_them() {
        let creation = registration("example.com", "alice").unwrap_or(Value::Null);
        let parsed = device_agent::webauthn::CreationOptions::from_json(&creation.to_string()).ok();
        assert_eq!(
            parsed.as_ref().and_then(|p| p.rp_id.as_deref()),
            Some("example.com")
        );
        assert_eq!(parsed.map(|p| p.user_name), Some("alice".to_owned()));
        let request = sign_in("example.com").unwrap_or(Value::Null);
        let parsed = device_agent::webauthn::RequestOptions::from_json(&request.to_string()).ok();
        assert_eq!(parsed.map(|p| p.challenge.len()), Some(32));
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(matches!(
            registration("exa mple.com", "alice"),
            Err(OptionsError::RpId(_))
        ));
        assert!(matches!(sign_in(""), Err(OptionsError::RpId(_))));
        assert!(matches!(
            registration("example.com", ""),
            Err(OptionsError::UserName)
        ));
    }
}
