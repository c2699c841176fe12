"""``RANKLINE_EVENT_LABELS``: how the rows of a generic interaction log become graded labels.

Two forms, never mixed (a comma list of ``key:label`` entries, labels 0-3):

* event types: ``view:0,click:1,cart:2,purchase:3``. A row's label is its ``event_type``'s; an
  event type that the mapping does not name is an error (name it with ``:0`` to keep it as a
  plain impression).
* rating thresholds on the ``value`` column: ``value>=3:1,value>=4:2,value>=5:3``. A row's label
  is the highest label whose threshold its value reaches, else 0; ``event_type`` is ignored.

Labels: purchase 3 > add-to-cart 2 > click 1 > an impression ignored 0. Imports nothing from the
pipeline (the settings check the value with :func:`parse_event_labels`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

DEFAULT_EVENT_LABELS = "view:0,click:1,cart:2,purchase:3"
MAX_LABEL = 3
_EVENT = re.compile(r"^[A-Za-z0-9_.\-/]{1,64}$")
_THRESHOLD = re.compile(r"^value\s*>=\s*(\S+)$")


@dataclass(frozen=True)
class EventLabels:
    """A parsed mapping: ``events`` (event type -> label) or ``thresholds`` ((min value, label),…)."""

    events: dict[str, int] | None = None
    thresholds: tuple[tuple[float, int], ...] | None = None

    @property
    def needs_value(self) -> bool:
        """Whether the log needs a ``value`` column (the threshold form)."""
        return self.thresholds is not None

    def unknown_events(self, event_type: pd.Series) -> dict[str, int]:
        """Event types of the log that the mapping does not name, with their row counts."""
        if self.events is None:
            return {}
        counts = event_type[~event_type.isin(list(self.events))].value_counts(dropna=False)
        return {str(k): int(v) for k, v in counts.items()}

    def labels(self, log: pd.DataFrame) -> np.ndarray:
        """The graded label (int8) of every row of ``log``."""
        if self.events is not None:
            mapped = log["event_type"].map(self.events)
            if mapped.isna().any():
                raise ValueError(f"event types not in RANKLINE_EVENT_LABELS: "
                                 f"{self.unknown_events(log['event_type'])}")
            return mapped.to_numpy(dtype=np.int8)
        value = log["value"].to_numpy(dtype=float)
        out = np.zeros(len(log), dtype=np.int8)
        for threshold, label in self.thresholds or ():
            out = np.where(value >= threshold, np.maximum(out, label), out).astype(np.int8)
        return out


def parse_event_labels(spec: str) -> EventLabels:
    """Parse a ``RANKLINE_EVENT_LABELS`` value.

    Raises:
        ValueError: the spec is empty, mixes the two forms, repeats a key, or has a label outside
            0-3 or a threshold that is not a finite number (the message says which entry).
    """
    entries = [e.strip() for e in spec.split(",")]
    if not spec.strip() or any(not e for e in entries):
        raise ValueError("must be a comma list of key:label entries, e.g. "
                         f"{DEFAULT_EVENT_LABELS} or value>=3:1,value>=4:2,value>=5:3")
    events: dict[str, int] = {}
    thresholds: dict[float, int] = {}
    for entry in entries:
        key, sep, label_text = entry.rpartition(":")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"entry {entry!r} is not key:label (e.g. click:1 or value>=4:2)")
        try:
            label = int(label_text.strip())
        except ValueError:
            label = -1
        if not 0 <= label <= MAX_LABEL:
            raise ValueError(f"entry {entry!r}: the label must be an integer 0-3 "
                             "(purchase 3 > add-to-cart 2 > click 1 > impression 0)")
        if m := _THRESHOLD.match(key):
            try:
                threshold = float(m.group(1))
            except ValueError:
                threshold = math.nan
            if not math.isfinite(threshold):
                raise ValueError(f"entry {entry!r}: the threshold must be a finite number")
            if threshold in thresholds:
                raise ValueError(f"entry {entry!r}: threshold {m.group(1)} given twice")
            thresholds[threshold] = label
        elif key.startswith("value"):
            raise ValueError(f"entry {entry!r}: a rating threshold is written value>=N:label")
        elif _EVENT.match(key):
            if key in events:
                raise ValueError(f"entry {entry!r}: event type {key!r} given twice")
            events[key] = label
        else:
            raise ValueError(f"entry {entry!r}: an event type is 1-64 letters, digits or _.-/")
    if events and thresholds:
        raise ValueError("mixes event types and value>= thresholds; use one form")
    if events:
        return EventLabels(events=events)
    return EventLabels(thresholds=tuple(sorted(thresholds.items())))
