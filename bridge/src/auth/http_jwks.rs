//! The identity provider's key set fetched from its `jwks_uri` over HTTPS.
//!
//! Bounded in time (10 s) and size (256 KiB); a plain `http://` URL is refused unless the
//! operator sets `identity.danger_accept_http_jwks_url` (tests and private networks). A failed
//! fetch leaves the verifier's previous key set in place.

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;

use super::AuthError;
use super::jwk::{JwksFetcher, JwksFuture, parse_jwks};

/// Largest key set document accepted.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Time allowed for one fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Fetches a key set from a URL.
#[derive(Debug, Clone)]
pub struct HttpJwks {
    url: reqwest::Url,
    client: reqwest::Client,
}

impl HttpJwks {
    /// A fetcher for `url`; `https` only unless `allow_http`.
    pub fn new(url: &str, allow_http: bool) -> Result<Self, AuthError> {
        let url: reqwest::Url = url
            .parse()
            .map_err(|_| AuthError::Config("identity.jwks_url is not a URL".into()))?;
        match url.scheme() {
            "https" => {}
            "http" if allow_http => {}
            _ => {
                return Err(AuthError::Config(
                    "identity.jwks_url must be https (or set identity.danger_accept_http_jwks_url)"
                        .into(),
                ));
            }
        }
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| AuthError::Config(format!("HTTP client: {e}")))?;
        Ok(Self { url, client })
    }

    async fn get(&self) -> Result<JwkSet, AuthError> {
        let fail = |what: String| AuthError::Jwks(format!("{}: {what}", self.url));
        let mut response = self
            .client
            .get(self.url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| fail(format!("request failed: {e}")))?;
        if !response.status().is_success() {
            return Err(fail(format!("HTTP {}", response.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| fail(format!("reading the body: {e}")))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(fail(format!("key set larger than {MAX_JWKS_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body)
    }
}

impl JwksFetcher for HttpJwks {
    fn fetch(&self) -> JwksFuture<'_> {
        Box::pin(self.get())
    }
}
