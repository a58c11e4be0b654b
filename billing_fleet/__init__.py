"""The core every process uses: settings base, database pool, Kafka admin, logs,
migrations runner, HTTP server and shutdown signals. It imports neither ``workers``
nor ``api_gateway``; the commands that compose them live in ``fleet``."""
