"""`rewrite`: a file made to hold exactly the new text, written over the old bytes in place."""

from agents.inplace import rewrite


def test_a_file_is_rewritten_in_place_to_exactly_the_new_text(tmp_path):
    path = tmp_path / "gitdir"
    rewrite(path, "a much longer first text\n")
    inode = path.stat().st_ino
    rewrite(path, "short\n")
    assert path.read_text(encoding="utf-8") == "short\n"
    rewrite(path, "longer again, é and all\n")
    assert path.read_text(encoding="utf-8") == "longer again, é and all\n"
    assert path.stat().st_ino == inode  # the same file: not replaced by a new one


def test_a_missing_file_is_created(tmp_path):
    rewrite(tmp_path / "new", "")
    assert (tmp_path / "new").read_bytes() == b""
    big = "x" * 300_000
    rewrite(tmp_path / "big", big)
    assert (tmp_path / "big").read_text(encoding="utf-8") == big
