# syntax=docker/dockerfile:1
#
# detector: streaming rule engine for Kubernetes audit logs.
#
#   docker build -t detector:0.1.0 .
#   docker run --rm --user 0 --cap-drop ALL --read-only --security-opt no-new-privileges \
#     -v /var/log/kubernetes/audit:/var/log/kubernetes/audit:ro \
#     -v /var/lib/detector:/var/lib/detector detector:0.1.0
#
# The image runs as the unprivileged user `detector` (uid/gid 10001) by default. kube-apiserver
# writes its audit log root-owned with mode 0600 in a 0700 directory, so reading it takes
# uid 0 (the file's owner, no capability needed) or CAP_DAC_READ_SEARCH; the DaemonSet in
# deploy/kubernetes overrides the user to root with every capability dropped and none added.
# See deploy/kubernetes/README.md, "Reading the audit log", for the other options.
#
# Both stages use the same base image, so the virtualenv's interpreter link
# (/opt/detector/bin/python -> /usr/local/bin/python3.12) is valid in the final stage.
# Pin a digest (python:3.12-slim@sha256:...) in your own builds for reproducibility.

ARG PYTHON_IMAGE=python:3.12-slim

# ---------------------------------------------------------------------------------------------
# builder: wheels of the project and its dependencies, installed into /opt/detector
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
# Only what the build reads (see .dockerignore): metadata first, then the code and rules.
COPY pyproject.toml setup.py README.md ./
COPY requirements/run.lock requirements/
COPY detector/ detector/
COPY rules/ rules/

# 1. Wheels: every dependency's, exactly as locked and hash-checked (all of them publish
#    manylinux wheels: no compiler needed), then the project's own (carrying the shipped rules
#    as package data), built without resolving anything.
# 2. A virtualenv without pip, filled by the base image's pip from those wheels only.
# 3. /opt/detector/rules: a stable path for the shipped rules inside the installed package,
#    so configurations can list it before their own rules directory.
RUN pip wheel --require-hashes --wheel-dir /wheels -r requirements/run.lock \
 && pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/detector \
 && pip --python /opt/detector/bin/python install --no-index --find-links /wheels /wheels/detector-*.whl \
 && ln -s "$(/opt/detector/bin/python -c 'from importlib.resources import files; print(files("detector.shipped_rules"))')" \
          /opt/detector/rules \
 && /opt/detector/bin/detector validate /opt/detector/rules

# ---------------------------------------------------------------------------------------------
# final: the base image plus the virtualenv; no compiler, no pip cache, no wheels, no sources
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="detector" \
      org.opencontainers.image.description="Streaming rule engine for Kubernetes API-server audit logs (Falco-compatible rules)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.12-slim"

ENV PATH=/opt/detector/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# A fixed uid/gid so hostPath ownership and runAsUser/fsGroup can be planned for.
RUN groupadd --system --gid 10001 detector \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin detector \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/detector \
 && install -d -m 0755 /etc/detector /etc/detector/rules.d

COPY --from=builder /opt/detector /opt/detector
COPY deploy/docker/config.yaml /etc/detector/config.yaml

USER 10001:10001
WORKDIR /var/lib/detector
EXPOSE 9477
STOPSIGNAL SIGTERM

# No curl in the slim image: the venv's Python asks the metrics port for /healthz (loop alive).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/opt/detector/bin/python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9477/healthz', timeout=4).status != 200)"]

ENTRYPOINT ["/opt/detector/bin/detector", "run"]
CMD ["--config", "/etc/detector/config.yaml"]
