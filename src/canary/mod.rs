//! Canary analysis and promotion: the statistics (`stats`) and the pure gate decisions (`gate`)
//! that judge a canary track against the stable one, the PromQL that measures both (`queries`),
//! the run's persisted state (`state`) and the run loop (`runner`). Everything here is pure or
//! sits behind the runner's `Backend` trait: the command (`commands::canary`) supplies the
//! cluster, Prometheus and Helm, so every decision can be replayed and tested from recorded data.

pub mod gate;
pub mod queries;
pub mod runner;
pub mod state;
pub mod stats;
