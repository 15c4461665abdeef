# MLflow tracking server with the PostgreSQL driver (used by deploy/docker-compose.yml).
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN pip install "mlflow>=3.0,<4" psycopg2-binary
RUN useradd --create-home mlflow && mkdir -p /mlartifacts && chown mlflow /mlartifacts
USER mlflow
EXPOSE 5000
