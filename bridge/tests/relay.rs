//! The hosted tunnel relay over real sockets: a bridge on 127.0.0.1:0 with a manual clock, and
//! tokio-tungstenite clients playing the phone (`/cable/new`) and the client
//! (`/cable/connect`). Time limits are driven by moving the clock and running the relay's
//! sweep, never by waiting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bridge::config::Config;
use bridge::relay::{RelayConfig, TunnelCounts};
use futures_util::{SinkExt, StreamExt};
use hybrid::tunnel::{RoutingId, TunnelId};
use support::{Db, TestBridge};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderMap;
use tokio_tungstenite::tungstenite::{self, Message};

type Ws = tokio_tungstenite::WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Longest wait for something that must happen promptly (a failure, not a synchronisation).
const PROMPT: Duration = Duration::from_secs(10);

async fn bridge_with(tweak: impl FnOnce(&mut RelayConfig)) -> TestBridge {
    TestBridge::start_with(Db::Sqlite, |c: &mut Config| tweak(&mut c.relay)).await
}

fn fresh_tunnel_id() -> TunnelId {
    TunnelId::new(*uuid::Uuid::new_v4().as_bytes())
}

fn request(b: &TestBridge, path: &str, protocol: Option<&str>, signal: bool) -> Request {
    let mut r = format!("ws://{}{path}", b.addr)
        .into_client_request()
        .unwrap();
    if let Some(p) = protocol {
        r.headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
    }
    if signal {
        r.headers_mut()
            .insert("X-caBLE-Signal-Connection", "true".parse().unwrap());
    }
    r
}

