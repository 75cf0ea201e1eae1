# avellaneda-mm recorder image.
#
# Needs BuildKit (Docker >= 23 with buildx, or DOCKER_BUILDKIT=1 on Docker 18.09-22.x) for the
# RUN --mount lines; the Dockerfile frontend built into the daemon is enough (no syntax image pull).
#
#   docker build --network host -t avellaneda-mm:latest .
#   # without access to Docker Hub, on top of the debootstrap base (docker/make-base.sh):
#   docker build --network host --build-arg BASE_IMAGE=avellaneda-base:bookworm -t avellaneda-mm:latest .
#   # behind a TLS-intercepting proxy, hand pip the CA bundle for the build only (never stored in a layer):
#   docker build ... --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt .
#
# Both bases work: the official python:3.11-slim-bookworm (python in /usr/local/bin) and the
# debootstrap base (Debian's python3 in /usr/bin); the app lives in a venv at /opt/venv either way.
#
# Runtime (see config/crontab.example and config/compose.example.yaml):
#   docker run --rm --network host -v /srv/binance:/data -v /srv/binance/config:/config avellaneda-mm:latest run
# The default user is uid/gid 10001 ("recorder"): a bind-mounted /data must be writable for it
# (chown 10001:10001 /srv/binance), or run as the owner of the host directory instead:
#   docker run --rm --network host --user "$(id -u):$(id -g)" -v "$PWD/data:/data" avellaneda-mm:latest run
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS build

# optional package index override, e.g. --build-arg PIP_INDEX_URL=https://pypi.example/simple
ARG PIP_INDEX_URL
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=120 \
    PYTHONDONTWRITEBYTECODE=1

RUN python3 -m venv /opt/venv

# dependencies first (own layer, only rebuilt when the lock file changes)
COPY requirements-runtime.lock /src/requirements-runtime.lock
RUN --mount=type=secret,id=pip_ca,required=false \
    --mount=type=cache,target=/root/.cache/pip,id=avellaneda-pip \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    /opt/venv/bin/pip install -r /src/requirements-runtime.lock

# then the package itself
COPY pyproject.toml README.md /src/
COPY recorder /src/recorder
COPY replay /src/replay
COPY schemas /src/schemas
RUN --mount=type=secret,id=pip_ca,required=false \
    --mount=type=cache,target=/root/.cache/pip,id=avellaneda-pip \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    /opt/venv/bin/pip install --no-deps /src \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
 && /opt/venv/bin/python -c 'import recorder, replay, schemas' \
 && NUMBA_CACHE_DIR=/opt/numba-cache /opt/venv/bin/python -c \
        'from recorder.pipeline import warm_kernels; warm_kernels()'

# ---------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime

# tzdata for the Europe/Berlin recording window (already in the debootstrap base; installed only if
# the base lacks it), and the unprivileged user that owns /data
RUN set -eu; \
    if [ ! -e /usr/share/zoneinfo/Europe/Berlin ]; then \
        apt-get update -qq \
     && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tzdata >/dev/null \
     && rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd --system --gid 10001 recorder; \
    useradd --system --uid 10001 --gid 10001 --home-dir /home/recorder --create-home \
            --shell /usr/sbin/nologin recorder; \
    mkdir -p /data /config; \
    chown 10001:10001 /data

COPY --from=build /opt/venv /opt/venv
# the frame decoder's compiled kernel (recorder/framescan.py), compiled at build time: a container starts
# recording without a compile; numba needs the directory writable for whichever uid runs the image
COPY --from=build /opt/numba-cache /opt/numba-cache
RUN chmod -R a+rwX /opt/numba-cache && chmod +t /opt/numba-cache
COPY docker/entrypoint.sh /usr/local/bin/recorder-entrypoint

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NUMBA_CACHE_DIR=/opt/numba-cache \
    CONFIG_PATH=/config/recorder.yaml \
    METRICS_PORT=9100

USER 10001:10001
# the recorder's default output directory is ./data: from / that is the /data volume
WORKDIR /
VOLUME ["/data"]
EXPOSE 9100

# GET /healthz on METRICS_PORT: the entrypoint makes `run` and `schedule` serve it there (from the start,
# also while waiting for the window); 200 waiting/starting/recording, 503 degraded (urlopen raises)
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('METRICS_PORT', '9100'), timeout=3)"]

# `recorder`, after dropping CONFIG_PATH when no config file is mounted at that path, and with
# `--metrics-port $METRICS_PORT` for run/schedule
ENTRYPOINT ["recorder-entrypoint"]
CMD ["run"]
