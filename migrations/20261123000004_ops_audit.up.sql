-- psctl's audit trail: one row per mutating operator action, append-only, each row's hash
-- chained to the previous row's (computed by psctl: SHA-256, or HMAC-SHA256 when a key is set).

CREATE TABLE ops_audit (
    id             bigserial PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    os_user        text NOT NULL,
    kube_identity  text NOT NULL DEFAULT '',
    environment    text NOT NULL DEFAULT '',
    action         text NOT NULL,
    target         text NOT NULL DEFAULT '',
    from_state     text NOT NULL DEFAULT '',
    to_state       text NOT NULL DEFAULT '',
    outcome        text NOT NULL,
    details        jsonb NOT NULL DEFAULT '{}'::jsonb,
    prev_hash      bytea,
    hash           bytea NOT NULL UNIQUE
);

CREATE TRIGGER ops_audit_no_update_delete
    BEFORE UPDATE OR DELETE ON ops_audit
    FOR EACH ROW EXECUTE FUNCTION forbid_mutation_of_append_only();
CREATE TRIGGER ops_audit_no_truncate
    BEFORE TRUNCATE ON ops_audit
    FOR EACH STATEMENT EXECUTE FUNCTION forbid_mutation_of_append_only();
