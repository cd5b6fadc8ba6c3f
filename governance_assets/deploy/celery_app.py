"""The Celery app the team deployment's workers run (`celery -A governance_assets.deploy.celery_app
worker`): dagster-celery's step task, with the broker and result backend from the environment
(GOVERNANCE_CELERY_BROKER, GOVERNANCE_CELERY_BACKEND) and the settings the executor uses.

The code location is built when the worker starts, before Celery forks the process that runs the
steps: each step then rebuilds its job from the definitions already in memory, instead of the first
step on every worker spending 3-5 s importing and loading them while the other worker waits."""

import os

from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from governance_assets.definitions import defs
from governance_assets.lib.deployment.services import CELERY_SETTINGS

app = make_app({"broker": os.environ["GOVERNANCE_CELERY_BROKER"], "backend": os.environ["GOVERNANCE_CELERY_BACKEND"]})  # type: ignore[no-untyped-call]
app.conf.update(CELERY_SETTINGS)

execute_plan = create_task(app)  # type: ignore[no-untyped-call]
defs()  # built once in the worker's parent process (see above)
