//! What a push carries: the signed envelope and a visible alert. Nothing secret — the FIDO URL
//! and its QR secret never leave the bridge except through `claimDelivery`.
//!
//! APNs payload (top level, so the app reads `envelope` beside `aps`):
//!
//! ```json
//! {"aps":{"alert":{"title":"Passkey request","body":"Sign in to example.com on Quest 3 'Living room'?"},
//!         "sound":"default","category":"TETHER_DELIVERY"},
//!  "delivery_id":"dlv_...","envelope":"<compact JWS>"}
//! ```
//!
//! FCM HTTP v1 message: the same two strings in `data` (FCM hands `data` to Android apps and
//! maps it into the APNs payload for iOS apps registered through FCM), a notification for the
//! alert, `android` with `ttl` = time left to the deadline, `priority: high` and
//! `collapse_key` = delivery id, and an `apns` block with the same expiry, priority and
//! collapse id as a direct APNs push.

use serde_json::{Value, json};

use super::{Alert, PushMessage};

/// Most bytes a payload may have (both providers' limit).
pub const MAX_PAYLOAD_BYTES: usize = 4096;
/// APNs notification category the companion app registers its approve/deny actions under.
pub const CATEGORY: &str = "TETHER_DELIVERY";
/// Alert title.
pub const TITLE: &str = "Passkey request";

/// The alert for a delivery: `Sign in to example.com on Quest 3 'Living room'?` or
/// `Create a passkey for example.com on Quest 3 'Living room'?`.
pub fn alert(kind: &str, rp_id: &str, device_model: &str, device_name: &str) -> Alert {
    let what = if kind == "REGISTRATION" {
        "Create a passkey for"
    } else {
        "Sign in to"
    };
    Alert {
        title: TITLE.to_owned(),
        body: format!("{what} {rp_id} on {device_model} '{device_name}'?"),
    }
}

/// The APNs JSON body.
pub fn apns_body(m: &PushMessage) -> Value {
    json!({
        "aps": {
            "alert": { "title": m.alert.title, "body": m.alert.body },
            "sound": "default",
            "category": CATEGORY,
        },
        "delivery_id": m.delivery_id,
        "envelope": m.envelope,
    })
}

/// Seconds from `now_ms` to the deadline, at least 0 (rounded down: never past the deadline).
pub fn seconds_left(m: &PushMessage, now_ms: i64) -> i64 {
    ((m.deadline_ms - now_ms) / 1000).max(0)
}

/// The FCM HTTP v1 `messages:send` body.
pub fn fcm_body(m: &PushMessage, now_ms: i64) -> Value {
    json!({
        "message": {
            "token": m.push_token,
            "data": {
                "delivery_id": m.delivery_id,
                "envelope": m.envelope,
            },
            "notification": { "title": m.alert.title, "body": m.alert.body },
            "android": {
                "ttl": format!("{}s", seconds_left(m, now_ms)),
                "priority": "high",
                "collapse_key": m.delivery_id,
            },
            "apns": {
                "headers": {
                    "apns-expiration": (m.deadline_ms / 1000).to_string(),
                    "apns-priority": "10",
                    "apns-push-type": "alert",
                    "apns-collapse-id": m.delivery_id,
                },
                "payload": {
                    "aps": {
                        "alert": { "title": m.alert.title, "body": m.alert.body },
                        "sound": "default",
                        "category": CATEGORY,
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> PushMessage {
        PushMessage {
            delivery_id: "dlv_0123456789abcdefghij".into(),
            push_token: "a".repeat(64),
            app_id: "com.example.tether".into(),
            envelope: "x".repeat(900),
            alert: alert("SIGN_IN", "example.com", "Quest 3", "Living room"),
            deadline_ms: 1_700_000_300_000,
        }
    }

    #[test]
    fn alert_text() {
        assert_eq!(
            alert("SIGN_IN", "example.com", "Quest 3", "Living room").body,
            "Sign in to example.com on Quest 3 'Living room'?"
        );
        assert_eq!(
            alert("REGISTRATION", "example.com", "Hub", "Kitchen").body,
            "Create a passkey for example.com on Hub 'Kitchen'?"
        );
    }

    #[test]
    fn ttl_counts_down_and_never_goes_negative() {
        let m = message();
        let body = fcm_body(&m, m.deadline_ms - 299_500);
        assert_eq!(body["message"]["android"]["ttl"], "299s");
        assert_eq!(
            fcm_body(&m, m.deadline_ms + 5)["message"]["android"]["ttl"],
            "0s"
        );
        assert_eq!(
            body["message"]["apns"]["headers"]["apns-expiration"],
            "1700000300"
        );
        assert_eq!(body["message"]["android"]["collapse_key"], m.delivery_id);
    }

    #[test]
    fn apns_body_carries_envelope_beside_aps() {
        let m = message();
        let body = apns_body(&m);
        assert_eq!(body["envelope"], m.envelope);
        assert_eq!(body["aps"]["alert"]["body"], m.alert.body);
        assert!(body.get("push_token").is_none());
    }
}
