-- Each invoice's JSON as the read API answers it (without its lines), kept by a trigger
-- on every write. A page of invoices is then a few text values that the gateway joins,
-- where it used to decode some thirty typed columns per invoice and encode them again,
-- the list's main cost per request. Written by PostgreSQL from the row itself, so that
-- it agrees with the row whatever statement changed it.

-- A timestamp as the gateway's other answers write one (pydantic's JSON): UTC, 'Z',
-- the microseconds only when there are some.
CREATE FUNCTION ledger_api_time(t timestamptz) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
  SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
         || CASE WHEN date_part('microseconds', t)::bigint % 1000000 = 0 THEN ''
                 ELSE to_char(t AT TIME ZONE 'UTC', '.US') END
         || 'Z'
$$;

-- The keys and their order are those of the API's Invoice (api_gateway/ledger_models.py);
-- a test holds the document to the row's columns.
CREATE FUNCTION ledger_invoice_document() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.document := json_build_object(
    'id', NEW.invoice_id,
    'customer_id', NEW.customer_id,
    'account', nullif(NEW.account, ''),  -- '' is the platform's own: null in the API
    'livemode', NEW.livemode,
    'number', NEW.number,
    'status', NEW.status,
    'currency', NEW.currency,
    'subtotal', NEW.subtotal,
    'discount', NEW.discount,
    'tax', NEW.tax,
    'total', NEW.total,
    'amount_due', NEW.amount_due,
    'amount_paid', NEW.amount_paid,
    'amount_remaining', NEW.amount_remaining,
    'billing_reason', NEW.billing_reason,
    'subscription_id', NEW.subscription_id,
    'payment_intent_id', NEW.payment_intent_id,
    'charge_id', NEW.charge_id,
    'attempt_count', NEW.attempt_count,
    'next_payment_attempt', ledger_api_time(NEW.next_payment_attempt),
    'due_date', ledger_api_time(NEW.due_date),
    'period_start', ledger_api_time(NEW.period_start),
    'period_end', ledger_api_time(NEW.period_end),
    'paid_at', ledger_api_time(NEW.paid_at),
    'hosted_invoice_url', NEW.hosted_invoice_url,
    'invoice_pdf', NEW.invoice_pdf,
    'created_at', ledger_api_time(NEW.created_at),
    'updated_at', ledger_api_time(NEW.updated_at)
  )::text;
  RETURN NEW;
END
$$;

ALTER TABLE ledger_invoices ADD COLUMN document text;
CREATE TRIGGER ledger_invoices_document BEFORE INSERT OR UPDATE ON ledger_invoices
FOR EACH ROW EXECUTE FUNCTION ledger_invoice_document();
UPDATE ledger_invoices SET document = NULL;  -- the trigger writes every row's
ALTER TABLE ledger_invoices ALTER COLUMN document SET NOT NULL;

-- Version 1 of the read contract gains the column (added at the end: a compatible change).
CREATE OR REPLACE VIEW read_v1_invoices AS
SELECT i.invoice_id, i.customer_id, i.account, i.livemode, i.number, i.status, i.currency,
       i.subtotal, i.discount, i.tax, i.total, i.amount_due, i.amount_paid,
       i.amount_remaining, i.billing_reason, i.subscription_id, i.payment_intent_id,
       i.charge_id, i.attempt_count, i.next_payment_attempt, i.due_date, i.period_start,
       i.period_end, i.paid_at, i.hosted_invoice_url, i.invoice_pdf, i.lines,
       i.created_at, i.updated_at, i.document
FROM ledger_invoices i;
