DROP FUNCTION IF EXISTS create_invoice(uuid, text, text, text, numeric, numeric, integer, interval, boolean, interval);

CREATE FUNCTION create_invoice(
    p_merchant_id uuid,
    p_coin        text,
    p_network     text,
    p_address     text,
    p_base_amount numeric,
    p_step        numeric DEFAULT 0.0001,
    p_max_steps   integer DEFAULT 10000,
    p_ttl         interval DEFAULT interval '1 hour',
    p_is_smoke    boolean DEFAULT false
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

    PERFORM pg_advisory_xact_lock(hashtextextended(p_network || '/' || p_address, 7340));

    LOOP
        candidate := p_base_amount + k * p_step;
        EXIT WHEN NOT EXISTS (
            SELECT 1 FROM invoices
             WHERE network = p_network AND address = p_address
               AND publish_amount = candidate AND status = 'pending'
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

DROP TABLE IF EXISTS binance_backoff;
DROP TABLE IF EXISTS deposit_quarantine;
DROP INDEX IF EXISTS system_events_deposit;
DROP INDEX IF EXISTS invoices_pending_expiry;
DROP INDEX IF EXISTS invoices_amount_lookup;
DROP INDEX IF EXISTS deposit_raw_unresolved;
DROP INDEX IF EXISTS deposit_raw_processed;
ALTER TABLE deposit_raw
    DROP CONSTRAINT IF EXISTS deposit_raw_credited_has_invoice,
    DROP CONSTRAINT IF EXISTS deposit_raw_outcome_when_processed,
    DROP COLUMN IF EXISTS stuck_reported_at,
    DROP COLUMN IF EXISTS rechecked_at,
    DROP COLUMN IF EXISTS related_invoice_id,
    DROP COLUMN IF EXISTS outcome;
