//! Binance deposit-history stub (signed requests verified, deposits scripted by tests).
