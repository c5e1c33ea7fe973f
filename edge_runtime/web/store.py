"""The screening history: one SQLite file plus an image folder in the data directory.

Durability: the database runs in WAL mode with ``synchronous=FULL``. In WAL mode ``NORMAL`` already survives
a crash of the server process (kill -9): a commit is in the WAL file that the next open replays. It does not
survive a power cut, where the last commits may still sit in the OS cache; ``FULL`` fsyncs the WAL at every
commit, so a screening the page calls "saved" is on the storage medium. The cost is one fsync per screening,
which is nothing next to an inference.

Order of writes for one screening: image files are written to temporary names, fsynced and renamed into place,
then the row is inserted and committed, and only then does the page or the API acknowledge it. A crash between
the two leaves image files without a row (never a row without its images); ``sweep_orphans`` removes them at
start-up. Images are stored under generated names (the screening id), never under the uploaded file name.
"""
from __future__ import annotations

import json
import os
import sqlite3
import stat
import uuid
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS screenings (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL,            -- local time, ISO 8601 with offset; first 10 chars = local date
    reference TEXT NOT NULL DEFAULT '',
    original_name TEXT NOT NULL DEFAULT '',
    image_kind TEXT NOT NULL,         -- png / jpeg / dicom (by content)
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    labels TEXT NOT NULL,             -- JSON list, the model's class order
    probs TEXT NOT NULL,              -- JSON object label -> probability ({} when out of scope)
    label TEXT NOT NULL,
    decision TEXT NOT NULL,           -- a label, 'refer' or 'out_of_scope'
    reason TEXT NOT NULL DEFAULT '',  -- English text (rows from before reason codes have only this)
    reason_code TEXT NOT NULL DEFAULT '',      -- edge_runtime.operating_point.REASONS_EN key
    reason_args TEXT NOT NULL DEFAULT '{}',    -- JSON object: the reason's numbers
    heatmap_grid TEXT NOT NULL DEFAULT '',     -- "7x7": the feature map behind the heatmap ('' unknown)
    in_scope INTEGER NOT NULL,
    has_heatmap INTEGER NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    backend TEXT NOT NULL DEFAULT '',
    synthetic INTEGER NOT NULL DEFAULT 0,
    timings TEXT NOT NULL DEFAULT '{}',
    total_ms REAL NOT NULL DEFAULT 0,
    outcome TEXT,                     -- confirmed outcome: a label or 'other'
    outcome_note TEXT NOT NULL DEFAULT '',
    outcome_at TEXT,
    scope_distance REAL               -- embedding distance / input-check threshold (NULL: not measured)
);
CREATE INDEX IF NOT EXISTS screenings_created ON screenings(created);
CREATE TABLE IF NOT EXISTS audit (    -- what changed on this device (site profile applied / removed, outcome changed / cleared)
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',   -- in English (exports, older files)
    args TEXT NOT NULL DEFAULT '{}'    -- the same as fields, which the page words in the reader's language
);
CREATE INDEX IF NOT EXISTS screenings_reference ON screenings(reference);
CREATE INDEX IF NOT EXISTS screenings_sha256 ON screenings(sha256);
"""
JSON_FIELDS = ("labels", "probs", "timings", "reason_args")
# columns added after the first schema: (name, definition); added in place to an older file, old rows keep
# the defaults (an old row's reason shows its stored English text)
ADDED_COLUMNS = (("scope_distance", "REAL"), ("reason_code", "TEXT NOT NULL DEFAULT ''"), ("reason_args", "TEXT NOT NULL DEFAULT '{}'"),
                 ("heatmap_grid", "TEXT NOT NULL DEFAULT ''"))
FILES = {"original": "{id}.original.{ext}", "display": "{id}.png", "overlay": "{id}.heatmap.png"}
EXT = {"png": "png", "jpeg": "jpg", "dicom": "dcm"}


def private_dir(path: str | Path) -> Path:
    """Make ``path`` (and missing parents) and set it to 0700, whatever the umask or its mode before: the
    data folder and the image folder hold patient data."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def private_file(path: Path) -> None:
    """Create ``path`` if missing and set it to 0600 (the umask does not apply to chmod)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def now_local() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def new_id() -> str:
    return uuid.uuid4().hex


class Store:
    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        self.images = self.data_dir / "images"
        private_dir(self.data_dir)  # patient data: owner only
        private_dir(self.images)
        self.db_path = self.data_dir / "screenings.db"
        # SQLite gives the -wal and -shm files the mode of the database file, so 0600 here covers all three
        private_file(self.db_path)
        for extra in ("-wal", "-shm"):
            side = self.db_path.with_name(self.db_path.name + extra)
            if side.exists():
                os.chmod(side, 0o600)
        with self.connect() as db:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise RuntimeError(f"{self.db_path}: cannot switch SQLite to WAL mode (got {mode!r})")
            db.executescript(SCHEMA)
            self._migrate(db)

    @staticmethod
    def _migrate(db) -> None:
        """Add the columns an older history file lacks (SQLite ADD COLUMN keeps every row, with the default)."""
        have = {r[1] for r in db.execute("PRAGMA table_info(screenings)")}
        for name, definition in ADDED_COLUMNS:
            if name not in have:
                db.execute(f"ALTER TABLE screenings ADD COLUMN {name} {definition}")
        if "args" not in {r[1] for r in db.execute("PRAGMA table_info(audit)")}:
            db.execute("ALTER TABLE audit ADD COLUMN args TEXT NOT NULL DEFAULT '{}'")

    @contextmanager
    def connect(self):
        """A short-lived connection per operation (SQLite connections are cheap; waitress uses threads)."""
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        try:
            yield db
        finally:
            db.close()

    # ---- files -------------------------------------------------------------------------------------------
    def path(self, sid: str, which: str, kind: str = "png") -> Path:
        if not sid.isalnum():
            raise ValueError("bad screening id")
        return self.images / FILES[which].format(id=sid, ext=EXT.get(kind, "bin"))

    def _write(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def _sync_dir(self) -> None:
        try:
            fd = os.open(self.images, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # ---- writes ------------------------------------------------------------------------------------------
    def add(self, record: dict, files: dict[str, bytes]) -> dict:
        """Store the image files, then insert and commit the row. Returns the stored record."""
        rec = dict(record)
        rec.setdefault("id", new_id())
        rec.setdefault("created", now_local())
        written = []
        try:
            for which, data in files.items():
                p = self.path(rec["id"], which, rec["image_kind"])
                self._write(p, data)
                written.append(p)
            self._sync_dir()
            row = {k: (json.dumps(v) if k in JSON_FIELDS else v) for k, v in rec.items()}
            cols = ", ".join(row)
            marks = ", ".join(f":{k}" for k in row)
            with self.connect() as db:
                db.execute(f"INSERT INTO screenings ({cols}) VALUES ({marks})", row)  # autocommit: durable here
        except BaseException:
            for p in written:
                p.unlink(missing_ok=True)
            raise
        return self.get(rec["id"])

    def set_outcome(self, sid: str, outcome: str | None, note: str = "") -> bool:
        """Record (or clear, ``outcome`` None) the confirmed outcome of a screening. Changing or clearing one
        already recorded writes an audit line with what it was: outcomes feed monitoring and the site profile's
        thresholds, so a rewritten one must leave a trace. A first outcome is its own record (``outcome_at``)."""
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")  # read, update and audit as one step (waitress serves in threads)
            try:
                was = db.execute("SELECT reference, outcome, outcome_note FROM screenings WHERE id=?",
                                 (sid,)).fetchone()
                if was is None:
                    db.execute("ROLLBACK")
                    return False
                db.execute("UPDATE screenings SET outcome=?, outcome_note=?, outcome_at=? WHERE id=?",
                           (outcome, note, now_local() if outcome else None, sid))
                if was["outcome"] and (was["outcome"], was["outcome_note"] or "") != (outcome, note or ""):
                    ref = f" ({was['reference']})" if was["reference"] else ""
                    before = was["outcome"] + (f" [{was['outcome_note']}]" if was["outcome_note"] else "")
                    after = (outcome + (f" [{note}]" if note else "")) if outcome else "-"
                    fields = {"sid": sid, "reference": was["reference"] or "", "before": was["outcome"],
                              "before_note": was["outcome_note"] or "", "after": outcome, "after_note": note or ""}
                    db.execute("INSERT INTO audit (created, action, detail, args) VALUES (?, ?, ?, ?)",
                               (now_local(), "outcome_changed" if outcome else "outcome_cleared",
                                f"screening {sid}{ref}: {before} -> {after}", json.dumps(fields)))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return True

    # ---- reads -------------------------------------------------------------------------------------------
    @staticmethod
    def _decode(row: sqlite3.Row | None) -> dict | None:
        if row is None:
            return None
        d = dict(row)
        for k in JSON_FIELDS:
            d[k] = json.loads(d[k])
        d["in_scope"], d["has_heatmap"], d["synthetic"] = (bool(d["in_scope"]), bool(d["has_heatmap"]),
                                                           bool(d["synthetic"]))
        return d

    def get(self, sid: str) -> dict | None:
        with self.connect() as db:
            return self._decode(db.execute("SELECT * FROM screenings WHERE id=?", (sid,)).fetchone())

    @staticmethod
    def _where(reference: str = "", date_from: str = "", date_to: str = "", decision: str = "",
               ids: list[str] | None = None):
        sql, args = [], []
        if reference:
            esc = reference.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            sql.append("reference LIKE ? ESCAPE '\\'")
            args.append(f"%{esc}%")
        if date_from:
            sql.append("substr(created, 1, 10) >= ?")
            args.append(date_from)
        if date_to:
            sql.append("substr(created, 1, 10) <= ?")
            args.append(date_to)
        if decision:
            sql.append("decision = ?")
            args.append(decision)
        if ids is not None:
            sql.append(f"id IN ({', '.join('?' * len(ids)) or 'NULL'})")
            args.extend(ids)
        return (" WHERE " + " AND ".join(sql)) if sql else "", args

    def search(self, limit: int = 50, offset: int = 0, **filters) -> tuple[list[dict], int]:
        where, args = self._where(**filters)
        with self.connect() as db:
            total = db.execute(f"SELECT COUNT(*) FROM screenings{where}", args).fetchone()[0]
            rows = db.execute(f"SELECT * FROM screenings{where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                              [*args, int(limit), int(offset)]).fetchall()
        return [self._decode(r) for r in rows], total

    def same_file(self, sha256: str, other_than: str, limit: int = 5) -> list[dict]:
        """Other screenings of the very same file (same SHA-256), newest first: a film uploaded twice."""
        with self.connect() as db:
            rows = db.execute("SELECT * FROM screenings WHERE sha256=? AND id<>? ORDER BY seq DESC LIMIT ?",
                              (sha256, other_than, int(limit))).fetchall()
        return [self._decode(r) for r in rows]

    def iter_all(self, **filters):
        where, args = self._where(**filters)
        with self.connect() as db:
            for row in db.execute(f"SELECT * FROM screenings{where} ORDER BY seq", args):
                yield self._decode(row)

    def rows_for_monitoring(self, since: str = "") -> list[dict]:
        sql = ("SELECT created, labels, probs, decision, in_scope, outcome, model_name, model_version, "
               "scope_distance FROM screenings")
        args = []
        if since:
            sql += " WHERE substr(created, 1, 10) >= ?"
            args.append(since)
        with self.connect() as db:
            rows = db.execute(sql + " ORDER BY seq", args).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["labels"], d["probs"] = json.loads(d["labels"]), json.loads(d["probs"])
            out.append(d)
        return out

    def add_audit(self, action: str, detail: str = "", args: dict | None = None) -> None:
        """One line of the audit trail: ``detail`` in English, ``args`` the same as fields for the page."""
        with self.connect() as db:
            db.execute("INSERT INTO audit (created, action, detail, args) VALUES (?, ?, ?, ?)",
                       (now_local(), action, detail, json.dumps(args or {})))

    def audit(self, limit: int = 20) -> list[dict]:
        """The latest audit lines, newest first (``args`` decoded; {} on lines written before it)."""
        with self.connect() as db:
            rows = [dict(r) for r in db.execute(
                "SELECT created, action, detail, args FROM audit ORDER BY seq DESC LIMIT ?", (limit,))]
        for r in rows:
            try:
                r["args"] = json.loads(r["args"] or "{}")
            except ValueError:
                r["args"] = {}
        return rows

    def ping(self) -> bool:
        with self.connect() as db:
            return db.execute("SELECT 1").fetchone()[0] == 1

    def sweep_orphans(self) -> int:
        """Remove image files with no row (a crash between writing files and committing) and stale temps."""
        with self.connect() as db:
            known = {r[0] for r in db.execute("SELECT id FROM screenings")}
        removed = 0
        for p in self.images.iterdir():
            if p.name.endswith(".tmp") or p.name.split(".", 1)[0] not in known:
                p.unlink(missing_ok=True)
                removed += 1
        return removed
