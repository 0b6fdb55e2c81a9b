"""Segments: genders, age groups and the 'any' sentinels shared by API, workers and evaluator."""
from __future__ import annotations

from datetime import date

ANY = "any"
ANY_GEO = 0
GENDERS = ("m", "f")
GENDER_ALIASES = {"m": "m", "f": "f", "male": "m", "female": "f"}
AGE_GROUPS = ("18-24", "25-34", "35-44", "45-54", "55+")


def age_group_for_age(age: int) -> str | None:
    """The bucket for an age in years; None below 18 (no bucket is defined there)."""
    if age < 18:
        return None
    if age <= 24:
        return "18-24"
    if age <= 34:
        return "25-34"
    if age <= 44:
        return "35-44"
    if age <= 54:
        return "45-54"
    return "55+"


def age_on(birth_date: date, today: date) -> int:
    return today.year - birth_date.year - ((today.month, today.day) < (birth_date.month, birth_date.day))


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
