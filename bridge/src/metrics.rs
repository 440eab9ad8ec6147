//! Prometheus metrics, served on `GET /metrics` in the text exposition format.
//!
//! Everything is recorded through the `metrics` facade; this module installs the Prometheus
//! recorder once per process. Metric names:
//!
//! | name | type | labels |
//! | --- | --- | --- |
//! | `tether_push_total` | counter | `provider` (`apns`, `fcm`, `dev`), `outcome` (`delivered`, `token_dead`, `retry`, `permanent`) |
//! | `tether_push_send_seconds` | histogram | `provider` |
//! | `tether_push_retries_total` | counter | `provider` |
//! | `tether_push_token_deactivations_total` | counter | `provider` |
//! | `tether_outbox_depth` | gauge | — pending outbox rows |
//! | `tether_outbox_oldest_age_seconds` | gauge | — age of the oldest pending row |
//! | `tether_relay_*` | see the relay | |

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets, seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Installs the process-wide recorder (once; later calls return the same handle). `None` if
/// another recorder was installed first by the embedding program.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .as_ref()
}

/// The current metrics in the text exposition format.
pub fn render() -> String {
    match install() {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    }
}
