"""gunicorn entry point: `gunicorn -c deploy/gunicorn.conf.py api.wsgi:app`."""
import logging

from api import create_app
from api.malloc import keep_large_blocks_mapped

keep_large_blocks_mapped()  # before the catalogue snapshot is first loaded
logging.basicConfig(level=logging.INFO, format="%(message)s")
app = create_app()
