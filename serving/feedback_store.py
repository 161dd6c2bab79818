"""Feedback that is never lost: one append-only JSON-lines file per replica and UTC day.

The ingress answers 200 only after `FeedbackWriter.write` returns, and `write` returns only after
the line is fsynced: a replica killed right after answering still has the record on disk. Each
replica writes its own folder, so replicas never share a file and no cross-process lock is needed.
A replica killed mid-write leaves a torn last line; the next writer on that file starts a fresh
line and `read_feedback` skips the fragment, so one lost half-record never costs the others.
Files are local (an object store cannot fsync one line); `export_feedback` compacts them into the
Parquet the corpus reads.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from shipyard.errors import UserInputError
from shipyard.project import Project

logger = logging.getLogger(__name__)

FILE_GLOB = "*/feedback-*.jsonl"  # <folder>/<replica>/feedback-<YYYYMMDD>.jsonl


@dataclass
class FeedbackRecord:
    """One labelled answer: what was asked, what the service said, what was right, and who."""

    id: str  # uuid4 hex
    time: float  # unix seconds
    input: str | dict[str, Any]  # the text, or the tabular row
    prediction: str  # the label the service answered
    label: str  # the correct label
    model: str  # registered model name
    version: int
    variant: str  # "full", "tflite_int8", ...
    request_id: str | None = None
    arm: str | None = None  # "champion" / "challenger"

    @classmethod
    def new(cls, **values: Any) -> FeedbackRecord:
        """A record stamped now with a fresh id (callers may still pass either)."""
        values.setdefault("id", uuid.uuid4().hex)
        values.setdefault("time", time.time())
        return cls(**values)

    def to_json(self) -> str:
        """One line (no newline), UTF-8 kept readable."""
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FeedbackRecord:
        names = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.default is not None and f.name not in raw]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        return cls(**{k: v for k, v in raw.items() if k in names})


def sanitize_replica(replica: str) -> str:
    """A replica id as one safe folder name (Serve's ids hold `#` and may hold `/`)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", replica).lstrip(".")
    return name[:128] or "replica"


def day_of(timestamp: float) -> str:
    return time.strftime("%Y%m%d", time.gmtime(timestamp))


class FeedbackWriter:
    """Appends records to `<folder>/<replica>/feedback-<UTC date>.jsonl`, fsynced, thread-safe.

    The file is chosen by the record's own time, so a day's records land in that day's file
    whenever they are written and rotation needs no timer.
    """

    def __init__(self, folder: str | os.PathLike, replica: str):
        self.folder = Path(folder) / sanitize_replica(replica)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._day: str | None = None

    def path_for(self, timestamp: float) -> Path:
        return self.folder / f"feedback-{day_of(timestamp)}.jsonl"

    def write(self, record: FeedbackRecord) -> None:
        """Returns once the line is on disk (written and fsynced)."""
        line = (record.to_json() + "\n").encode("utf-8")
        with self._lock:
            fd = self._open(day_of(record.time))
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
            self._fd, self._day = None, None

    def __enter__(self) -> FeedbackWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open(self, day: str) -> int:
        if self._fd is not None and self._day == day:
            return self._fd
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"feedback-{day}.jsonl"
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if not created and _ends_torn(path):
            os.write(fd, b"\n")  # a killed writer's half line stays a line of its own
        if created:  # the new file's name must survive a crash too, not only its content
            _fsync_dir(self.folder)
        self._fd, self._day = fd, day
        return fd


def _ends_torn(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def feedback_files(folder: str | os.PathLike) -> list[Path]:
    """Every replica's feedback files under `folder`, sorted (none when it does not exist)."""
    return sorted(Path(folder).glob(FILE_GLOB))


def read_records(path: Path) -> list[FeedbackRecord]:
    """One file's records. A line that is not JSON is a torn write (a writer killed mid-line):
    skipped with a warning. A JSON line that is not a record is an error naming file and line."""
    records = []
    torn = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError:
                torn += 1
                continue
            try:
                if not isinstance(raw, dict):
                    raise ValueError("not a JSON object")
                records.append(FeedbackRecord.from_dict(raw))
            except (TypeError, ValueError) as exc:
                raise UserInputError(f"{path}:{number}: not a feedback record ({exc})") from None
    if torn:
        logger.warning("%s: skipped %d torn line(s) (a writer killed mid-write)", path, torn)
    return records


def read_feedback(folder: str | os.PathLike) -> list[FeedbackRecord]:
    """All replicas' records under `folder`, sorted by time (then id, for a stable order)."""
    records = [r for path in feedback_files(folder) for r in read_records(path)]
    return sorted(records, key=lambda r: (r.time, r.id))


def feedback_dir(project: Project) -> Path:
    """`serving.feedback_path` (relative to the project file) or `<workdir>/feedback`."""
    value = project.serving.feedback_path
    if not value:
        return project.workdir_path / "feedback"
    resolved = project.path(value)
    if "://" in resolved:
        raise UserInputError(
            f"serving.feedback_path: feedback is fsynced line by line to a local folder, which"
            f" {value!r} is not (use a local or mounted path)"
        )
    return Path(resolved)
