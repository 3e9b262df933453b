"""luod's own exit paths (`luod.daemon.main`), in-process: a failure after the bind still
removes the socket file."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from luod.daemon import main as luod_main


def test_an_error_after_the_bind_removes_the_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import luod.daemon.service

    seen: list[bool] = []

    async def broken_serve(
        daemon: object, listener: object, *, task_status: object = trio.TASK_STATUS_IGNORED
    ) -> None:
        seen.append((tmp_path / "luod.sock").exists())
        raise RuntimeError("serve broke")

    monkeypatch.setattr(luod.daemon.service, "serve", broken_serve)
    argv = ["--socket", str(tmp_path / "luod.sock"), "--ram", "64M", "--log-format", "json"]
    with pytest.raises(BaseExceptionGroup) as failed:
        luod_main.main(argv)
    assert failed.group_contains(RuntimeError, match="serve broke", depth=None)
    assert seen == [True], failed.value  # it was bound...
    assert not (tmp_path / "luod.sock").exists()  # ...and it is gone
