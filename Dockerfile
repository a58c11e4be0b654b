# One image for the whole fleet; the command picks the role:
#   docker run IMAGE gateway | worker entitlement | migrate | dlt list
# Runs as UID 10001 with a read-only root filesystem: only /tmp and /data are written.

# -- builder: a venv with the locked dependencies, then the package ------------------------
FROM python:3.11.14-slim-bookworm AS builder

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# The lock alone first, so the dependency layer is rebuilt only when the lock changes.
# Wheels only: no compiler here, and none is needed for the pinned versions.
COPY constraints.txt ./
RUN pip install --only-binary=:all: -r constraints.txt

COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY api_gateway ./api_gateway
COPY workers ./workers
COPY billing_fleet ./billing_fleet
COPY fleet ./fleet
# --no-deps: what the package needs is exactly the lock; pip check fails the build when
# the lock no longer satisfies pyproject.toml. pip and setuptools leave the venv after.
RUN pip install --no-deps . \
    && pip check \
    && pip uninstall --yes pip setuptools

# -- runtime: the venv, weasyprint's shared libraries, nothing else ------------------------
FROM python:3.11.14-slim-bookworm AS runtime

# Pango, HarfBuzz and a font: what weasyprint's wheels load at run time (its Debian notes).
RUN apt-get update \
    && apt-get install --yes --no-install-recommends \
        libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b libharfbuzz-subset0 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/* \
    && groupadd --system --gid 10001 billing \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin billing \
    && mkdir -p /data \
    && chown 10001:10001 /data

COPY --from=builder /opt/venv /opt/venv

# Nothing writes into the image at run time: no .pyc (the venv's are compiled at build),
# HOME and caches (fontconfig's) under /tmp.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    BILLING_DEV_DATA_DIR=/data \
    BILLING_GATEWAY_HOST=0.0.0.0 \
    BILLING_WORKER_HTTP_HOST=0.0.0.0

WORKDIR /app
# The example catalog is the default; mount your own and set BILLING_ENTITLEMENT_CATALOG_PATH.
COPY catalog.example.yaml ./

VOLUME ["/tmp", "/data"]
USER 10001:10001
EXPOSE 8000 9100

# /healthz on the role's port: the gateway's or the worker's (PID 1's arguments say which);
# one-shot commands (migrate, dlt) have nothing to probe and count as healthy.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os,sys,urllib.request as r;a=open('/proc/1/cmdline','rb').read().split(b'\\0');g=b'gateway' in a;w=b'worker' in a;(g or w) or sys.exit(0);p=os.environ.get('BILLING_GATEWAY_PORT','8000') if g else os.environ.get('BILLING_WORKER_HTTP_PORT','9100');r.urlopen('http://127.0.0.1:'+p+'/healthz',timeout=3)"]

ENTRYPOINT ["billing-fleet"]
CMD ["gateway"]
