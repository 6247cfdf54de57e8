"""The ``gpuops.error`` tag keeps what happened (its first line) and the end of the log after it."""

from gpuops.tracking.tracker import clip_error


def test_a_short_error_is_kept_whole() -> None:
    assert clip_error("the trainer exited with code -11:\nboom") == "the trainer exited with code -11:\nboom"


def test_a_long_error_keeps_its_first_line_and_its_end() -> None:
    tail = "".join(f"  File \"x.py\", line {i}\n" for i in range(2000))
    text = "the trainer exited with code -11:\n" + tail + "Segmentation fault"
    got = clip_error(text, 5000)
    assert len(got) <= 5000
    assert got.startswith("the trainer exited with code -11:\n…\n")
    assert got.endswith("Segmentation fault")


def test_a_single_huge_line_is_cut_to_the_limit() -> None:
    got = clip_error("x" * 20000, 100)
    assert len(got) <= 100 and got.startswith("x")
