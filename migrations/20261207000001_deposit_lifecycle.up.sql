-- Deposit and invoice lifecycles (docs/services.md, "Money path").
--
-- * Every deposit taken off the unprocessed list records why (`outcome`); only `credited`
--   deposits have `matched_invoice_id`, and every other outcome has a system_events row.
-- * Deposits Binance has not finalised are re-checked (`rechecked_at`) and reported once when
--   they stay unresolved too long (`stuck_reported_at`).
-- * Rows Binance sent that cannot be stored are kept in `deposit_quarantine`, once each.
-- * A 418/429 back-off survives a restart (`binance_backoff`).
-- * An expired invoice keeps its publish_amount for a hold period, so a late deposit is
--   recognised as late for that invoice instead of paying a newer invoice with the same amount.

ALTER TABLE deposit_raw
    ADD COLUMN outcome text
        CHECK (outcome IN ('credited', 'duplicate', 'late', 'before_invoice', 'cancelled_invoice',
                           'unmatched', 'rejected', 'quarantined')),
    ADD COLUMN related_invoice_id uuid REFERENCES invoices (id),
    ADD COLUMN rechecked_at timestamptz,
    ADD COLUMN stuck_reported_at timestamptz;

-- Rows processed before this migration: credited when matched, otherwise recorded unmatched.
UPDATE deposit_raw SET outcome = CASE WHEN matched_invoice_id IS NOT NULL THEN 'credited' ELSE 'unmatched' END
 WHERE processed_at IS NOT NULL;

ALTER TABLE deposit_raw
    ADD CONSTRAINT deposit_raw_outcome_when_processed
        CHECK ((processed_at IS NULL) = (outcome IS NULL)),
    ADD CONSTRAINT deposit_raw_credited_has_invoice
        CHECK ((outcome = 'credited') = (matched_invoice_id IS NOT NULL));

-- Reconciliation walks processed deposits in the order they were processed.
CREATE INDEX deposit_raw_processed ON deposit_raw (processed_at, id) WHERE processed_at IS NOT NULL;
-- Unresolved (not final) deposits, oldest re-check first.
CREATE INDEX deposit_raw_unresolved ON deposit_raw (rechecked_at NULLS FIRST, insert_time)
    WHERE processed_at IS NULL AND binance_status <> 1;

-- Matching looks up the newest invoice created before a deposit, whatever its status.
CREATE INDEX invoices_amount_lookup ON invoices (network, address, publish_amount, created_at DESC);
CREATE INDEX invoices_pending_expiry ON invoices (expires_at) WHERE status = 'pending';

-- The system_events row of a deposit, for reconciliation.
CREATE INDEX system_events_deposit ON system_events (((details ->> 'deposit_id')::bigint))
    WHERE source = 'poller' AND details ? 'deposit_id';

CREATE TABLE deposit_quarantine (
    -- Binance's id, or `sha256:<hex>` of the row when it has none.
    quarantine_key  text PRIMARY KEY,
    reason          text NOT NULL,
    raw             jsonb NOT NULL,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    seen_count      integer NOT NULL DEFAULT 1
);

CREATE TABLE binance_backoff (
    only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    until       timestamptz NOT NULL,
    http_status integer NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- create_invoice: an expired invoice holds its publish_amount for p_hold after expiry.
DROP FUNCTION create_invoice(uuid, text, text, text, numeric, numeric, integer, interval, boolean);

CREATE FUNCTION create_invoice(
    p_merchant_id uuid,
    p_coin        text,
    p_network     text,
    p_address     text,
    p_base_amount numeric,
    p_step        numeric DEFAULT 0.0001,
    p_max_steps   integer DEFAULT 10000,
    p_ttl         interval DEFAULT interval '1 hour',
    p_is_smoke    boolean DEFAULT false,
    p_hold        interval DEFAULT interval '24 hours'
) RETURNS invoices
LANGUAGE plpgsql AS $$
DECLARE
    k          integer := 0;
    candidate  numeric;
    result     invoices;
BEGIN
    IF p_base_amount IS NULL OR p_base_amount <= 0 THEN
        RAISE EXCEPTION 'base_amount must be positive, got %', p_base_amount
            USING ERRCODE = 'check_violation';
    END IF;
    IF p_step IS NULL OR p_step <= 0 THEN
        RAISE EXCEPTION 'step must be positive, got %', p_step USING ERRCODE = 'check_violation';
    END IF;
    IF p_hold IS NULL OR p_hold < interval '0' THEN
        RAISE EXCEPTION 'hold must not be negative, got %', p_hold USING ERRCODE = 'check_violation';
    END IF;

    PERFORM pg_advisory_xact_lock(hashtextextended(p_network || '/' || p_address, 7340));

    LOOP
        candidate := p_base_amount + k * p_step;
        EXIT WHEN NOT EXISTS (
            SELECT 1 FROM invoices
             WHERE network = p_network AND address = p_address AND publish_amount = candidate
               AND (status = 'pending'
                    OR (status = 'expired' AND expires_at + p_hold > now()))
        );
        k := k + 1;
        IF k > p_max_steps THEN
            RAISE EXCEPTION 'no free publish_amount for % on %/% within % steps',
                p_base_amount, p_network, p_address, p_max_steps
                USING ERRCODE = 'unique_violation';
        END IF;
    END LOOP;

    INSERT INTO invoices (merchant_id, coin, network, address, base_amount, publish_amount,
                          allocation_collisions, expires_at, is_smoke)
    VALUES (p_merchant_id, p_coin, p_network, p_address, p_base_amount, candidate,
            k, now() + p_ttl, p_is_smoke)
    RETURNING * INTO result;
    RETURN result;
END;
$$;
