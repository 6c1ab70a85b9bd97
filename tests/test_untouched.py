"""The suite's guard of the user's files (conftest.py's session check) sees every kind of change."""

import os

from untouched import USERS_FOLDERS, changes, snapshot


def test_a_changed_byte_a_moved_link_and_a_new_file_are_all_seen(tmp_path):
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "best.npz").write_bytes(b"weights")
    os.symlink("a", tmp_path / "runs" / "latest")
    before = snapshot(tmp_path / "runs")
    assert changes(before, snapshot(tmp_path / "runs")) == []

    (tmp_path / "runs" / "a" / "best.npz").write_bytes(b"weightS")
    os.unlink(tmp_path / "runs" / "latest")
    os.symlink("/tmp/pytest-of-someone/x", tmp_path / "runs" / "latest")
    (tmp_path / "runs" / "b").mkdir()
    found = changes(before, snapshot(tmp_path / "runs"))
    assert found == ["b added", "a/best.npz changed (file -> file)", "latest changed (link -> link)"]


def test_a_folder_that_appears_is_a_change(tmp_path):
    assert changes(snapshot(tmp_path / "runs"), {".": ("folder",)}) == [". added"]


def test_the_suite_runs_away_from_the_users_folders():
    """Every test's working folder, home, runs root and data dir are the suite's own."""
    import pwd

    repo = USERS_FOLDERS[0].parent
    assert os.path.realpath(os.getcwd()) != os.path.realpath(repo)
    assert os.environ["HOME"] != pwd.getpwuid(os.getuid()).pw_dir
    for name in ("BP_RUNS_DIR", "BP_DATA_DIR"):
        assert not os.path.realpath(os.environ[name]).startswith(os.path.realpath(repo) + os.sep)
