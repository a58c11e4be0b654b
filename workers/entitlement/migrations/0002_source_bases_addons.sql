-- Add-ons extend a base the customer holds from any source (another subscription, a
-- one-off purchase), so each source records the base catalog entries it holds and its
-- add-ons that have no base in the same source. NULL: a row written before this
-- migration; the worker derives them again from a subscription's snapshot when it next
-- loads the customer.
ALTER TABLE entitlement_sources
    ADD COLUMN bases  jsonb,  -- base entry -> until (iso | null = no end), while it grants
    ADD COLUMN addons jsonb;  -- [{"entry", "addon_for": [...], "grants": {feature -> grant}}]
