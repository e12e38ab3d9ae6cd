# The fedfleet image: the broker setup, the gateway and the fleet simulator of docker-compose.yml.
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY . .
RUN pip install --no-compile . \
    && useradd --create-home --uid 10001 fedfleet \
    && mkdir /data /access && chown fedfleet /data /access
USER fedfleet
WORKDIR /data
ENTRYPOINT ["fedfleet"]
CMD ["--help"]
