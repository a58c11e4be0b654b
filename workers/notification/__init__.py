"""The notification worker: receipts, dunning, trial and cancellation mails, and signed
outbound webhooks, exactly once per event and recipient."""
