# One image for the whole fleet; the command picks the role:
#   docker run IMAGE gateway | worker entitlement | migrate | dlt list
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY api_gateway ./api_gateway
COPY workers ./workers
COPY billing_fleet ./billing_fleet
COPY fleet ./fleet
# The example catalog is the default; mount your own and set BILLING_ENTITLEMENT_CATALOG_PATH.
COPY catalog.example.yaml ./
RUN pip install . && useradd --system --uid 10001 --no-create-home billing

USER 10001
EXPOSE 8000
ENV BILLING_GATEWAY_HOST=0.0.0.0 \
    BILLING_WORKER_HTTP_HOST=0.0.0.0
ENTRYPOINT ["billing-fleet"]
CMD ["gateway"]
