//! Merchant webhook sink: records deliveries, verifies Standard Webhooks signatures, fails or slows on request.
