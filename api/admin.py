"""POST /admin/<job> enqueues a Celery task; GET /admin/tasks/<id> reports its state."""
from __future__ import annotations

from flask import Blueprint

from api.http import error_response, json_response, services
from shared.jobs import JOBS, QUEUE, enqueue, was_issued

bp = Blueprint("admin", __name__, url_prefix="/admin")
BY_PATH = {job.admin_path: job for job in JOBS.values()}
# The API's broker and result-backend calls: a frozen or dead Redis costs an admin call
# about this long, once (no retry loops), and the answer is a 503 JSON.
CELERY_TIMEOUT_S = 1.0


def celery_client(settings):
    # Imported on first admin call only: the serving path stays small.
    from celery import Celery

    app = Celery("recs-api", broker=settings.celery_broker_url, backend=settings.celery_result_backend)
    app.conf.update(
        redis_socket_timeout=CELERY_TIMEOUT_S,
        redis_socket_connect_timeout=CELERY_TIMEOUT_S,
        redis_retry_on_timeout=False,
        result_backend_always_retry=False,
        broker_connection_timeout=CELERY_TIMEOUT_S,
        broker_connection_retry=False,
        broker_connection_max_retries=0,
        broker_transport_options={"socket_timeout": CELERY_TIMEOUT_S, "socket_connect_timeout": CELERY_TIMEOUT_S,
                                  "max_retries": 0},
    )
    return app


@bp.post("/<action>")
def trigger(action: str):
    job = BY_PATH.get(action)
    if job is None:
        return error_response(404, "not_found", f"unknown admin action {action!r}; one of {sorted(BY_PATH)}")
    s = services()

    def send(task: str, task_id: str) -> None:
        s.celery.send_task(task, task_id=task_id, queue=QUEUE, retry=False)

    try:
        task_id, status = enqueue(s.cache.client, s.celery.backend.client, send, job)
    except Exception as exc:  # broker or Redis down
        return error_response(503, "unavailable", f"could not enqueue {job.task}: {str(exc)[:200]}")
    # 409: queued or running already (a running refresh_all holds its steps' jobs too).
    return json_response({"status": status, "task": job.task, "task_id": task_id}, 202 if status == "queued" else 409)


@bp.get("/tasks/<task_id>")
def task_state(task_id: str):
    s = services()
    try:
        if not was_issued(s.celery.backend.client, task_id):
            return error_response(404, "not_found", f"no task {task_id!r} was queued through /admin "
                                                    "(or its result has expired)")
        result = s.celery.AsyncResult(task_id)
        state = result.state
        info = result.result if result.ready() else None
    except Exception as exc:
        return error_response(503, "unavailable", f"result backend unavailable: {str(exc)[:200]}")
    if isinstance(info, BaseException):
        info = {"error": f"{type(info).__name__}: {info}"}
    return json_response({"task_id": task_id, "state": state, "result": info})
