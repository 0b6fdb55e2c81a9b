"""POST /admin/<job> enqueues a Celery task; GET /admin/tasks/<id> reports its state."""
from __future__ import annotations

from flask import Blueprint

from api.http import error_response, json_response, services
from shared.jobs import JOBS, QUEUE, is_running

bp = Blueprint("admin", __name__, url_prefix="/admin")
BY_PATH = {job.admin_path: job for job in JOBS.values()}


@bp.post("/<action>")
def trigger(action: str):
    job = BY_PATH.get(action)
    if job is None:
        return error_response(404, "not_found", f"unknown admin action {action!r}; one of {sorted(BY_PATH)}")
    s = services()
    try:
        if is_running(s.cache.client, job):
            return json_response({"status": "already_running", "task": job.task}, 409)
        result = s.celery.send_task(job.task, queue=QUEUE, retry=False)
    except Exception as exc:  # broker or Redis down
        return error_response(503, "unavailable", f"could not enqueue {job.task}: {str(exc)[:200]}")
    return json_response({"status": "queued", "task": job.task, "task_id": result.id}, 202)


@bp.get("/tasks/<task_id>")
def task_state(task_id: str):
    s = services()
    try:
        result = s.celery.AsyncResult(task_id)
        state = result.state
        info = result.result if result.ready() else None
    except Exception as exc:
        return error_response(503, "unavailable", f"result backend unavailable: {str(exc)[:200]}")
    if isinstance(info, BaseException):
        info = {"error": f"{type(info).__name__}: {info}"}
    return json_response({"task_id": task_id, "state": state, "result": info})
