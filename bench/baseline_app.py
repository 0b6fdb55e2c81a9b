"""The ceiling a cache hit can reach: a bare Flask endpoint doing one Redis GET.

Run under the same gunicorn config as the API: `gunicorn -c deploy/gunicorn.conf.py bench.baseline_app:app`.
"""
import os

import redis
from flask import Flask, Response

app = Flask(__name__)
_client = None
KEY = "recs:bench:baseline"


def client():
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["RECOMMENDATIONS_REDIS_URL"])
    return _client


@app.post("/popular")
@app.post("/personalized")
def cached():
    return Response(client().get(KEY) or b"{}", mimetype="application/json")
