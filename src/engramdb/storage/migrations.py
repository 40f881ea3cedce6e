"""A tiny migration registry: one decorated function per schema step, applied in order and
recorded by name, so every backend upgrades the same way and a step never runs twice."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Step = Callable[[Any], None]


@dataclass
class Migrations:
    backend: str
    steps: list[tuple[str, Step]] = field(default_factory=list)

    def step(self, name: str) -> Callable[[Step], Step]:
        def register(fn: Step) -> Step:
            if any(n == name for n, _ in self.steps):
                raise ValueError(f"migration {name!r} registered twice for {self.backend}")
            self.steps.append((name, fn))
            return fn

        return register

    def pending(self, applied: set[str]) -> list[tuple[str, Step]]:
        return [(n, fn) for n, fn in self.steps if n not in applied]
