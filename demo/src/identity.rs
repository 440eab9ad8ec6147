//! The simulated phone's sign-in: access tokens from the bridge's development issuer, and the
//! bridge's clock seen from the companion library.
//!
//! A real companion app gets its access token from the operator's identity provider. The demo
//! and the tests use the bridge's built-in development issuer instead (the same key the bridge
//! trusts, read from its key file — or, in-process, the bridge's own issuer), minting a fresh
//! token for every request, dated by the bridge's clock so a test's manual clock and the token
//! agree.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use bridge::auth::dev_issuer::DevIssuer;
use bridge::clock::SharedClock;
use companion::client::TokenFuture;
use companion::{AccessToken, TokenError, TokenProvider};
use thiserror::Error;

/// Lifetime of each minted token, seconds.
const TOKEN_TTL_SECS: u64 = 3600;

/// Why the development issuer could not be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The bridge's development issuer key file is missing: the bridge has not run with this
    /// data directory, or runs with another identity provider.
    #[error(
        "no development issuer key at {0} (start the bridge with this --data-dir first; it creates the key)"
    )]
    NoIssuerKey(String),
    /// The key file could not be read.
    #[error("development issuer key: {0}")]
    Key(String),
}

/// Mints development-issuer access tokens for one account: a [`TokenProvider`].
#[derive(Clone)]
pub struct DevTokens {
    issuer: Arc<DevIssuer>,
    account: String,
    audience: String,
    clock: SharedClock,
}

impl fmt::Debug for DevTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevTokens")
            .field("account", &self.account)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl DevTokens {
    /// Tokens for `account` with audience `audience` (the bridge's `public_url`), dated by
    /// `clock`.
    pub fn new(
        issuer: Arc<DevIssuer>,
        account: impl Into<String>,
        audience: impl Into<String>,
        clock: SharedClock,
    ) -> Self {
        Self {
            issuer,
            account: account.into(),
            audience: audience.into(),
            clock,
        }
    }

    /// Tokens signed with the bridge's development issuer key file at `key_file` (the bridge
    /// creates it in its data directory). Never creates a key: one the bridge does not know
    /// would only produce refused tokens.
    ///
    /// # Errors
    ///
    /// [`IdentityError::NoIssuerKey`] when the file does not exist, [`IdentityError::Key`] when
    /// it cannot be read.
    pub fn from_key_file(
        key_file: &Path,
        account: impl Into<String>,
        audience: impl Into<String>,
        clock: SharedClock,
    ) -> Result<Self, IdentityError> {
        if !key_file.exists() {
            return Err(IdentityError::NoIssuerKey(key_file.display().to_string()));
        }
        let issuer =
            DevIssuer::load_or_create(key_file).map_err(|e| IdentityError::Key(e.to_string()))?;
        Ok(Self::new(Arc::new(issuer), account, audience, clock))
    }

    /// The account the tokens sign in to.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// A fresh token.
    ///
    /// # Errors
    ///
    /// [`TokenError`] if the issuer refuses (an empty account name).
    pub fn mint(&self) -> Result<AccessToken, TokenError> {
        self.issuer
            .mint(
                &self.account,
                &self.audience,
                self.clock.now_secs(),
                TOKEN_TTL_SECS,
            )
            .map(AccessToken::new)
            .map_err(|e| TokenError::new(format!("development issuer: {e}")))
    }
}

impl TokenProvider for DevTokens {
    fn access_token(&self) -> TokenFuture<'_> {
        let token = self.mint();
        Box::pin(async move { token })
    }
}

/// The bridge's clock as the companion library's [`companion::Clock`]: the phone checks
/// envelope times on the same (possibly manual) clock the bridge signs them with.
#[derive(Clone)]
pub struct BridgeClock(pub SharedClock);

impl fmt::Debug for BridgeClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BridgeClock").field(&self.0).finish()
    }
}

impl companion::Clock for BridgeClock {
    fn now_ms(&self) -> i64 {
        self.0.now_ms()
    }
}
