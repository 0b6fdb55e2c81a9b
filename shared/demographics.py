"""Segments: genders, age groups and the 'any' sentinels shared by API, workers and evaluator."""
from __future__ import annotations

from bisect import bisect_right

ANY = "any"
ANY_GEO = 0
GENDER_ALIASES = {"m": "m", "f": "f", "male": "m", "female": "f"}
AGE_GROUPS = ("18-24", "25-34", "35-44", "45-54", "55+")
AGE_GROUP_STARTS = (18, 25, 35, 45, 55)  # first age of each group above; one definition for all callers


def age_group_for_age(age: int) -> str | None:
    """The bucket for an age in years; None below 18 (no bucket is defined there)."""
    index = bisect_right(AGE_GROUP_STARTS, age) - 1
    return AGE_GROUPS[index] if index >= 0 else None


def fallback_chain(geo_id: int, gender: str, age_group: str, category: str) -> list[tuple]:
    """Segments to try in order: exact, without age, without gender, then global.

    Category stays: it is a filter the caller asked for, so every step honours it.
    Consecutive duplicates (when a dimension already is 'any') are dropped.
    """
    chain = [
        (geo_id, gender, age_group, category),
        (geo_id, gender, ANY, category),
        (geo_id, ANY, ANY, category),
        (ANY_GEO, ANY, ANY, category),
    ]
    out = []
    for seg in chain:
        if seg not in out:
            out.append(seg)
    return out
