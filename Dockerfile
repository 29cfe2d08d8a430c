# The cotgen_assets code location: a Dagster gRPC server on port 3030, and the image of the run pods
# K8sRunLauncher starts (so it carries dagster-k8s and the postgres extra too). See deploy/README.md.
# Not built here: this machine has no Docker engine.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Extras of the project to install: postgres for the Dagster storage, gcs for COTGEN_DATA_DIR=gs://…
ARG COTGEN_EXTRAS=postgres,gcs
WORKDIR /opt/cotgen

# Only what the package needs: no tests, no data, no local instance (see .dockerignore).
# The versions the tests passed with: uv.lock, exported as pip constraints (docs/install.md). dagster-k8s
# is outside the lock (the tests do not use it): pinned to the Dagster family here.
COPY pyproject.toml uv.lock README.md workspace.yaml ./
COPY cotgen_assets ./cotgen_assets
RUN pip install "uv>=0.13,<0.14" \
    && uv export -q --locked --all-extras --no-emit-project --no-hashes -o /tmp/constraints.txt \
    && pip install -c /tmp/constraints.txt ".[${COTGEN_EXTRAS}]" "dagster-k8s==0.29.27" \
    && pip uninstall -y -q uv && rm /tmp/constraints.txt \
    && python -c "import cotgen_assets.definitions, dagster_postgres, dagster_k8s"

# The chart's DAGSTER_HOME: it mounts the instance's dagster.yaml there, and Dagster writes beside it
# (telemetry, instance files), so the image makes it and gives it to its user, who could not create
# it under /opt.
ENV DAGSTER_HOME=/opt/dagster/dagster_home

# A code server has no reason to run as root.
RUN useradd --create-home --uid 10001 cotgen \
    && mkdir -p /opt/cotgen/data "$DAGSTER_HOME" \
    && chown cotgen /opt/cotgen/data "$DAGSTER_HOME"
USER 10001

EXPOSE 3030
CMD ["dagster", "api", "grpc", "-m", "cotgen_assets.definitions", "-h", "0.0.0.0", "-p", "3030"]
