# One image for the API, the workers and the migrate step (see docker-compose.yml). It installs
# the project itself, so every package (the `annlab` client and command too) and the console
# script are in it: `docker compose exec api annlab keys create NAME`.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 ANNLAB_HOME=/var/lib/annlab
WORKDIR /app
# What .dockerignore leaves: the packages, migrations, alembic.ini, pyproject.toml, docs.
COPY . .
RUN pip install .
EXPOSE 8000
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
