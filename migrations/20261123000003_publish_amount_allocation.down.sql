DROP FUNCTION IF EXISTS create_invoice(uuid, text, text, text, numeric, numeric, integer, interval, boolean);
DROP INDEX IF EXISTS invoices_open_publish_amount_unique;
