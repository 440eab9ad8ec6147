//! The relay's limits (`[relay]` in the TOML file, `TETHER_RELAY__*` in the environment).

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// The tunnel relay's limits. Every field has a safe default; `docs/relay.md` lists them with
/// the HTTP status or WebSocket close code each one produces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Serve `/cable/new` and `/cable/connect` (when `false` they answer 404).
    pub enabled: bool,
    /// How long a tunnel opened with `/cable/new` waits for the client's `/cable/connect`,
    /// seconds (the phone waits while the client finds its BLE advert).
    pub pending_lifetime_secs: u64,
    /// Longest life of a joined tunnel, seconds, however busy it is.
    pub tunnel_lifetime_secs: u64,
    /// A joined tunnel that relays no binary frame for this long is closed, seconds.
    pub idle_timeout_secs: u64,
    /// Largest binary message accepted from either side, bytes (larger: close code 1009).
    pub max_frame_bytes: usize,
    /// Most binary messages relayed per tunnel, both directions together (more: close code 1008).
    pub max_frames_per_tunnel: u32,
    /// Most tunnels at once, pending and joined together (more: HTTP 503). Each joined tunnel
    /// holds two sockets: keep `2 × max_tunnels` under the process's file-descriptor limit.
    pub max_tunnels: usize,
    /// `/cable/new` requests accepted per client address per minute (more: HTTP 429). IPv6
    /// addresses count per /64.
    pub new_tunnels_per_address_per_minute: u32,
    /// How long the id of a finished tunnel is remembered, seconds, so that reusing it answers
    /// 409 and a late `/cable/connect` answers 410.
    pub closed_tunnel_memory_secs: u64,
    /// Most finished tunnel ids remembered (the oldest are forgotten first).
    pub max_remembered_tunnels: usize,
    /// How long a closing tunnel waits for each side's close handshake, milliseconds.
    pub close_grace_ms: u64,
    /// How often expiry (pending lifetime, tunnel lifetime, idle timeout) is checked,
    /// milliseconds: the resolution of those limits.
    pub sweep_interval_ms: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            pending_lifetime_secs: 300,
            tunnel_lifetime_secs: 300,
            idle_timeout_secs: 120,
            max_frame_bytes: 64 * 1024,
            max_frames_per_tunnel: 200,
            max_tunnels: 8_000,
            new_tunnels_per_address_per_minute: 60,
            closed_tunnel_memory_secs: 600,
            max_remembered_tunnels: 100_000,
            close_grace_ms: 2_000,
            sweep_interval_ms: 1_000,
        }
    }
}

/// Largest `max_frame_bytes` accepted: the hybrid protocol's own ceiling (Chromium refuses
/// messages above 1 MiB), with room for framing.
pub const MAX_FRAME_BYTES_CEILING: usize = 16 * 1024 * 1024;

impl RelayConfig {
    /// Checks value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive: [(&str, u64); 10] = [
            ("relay.pending_lifetime_secs", self.pending_lifetime_secs),
            ("relay.tunnel_lifetime_secs", self.tunnel_lifetime_secs),
            ("relay.idle_timeout_secs", self.idle_timeout_secs),
            ("relay.max_frame_bytes", to_u64(self.max_frame_bytes)),
            (
                "relay.max_frames_per_tunnel",
                u64::from(self.max_frames_per_tunnel),
            ),
            ("relay.max_tunnels", to_u64(self.max_tunnels)),
            (
                "relay.new_tunnels_per_address_per_minute",
                u64::from(self.new_tunnels_per_address_per_minute),
            ),
            (
                "relay.closed_tunnel_memory_secs",
                self.closed_tunnel_memory_secs,
            ),
            ("relay.close_grace_ms", self.close_grace_ms),
            ("relay.sweep_interval_ms", self.sweep_interval_ms),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!("{name} must be positive")));
        }
        if self.max_frame_bytes > MAX_FRAME_BYTES_CEILING {
            return Err(ConfigError::Invalid(format!(
                "relay.max_frame_bytes must be at most {MAX_FRAME_BYTES_CEILING}"
            )));
        }
        // Durations become milliseconds on the bridge clock.
        let longest = i64::MAX.unsigned_abs() / 1000;
        for (name, v) in [
            ("relay.pending_lifetime_secs", self.pending_lifetime_secs),
            ("relay.tunnel_lifetime_secs", self.tunnel_lifetime_secs),
            ("relay.idle_timeout_secs", self.idle_timeout_secs),
            (
                "relay.closed_tunnel_memory_secs",
                self.closed_tunnel_memory_secs,
            ),
        ] {
            if v > longest {
                return Err(ConfigError::Invalid(format!("{name} is too large")));
            }
        }
        Ok(())
    }
}

fn to_u64(v: usize) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = RelayConfig::default();
        c.validate().unwrap();
        assert_eq!(c.pending_lifetime_secs, 300);
        assert_eq!(c.max_frame_bytes, 65_536);
        assert_eq!(c.max_tunnels, 8_000);
    }

    #[test]
    fn zero_and_huge_values_are_refused() {
        let c = RelayConfig {
            max_tunnels: 0,
            ..RelayConfig::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "configuration invalid: relay.max_tunnels must be positive"
        );
        let c = RelayConfig {
            max_frame_bytes: MAX_FRAME_BYTES_CEILING + 1,
            ..RelayConfig::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_str::<RelayConfig>(r#"{"max_tunnel": 3}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `max_tunnel`"),
            "{err}"
        );
        let c: RelayConfig = serde_json::from_str(r#"{"max_tunnels": 3}"#).unwrap();
        assert_eq!(c.max_tunnels, 3);
        assert_eq!(c.idle_timeout_secs, 120);
    }
}
