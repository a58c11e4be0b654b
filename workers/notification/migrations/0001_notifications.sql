-- The notification worker: its directory of customers, and the notices it could not send.

-- One row per customer the worker heard of. A customer.* event's details replace the
-- row's when its mark (event time, then created < updated < deleted, then the Stripe
-- event id) is greater than the last one applied (customer_mark_*). The address a
-- checkout, an invoice or a receipt carries is kept apart (fallback_email, newest such
-- event wins) and used only while no customer.* event gave one, so it never overrides
-- a customer event's. customer.deleted erases email, name and fallback for good
-- (erased_at): no later event stores an address again.
CREATE TABLE notification_contacts (
    customer_id        text        PRIMARY KEY,
    email              text,
    name               text,
    preferred_locales  text[]      NOT NULL DEFAULT '{}',
    user_id            text,
    customer_mark_at   timestamptz,
    customer_mark_rank smallint,
    customer_mark_id   text,
    fallback_email     text,
    fallback_mark_at   timestamptz,
    fallback_mark_id   text,
    erased_at          timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Notices that could not be sent (no address known, the customer deleted, an address no
-- mail can go to): recorded once per (notice, event, recipient) with the reason, never
-- dead-lettered. recipient is the customer id, or '' when the event names none.
CREATE TABLE notification_skips (
    id         bigserial   PRIMARY KEY,
    notice     text        NOT NULL,
    event_id   text        NOT NULL,
    topic      text        NOT NULL,
    recipient  text        NOT NULL,
    reason     text        NOT NULL,
    skipped_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (notice, event_id, recipient)
);
CREATE INDEX notification_skips_recipient ON notification_skips (recipient, skipped_at);

-- The retention job's rows: this worker's sent mails not yet masked. deliveries is the
-- runtime's table, shared by every worker; this partial index covers only this worker's
-- e-mail rows (a masked row has an empty payload and leaves it).
CREATE INDEX notification_deliveries_unmasked ON deliveries (sent_at)
    WHERE worker = 'notification' AND channel = 'email' AND status = 'sent'
      AND octet_length(payload) > 0;
