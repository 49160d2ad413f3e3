"""Requests refused in Vietnamese, naming the field (issue 15: typed edges).

A route declares its body as a pydantic model; FastAPI validates it and documents it in
``/openapi.json``. Its English error list would reach a commune officer, so these routes
answer 422 ``{"detail": "..."}`` in Vietnamese instead, as every other refusal of this API
does. This is the one builder of those sentences for the whole API.

A model may set its own words, so a message the API always gave stays word for word:

- ``refusals: ClassVar[dict[str, str]]``: the whole sentence for a refused field;
- ``labels: ClassVar[dict[str, str]]``: how a field is named (``Ngưỡng khả dụng``);
- ``label_format: ClassVar[str]``: how a field without a label is named (default ``«{}»``);
- ``unknown_refusal: ClassVar[str]``: the sentence for unknown fields (``{names}``,
  ``{allowed}``), for a model with ``extra="forbid"``.

:class:`VietnameseBodyRoute` (used by :func:`typed_post`) answers body errors this way and
leaves errors in the path, query or headers to FastAPI; :class:`VietnameseRequestRoute`
answers every request error this way (the indicator API, whose query parameters are named
in Vietnamese too)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel

MSG_NOT_JSON = "Nội dung gửi lên không phải JSON hợp lệ."
MSG_NOT_OBJECT = "Yêu cầu phải là một đối tượng JSON."
UNKNOWN_FIELDS = "Trường không rõ: {names}."


def refusal_message(
    errors: list[dict[str, Any]],
    model: type[BaseModel] | None = None,
    *,
    labels: Mapping[str, str] | None = None,
    label_format: str | None = None,
    unknown_refusal: str | None = None,
) -> str:
    """One Vietnamese sentence per refused field, in the order of the errors. ``labels``,
    ``label_format`` and ``unknown_refusal`` are the route's defaults; the model's own
    (class variables of the same names) win."""
    refusals: Mapping[str, str] = getattr(model, "refusals", {}) if model else {}
    names = {**(labels or {}), **(getattr(model, "labels", {}) if model else {})}
    fmt = (getattr(model, "label_format", None) if model else None) or label_format or "«{}»"
    unknown_text = (
        (getattr(model, "unknown_refusal", None) if model else None)
        or unknown_refusal
        or UNKNOWN_FIELDS
    )
    unknown = sorted({str(e["loc"][-1]) for e in errors if e["type"] == "extra_forbidden"})
    if unknown:
        allowed = ", ".join(getattr(model, "model_fields", {}) if model else ())
        return unknown_text.format(names=", ".join(unknown), allowed=allowed)
    parts: list[str] = []
    for e in errors:
        kind, loc, ctx = e["type"], tuple(e.get("loc", ())), e.get("ctx") or {}
        if kind == "json_invalid":
            return MSG_NOT_JSON
        if len(loc) <= 1:  # the body itself: a list, a string, nothing
            return MSG_NOT_OBJECT
        name = str(loc[1])
        if loc[0] == "body" and name in refusals:
            parts.append(refusals[name])
            continue
        last = str(loc[-1])
        label = names.get(last) or fmt.format(".".join(str(p) for p in loc[1:]))
        if kind == "missing":
            parts.append(f"Thiếu {label}.")
        elif kind.startswith("int"):
            parts.append(f"{label} phải là số nguyên.")
        elif kind.startswith("float") or kind.startswith("decimal"):
            parts.append(f"{label} phải là một số.")
        elif kind == "greater_than_equal":
            parts.append(f"{label} không được nhỏ hơn {ctx.get('ge')}.")
        elif kind == "less_than_equal":
            parts.append(f"{label} không được lớn hơn {ctx.get('le')}.")
        elif kind.startswith("bool"):
            parts.append(f"{label} phải là true hoặc false.")
        elif kind == "string_too_long":
            parts.append(f"{label} dài quá {ctx.get('max_length')} ký tự.")
        elif kind.startswith("string"):
            parts.append(f"{label} phải là chuỗi.")
        elif kind.startswith("list"):
            parts.append(f"{label} phải là danh sách.")
        elif kind.startswith("dict"):
            parts.append(f"{label} phải là một đối tượng JSON.")
        elif kind == "literal_error":
            parts.append(f"{label} không hợp lệ (được phép: {ctx.get('expected', '')}).")
        else:
            parts.append(f"{label} không hợp lệ.")
    return " ".join(dict.fromkeys(parts)) or "Dữ liệu gửi lên không hợp lệ."


def body_model(route: APIRoute) -> type[BaseModel] | None:
    """The pydantic model of a route's body (``X`` or ``X | None``), if it has one."""
    model = None
    for param in route.dependant.body_params:
        annotation = getattr(param.field_info, "annotation", None)
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
    return model


class VietnameseBodyRoute(APIRoute):
    """A route whose body validation errors are answered 422 in Vietnamese. Subclasses set
    the defaults for fields the model does not name (``labels`` and friends) and whether
    errors outside the body are answered so too (``body_only``)."""

    body_only = True
    labels: Mapping[str, str] = {}
    label_format: str | None = None
    unknown_refusal: str | None = None

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()
        model = body_model(self)

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                errors = list(exc.errors())
                if self.body_only:
                    errors = [e for e in errors if tuple(e.get("loc", ()))[:1] == ("body",)]
                    if not errors:
                        raise
                text = refusal_message(
                    errors,
                    model,
                    labels=self.labels,
                    label_format=self.label_format,
                    unknown_refusal=self.unknown_refusal,
                )
                return JSONResponse({"detail": text}, status_code=422)

        return route


class VietnameseRequestRoute(VietnameseBodyRoute):
    """Every request error (body, path, query, headers) answered in Vietnamese."""

    body_only = False


def typed_route(
    router: APIRouter, method: str, path: str, **kwargs: Any
) -> Callable[[Callable], Callable]:
    """``@router.<method>(path, ...)`` with Vietnamese body errors (``VietnameseBodyRoute``)."""

    def register(endpoint: Callable) -> Callable:
        router.add_api_route(
            path, endpoint, methods=[method], route_class_override=VietnameseBodyRoute, **kwargs
        )
        return endpoint

    return register


def typed_post(router: APIRouter, path: str, **kwargs: Any) -> Callable[[Callable], Callable]:
    """``@router.post(path, ...)`` with Vietnamese body errors (``VietnameseBodyRoute``)."""
    return typed_route(router, "POST", path, **kwargs)
