//! The GraphQL API: schema, limits and the error boundary.
//!
//! Every resolver error is an [`ApiError`](crate::error::ApiError) with a stable
//! `extensions.code`. Objects of another account are `NOT_FOUND`, never `FORBIDDEN`, so ids
//! cannot be probed; `FORBIDDEN` only says the caller is the wrong *kind* (a device calling a
//! companion operation or the reverse).

pub mod guard;
mod mutation;
mod query;
mod subscription;
pub mod types;

use async_graphql::{Context, Schema};

pub use mutation::Mutation;
pub use query::Query;
pub use subscription::Subscription;

use crate::config::GraphqlConfig;
use crate::error::ApiError;
use crate::principal::Caller;
use crate::state::AppState;

/// The bridge's schema.
pub type BridgeSchema = Schema<Query, Mutation, Subscription>;

/// Builds the schema with the configured limits.
pub fn schema(state: Option<AppState>, config: &GraphqlConfig) -> BridgeSchema {
    let mut builder = Schema::build(Query, Mutation, Subscription)
        .limit_depth(config.max_depth)
        .limit_complexity(config.max_complexity)
        .limit_recursive_depth(32)
        .limit_directives(8)
        .extension(guard::Guard {
            max_aliases: config.max_aliases,
        });
    if !config.introspection {
        builder = builder.disable_introspection();
    }
    if let Some(state) = state {
        builder = builder.data(state);
    }
    builder.finish()
}

/// The SDL of the schema (what `schema.graphql` holds).
pub fn sdl() -> String {
    schema(None, &GraphqlConfig::default()).sdl()
}

pub(crate) fn parts<'a>(ctx: &'a Context<'_>) -> Result<(&'a AppState, &'a Caller), ApiError> {
    let state = ctx
        .data::<AppState>()
        .map_err(|_| ApiError::internal(&"schema built without state"))?;
    let caller = ctx
        .data::<Caller>()
        .map_err(|_| ApiError::internal(&"request without caller"))?;
    Ok((state, caller))
}

pub(crate) fn check_id(
    prefix: &str,
    id: &async_graphql::ID,
    what: &str,
) -> Result<String, ApiError> {
    if crate::id::is_valid(prefix, id) {
        Ok(id.to_string())
    } else {
        Err(ApiError::not_found(what))
    }
}
