"""Deployment files: the team Dagster profile, the Celery app of the workers, the Helm values."""