/// An upgrade that must be refused: (status, body, headers).
async fn refused(r: Request) -> (u16, String, HeaderMap) {
    match tokio_tungstenite::connect_async(r).await {
        Err(tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap(),
            resp.headers().clone(),
        ),
        Ok((_, resp)) => panic!("upgrade accepted: {resp:?}"),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

struct Phone {
    ws: Ws,
    routing_id: RoutingId,
    response: Response,
}

async fn open_new(b: &TestBridge, tid: &TunnelId, signal: bool) -> Phone {
    let (ws, response) = tokio_tungstenite::connect_async(request(
        b,
        &format!("/cable/new/{tid}"),
        Some("fido.cable"),
        signal,
    ))
    .await
    .unwrap();
    let rid = response
        .headers()
        .get("X-caBLE-Routing-ID")
        .expect("routing id header")
        .to_str()
        .unwrap();
    let routing_id = RoutingId::from_hex(rid).unwrap();
    Phone {
        ws,
        routing_id,
        response,
    }
}

fn connect_path(rid: &RoutingId, tid: &TunnelId) -> String {
    format!("/cable/connect/{rid}/{tid}")
}

async fn join(b: &TestBridge, rid: &RoutingId, tid: &TunnelId, signal: bool) -> (Ws, Response) {
    tokio_tungstenite::connect_async(request(
        b,
        &connect_path(rid, tid),
        Some("fido.cable"),
        signal,
    ))
    .await
    .unwrap()
}

/// A joined tunnel: (phone, client).
async fn tunnel(b: &TestBridge) -> (Ws, Ws) {
    let tid = fresh_tunnel_id();
    let phone = open_new(b, &tid, false).await;
    let (client, _) = join(b, &phone.routing_id, &tid, false).await;
    (phone.ws, client)
}

async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(PROMPT, ws.next())
        .await
        .expect("a message in time")
        .expect("socket open")
        .expect("no socket error")
}

async fn next_binary(ws: &mut Ws) -> Vec<u8> {
    match next(ws).await {
        Message::Binary(b) => b.to_vec(),
        other => panic!("expected a binary message, got {other:?}"),
    }
}

/// The next message must be a close frame; answers it and returns (code, reason).
async fn expect_close(ws: &mut Ws) -> (u16, String) {
    match next(ws).await {
        Message::Close(Some(frame)) => {
            // Reading on flushes our close reply; then the stream ends.
            let _ = tokio::time::timeout(PROMPT, ws.next()).await;
            (u16::from(frame.code), frame.reason.to_string())
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Closes our side and waits for the relay's answer (the relay has released the tunnel by
/// then).
async fn close_and_wait(ws: &mut Ws) {
    ws.close(None).await.unwrap();
    loop {
        match tokio::time::timeout(PROMPT, ws.next())
            .await
            .expect("close answered in time")
        {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
}

async fn round_trip(phone: &mut Ws, client: &mut Ws, tag: u8) {
    client.send(Message::binary(vec![tag, 1])).await.unwrap();
    assert_eq!(next_binary(phone).await, vec![tag, 1]);
    phone.send(Message::binary(vec![tag, 2])).await.unwrap();
    assert_eq!(next_binary(client).await, vec![tag, 2]);
}

fn counts(b: &TestBridge) -> TunnelCounts {
    b.state.relay.counts()
}

#[tokio::test]
async fn happy_path_relays_binary_messages_unchanged_both_ways() {
    let b = bridge_with(|_| {}).await;
    let tid = fresh_tunnel_id();
    // Lower-case ids (libwebauthn) are accepted as well as upper case (Chromium).
    let (mut phone, response) = tokio_tungstenite::connect_async(request(
        &b,
        &format!("/cable/new/{}", tid.to_hex().to_lowercase()),
        Some("fido.cable"),
        false,
    ))
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 101);
    assert_eq!(response.headers()["sec-websocket-protocol"], "fido.cable");
    let rid_hex = response.headers()["x-cable-routing-id"].to_str().unwrap();
    assert_eq!(rid_hex.len(), 6);
    assert!(
        rid_hex
            .chars()
            .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)),
        "{rid_hex}"
    );
    assert_eq!(
        response
            .headers()
            .get_all("x-cable-routing-id")
            .iter()
            .count(),
        1
    );
    assert!(
        response
            .headers()
            .get("x-cable-signal-connection")
            .is_none()
    );
    assert_eq!(
        counts(&b),
        TunnelCounts {
            pending: 1,
            open: 0
        }
    );

    let rid = RoutingId::from_hex(rid_hex).unwrap();
    let (mut client, response) = join(&b, &rid, &tid, false).await;
    assert_eq!(response.headers()["sec-websocket-protocol"], "fido.cable");
    assert_eq!(
        counts(&b),
        TunnelCounts {
            pending: 0,
            open: 1
        }
    );

    // Client speaks first (Noise message 1), as in the protocol.
    let msg1: Vec<u8> = (0..81u8).collect();
    client.send(Message::binary(msg1.clone())).await.unwrap();
    assert_eq!(next_binary(&mut phone).await, msg1);
    // The largest message allowed, every byte value, and an empty one.
    let big: Vec<u8> = (0..65_536u32).map(|i| (i * 7 % 251) as u8).collect();
    phone.send(Message::binary(big.clone())).await.unwrap();
    phone.send(Message::binary(Vec::<u8>::new())).await.unwrap();
    assert_eq!(next_binary(&mut client).await, big);
    assert_eq!(next_binary(&mut client).await, Vec::<u8>::new());
    // Order is kept in a burst.
    for i in 0..50u8 {
        client.send(Message::binary(vec![i; 3])).await.unwrap();
    }
    for i in 0..50u8 {
        assert_eq!(next_binary(&mut phone).await, vec![i; 3]);
    }

    // The client closes: the phone is closed with 1000 and the tunnel is gone.
    close_and_wait(&mut client).await;
    assert_eq!(
        expect_close(&mut phone).await,
        (1000, "peer closed the tunnel".into())
    );
    assert_eq!(counts(&b), TunnelCounts::default());
}

#[tokio::test]
async fn connection_signal_goes_only_to_sides_that_ask() {
    let b = bridge_with(|_| {}).await;

    // The phone asks, the client does not.
    let tid = fresh_tunnel_id();
    let mut phone = open_new(&b, &tid, true).await;
    assert_eq!(
        phone.response.headers()["x-cable-signal-connection"],
        "true"
    );
    let (mut client, response) = join(&b, &phone.routing_id, &tid, false).await;
    assert!(
        response
            .headers()
            .get("x-cable-signal-connection")
            .is_none()
    );
    assert_eq!(next_binary(&mut phone.ws).await, vec![0]);
    phone.ws.send(Message::binary(vec![9, 9])).await.unwrap();
    assert_eq!(next_binary(&mut client).await, vec![9, 9]);
    client.send(Message::binary(vec![7])).await.unwrap();
    assert_eq!(next_binary(&mut phone.ws).await, vec![7]);

    // Neither asks: the first message each side sees is its peer's.
    let tid = fresh_tunnel_id();
    let mut phone = open_new(&b, &tid, false).await;
    let (mut client, _) = join(&b, &phone.routing_id, &tid, false).await;
    client.send(Message::binary(vec![1])).await.unwrap();
    assert_eq!(next_binary(&mut phone.ws).await, vec![1]);
    phone.ws.send(Message::binary(vec![2])).await.unwrap();
    assert_eq!(next_binary(&mut client).await, vec![2]);

    // The client asks (as Chromium does), the phone does not.
    let tid = fresh_tunnel_id();
    let mut phone = open_new(&b, &tid, false).await;
    let (mut client, response) = join(&b, &phone.routing_id, &tid, true).await;
    assert_eq!(response.headers()["x-cable-signal-connection"], "true");
    assert_eq!(next_binary(&mut client).await, vec![0]);
    client.send(Message::binary(vec![3])).await.unwrap();
    assert_eq!(next_binary(&mut phone.ws).await, vec![3]);
}

#[tokio::test]
async fn a_message_sent_before_the_client_joins_is_delivered_first() {
    let b = bridge_with(|_| {}).await;
    let tid = fresh_tunnel_id();
    let mut phone = open_new(&b, &tid, false).await;
    phone.ws.send(Message::binary(vec![5, 5])).await.unwrap();
    let (mut client, _) = join(&b, &phone.routing_id, &tid, false).await;
    assert_eq!(next_binary(&mut client).await, vec![5, 5]);
    round_trip(&mut phone.ws, &mut client, 1).await;
}

#[tokio::test]
async fn a_tunnel_id_cannot_be_taken_twice() {
    let b = bridge_with(|_| {}).await;
    let tid = fresh_tunnel_id();
    let mut phone = open_new(&b, &tid, false).await;
    let (status, body, _) = refused(request(
        &b,
        &format!("/cable/new/{}", tid.to_hex().to_lowercase()),
        Some("fido.cable"),
        false,
    ))
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body,
        "this tunnel id is already taken; a tunnel id cannot be used twice\n"
    );
    // Still refused after the phone gave up: a tunnel id is single use.
    close_and_wait(&mut phone.ws).await;
    assert_eq!(counts(&b), TunnelCounts::default());
    let (status, _, _) = refused(request(
        &b,
        &format!("/cable/new/{tid}"),
        Some("fido.cable"),
        false,
    ))
    .await;
    assert_eq!(status, 409);
    // And the finished tunnel cannot be joined.
    let (status, _, _) = refused(request(
        &b,
        &connect_path(&phone.routing_id, &tid),
        Some("fido.cable"),
        false,
    ))
    .await;
    assert_eq!(status, 410);
}

#[tokio::test]
async fn connecting_to_an_unknown_tunnel_is_404() {
    let b = bridge_with(|_| {}).await;
    let (status, body, _) = refused(request(
        &b,
        &connect_path(&RoutingId::new([1, 2, 3]), &fresh_tunnel_id()),
        Some("fido.cable"),
        false,
    ))
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        "no pending tunnel with this routing id and tunnel id\n"
    );

    // A wrong routing id for a pending tunnel is also unknown, and does not use it up.
    let tid = fresh_tunnel_id();
    let mut phone = open_new(&b, &tid, false).await;
    let [x, y, z] = *phone.routing_id.as_bytes();
    let wrong = RoutingId::new([x ^ 1, y, z]);
    let (status, _, _) = refused(request(
        &b,
        &connect_path(&wrong, &tid),
        Some("fido.cable"),
        false,
    ))
    .await;
    assert_eq!(status, 404);
    let (mut client, _) = join(&b, &phone.routing_id, &tid, false).await;
    round_trip(&mut phone.ws, &mut client, 1).await;
}

#[tokio::test]
async fn a_second_connect_is_410() {
    let b = bridge_with(|_| {}).await;
    let tid = fresh_tunnel_id();
    let mut phone = open_new(&b, &tid, false).await;
    let (mut client, _) = join(&b, &phone.routing_id, &tid, false).await;
    let second = request(
        &b,
        &connect_path(&phone.routing_id, &tid),
        Some("fido.cable"),
        false,
    );
    let (status, body, _) = refused(second).await;
    assert_eq!(status, 410);
    assert_eq!(body, "this tunnel was already joined or has closed\n");
    // The first client is undisturbed.
    round_trip(&mut phone.ws, &mut client, 1).await;
    // After the tunnel closes: still 410.
    close_and_wait(&mut phone.ws).await;
    assert_eq!(expect_close(&mut client).await.0, 1000);
    let (status, _, _) = refused(request(
        &b,
        &connect_path(&phone.routing_id, &tid),
        Some("fido.cable"),
        false,
    ))
    .await;
    assert_eq!(status, 410);
}

#[tokio::test]
async fn bad_upgrades_and_paths_are_refused() {
    let b = bridge_with(|_| {}).await;
    let tid = fresh_tunnel_id();
    let path = format!("/cable/new/{tid}");

    let (status, body, _) = refused(request(&b, &path, None, false)).await;
    assert_eq!(status, 400);
    assert_eq!(body, "the WebSocket subprotocol fido.cable is required\n");
    let (status, _, _) = refused(request(&b, &path, Some("chat, fido.cable2"), false)).await;
    assert_eq!(status, 400);

    let resp = reqwest::get(b.url(&path)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 426);
    assert_eq!(resp.headers()["upgrade"], "websocket");
    assert_eq!(
        resp.text().await.unwrap(),
        "this endpoint only accepts WebSocket upgrades (subprotocol fido.cable)\n"
    );

    let (status, body, _) = refused(request(&b, "/cable/new/ABC", Some("fido.cable"), false)).await;
    assert_eq!(status, 400);
    assert_eq!(body, "bad relay path: tunnel id must be 16 bytes of hex\n");
    let (status, _, _) = refused(request(
        &b,
        &format!("/cable/connect/12345/{tid}"),
        Some("fido.cable"),
        false,
    ))
    .await;
    assert_eq!(status, 400);
    let (status, _, _) = refused(request(&b, "/cable/other/00", Some("fido.cable"), false)).await;
    assert_eq!(status, 404);
    let (status, _, _) = refused(request(
        &b,
        "/cable/contact/AAAA",
        Some("fido.cable"),
        false,
    ))
    .await;
    assert_eq!(status, 410);

    // None of the refusals took the tunnel id; a well-formed upgrade now succeeds.
    assert_eq!(counts(&b), TunnelCounts::default());
    let mut phone = open_new(&b, &tid, false).await;
    let (mut client, _) = join(&b, &phone.routing_id, &tid, false).await;
    round_trip(&mut phone.ws, &mut client, 1).await;
}

#[tokio::test]
async fn a_disabled_relay_answers_404() {
    let b = bridge_with(|c| c.enabled = false).await;
    let (status, body, _) = refused(request(
        &b,
        &format!("/cable/new/{}", fresh_tunnel_id()),
        Some("fido.cable"),
        false,
    ))
    .await;
    assert_eq!(status, 404);
    assert!(body.contains("relay.enabled = false"), "{body}");
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009_while_other_tunnels_keep_working() {
    let b = bridge_with(|c| c.max_frame_bytes = 1024).await;
    let (mut phone_a, mut client_a) = tunnel(&b).await;
    let (mut phone_b, mut client_b) = tunnel(&b).await;

    phone_a
        .send(Message::binary(vec![1u8; 1024]))
        .await
        .unwrap();
    assert_eq!(next_binary(&mut client_a).await, vec![1u8; 1024]);
    phone_a
        .send(Message::binary(vec![2u8; 1025]))
        .await
        .unwrap();
    let want = (
        1009,
        "message larger than relay.max_frame_bytes (1024)".to_owned(),
    );
    assert_eq!(expect_close(&mut phone_a).await, want);
    assert_eq!(expect_close(&mut client_a).await, want);

    round_trip(&mut phone_b, &mut client_b, 1).await;
    // The same from the client's side.
    client_b
        .send(Message::binary(vec![3u8; 4096]))
        .await
        .unwrap();
    assert_eq!(expect_close(&mut client_b).await.0, 1009);
    assert_eq!(expect_close(&mut phone_b).await.0, 1009);
    assert_eq!(counts(&b), TunnelCounts::default());
}

#[tokio::test]
async fn text_messages_close_the_tunnel_with_policy_violation() {
    let b = bridge_with(|_| {}).await;
    let (mut phone, mut client) = tunnel(&b).await;
    client.send(Message::text("hello")).await.unwrap();
    let want = (1008, "text messages are not relayed".to_owned());
    assert_eq!(expect_close(&mut client).await, want);
    assert_eq!(expect_close(&mut phone).await, want);
}

#[tokio::test]
async fn a_flood_of_new_tunnels_from_one_address_is_rate_limited() {
    let b = bridge_with(|c| c.new_tunnels_per_address_per_minute = 5).await;
    let (mut phone, mut client) = tunnel(&b).await;
    let mut pending = Vec::new();
    for _ in 0..4 {
        let tid = fresh_tunnel_id();
        let p = open_new(&b, &tid, false).await;
        pending.push((tid, p));
    }
    let (status, body, headers) = refused(request(
        &b,
        &format!("/cable/new/{}", fresh_tunnel_id()),
        Some("fido.cable"),
        false,
    ))
    .await;
    assert_eq!(status, 429);
    // Five per minute: one more every 12 s.
    assert_eq!(headers["retry-after"], "12");
    assert_eq!(
        body,
        "too many new tunnels from this address (relay.new_tunnels_per_address_per_minute = 5); retry in 12 s\n"
    );

    // Other work continues: the open tunnel relays, a pending one can still be joined.
    round_trip(&mut phone, &mut client, 1).await;
    let (tid, mut p) = pending.pop().unwrap();
    let (mut c, _) = join(&b, &p.routing_id, &tid, false).await;
    round_trip(&mut p.ws, &mut c, 2).await;

    // Twelve seconds later, exactly one more.
    b.clock.advance_ms(12_000);
    let _more = open_new(&b, &fresh_tunnel_id(), false).await;
    let (status, _, _) = refused(request(
        &b,
        &format!("/cable/new/{}", fresh_tunnel_id()),
        Some("fido.cable"),
        false,
    ))
    .await;
    assert_eq!(status, 429);
}

#[tokio::test]
async fn the_total_tunnel_cap_answers_503() {
    let b = bridge_with(|c| c.max_tunnels = 2).await;
    let pending_tid = fresh_tunnel_id();
    let mut pending = open_new(&b, &pending_tid, false).await;
    let (mut phone, mut client) = tunnel(&b).await;
    assert_eq!(
        counts(&b),
        TunnelCounts {
            pending: 1,
            open: 1
        }
    );
    let tid = fresh_tunnel_id();
    let (status, body, _) = refused(request(
        &b,
        &format!("/cable/new/{tid}"),
        Some("fido.cable"),
        false,
    ))
    .await;
    assert_eq!(status, 503);
    assert_eq!(body, "the relay is at capacity (relay.max_tunnels = 2)\n");
    round_trip(&mut phone, &mut client, 1).await;
    // A slot frees when a tunnel ends; the refused id was not taken.
    close_and_wait(&mut pending.ws).await;
    let mut third = open_new(&b, &tid, false).await;
    let (mut c, _) = join(&b, &third.routing_id, &tid, false).await;
    round_trip(&mut third.ws, &mut c, 2).await;
}

#[tokio::test]
async fn a_pending_tunnel_expires() {
    let b = bridge_with(|_| {}).await;
    let tid = fresh_tunnel_id();
    let mut phone = open_new(&b, &tid, false).await;
    b.clock.advance_ms(300_000 - 1);
    b.state.relay.sweep();
    assert_eq!(
        counts(&b),
        TunnelCounts {
            pending: 1,
            open: 0
        }
    );
    b.clock.advance_ms(1);
    b.state.relay.sweep();
    assert_eq!(counts(&b), TunnelCounts::default());
    assert_eq!(
        expect_close(&mut phone.ws).await,
        (
            1001,
            "no client joined within relay.pending_lifetime_secs (300 s)".into()
        )
    );
    let (status, _, _) = refused(request(
        &b,
        &connect_path(&phone.routing_id, &tid),
        Some("fido.cable"),
        false,
    ))
    .await;
    assert_eq!(status, 410);
}

#[tokio::test]
async fn an_idle_tunnel_is_closed() {
    let b = bridge_with(|_| {}).await;
    let (mut phone, mut client) = tunnel(&b).await;
    b.clock.advance_ms(119_000);
    b.state.relay.sweep();
    // Still open: traffic flows and resets the idle clock.
    round_trip(&mut phone, &mut client, 1).await;
    b.clock.advance_ms(119_000);
    b.state.relay.sweep();
    assert_eq!(
        counts(&b),
        TunnelCounts {
            pending: 0,
            open: 1
        }
    );
    b.clock.advance_ms(1_000);
    b.state.relay.sweep();
    let want = (1001, "idle for relay.idle_timeout_secs (120 s)".to_owned());
    assert_eq!(expect_close(&mut phone).await, want);
    assert_eq!(expect_close(&mut client).await, want);
    assert_eq!(counts(&b), TunnelCounts::default());
}

#[tokio::test]
async fn the_tunnel_lifetime_caps_a_busy_tunnel() {
    let b = bridge_with(|_| {}).await;
    let (mut phone, mut client) = tunnel(&b).await;
    for tag in 0..2 {
        b.clock.advance_ms(100_000);
        b.state.relay.sweep();
        round_trip(&mut phone, &mut client, tag).await;
    }
    b.clock.advance_ms(100_000);
    b.state.relay.sweep();
    let want = (
        1001,
        "relay.tunnel_lifetime_secs (300 s) reached".to_owned(),
    );
    assert_eq!(expect_close(&mut phone).await, want);
    assert_eq!(expect_close(&mut client).await, want);
}

#[tokio::test]
async fn the_message_limit_per_tunnel_holds() {
    let b = bridge_with(|c| c.max_frames_per_tunnel = 4).await;
    let (mut phone, mut client) = tunnel(&b).await;
    round_trip(&mut phone, &mut client, 1).await;
    round_trip(&mut phone, &mut client, 2).await;
    phone.send(Message::binary(vec![5])).await.unwrap();
    let want = (1008, "relay.max_frames_per_tunnel (4) reached".to_owned());
    assert_eq!(expect_close(&mut client).await, want);
    assert_eq!(expect_close(&mut phone).await, want);
}

/// A client that never reads while its phone floods: the relay stops reading the phone
/// (backpressure) instead of buffering, no message is lost, and other tunnels are unaffected.
#[tokio::test]
async fn a_slow_reader_is_backpressured_not_buffered() {
    let b = bridge_with(|c| {
        c.max_frames_per_tunnel = 1_000_000;
        c.max_frame_bytes = 64 * 1024;
    })
    .await;
    let tid = fresh_tunnel_id();
    // Small kernel buffers at the test's ends, so what is in flight is mostly the relay's.
    let phone_sock = tokio::net::TcpSocket::new_v4().unwrap();
    phone_sock.set_send_buffer_size(16 * 1024).unwrap();
    let (mut phone, response) = tokio_tungstenite::client_async(
        request(&b, &format!("/cable/new/{tid}"), Some("fido.cable"), false),
        MaybeTlsStream::Plain(phone_sock.connect(b.addr).await.unwrap()),
    )
    .await
    .unwrap();
    let rid =
        RoutingId::from_hex(response.headers()["x-cable-routing-id"].to_str().unwrap()).unwrap();
    let client_sock = tokio::net::TcpSocket::new_v4().unwrap();
    client_sock.set_recv_buffer_size(16 * 1024).unwrap();
    let (mut client, _) = tokio_tungstenite::client_async(
        request(&b, &connect_path(&rid, &tid), Some("fido.cable"), false),
        MaybeTlsStream::Plain(client_sock.connect(b.addr).await.unwrap()),
    )
    .await
    .unwrap();

    // Flood until a send stalls. A relay that buffered would take all 64 MiB quickly.
    const FRAME: usize = 60 * 1024;
    const CEILING: usize = 64 * 1024 * 1024;
    let frame = |i: usize| {
        let mut v = vec![(i % 251) as u8; FRAME];
        v[..8].copy_from_slice(&(i as u64).to_be_bytes());
        v
    };
    let mut sent = 0usize;
    // Measuring a stall is measuring the absence of progress: a timeout is the only way.
    while let Ok(r) = tokio::time::timeout(
        Duration::from_secs(1),
        phone.send(Message::binary(frame(sent))),
    )
    .await
    {
        r.unwrap();
        sent += 1;
        assert!(
            sent * FRAME < CEILING,
            "the relay accepted {sent} messages from a phone whose client does not read"
        );
    }
    eprintln!(
        "phone stalled after {sent} messages ({} KiB)",
        sent * FRAME / 1024
    );

    // Other tunnels are unaffected.
    let (mut p2, mut c2) = tunnel(&b).await;
    round_trip(&mut p2, &mut c2, 1).await;

    // The client catches up: everything the phone sent arrives, in order, unchanged.
    for i in 0..sent {
        assert_eq!(next_binary(&mut client).await, frame(i), "message {i}");
    }
}

#[tokio::test]
async fn the_bridge_stopping_closes_tunnels_with_1001() {
    let b = bridge_with(|_| {}).await;
    let (mut phone, mut client) = tunnel(&b).await;
    round_trip(&mut phone, &mut client, 1).await;
    drop(b);
    let want = (1001, "relay shutting down".to_owned());
    assert_eq!(expect_close(&mut phone).await, want);
    assert_eq!(expect_close(&mut client).await, want);
}

fn metric(text: &str, line_prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .unwrap_or_else(|| panic!("no {line_prefix} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn relay_metrics_are_exported() {
    let b = bridge_with(|_| {}).await;
    let tid = fresh_tunnel_id();
    let mut phone = open_new(&b, &tid, false).await;
    let _ = refused(request(
        &b,
        &format!("/cable/new/{tid}"),
        Some("fido.cable"),
        false,
    ))
    .await;
    let (mut client, _) = join(&b, &phone.routing_id, &tid, false).await;
    round_trip(&mut phone.ws, &mut client, 1).await;
    let text = reqwest::get(b.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The recorder is shared by every test in this process: counters only grow.
    assert!(
        metric(
            &text,
            "tether_relay_tunnels_refused_total{reason=\"tunnel_id_taken\"} "
        ) >= 1.0
    );
    assert!(metric(&text, "tether_relay_frames_total ") >= 2.0);
    metric(&text, "tether_relay_tunnels_open ");
    metric(&text, "tether_relay_tunnels_pending ");
}

#[tokio::test]
async fn pings_are_answered_and_not_relayed() {
    let b = bridge_with(|_| {}).await;
    let (mut phone, mut client) = tunnel(&b).await;
    client
        .send(Message::Ping(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(next(&mut client).await, Message::Pong(vec![1, 2, 3].into()));
    client.send(Message::binary(vec![4])).await.unwrap();
    assert_eq!(next_binary(&mut phone).await, vec![4]);
}

/// Reads an HTTP response head from a raw socket.
async fn read_head(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(PROMPT, s.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap().to_ascii_lowercase()
}

/// A hand-written client: checks the handshake bytes (RFC 6455 §1.3's example key) and that a
/// frame breaking the rules (unmasked) closes the tunnel with 1002.
#[tokio::test]
async fn raw_handshake_and_a_protocol_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = bridge_with(|_| {}).await;
    let tid = fresh_tunnel_id();
    let mut raw = tokio::net::TcpStream::connect(b.addr).await.unwrap();
    let req = format!(
        "GET /cable/new/{tid} HTTP/1.1\r\nHost: relay.test\r\nUpgrade: websocket\r\n\
         Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, fido.cable\r\n\r\n"
    );
    raw.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut raw).await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert!(
        head.contains("\r\nsec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"),
        "{head}"
    );
    assert!(
        head.contains("\r\nsec-websocket-protocol: fido.cable\r\n"),
        "{head}"
    );
    let rid = head
        .split("\r\nx-cable-routing-id: ")
        .nth(1)
        .unwrap()
        .split("\r\n")
        .next()
        .unwrap();
    let rid = RoutingId::from_hex(rid).unwrap();
    let (mut client, _) = join(&b, &rid, &tid, false).await;

    // Server frames are unmasked, so the relay forwards a client message as 0x82 len payload.
    client.send(Message::binary(vec![0xAB; 3])).await.unwrap();
    let mut frame = [0u8; 5];
    raw.read_exact(&mut frame).await.unwrap();
    assert_eq!(frame, [0x82, 3, 0xAB, 0xAB, 0xAB]);

    // An unmasked frame from the phone is a protocol error.
    raw.write_all(&[0x82, 0x01, 0x00]).await.unwrap();
    let reason = b"WebSocket protocol error";
    let mut close = vec![0u8; 4 + reason.len()];
    raw.read_exact(&mut close).await.unwrap();
    assert_eq!(close[..4], [0x88, 2 + reason.len() as u8, 0x03, 0xEA]);
    assert_eq!(&close[4..], reason);
    assert_eq!(
        expect_close(&mut client).await,
        (1002, "WebSocket protocol error".into())
    );
}
