"""The team deployment: HELM fanned out on Celery workers."""
