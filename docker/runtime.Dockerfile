# syntax=docker/dockerfile:1
# Urban Stack runtime: `urbanstack api | sink | connectors | hub` (one image, the
# Deployment picks the service). Build from the repository root:
#   docker build -f docker/runtime.Dockerfile -t <registry>/urbanstack/runtime:<version> .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Compilers only here, for any dependency without a wheel; the final stage never sees them.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/urbanstack
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY urbanstack/ urbanstack/
COPY operator/ operator/
COPY runtime/ runtime/
COPY templates/ templates/
# A regular (not editable) install: setup.py maps the rooms into the urbanstack package.
RUN /opt/urbanstack/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/urbanstack/bin/pip install --no-cache-dir . \
 && /opt/urbanstack/bin/pip uninstall -y pip

FROM ${PYTHON_IMAGE}
ARG UID=10001
RUN groupadd --system --gid ${UID} urbanstack \
 && useradd --system --uid ${UID} --gid ${UID} --no-create-home --home-dir /nonexistent urbanstack
COPY --from=build /opt/urbanstack /opt/urbanstack
ENV PATH=/opt/urbanstack/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    URBANSTACK_HTTP_HOST=0.0.0.0 \
    URBANSTACK_HTTP_PORT=8080
# chDB reads ./config.xml from the working directory: start somewhere without one.
WORKDIR /opt/urbanstack
USER ${UID}:${UID}
EXPOSE 8080
ENTRYPOINT ["urbanstack"]
CMD ["api"]
