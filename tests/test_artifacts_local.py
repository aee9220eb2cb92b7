"""The ``local`` artifact store: layout, dedupe, atomic moves, and path checks."""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiport.core.config import Config
from aiport.core.errors import BadRequest, NotFound
from aiport.core.media import ArtifactFile
from aiport.core.plugins import build_plugin_manager
from aiport.core.registry import collect
from aiport.plugins.artifacts_local import LocalArtifactStore, artifact_path, check_relative_path, owner_key_id

WHEN = dt.datetime(2026, 11, 21, 9, 30, tzinfo=dt.UTC)


@pytest.fixture
def store(make_config: Callable[..., Config]) -> LocalArtifactStore:
    """The store the registered ``local`` type makes for a config in a temp folder."""
    config = make_config()
    registry = collect(build_plugin_manager(config.plugins, entry_points=False), config)
    made = registry.artifact_stores["local"].factory(config)
    assert isinstance(made, LocalArtifactStore)
    assert made.root == config.resolve_path(config.storage.artifacts_path)
    return made


def files_under(root: Path) -> list[str]:
    """Every file below ``root`` (hidden temporary files included), as relative POSIX paths."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_hook_registers_the_local_store(make_config: Callable[..., Config]) -> None:
    config = make_config()
    registry = collect(build_plugin_manager(config.plugins, entry_points=False), config)
    assert registry.artifact_stores.owners["local"] == "artifacts_local"
    assert config.storage.artifact_store in registry.artifact_stores


# --------------------------------------------------------------------------- put_file


async def test_bytes_are_stored_content_addressed_by_day_and_key(store: LocalArtifactStore) -> None:
    data = b"\x89PNG not really"
    stored = await store.put_file(data, ext=".PNG", key_id=7, when=WHEN)
    assert stored.path == f"2026/11/21/7/{sha(data)}.png"
    assert (stored.size, stored.sha256, stored.content_type) == (len(data), sha(data), "image/png")
    assert (store.root / stored.path).read_bytes() == data
    assert files_under(store.root) == [stored.path]


async def test_inputs_live_under_input(store: LocalArtifactStore) -> None:
    stored = await store.put_file(b"RIFF", ext="wav", key_id=0, kind="input", when=WHEN)
    assert stored.path == f"input/2026/11/21/0/{sha(b'RIFF')}.wav"
    assert stored.content_type == "audio/wav"


async def test_identical_bytes_dedupe_and_different_ones_never_overwrite(store: LocalArtifactStore) -> None:
    first = await store.put_file(b"one", ext="png", key_id=3, when=WHEN)
    again = await store.put_file(b"one", ext="png", key_id=3, when=WHEN)
    other = await store.put_file(b"two", ext="png", key_id=3, when=WHEN)
    assert first == again and other.path != first.path
    assert (store.root / first.path).read_bytes() == b"one" and (store.root / other.path).read_bytes() == b"two"
    many = await asyncio.gather(*(store.put_file(b"same", ext="jpg", key_id=3, when=WHEN) for _ in range(8)))
    assert len({m.path for m in many}) == 1
    assert len(files_under(store.root)) == 3  # and no temporary files left behind


async def test_dates_are_utc(store: LocalArtifactStore) -> None:
    late_in_new_york = dt.datetime(2026, 11, 21, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    stored = await store.put_file(b"x", ext="txt", key_id=1, when=late_in_new_york)
    assert stored.path.startswith("2026/11/22/1/")
    naive = await store.put_file(b"y", ext="txt", key_id=1, when=dt.datetime(2027, 1, 2, 3, 4))
    assert naive.path.startswith("2027/01/02/1/")
    now = await store.put_file(b"z", ext="txt", key_id=1)
    assert now.path.startswith(dt.datetime.now(dt.UTC).strftime("%Y/%m/"))


async def test_a_file_is_moved_in_with_a_rename(store: LocalArtifactStore, tmp_path: Path) -> None:
    spooled = tmp_path / "upload.part"
    spooled.write_bytes(b"video bytes")
    inode = spooled.stat().st_ino
    stored = await store.put_file(spooled, ext="mp4", key_id=2, kind="input", when=WHEN)
    assert not spooled.exists()
    target = store.root / stored.path
    assert target.stat().st_ino == inode  # the same file: renamed, not copied
    assert target.read_bytes() == b"video bytes" and stored.sha256 == sha(b"video bytes")
    assert stored.content_type == "video/mp4" and stored.size == 11


async def test_a_file_already_stored_is_dropped_and_keep_source_copies(store: LocalArtifactStore,
                                                                      tmp_path: Path) -> None:
    await store.put_file(b"same", ext="png", key_id=2, when=WHEN)
    duplicate = tmp_path / "dup.png"
    duplicate.write_bytes(b"same")
    stored = await store.put_file(duplicate, ext="png", key_id=2, when=WHEN)
    assert not duplicate.exists() and stored.path == f"2026/11/21/2/{sha(b'same')}.png"
    kept = tmp_path / "kept.png"
    kept.write_bytes(b"kept")
    stored = await store.put_file(kept, ext="png", key_id=2, when=WHEN, keep_source=True)
    assert kept.read_bytes() == b"kept" and (store.root / stored.path).read_bytes() == b"kept"
    assert (store.root / stored.path).stat().st_ino != kept.stat().st_ino


async def test_a_known_digest_is_used_without_rereading(store: LocalArtifactStore, tmp_path: Path) -> None:
    spooled = tmp_path / "upload.part"
    spooled.write_bytes(b"abc")
    stored = await store.put_file(spooled, ext="txt", key_id=5, sha256=sha(b"abc"), when=WHEN)
    assert stored.path.endswith(f"/{sha(b'abc')}.txt") and stored.size == 3
    with pytest.raises(ValueError):
        await store.put_file(b"abc", ext="txt", key_id=5, sha256="not-a-digest")


async def test_across_filesystems_the_move_is_a_copy_then_an_atomic_replace(
        store: LocalArtifactStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spooled = tmp_path / "elsewhere.part"
    spooled.write_bytes(b"far away")
    real_replace = os.replace
    calls: list[str] = []

    def replace(src: Any, dst: Any) -> None:
        calls.append(Path(src).name)
        if Path(src) == spooled:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    stored = await store.put_file(spooled, ext="bin", key_id=1, when=WHEN)
    assert not spooled.exists() and (store.root / stored.path).read_bytes() == b"far away"
    assert calls[0] == "elsewhere.part" and calls[1].startswith(".") and calls[1].endswith(".tmp")
    assert files_under(store.root) == [stored.path]


async def test_bad_arguments_are_programming_errors(store: LocalArtifactStore) -> None:
    for kwargs in ({"ext": "p/ng", "key_id": 1}, {"ext": "png", "key_id": -1}, {"ext": "png", "key_id": True},
                   {"ext": "png", "key_id": 1, "kind": "other"}):
        with pytest.raises(ValueError):
            await store.put_file(b"x", **kwargs)
    assert not store.root.exists() or files_under(store.root) == []


# --------------------------------------------------------------------------- reading and deleting


async def test_stat_open_and_read(store: LocalArtifactStore) -> None:
    stored = await store.put_file(b"GIF89a...", ext="gif", key_id=4, when=WHEN)
    found = await store.stat(stored.path)
    assert isinstance(found, ArtifactFile)
    assert (found.path, found.size, found.content_type) == (stored.path, 9, "image/gif")
    assert found.local_path == (store.root / stored.path).resolve()
    assert abs((dt.datetime.now(dt.UTC) - found.modified).total_seconds()) < 60
    assert await store.open(stored.path) == found
    assert await store.read_bytes(stored.path) == b"GIF89a..."
    assert [c async for c in store.iter_chunks(stored.path, chunk_size=4)] == [b"GIF8", b"9a..", b"."]
    assert await store.stat("2026/11/21/4/missing.gif") is None
    assert await store.stat("2026/11/21/4") is None  # a folder is not an artifact
    with pytest.raises(NotFound):
        await store.read_bytes("2026/11/21/4/missing.gif")


async def test_delete(store: LocalArtifactStore) -> None:
    stored = await store.put_file(b"bye", ext="txt", key_id=4, when=WHEN)
    assert await store.delete(stored.path) is True
    assert await store.delete(stored.path) is False
    assert await store.delete("2026/11/21/4") is False
    assert await store.stat(stored.path) is None


@pytest.mark.parametrize("path", [
    "../x", "a/../../x", "2026/../../etc/passwd", "/etc/passwd", "a//b", "a/./b", "a/b/", "", "a\x00b",
    "a\\..\\b", "C:/x", "x" * 2000,
])
async def test_malformed_paths_are_refused(store: LocalArtifactStore, path: str) -> None:
    with pytest.raises(BadRequest):
        await store.resolve(path)
    with pytest.raises(BadRequest):
        await store.stat(path)
    with pytest.raises(BadRequest):
        await store.delete(path)


async def test_symlinks_out_of_the_store_and_hidden_names_are_not_found(store: LocalArtifactStore,
                                                                         tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    store.root.mkdir(parents=True, exist_ok=True)
    (store.root / "escape").symlink_to(outside)
    with pytest.raises(NotFound):
        await store.resolve("escape/secret.txt")
    assert await store.stat("escape/secret.txt") is None
    assert await store.delete("escape/secret.txt") is False
    assert (outside / "secret.txt").exists()
    with pytest.raises(NotFound):
        await store.resolve(".hidden.tmp")
    inside = await store.resolve("2026/11/21/1/abc.png")
    assert inside == store.root.resolve() / "2026/11/21/1/abc.png"


def test_path_helpers() -> None:
    digest = "a" * 64
    assert artifact_path(sha256=digest, ext="PNG", key_id=9, when=WHEN) == f"2026/11/21/9/{digest}.png"
    assert owner_key_id(f"2026/11/21/9/{digest}.png") == 9
    assert owner_key_id(f"input/2026/11/21/12/{digest}.png") == 12
    assert owner_key_id("pub/x.png") is None
    assert check_relative_path("2026/11/21/9/x.png") == ["2026", "11", "21", "9", "x.png"]
