DROP TRIGGER IF EXISTS ledger_entries_no_truncate ON ledger_entries;
DROP TRIGGER IF EXISTS ledger_entries_no_update_delete ON ledger_entries;
DROP FUNCTION IF EXISTS forbid_mutation_of_append_only();
