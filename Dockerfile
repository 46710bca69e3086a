# cassette-server: replay recorded LLM API cassettes.
#   docker build -t cassette-server .
#   docker run --rm -p 8080:8080 -v "$PWD/cassettes:/cassettes:ro" cassette-server
ARG BASE_IMAGE=python:3.12-slim

# The wheel, built apart: the source tree and setuptools stay in this stage.
FROM ${BASE_IMAGE} AS wheel
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY server ./server
RUN python -m pip wheel --no-deps --wheel-dir /wheels .

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="cassette-server" \
      org.opencontainers.image.description="A local mock server for LLM APIs that replays recorded HTTP cassettes" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The wheel and its dependencies, nothing else: no source tree, no build tools.
COPY --from=wheel /wheels /tmp/wheels
RUN python -m pip install /tmp/wheels/*.whl && rm -rf /tmp/wheels

# The bundled examples; mount your own cassettes over /cassettes. Owned by the server's user,
# so PUT /__admin/cassettes/{name} can add cassettes to them.
COPY --chown=10001:10001 cassettes /cassettes

# An unprivileged user with a fixed uid, so mounted files can be made readable for it.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin cassette
USER 10001:10001

# Listening on every interface makes the admin API read-only (health, listings, the journal):
# PUT, reload and reset need -e CASSETTE_SERVER_ADMIN_TOKEN=… (sent as a bearer token) or, on a
# trusted network, -e CASSETTE_SERVER_ADMIN_OPEN=1. The startup log says which mode is on.
ENV CASSETTE_SERVER_HOST=0.0.0.0 \
    CASSETTE_SERVER_PORT=8080 \
    CASSETTE_SERVER_PATHS=/cassettes
EXPOSE 8080

HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/__admin/health' % os.environ.get('CASSETTE_SERVER_PORT', '8080'), timeout=2)"

CMD ["cassette-server", "serve"]
