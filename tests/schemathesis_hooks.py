"""Schemathesis hooks for tests/test_openapi.py (loaded through SCHEMATHESIS_HOOKS).

Two request rules relate two fields, which JSON Schema cannot express; /openapi.json
states them in the fields' descriptions and the server answers 400 when they are broken:
  - filters.price_from must not be greater than filters.price_to;
  - filters.category must equal user_params.category when both are set.
Bodies breaking them are left out, so "schema-valid" means valid by the whole document.
"""
import schemathesis


def _breaks_a_cross_field_rule(body) -> bool:
    if not isinstance(body, dict):
        return False
    filters = body.get("filters") if isinstance(body.get("filters"), dict) else {}
    params = body.get("user_params") if isinstance(body.get("user_params"), dict) else {}
    low, high = filters.get("price_from"), filters.get("price_to")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    if numbers and low > high:
        return True
    a, b = filters.get("category"), params.get("category")
    return isinstance(a, str) and isinstance(b, str) and a != b


@schemathesis.hook
def filter_body(ctx, body):
    return not _breaks_a_cross_field_rule(body)
