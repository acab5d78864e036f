-- Core tables of the problemsolver gateway. Money is NUMERIC everywhere, never a float.

CREATE TABLE merchants (
    id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                      text NOT NULL,
    webhook_url               text NOT NULL,
    -- The whsec_... signing secret, AES-256-GCM under ENCRYPTION_MASTER_KEY; never stored in clear.
    webhook_secret_ciphertext bytea NOT NULL,
    webhook_secret_nonce      bytea NOT NULL CHECK (octet_length(webhook_secret_nonce) = 12),
    webhook_enabled           boolean NOT NULL DEFAULT true,
    webhook_disabled_reason   text,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE invoices (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    merchant_id            uuid NOT NULL REFERENCES merchants (id),
    coin                   text NOT NULL,
    network                text NOT NULL,
    address                text NOT NULL,
    base_amount            numeric(38, 18) NOT NULL CHECK (base_amount > 0),
    publish_amount         numeric(38, 18) NOT NULL CHECK (publish_amount >= base_amount),
    -- How many steps the allocation skipped because another open invoice held them.
    allocation_collisions  integer NOT NULL DEFAULT 0 CHECK (allocation_collisions >= 0),
    status                 text NOT NULL DEFAULT 'pending'
                           CHECK (status IN ('pending', 'paid', 'expired', 'cancelled')),
    is_smoke               boolean NOT NULL DEFAULT false,
    created_at             timestamptz NOT NULL DEFAULT now(),
    expires_at             timestamptz NOT NULL DEFAULT now() + interval '1 hour',
    paid_at                timestamptz,
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invoices_open_lookup ON invoices (network, address, publish_amount) WHERE status = 'pending';
CREATE INDEX invoices_created_at ON invoices (created_at);

CREATE TABLE deposit_raw (
    id                  bigserial PRIMARY KEY,
    binance_deposit_id  text NOT NULL UNIQUE,
    tx_id               text NOT NULL,
    coin                text NOT NULL,
    network             text NOT NULL,
    address             text NOT NULL,
    address_tag         text NOT NULL DEFAULT '',
    amount              numeric(38, 18) NOT NULL CHECK (amount > 0),
    -- Binance deposit status: 0 pending, 6 credited but cannot withdraw, 7 wrong deposit,
    -- 8 waiting user confirm, 1 success. Only 1 is ever credited.
    binance_status      integer NOT NULL,
    insert_time         timestamptz NOT NULL,
    raw                 jsonb NOT NULL DEFAULT '{}'::jsonb,
    matched_invoice_id  uuid REFERENCES invoices (id),
    processed_at        timestamptz,
    is_smoke            boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deposit_raw_unprocessed ON deposit_raw (id) WHERE processed_at IS NULL;
CREATE INDEX deposit_raw_tx_id ON deposit_raw (tx_id);

CREATE TABLE payments (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    invoice_id   uuid NOT NULL UNIQUE REFERENCES invoices (id),
    deposit_id   bigint NOT NULL UNIQUE REFERENCES deposit_raw (id),
    merchant_id  uuid NOT NULL REFERENCES merchants (id),
    coin         text NOT NULL,
    network      text NOT NULL,
    amount       numeric(38, 18) NOT NULL CHECK (amount > 0),
    tx_id        text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger_entries (
    id             bigserial PRIMARY KEY,
    merchant_id    uuid NOT NULL REFERENCES merchants (id),
    invoice_id     uuid REFERENCES invoices (id),
    payment_id     uuid REFERENCES payments (id),
    entry_type     text NOT NULL CHECK (entry_type IN ('credit', 'debit', 'adjustment')),
    coin           text NOT NULL,
    change_amount  numeric(38, 18) NOT NULL,
    description    text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (payment_id, entry_type)
);
CREATE INDEX ledger_entries_merchant ON ledger_entries (merchant_id, created_at);

CREATE TABLE webhook_queue (
    -- The Standard Webhooks `webhook-id` is derived from this id, so it is stable across retries.
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    merchant_id       uuid NOT NULL REFERENCES merchants (id),
    invoice_id        uuid REFERENCES invoices (id),
    event_type        text NOT NULL,
    payload           jsonb NOT NULL,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'delivering', 'delivered', 'dead', 'disabled')),
    attempts          integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts      integer NOT NULL DEFAULT 12 CHECK (max_attempts > 0),
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    last_error        text,
    last_status_code  integer,
    lease_owner       text,
    lease_expires_at  timestamptz,
    is_smoke          boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    delivered_at      timestamptz,
    UNIQUE (invoice_id, event_type)
);
CREATE INDEX webhook_queue_due ON webhook_queue (next_attempt_at) WHERE status IN ('pending', 'delivering');

CREATE TABLE system_events (
    id          bigserial PRIMARY KEY,
    source      text NOT NULL,
    kind        text NOT NULL,
    severity    text NOT NULL DEFAULT 'info' CHECK (severity IN ('debug', 'info', 'warning', 'error', 'critical')),
    message     text NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX system_events_created_at ON system_events (created_at);

CREATE TABLE poller_checkpoint (
    name              text PRIMARY KEY,
    -- Binance insertTime of the newest deposit seen; the next poll window starts before it (overlap).
    last_insert_time  timestamptz NOT NULL,
    last_success_at   timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
