"""Request bodies refused in Vietnamese, naming the field (issue 15: typed edges).

A route declares its body as a pydantic model; FastAPI validates it and documents it in
``/openapi.json``. Its English error list would reach a commune officer, so a route that
uses :func:`typed_post` answers 422 ``{"detail": "..."}`` in Vietnamese instead, as every
other refusal of this API does. A model may set its own sentence per field
(a ``refusals: ClassVar[dict[str, str]]`` on the model), so a message the API always gave
stays word for word.
Errors outside the body (path, query, headers) keep FastAPI's answer, unchanged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel


def body_message(errors: list[dict[str, Any]], model: type[BaseModel] | None) -> str:
    """One Vietnamese sentence per refused field, in the order of the errors."""
    refusals = getattr(model, "refusals", {}) if model else {}
    unknown = sorted({str(e["loc"][-1]) for e in errors if e["type"] == "extra_forbidden"})
    if unknown:
        return f"Trường không rõ: {', '.join(unknown)}."
    parts: list[str] = []
    for e in errors:
        kind, loc, ctx = e["type"], tuple(e.get("loc", ())), e.get("ctx") or {}
        if kind == "json_invalid":
            return "Nội dung gửi lên không phải JSON hợp lệ."
        if (
            len(loc) <= 1
            or kind in ("model_type", "model_attributes_type", "dict_type")
            and len(loc) == 1
        ):
            return "Yêu cầu phải là một đối tượng JSON."
        name = str(loc[1])
        if name in refusals:
            parts.append(refusals[name])
            continue
        label = f"«{'.'.join(str(p) for p in loc[1:])}»"
        if kind == "missing":
            parts.append(f"Thiếu {label}.")
        elif kind.startswith("int"):
            parts.append(f"{label} phải là số nguyên.")
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
        else:
            parts.append(f"{label} không hợp lệ.")
    return " ".join(dict.fromkeys(parts)) or "Dữ liệu gửi lên không hợp lệ."


class VietnameseBodyRoute(APIRoute):
    """A route whose body validation errors are answered 422 in Vietnamese."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()
        model = None
        for param in self.dependant.body_params:
            annotation = getattr(param.field_info, "annotation", None)
            for candidate in (annotation, *getattr(annotation, "__args__", ())):
                if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                    model = candidate

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                errors = list(exc.errors())
                if not any(tuple(e.get("loc", ()))[:1] == ("body",) for e in errors):
                    raise
                body = [e for e in errors if tuple(e.get("loc", ()))[:1] == ("body",)]
                return JSONResponse({"detail": body_message(body, model)}, status_code=422)

        return route


def typed_post(router: APIRouter, path: str, **kwargs: Any) -> Callable[[Callable], Callable]:
    """``@router.post(path, ...)`` with Vietnamese body errors (``VietnameseBodyRoute``)."""

    def register(endpoint: Callable) -> Callable:
        router.add_api_route(
            path, endpoint, methods=["POST"], route_class_override=VietnameseBodyRoute, **kwargs
        )
        return endpoint

    return register
