//! HTTP endpoints: `/graphql` (POST queries and mutations; GET upgrades to a
//! `graphql-transport-ws` subscription socket, or serves GraphiQL in development),
//! `/.well-known/jwks.json`, `/healthz`, `/readyz`.

use std::net::SocketAddr;

use async_graphql::Data;
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, GraphiQLSource};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::Json;
use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequestParts, Request, State, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response as HttpResponse};
use serde_json::json;

use crate::graphql::BridgeSchema;
use crate::principal::{Caller, RequestMeta};
use crate::state::AppState;

/// What handlers share.
#[derive(Clone)]
pub struct Http {
    /// Application state.
    pub state: AppState,
    /// The schema.
    pub schema: BridgeSchema,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn client_addr(extensions: &axum::http::Extensions) -> Option<String> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
}

fn error_body(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    (
        status,
        Json(json!({ "errors": [{ "message": message, "extensions": { "code": code } }] })),
    )
        .into_response()
}

/// `POST /graphql`.
pub async fn graphql_post(State(http): State<Http>, request: Request) -> HttpResponse {
    let (parts, body) = request.into_parts();
    let body: Bytes =
        match axum::body::to_bytes(body, http.state.config.graphql.max_body_bytes).await {
            Ok(b) => b,
            Err(_) => {
                return error_body(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "INVALID_INPUT",
                    &format!(
                        "request body exceeds {} bytes",
                        http.state.config.graphql.max_body_bytes
                    ),
                );
            }
        };
    let headers = &parts.headers;
    let request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error_body(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                &format!("request body is not a GraphQL JSON request: {e}"),
            );
        }
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let meta = RequestMeta::from_authorization(authorization, client_addr(&parts.extensions));
    let response = http.schema.execute(request.data(Caller::new(meta))).await;
    Json(response).into_response()
}

/// `GET /graphql`: WebSocket subscriptions, or GraphiQL when enabled.
pub async fn graphql_get(State(http): State<Http>, request: Request) -> HttpResponse {
    let (mut parts, _body) = request.into_parts();
    let protocol = GraphQLProtocol::from_request_parts(&mut parts, &())
        .await
        .ok();
    let addr = client_addr(&parts.extensions);
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .ok();
    if let (Some(protocol), Some(upgrade)) = (protocol, upgrade) {
        let schema = http.schema.clone();
        let limit = http.state.config.graphql.max_body_bytes;
        return upgrade
            .protocols(ALL_WEBSOCKET_PROTOCOLS)
            .max_message_size(limit)
            .max_frame_size(limit)
            .on_upgrade(move |socket| async move {
                GraphQLWebSocket::new(socket, schema, protocol)
                    .on_connection_init(move |payload| async move {
                        let authorization = payload
                            .get("authorization")
                            .or_else(|| payload.get("Authorization"))
                            .and_then(|v| v.as_str())
                            .map(str::to_owned);
                        let mut data = Data::default();
                        data.insert(Caller::connection(RequestMeta::from_authorization(
                            authorization.as_deref(),
                            addr,
                        )));
                        Ok(data)
                    })
                    .serve()
                    .await;
            });
    }
    if http.state.config.graphql.graphiql {
        return Html(
            GraphiQLSource::build()
                .endpoint("/graphql")
                .subscription_endpoint("/graphql")
                .finish(),
        )
        .into_response();
    }
    error_body(
        StatusCode::METHOD_NOT_ALLOWED,
        "INVALID_INPUT",
        "use POST for queries and mutations, or a WebSocket for subscriptions",
    )
}

/// `GET /.well-known/jwks.json`: the envelope signing keys (current and recently retired).
pub async fn jwks(State(http): State<Http>) -> HttpResponse {
    match http.state.keys.read() {
        Ok(keys) => (
            [(header::CACHE_CONTROL, "public, max-age=300")],
            Json(keys.jwks()),
        )
            .into_response(),
        Err(_) => error_body(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "internal error",
        ),
    }
}

/// `GET /metrics`: Prometheus text exposition (see [`crate::metrics`]).
pub async fn metrics() -> HttpResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
        .into_response()
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: the database answers and every migration is applied.
pub async fn readyz(State(http): State<Http>) -> HttpResponse {
    match http.state.store.ready().await {
        Ok(true) => (StatusCode::OK, "ready").into_response(),
        Ok(false) => (StatusCode::SERVICE_UNAVAILABLE, "migrations pending").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}
