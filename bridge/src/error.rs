//! The bridge's one error boundary: every failure reaching a client is an [`ApiError`] with a
//! stable code; internal causes go to the log, never to the client.

use async_graphql::ErrorExtensions as _;

use crate::store::StoreError;

/// Stable error codes (GraphQL `extensions.code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// No or invalid credentials.
    Unauthenticated,
    /// Authenticated, but this kind of caller may not do this.
    Forbidden,
    /// No such object for this caller (also: another account's object).
    NotFound,
    /// The object's time is up.
    Expired,
    /// Single-use object already used.
    AlreadyUsed,
    /// Too many requests; retry later.
    RateLimited,
    /// The input is invalid; nothing changed.
    InvalidInput,
    /// The account has no companion install that can receive the request.
    NoActiveCompanion,
    /// Something failed on our side.
    Internal,
}

impl ErrorCode {
    /// The code as clients see it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::Expired => "EXPIRED",
            Self::AlreadyUsed => "ALREADY_USED",
            Self::RateLimited => "RATE_LIMITED",
            Self::InvalidInput => "INVALID_INPUT",
            Self::NoActiveCompanion => "NO_ACTIVE_COMPANION",
            Self::Internal => "INTERNAL",
        }
    }
}

/// An error a client receives.
///
/// It deliberately does not implement `Display`: async-graphql converts any `Display` type into
/// an error without our code, so only the explicit conversion below may produce one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable message, safe to show.
    pub message: String,
    /// For `RATE_LIMITED`: seconds until a retry can succeed.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    /// An error with a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// `UNAUTHENTICATED`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }

    /// `FORBIDDEN`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// `NOT_FOUND` for an object kind.
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    /// `INVALID_INPUT`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidInput, message)
    }

    /// `RATE_LIMITED` with a retry hint.
    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs.max(1)),
            ..Self::new(ErrorCode::RateLimited, message)
        }
    }

    /// `INTERNAL`; the cause is logged here and not shown.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::internal(&e)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::internal(&e)
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(e: ApiError) -> Self {
        let code = e.code.as_str();
        let retry = e.retry_after_secs;
        async_graphql::Error::new(e.message).extend_with(|_, ext| {
            ext.set("code", code);
            if let Some(secs) = retry {
                ext.set("retryAfterSeconds", secs);
            }
        })
    }
}

/// Result of a resolver.
pub type ApiResult<T> = Result<T, ApiError>;
