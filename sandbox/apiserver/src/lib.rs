//! The sandbox control plane: an emulated Kubernetes API server on loopback.
