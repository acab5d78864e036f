//! Canary analysis: the statistics (`stats`) and the pure gate decisions (`gate`) that judge a
//! canary track against the stable one. No I/O lives here: the canary runner queries
//! Prometheus and the cluster and feeds these functions plain figures, so every decision can be
//! replayed and tested from recorded data.

pub mod gate;
pub mod stats;
