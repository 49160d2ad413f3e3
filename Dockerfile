# Loa's image: controller, dashboard, simulator and admin CLI (one image, several commands).
# Built by docker-compose.yml; checked by tests/production/test_compose.py.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# ffmpeg decodes and normalises uploaded audio; espeak-ng speaks Vietnamese TTS offline.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg espeak-ng \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first (pinned by requirements.lock) so code edits do not reinstall them.
COPY requirements.lock pyproject.toml ./
COPY loa ./loa
COPY controller ./controller
COPY firmware_sim ./firmware_sim
COPY broadcasts ./broadcasts
COPY scheduler ./scheduler
COPY dashboard ./dashboard
COPY alerts ./alerts
COPY registry ./registry
COPY indicator ./indicator
COPY system ./system
COPY node_agent ./node_agent
RUN pip install -c requirements.lock ".[postgres]"
# Schema migrations: `alembic upgrade head` runs from /app (the compose `migrate` service).
COPY alembic.ini ./
COPY migrations ./migrations

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/loa --create-home loa \
    && chown loa:loa /var/lib/loa
USER loa
ENV LOA_DATA_DIR=/var/lib/loa
VOLUME ["/var/lib/loa"]
EXPOSE 8080
CMD ["loa", "serve", "--no-controller"]
