"""The uncommitted changes of a checkout, as ``git diff HEAD`` shows them.

A run started from a dirty tree cannot be reproduced from its ``git.commit`` alone: the diff of
the tracked files against that commit is what is missing, and it is logged with the run (artifact
``git.diff``). Untracked files are not in it (``git status`` does not count them as dirty either, see
``tracking.runs.git_tags``), binary files appear as git's one-line "Binary files ... differ", and a
diff larger than :data:`DIFF_LIMIT` bytes is cut at a line end, with :data:`TRUNCATED_MARK` after it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

DIFF_LIMIT = 1_000_000
TRUNCATED_MARK = "\n# gpuops: git diff cut here, at {limit} bytes; the rest of the diff is not stored\n"

# Output that does not depend on the user's git configuration: no colour, no external diff
# driver or text conversion (both run arbitrary programs), the usual a/ b/ prefixes, real paths.
_DIFF_ARGS = ("-c", "core.quotepath=off", "diff", "HEAD", "--no-color", "--no-ext-diff", "--no-textconv",
              "--src-prefix=a/", "--dst-prefix=b/", "--")


def _toplevel(start: Path) -> Path | None:
    try:
        r = subprocess.run(["git", "-C", str(start), "rev-parse", "--show-toplevel"], capture_output=True,
                           text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return Path(r.stdout.strip()) if r.returncode == 0 and r.stdout.strip() else None


def git_diff(start: Path, *, limit: int = DIFF_LIMIT, timeout: float = 30.0) -> str | None:
    """``git diff HEAD`` of the checkout holding ``start`` (a folder or a file in it): the changes of
    its tracked files, at most ``limit`` bytes (then cut at a line end and marked). None when
    ``start`` is not in a git checkout, the checkout has no commit yet, git is missing or fails, or
    nothing tracked has changed."""
    start = Path(start)
    folder = start if start.is_dir() else start.parent
    if not folder.is_dir():
        return None
    top = _toplevel(folder)
    if top is None:
        return None
    try:
        proc = subprocess.Popen(["git", "-C", str(top), *_DIFF_ARGS], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    except OSError:
        return None
    assert proc.stdout is not None
    try:
        # Read one byte past the limit, no more: a huge diff (a data file under version control)
        # is not held in memory; git is stopped once we know it is too long.
        data = proc.stdout.read(limit + 1)
        cut = len(data) > limit
        if cut:
            proc.kill()
        proc.stdout.close()
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
    if not cut and rc != 0:
        return None  # no HEAD yet, a broken repository
    if not data.strip():
        return None
    if cut:
        data = data[:limit]
        end = data.rfind(b"\n")
        data = data[: end + 1] if end >= 0 else data
        return data.decode("utf-8", errors="replace") + TRUNCATED_MARK.format(limit=limit)
    return data.decode("utf-8", errors="replace")


def run_diff(spec_file: Path, cwd: Path | None = None) -> str | None:
    """The diff to store with a run of ``spec_file``: that of the checkout whose commit the run
    records (``tracking.runs.git_tags`` reads the spec file's checkout, else the working
    directory's), so that the diff and ``git.commit`` always describe the same tree."""
    spec_file = Path(spec_file)
    folder = spec_file if spec_file.is_dir() else spec_file.parent
    if folder.is_dir() and _toplevel(folder) is not None:
        return git_diff(folder)
    return git_diff(Path.cwd() if cwd is None else cwd)
