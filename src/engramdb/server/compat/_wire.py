"""What the compat routers share: the caller dependencies and small wire-format helpers.

Nothing here decides anything about memories; it only moves names and values between a
vendor's wire format and the core's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends
from pydantic import BaseModel, ConfigDict

from ...engine.admin import Principal
from ..deps import reader, writer

Reader = Annotated[Principal, Depends(reader)]
Writer = Annotated[Principal, Depends(writer)]


class Strict(BaseModel):
    """A request body: unknown fields are refused (422/400), never silently dropped."""

    model_config = ConfigDict(extra="forbid")


def rename_fields(data: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """A vendor's field names to the core's (`importance_score` → `importance`)."""
    return {names.get(k, k): v for k, v in data.items()}


def wire_field(field: str | None, names: Mapping[str, str]) -> str | None:
    """The vendor's name for a core field, also inside a path ("tags[0]" → "metadata.tags[0]")."""
    if field is None:
        return None
    for core, wire in names.items():
        if field == core or field.startswith((core + "[", core + ".")):
            return wire + field[len(core):]
    return field


def wire_message(message: str, field: str | None, names: Mapping[str, str]) -> str:
    """A core message names the core's field first ("expires_at: must lie in the future");
    say it with the vendor's name for that field ("validUntil: ...")."""
    wire = wire_field(field, names)
    if field is None or wire == field or not message.startswith(field):
        return message
    return f"{wire}{message[len(field):]}"


def without_field(message: str, field: str | None) -> str:
    """The message after its leading "field: "."""
    if field and message.startswith(field + ": "):
        return message[len(field) + 2:]
    return message


def rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 6)
