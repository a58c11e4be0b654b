-- The invoice worker's read contract, version 1: what the gateway's ledger read API may
-- read, and all it may read (a gateway role needs SELECT on these views only). As for the
-- entitlement worker's: the worker may change its tables behind them as long as the
-- views keep their columns and meaning; an incompatible change adds read_v2_* views.
-- Plain views, which PostgreSQL inlines: a customer's page is an index scan on
-- (customer_id, created_at DESC, id DESC).

-- Which application user each Stripe customer belongs to (NULL: none known yet).
CREATE VIEW read_v1_ledger_customers AS
SELECT c.customer_id, c.user_id
FROM ledger_customers c;

CREATE VIEW read_v1_invoices AS
SELECT i.invoice_id, i.customer_id, i.account, i.livemode, i.number, i.status, i.currency,
       i.subtotal, i.discount, i.tax, i.total, i.amount_due, i.amount_paid,
       i.amount_remaining, i.billing_reason, i.subscription_id, i.payment_intent_id,
       i.charge_id, i.attempt_count, i.next_payment_attempt, i.due_date, i.period_start,
       i.period_end, i.paid_at, i.hosted_invoice_url, i.invoice_pdf, i.lines,
       i.created_at, i.updated_at
FROM ledger_invoices i;

-- Payments with their refunds and disputes (JSON arrays, oldest first) and receipt.
CREATE VIEW read_v1_payments AS
SELECT p.payment_id, p.customer_id, p.account, p.livemode, p.payment_intent_id,
       p.charge_id, p.invoice_id, p.status, p.amount, p.amount_captured, p.amount_refunded,
       p.currency, p.failure_code, p.failure_message, p.payment_method_type, p.card_brand,
       p.card_last4, p.description, p.created_at, p.succeeded_at, p.updated_at,
       r.number AS receipt_number,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                    'id', f.refund_id, 'amount', f.amount, 'currency', f.currency,
                    'status', f.status, 'reason', f.reason, 'created_at', f.created_at)
                    ORDER BY f.created_at, f.refund_id)
                 FROM ledger_refunds f WHERE f.payment_id = p.payment_id), '[]') AS refunds,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                    'id', d.dispute_id, 'amount', d.amount, 'currency', d.currency,
                    'status', d.status, 'reason', d.reason,
                    'amount_withdrawn', d.amount_withdrawn,
                    'amount_reinstated', d.amount_reinstated,
                    'evidence_due_by', d.evidence_due_by, 'created_at', d.created_at)
                    ORDER BY d.created_at, d.dispute_id)
                 FROM ledger_disputes d WHERE d.payment_id = p.payment_id), '[]') AS disputes
FROM ledger_payments p
LEFT JOIN ledger_receipts r ON r.payment_id = p.payment_id;

CREATE VIEW read_v1_subscriptions AS
SELECT s.subscription_id, s.customer_id, s.account, s.livemode, s.status, s.items,
       s.price_id, s.product_id, s.quantity, s.current_period_start, s.current_period_end,
       s.cancel_at_period_end, s.cancel_at, s.canceled_at, s.trial_start, s.trial_end,
       s.created_at, s.updated_at
FROM ledger_subscriptions s;

-- Receipts, with Stripe's invoice number beside ours for invoice payments, what has been
-- refunded of the payment since, and whether the PDF is rendered yet. A receipt keeps the
-- customer known when it was issued; one issued before its payment's customer was known
-- (a guest's charge whose customer came later) is the payment's customer's.
CREATE VIEW read_v1_receipts AS
SELECT r.number, coalesce(r.customer_id, p.customer_id) AS customer_id, r.account, r.payment_id, p.invoice_id,
       i.number AS invoice_number, r.amount, r.currency, p.amount_refunded,
       p.payment_method_type, p.card_brand, p.card_last4, p.description,
       r.paid_at, r.issued_at,
       EXISTS (SELECT 1 FROM ledger_receipt_documents d WHERE d.number = r.number) AS pdf_ready
FROM ledger_receipts r
JOIN ledger_payments p ON p.payment_id = r.payment_id
LEFT JOIN ledger_invoices i ON i.invoice_id = p.invoice_id;

CREATE VIEW read_v1_receipt_documents AS
SELECT d.number, coalesce(r.customer_id, p.customer_id) AS customer_id, d.pdf, d.rendered_at
FROM ledger_receipt_documents d
JOIN ledger_receipts r ON r.number = d.number
JOIN ledger_payments p ON p.payment_id = r.payment_id;
