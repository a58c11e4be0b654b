"""The Kafka consumers of the fleet: the shared runtime and one package per worker."""
