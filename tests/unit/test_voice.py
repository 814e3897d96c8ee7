"""What the scheduler says: a settle done again is silent (nested hushes keep the outer one), and the
progress line is said at most once a second after a change."""

from __future__ import annotations

import time
from types import SimpleNamespace

from gputui.engine.voice import Progress, Voice


class Out:
    show_output = True

    def __init__(self):
        self.said: list[str] = []

    def info(self, text):
        self.said.append(text)

    def worker_lines(self, label, lines):
        self.said.extend(f"{label}: {line}" for line in lines)

    def progress(self, counts, elapsed):
        self.said.append(f"progress {dict(counts)}")


def test_a_hush_silences_everything_inside_and_a_nested_unhushed_part_stays_silent():
    out = Out()
    voice = Voice(out)
    with voice.hushed():
        voice.info("again")
        with voice.hushed(False):
            voice.worker_lines("t", ["line"])
        voice.progress({}, 1.0)
    voice.info("said")
    with voice.hushed(False):
        voice.info("first time")
    assert out.said == ["said", "first time"]


def test_progress_after_a_change_at_most_once_a_second(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    out = Out()
    progress = Progress(Voice(out), SimpleNamespace(counts={"done": 1}), every=30.0)
    progress.changed()
    progress.changed()  # within the second: said later
    assert out.said == ["progress {'done': 1}"]
    now[0] += 0.5
    progress.tick()
    assert len(out.said) == 1
    now[0] += 0.6
    progress.tick()
    assert len(out.said) == 2
    now[0] += 29.0
    progress.tick()
    assert len(out.said) == 2
    now[0] += 1.5
    progress.tick()  # every 30 s, change or not
    assert len(out.said) == 3
