"""Request validation with pydantic: every error names the field and the rule.

Extra fields (Rails may send more) are ignored. Bools are never accepted as numbers.
"""
from __future__ import annotations

from typing import Annotated, Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, field_validator

from shared.demographics import AGE_GROUPS, GENDER_ALIASES, age_group_for_age
from shared.ids import parse_id
from shared.serving import Filters

Number = Union[StrictInt, StrictFloat]
Category = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\- &]+$")]
GeoId = Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]
MAX_PAGE = 100_000


class RequestError(Exception):
    """A 4xx answer: status, and errors as [{"field", "rule"}]."""

    def __init__(self, errors: list[dict], status: int = 400):
        super().__init__(errors)
        self.errors = errors
        self.status = status


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class UserParams(_Model):
    gender: Optional[str] = None
    age: Optional[Union[StrictInt, str]] = None
    category: Optional[Category] = None
    geo_id: Optional[GeoId] = None

    @field_validator("gender")
    @classmethod
    def _gender(cls, v):
        if v is None:
            return None
        g = GENDER_ALIASES.get(v.strip().lower())
        if g is None:
            raise ValueError(f"must be one of {sorted(GENDER_ALIASES)}")
        return g

    @field_validator("age")
    @classmethod
    def _age(cls, v):
        if v is None:
            return None
        if isinstance(v, int):
            if not 0 <= v <= 130:
                raise ValueError("an integer age must be between 0 and 130")
            return age_group_for_age(v)  # under 18: no bucket, treated as "any"
        if v not in AGE_GROUPS:
            raise ValueError(f"must be an integer age or one of {list(AGE_GROUPS)}")
        return v


class FiltersIn(_Model):
    price_from: Optional[Annotated[Number, Field(ge=0)]] = None
    price_to: Optional[Annotated[Number, Field(ge=0)]] = None
    category: Optional[Category] = None
    geo_id: Optional[GeoId] = None


class PaginationIn(_Model):
    page: Annotated[StrictInt, Field(ge=1, le=MAX_PAGE)] = 1
    limit: Optional[Annotated[StrictInt, Field(ge=1)]] = None


class PopularRequest(_Model):
    user_params: Optional[UserParams] = None
    filters: Optional[FiltersIn] = None
    pagination: Optional[PaginationIn] = None


class PersonalizedRequest(_Model):
    user_id: Union[StrictInt, str]
    geo_id: Optional[GeoId] = None
    filters: Optional[FiltersIn] = None
    pagination: Optional[PaginationIn] = None

    @field_validator("user_id")
    @classmethod
    def _user_id(cls, v):
        return parse_id(v)


def _field(loc) -> str:
    # Drop pydantic's union-branch markers (e.g. 'int', 'function-after[...]').
    parts = [str(p) for p in loc if isinstance(p, int) or not (("[" in str(p)) or str(p) in {"int", "float", "str"})]
    return ".".join(parts) or "body"


def _errors(exc: ValidationError) -> list[dict]:
    out, seen = [], set()
    for err in exc.errors(include_url=False):
        field = _field(err["loc"])
        if field in seen:
            continue
        seen.add(field)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "model_type":
            msg = "must be a JSON object"
        out.append({"field": field, "rule": msg})
    return out


def parse(model: type[_Model], body: Any, max_page_size: int, default_page_size: int):
    """(validated model, Filters, page, limit) or RequestError."""
    if not isinstance(body, dict):
        raise RequestError([{"field": "body", "rule": "must be a JSON object"}])
    try:
        req = model.model_validate(body)
    except ValidationError as exc:
        raise RequestError(_errors(exc)) from None
    pagination = req.pagination or PaginationIn()
    limit = pagination.limit if pagination.limit is not None else default_page_size
    if limit > max_page_size:
        raise RequestError([{"field": "pagination.limit", "rule": f"must be at most {max_page_size}"}])
    f = req.filters or FiltersIn()
    if f.price_from is not None and f.price_to is not None and f.price_from > f.price_to:
        raise RequestError([{"field": "filters.price_from", "rule": "must not be greater than filters.price_to"}])
    return req, f, pagination.page, limit


def popular_filters(req: PopularRequest, f: FiltersIn) -> tuple[tuple, Filters]:
    params = req.user_params or UserParams()
    category = f.category or params.category
    if f.category and params.category and f.category != params.category:
        raise RequestError([{"field": "filters.category", "rule": "must match user_params.category when both are set"}])
    geo = f.geo_id or params.geo_id
    segment = (params.geo_id or geo or 0, params.gender or "any", params.age or "any", category or "any")
    return segment, Filters(_f(f.price_from), _f(f.price_to), category, geo)


def personalized_filters(req: PersonalizedRequest, f: FiltersIn) -> Filters:
    return Filters(_f(f.price_from), _f(f.price_to), f.category, req.geo_id or f.geo_id)


def _f(v):
    return None if v is None else float(v)

