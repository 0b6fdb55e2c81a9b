"""Id handling in one place. MySanta uses UUIDs; here ids are integers.

Switching to UUIDs means changing this module and the id columns in schema.sql.
"""

MAX_ID = 2**63 - 1


def parse_id(value) -> int:
    """An id from JSON or CSV. Raises ValueError for anything that is not a positive integer."""
    if isinstance(value, bool):
        raise ValueError("must be an integer id")
    if isinstance(value, int):
        result = value
    elif isinstance(value, str):
        digits = value.strip().removeprefix("+")
        # ASCII only: str.isdigit() and int() also take "١٢٣" (Arabic-Indic) and other scripts.
        if not (digits.isascii() and digits.isdigit()):
            raise ValueError("must be an integer id")
        if len(digits.lstrip("0")) > len(str(MAX_ID)):  # never int() a huge string (its error leaks internals)
            raise ValueError(f"must be between 1 and {MAX_ID}")
        result = int(digits)
    else:
        raise ValueError("must be an integer id")
    if not 1 <= result <= MAX_ID:
        raise ValueError(f"must be between 1 and {MAX_ID}")
    return result
