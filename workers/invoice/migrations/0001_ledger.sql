-- Tables of the invoice worker: the invoice and payment ledger, and receipts.
--
-- Every ledger row is one Stripe object and keeps the newest event applied to it
-- (event_at, event_rank, event_id) and its status's rank: an event replaces the row only
-- when (status_rank, event_at, event_rank, event_id) is greater, so a paid invoice never
-- returns to open, a void one stays void, and an older event never overwrites a newer
-- one (see workers/invoice/rules.py for the ranks). created_at is the object's creation
-- time (Stripe's `created`, a payment's: its intent's; else the earliest event's time),
-- the key the read API pages by.
-- Money is bigint minor units beside its ISO currency; `account` is the Connect account
-- of the events ('' for the platform's own).

-- Stripe customer -> application user, for the read API (a user reads their customers'
-- records): metadata_user_id (customer.metadata.user_id of the newest customer.* event)
-- when set, else checkout_user_id (client_reference_id of the newest checkout naming one).
CREATE TABLE ledger_customers (
    customer_id        text        PRIMARY KEY,
    user_id            text,
    metadata_user_id   text,
    email              text,
    name               text,
    deleted            boolean     NOT NULL DEFAULT false,
    event_at           timestamptz,
    event_rank         integer,
    event_id           text,
    checkout_user_id   text,
    checkout_event_at  timestamptz,
    checkout_event_id  text
);
CREATE INDEX ledger_customers_user ON ledger_customers (user_id);

CREATE TABLE ledger_invoices (
    invoice_id           text        PRIMARY KEY,
    customer_id          text,
    account              text        NOT NULL DEFAULT '',
    livemode             boolean     NOT NULL,
    number               text,
    status               text,
    currency             text        NOT NULL,
    subtotal             bigint,
    discount             bigint,
    tax                  bigint,
    total                bigint      NOT NULL,
    amount_due           bigint      NOT NULL,
    amount_paid          bigint      NOT NULL,
    amount_remaining     bigint      NOT NULL,
    billing_reason       text,
    subscription_id      text,
    payment_intent_id    text,
    charge_id            text,
    attempt_count        bigint      NOT NULL DEFAULT 0,
    next_payment_attempt timestamptz,
    due_date             timestamptz,
    period_start         timestamptz,
    period_end           timestamptz,
    paid_at              timestamptz,
    hosted_invoice_url   text,
    invoice_pdf          text,
    customer_email       text,
    lines                jsonb       NOT NULL DEFAULT '[]',  -- contracts.InvoiceLine objects
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    status_rank          integer     NOT NULL,
    event_at             timestamptz NOT NULL,
    event_rank           integer     NOT NULL,
    event_id             text        NOT NULL
);
CREATE INDEX ledger_invoices_customer ON ledger_invoices (customer_id, created_at DESC, invoice_id DESC);
CREATE INDEX ledger_invoices_intent ON ledger_invoices (payment_intent_id) WHERE payment_intent_id IS NOT NULL;
CREATE INDEX ledger_invoices_charge ON ledger_invoices (charge_id) WHERE charge_id IS NOT NULL;

-- One row per payment: a payment intent, or a charge without one (contracts.Payment.id).
-- charge_id, amount_refunded and the card details come from one event (charge_event_*):
-- the newest that carried the charge's details, else the newest that named a charge,
-- since a payment intent's own events may not carry it, its charge changes with each
-- attempt and amount_refunded goes down when a refund fails.
CREATE TABLE ledger_payments (
    payment_id          text        PRIMARY KEY,
    customer_id         text,
    account             text        NOT NULL DEFAULT '',
    livemode            boolean     NOT NULL,
    payment_intent_id   text,
    charge_id           text,
    invoice_id          text,
    status              text        NOT NULL,
    amount              bigint      NOT NULL,
    amount_captured     bigint,
    amount_refunded     bigint      NOT NULL DEFAULT 0,
    currency            text        NOT NULL,
    failure_code        text,
    failure_message     text,
    payment_method_type text,
    card_brand          text,
    card_last4          text,
    receipt_url         text,
    description         text,
    created_at          timestamptz NOT NULL,
    succeeded_at        timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    status_rank         integer     NOT NULL,
    event_at            timestamptz NOT NULL,
    event_rank          integer     NOT NULL,
    event_id            text        NOT NULL,
    charge_status_rank  integer,
    charge_event_at     timestamptz,
    charge_event_rank   integer,
    charge_event_id     text
);
CREATE INDEX ledger_payments_customer ON ledger_payments (customer_id, created_at DESC, payment_id DESC);
CREATE INDEX ledger_payments_charge ON ledger_payments (charge_id) WHERE charge_id IS NOT NULL;
CREATE INDEX ledger_payments_intent ON ledger_payments (payment_intent_id) WHERE payment_intent_id IS NOT NULL;

-- Refunds and disputes name a charge (and maybe an intent); payment_id is NULL until
-- that payment is in the ledger, and set when it arrives: one that comes first is kept.
-- The worker finds them by charge or intent, attached or not (a payment's event also
-- gives its customer to the ones already attached), hence the full indexes on both.
CREATE TABLE ledger_refunds (
    refund_id         text        PRIMARY KEY,
    payment_id        text,
    charge_id         text,
    payment_intent_id text,
    customer_id       text,
    account           text        NOT NULL DEFAULT '',
    amount            bigint      NOT NULL,
    currency          text        NOT NULL,
    status            text,
    reason            text,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    status_rank       integer     NOT NULL,
    event_at          timestamptz NOT NULL,
    event_rank        integer     NOT NULL,
    event_id          text        NOT NULL
);
CREATE INDEX ledger_refunds_payment ON ledger_refunds (payment_id);
CREATE INDEX ledger_refunds_charge ON ledger_refunds (charge_id) WHERE charge_id IS NOT NULL;
CREATE INDEX ledger_refunds_intent ON ledger_refunds (payment_intent_id) WHERE payment_intent_id IS NOT NULL;

CREATE TABLE ledger_disputes (
    dispute_id        text        PRIMARY KEY,
    payment_id        text,
    charge_id         text,
    payment_intent_id text,
    customer_id       text,
    account           text        NOT NULL DEFAULT '',
    amount            bigint      NOT NULL,
    currency          text        NOT NULL,
    reason            text,
    status            text        NOT NULL,
    amount_withdrawn  bigint      NOT NULL DEFAULT 0,
    amount_reinstated bigint      NOT NULL DEFAULT 0,
    evidence_due_by   timestamptz,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    status_rank       integer     NOT NULL,
    event_at          timestamptz NOT NULL,
    event_rank        integer     NOT NULL,
    event_id          text        NOT NULL
);
CREATE INDEX ledger_disputes_payment ON ledger_disputes (payment_id);
CREATE INDEX ledger_disputes_charge ON ledger_disputes (charge_id) WHERE charge_id IS NOT NULL;
CREATE INDEX ledger_disputes_intent ON ledger_disputes (payment_intent_id) WHERE payment_intent_id IS NOT NULL;

-- Which payment paid which invoice (Stripe's InvoicePayment, from invoice_payment.paid):
-- since 2025-03-31.basil the only place that links them. Kept because the invoice and the
-- payment may each come before or after it: the worker fills the payment's invoice_id
-- and the invoice's payment_intent_id/charge_id from it whichever comes last.
CREATE TABLE ledger_invoice_payments (
    invoice_payment_id text        PRIMARY KEY,
    invoice_id         text        NOT NULL,
    payment_intent_id  text,
    charge_id          text,
    account            text        NOT NULL DEFAULT '',
    amount_paid        bigint,
    currency           text        NOT NULL,
    status             text        NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    status_rank        integer     NOT NULL,
    event_at           timestamptz NOT NULL,
    event_rank         integer     NOT NULL,
    event_id           text        NOT NULL
);
CREATE INDEX ledger_invoice_payments_invoice ON ledger_invoice_payments (invoice_id);
CREATE INDEX ledger_invoice_payments_intent ON ledger_invoice_payments (payment_intent_id) WHERE payment_intent_id IS NOT NULL;
CREATE INDEX ledger_invoice_payments_charge ON ledger_invoice_payments (charge_id) WHERE charge_id IS NOT NULL;

-- Subscriptions as a billing record (what a subscription status page shows).
CREATE TABLE ledger_subscriptions (
    subscription_id      text        PRIMARY KEY,
    customer_id          text        NOT NULL,
    account              text        NOT NULL DEFAULT '',
    livemode             boolean     NOT NULL,
    status               text        NOT NULL,
    items                jsonb       NOT NULL DEFAULT '[]',  -- price, product, quantity per item
    price_id             text,                               -- the first item's
    product_id           text,
    quantity             integer,
    current_period_start timestamptz,
    current_period_end   timestamptz,
    cancel_at_period_end boolean     NOT NULL DEFAULT false,
    cancel_at            timestamptz,
    canceled_at          timestamptz,
    trial_start          timestamptz,
    trial_end            timestamptz,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    status_rank          integer     NOT NULL,
    event_at             timestamptz NOT NULL,
    event_rank           integer     NOT NULL,
    event_id             text        NOT NULL
);
CREATE INDEX ledger_subscriptions_customer ON ledger_subscriptions (customer_id, created_at DESC, subscription_id DESC);

-- Receipt numbers: gapless per (account, livemode, prefix, year): test-mode payments have
-- sequences of their own and never take a live number. The counter row is incremented
-- in the transaction that inserts the receipts it numbers, so a rollback (a crash, a
-- redelivery racing another replica) returns the numbers with it; a receipt is never
-- deleted, so no number is freed or reused.
CREATE TABLE ledger_receipt_counters (
    account     text    NOT NULL,
    livemode    boolean NOT NULL,
    prefix      text    NOT NULL,
    year        integer NOT NULL,
    last_number bigint  NOT NULL,
    PRIMARY KEY (account, livemode, prefix, year)
);

-- One receipt per succeeded payment. `number` is `<prefix>-<year>-<sequence:06>` for the
-- platform, `<prefix>-<account>-<year>-<sequence:06>` for a connected account, with
-- `TEST-` before the year in test mode (`R-TEST-2026-000001`).
CREATE TABLE ledger_receipts (
    number      text        PRIMARY KEY,
    account     text        NOT NULL,
    livemode    boolean     NOT NULL,
    prefix      text        NOT NULL,
    year        integer     NOT NULL,
    sequence    bigint      NOT NULL,
    payment_id  text        NOT NULL UNIQUE,
    customer_id text,
    amount      bigint      NOT NULL,
    currency    text        NOT NULL,
    paid_at     timestamptz NOT NULL,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account, livemode, prefix, year, sequence)
);
CREATE INDEX ledger_receipts_customer ON ledger_receipts (customer_id, issued_at DESC, number DESC);

-- The rendered PDF of a receipt, written by the receipt document job (never in an event
-- transaction).
CREATE TABLE ledger_receipt_documents (
    number      text        PRIMARY KEY REFERENCES ledger_receipts (number),
    pdf         bytea       NOT NULL,
    rendered_at timestamptz NOT NULL DEFAULT now()
);
