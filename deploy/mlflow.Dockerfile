# MLflow tracking server image for deploy/docker-compose.yml: `fgdsr tracking-server` with MLflow's
# basic-auth app and the PostgreSQL driver. Build from the repository root:
#   docker build -f deploy/mlflow.Dockerfile -t fgdsr:mlflow .
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /opt/fgdsr
COPY pyproject.toml README.md ./
COPY fgdsr ./fgdsr
COPY trt ./trt
COPY orchestrator ./orchestrator
# fgdsr's CLI without torch (the server imports none of the training stack) + the `server` extra's packages
RUN pip install --no-deps . \
 && pip install "typer>=0.12" "rich>=13" "mlflow[auth]>=3.0,<4" "psycopg[binary]>=3.1" \
 && fgdsr --help > /dev/null && python -c "import mlflow.server.auth, psycopg"
RUN useradd --create-home mlflow && mkdir -p /mlartifacts && chown mlflow /mlartifacts
USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000
CMD ["fgdsr", "--help"]
