"""One case's outcome: the fault, what was expected, and checks with measured figures.

A case passes only when it ran to the end and every check held; a harness error is a
failure too, reported with its message, never skipped.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Record:
    name: str
    title: str
    fault: str
    expected: str
    checks: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    raw: dict = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    def check(self, figure: str, target: str, observed: str, ok: bool) -> bool:
        self.checks.append({"figure": figure, "target": target, "observed": observed, "ok": bool(ok)})
        return bool(ok)

    def note(self, text: str) -> None:
        self.notes.append(text)

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.checks) and all(c["ok"] for c in self.checks)

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def ms(value) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"
