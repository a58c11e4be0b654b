"""The entitlement worker: which customer may use which feature, with which limits, now."""
