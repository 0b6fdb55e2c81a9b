"""Request validation with pydantic: every error names the field and the rule.

Extra fields (Rails may send more) are ignored. Bools are never accepted as numbers.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, \
    WithJsonSchema, field_validator

from shared.demographics import AGE_GROUPS, GENDER_ALIASES, age_group_for_age
from shared.ids import ID_JSON_SCHEMA, parse_id
from shared.serving import Filters


def _integral(v):
    # JSON has one number type: 5.0 is the integer 5 (JSON Schema agrees). Bools stay refused.
    return int(v) if type(v) is float and v.is_integer() else v


# An integer: a JSON integer, or a number with no fractional part.
JsonInt = Annotated[StrictInt, BeforeValidator(_integral)]


def Int(lo: int, hi: int):
    """An integer field in [lo, hi]. The bounds sit next to StrictInt so the JSON Schema says minimum/maximum."""
    return Annotated[StrictInt, Field(ge=lo, le=hi), BeforeValidator(_integral)]


MAX_PAGE = 100_000
# Beyond any real price, and small enough that every JSON number below it is a finite float.
MAX_PRICE = 10**12
Price = Annotated[StrictFloat, Field(ge=0, le=MAX_PRICE)]  # StrictFloat: ints yes, bools and strings no
Category = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\- &]+$")]
GeoId = Int(1, 2**31 - 1)
Gender = Literal[tuple(GENDER_ALIASES)]
# The validators below are the rule; these schemas say the same for /openapi.json (schemathesis checks they agree).
Age = Annotated[Union[JsonInt, str], WithJsonSchema(
    {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 130}, {"type": "string", "enum": list(AGE_GROUPS)}]})]
UserId = Annotated[Union[JsonInt, str], WithJsonSchema(ID_JSON_SCHEMA)]


class RequestError(Exception):
    """A 4xx answer: status, and errors as [{"field", "rule"}]."""

    def __init__(self, errors: list[dict], status: int = 400):
        super().__init__(errors)
        self.errors = errors
        self.status = status


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class UserParams(_Model):
    gender: Optional[Gender] = None
    age: Optional[Age] = None
    category: Optional[Category] = None
    geo_id: Optional[GeoId] = None

    @field_validator("gender")
    @classmethod
    def _gender(cls, v):
        return None if v is None else GENDER_ALIASES[v]

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
    price_from: Optional[Price] = None
    price_to: Optional[Price] = None
    category: Optional[Category] = None
    geo_id: Optional[GeoId] = None


class PaginationIn(_Model):
    page: Int(1, MAX_PAGE) = 1
    limit: Optional[Int(1, 2**31 - 1)] = None  # at most MAX_PAGE_SIZE: checked in parse()


class PopularRequest(_Model):
    user_params: Optional[UserParams] = None
    filters: Optional[FiltersIn] = None
    pagination: Optional[PaginationIn] = None


class PersonalizedRequest(_Model):
    user_id: UserId
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

