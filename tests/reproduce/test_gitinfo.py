"""``git_diff`` on real temporary git repositories (the real ``git`` binary)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gpuops.tracking.gitinfo import DIFF_LIMIT, TRUNCATED_MARK, git_diff, run_diff
from gpuops.tracking.runs import git_tags


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    r = subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org",
                        "-c", "commit.gpgsign=false", *args], capture_output=True, text=True, env=env,
                       check=True, timeout=30)
    return r.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    (r / "src").mkdir(parents=True)
    (r / "src" / "train.py").write_text("lr = 0.01\nsteps = 100\n")
    (r / "weights.bin").write_bytes(bytes(range(256)) * 4)
    git(r, "init", "-q")
    git(r, "add", "-A")
    git(r, "commit", "-q", "-m", "first")
    return r


def test_clean_checkout_gives_none(repo: Path) -> None:
    assert git_diff(repo) is None
    assert git_tags(repo)["git.dirty"] == "false"


def test_not_a_checkout_gives_none(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "x.txt").write_text("x\n")
    assert git_diff(plain) is None
    assert git_diff(plain / "x.txt") is None
    assert git_diff(tmp_path / "does-not-exist" / "spec.yaml") is None


def test_repository_without_a_commit_gives_none(tmp_path: Path) -> None:
    r = tmp_path / "empty"
    r.mkdir()
    git(r, "init", "-q")
    (r / "a.txt").write_text("a\n")
    git(r, "add", "a.txt")
    assert git_diff(r) is None


def test_changed_tracked_file_from_a_subfolder_or_a_file(repo: Path) -> None:
    (repo / "src" / "train.py").write_text("lr = 0.02\nsteps = 100\n")
    (repo / "notes.txt").write_text("untracked, not part of the diff\n")
    diff = git_diff(repo / "src")
    assert diff is not None
    assert "--- a/src/train.py" in diff and "+++ b/src/train.py" in diff
    assert "-lr = 0.01" in diff and "+lr = 0.02" in diff
    assert "notes.txt" not in diff
    # the same diff when asked from a file of the checkout, and git itself says it is dirty
    assert git_diff(repo / "src" / "train.py") == diff
    assert git_tags(repo)["git.dirty"] == "true"
    # the diff applies in reverse to the working tree: it is the whole change
    patch = repo.parent / "change.patch"
    patch.write_text(diff)
    git(repo, "apply", "-R", "--check", str(patch))


def test_staged_and_deleted_files_are_in_it(repo: Path) -> None:
    (repo / "src" / "new.py").write_text("print('added and staged')\n")
    git(repo, "add", "src/new.py")
    (repo / "src" / "train.py").unlink()
    diff = git_diff(repo)
    assert diff is not None
    assert "+print('added and staged')" in diff
    assert "deleted file mode" in diff and "-steps = 100" in diff


def test_binary_change_is_named_not_stored(repo: Path) -> None:
    (repo / "weights.bin").write_bytes(bytes(reversed(range(256))) * 4)
    diff = git_diff(repo)
    assert diff is not None
    assert "Binary files a/weights.bin and b/weights.bin differ" in diff
    assert len(diff) < 500  # one header and that line, none of the 1 KiB of content


def test_huge_diff_is_cut_at_the_limit_with_a_mark(repo: Path) -> None:
    line = "x" * 99 + "\n"
    big = line * 15_000  # 1.5 MB of added lines
    (repo / "src" / "train.py").write_text("lr = 0.01\nsteps = 100\n" + big)
    diff = git_diff(repo)
    assert diff is not None
    mark = TRUNCATED_MARK.format(limit=DIFF_LIMIT)
    assert diff.endswith(mark)
    body = diff[: -len(mark)]
    assert len(body.encode()) <= DIFF_LIMIT
    assert len(body.encode()) > DIFF_LIMIT - len(line) - 1  # cut at the last line end, not earlier
    assert body.endswith("\n") and body.splitlines()[-1] == "+" + "x" * 99
    # a smaller limit, for the same tree
    small = git_diff(repo, limit=2000)
    assert small is not None and small.endswith(TRUNCATED_MARK.format(limit=2000))
    assert small.startswith(diff[:1500])


def test_run_diff_is_of_the_spec_checkout_else_the_working_directory(repo: Path, tmp_path: Path) -> None:
    (repo / "src" / "train.py").write_text("lr = 0.5\nsteps = 100\n")
    spec_in_repo = repo / "src" / "exp.yaml"
    spec_in_repo.write_text("name: x\n")  # untracked: the diff is the tracked change
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    spec_outside = outside / "exp.yaml"
    spec_outside.write_text("name: x\n")
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    (other / "a.txt").write_text("one\n")
    git(other, "add", "a.txt")
    git(other, "commit", "-q", "-m", "a")
    # the spec's own checkout wins over the working directory's, clean or not
    in_repo = git_diff(repo)
    assert in_repo is not None and run_diff(spec_in_repo, cwd=other) == in_repo
    (other / "a.txt").write_text("two\n")
    assert "+lr = 0.5" in (run_diff(spec_in_repo, cwd=other) or "")
    # a spec outside any checkout: the working directory's checkout, as git_tags does
    assert "+two" in (run_diff(spec_outside, cwd=other) or "")
    assert run_diff(spec_outside, cwd=outside) is None
