//! rollout: being built.
