"""The team deployment: PostgreSQL, Redis, an MLflow server and Celery workers on loopback."""
