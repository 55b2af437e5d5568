# Web image: the Flask app under gunicorn. Build: docker build -t recommender-system .
FROM python:3.11.7-slim-bookworm

# Optional extra package index (e.g. a CPU-only PyTorch index) for smaller images.
ARG PIP_EXTRA_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL}

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY recommender_system ./recommender_system
COPY trainer ./trainer
COPY migrations ./migrations
RUN pip install . \
    && useradd --create-home --uid 10001 app \
    && mkdir -p /data/artefacts \
    && chown -R app /data

USER 10001
ENV RS_DATABASE_URL=sqlite:////data/recommender.db \
    RS_ARTEFACT_DIR=/data/artefacts \
    RS_SERVER_PORT=8086
EXPOSE 8086
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8086/', timeout=2)"]
CMD ["python", "-m", "recommender_system", "serve"]
