DROP TABLE IF EXISTS poller_checkpoint;
DROP TABLE IF EXISTS system_events;
DROP TABLE IF EXISTS webhook_queue;
DROP TABLE IF EXISTS ledger_entries;
DROP TABLE IF EXISTS payments;
DROP TABLE IF EXISTS deposit_raw;
DROP TABLE IF EXISTS invoices;
DROP TABLE IF EXISTS merchants;
