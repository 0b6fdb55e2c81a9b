"""Id handling in one place. MySanta uses UUIDs; here ids are integers.

Switching to UUIDs means changing this module and the id columns in schema.sql.
"""

import re

MAX_ID = 2**63 - 1
# A string id: ASCII digits, no sign, spaces or leading zeros, below 10**18 (so always <= MAX_ID).
ID_STRING = re.compile(r"[1-9][0-9]{0,17}")
# What parse_id accepts, as JSON Schema (for /openapi.json).
ID_JSON_SCHEMA = {"anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_ID},
                            {"type": "string", "pattern": f"^{ID_STRING.pattern}$"}]}


def parse_id(value) -> int:
    """An id from JSON. Raises ValueError for anything that is not a positive integer or its decimal string."""
    if isinstance(value, bool):
        raise ValueError("must be an integer id")
    if isinstance(value, int):
        result = value
    elif isinstance(value, str) and ID_STRING.fullmatch(value):
        result = int(value)
    else:
        raise ValueError("must be an integer id (or its decimal string)")
    if not 1 <= result <= MAX_ID:
        raise ValueError(f"must be between 1 and {MAX_ID}")
    return result
