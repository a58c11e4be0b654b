"""The HTTP process: Stripe webhook ingress (verify, normalize, publish) and the read API."""
