# One image for the API, the workers and the migrate step (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 ANNLAB_HOME=/var/lib/annlab
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY workers ./workers
COPY models ./models
COPY core ./core
COPY migrations ./migrations
COPY alembic.ini ./
RUN pip install .
EXPOSE 8000
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
