//! Sandbox controllers and kubelet, talking to the API server as ordinary kube-rs clients.
