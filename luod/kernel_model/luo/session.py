"""Sessions: named sets of preserved files, outgoing (this kernel) or incoming (the last).

An outgoing session keeps its files in preservation order; unpreserve, close and finish go
newest first. Tokens are unique within a session. An incoming session is retrieved once;
closing a retrieved one finishes it implicitly, and if that finish is vetoed the session
stays on the incoming list, stuck (retrieve gives EINVAL) until the next live update.
"""

from __future__ import annotations

import attrs

from luod.kernel_model.errors import BadSessionName, NoSuchToken
from luod.kernel_model.luo.file import IncomingFile, OutgoingFile
from luod.kernel_model.luo.state import SESSION_NAME_MAX


def check_session_name(name: str | bytes) -> bytes:
    """The name as the 64-byte field holds it: 1..63 bytes, no NUL."""
    raw = name.encode() if isinstance(name, str) else bytes(name)
    if not raw:
        raise BadSessionName("session name is empty", obj="session ''")
    if b"\0" in raw:
        raise BadSessionName(f"session name {raw!r} contains a NUL byte", obj=repr(raw))
    if len(raw) > SESSION_NAME_MAX:
        raise BadSessionName(
            f"session name of {len(raw)} bytes is longer than {SESSION_NAME_MAX}",
            obj=f"session {raw[:16]!r}...",
        )
    return raw


@attrs.define(eq=False)
class OutgoingSession:
    """`files` in preservation order, read-only for everyone else: `add` and `remove`
    keep the token index (`_by_token`) in step with it, so looking a token up costs the
    same with ten thousand files as with one."""

    name: str
    files: list[OutgoingFile] = attrs.field(factory=list)
    closed: bool = False
    _by_token: dict[int, OutgoingFile] = attrs.field(factory=dict, init=False, repr=False)

    def add(self, f: OutgoingFile) -> None:
        """Append a newly preserved file (its token is not in the session yet)."""
        assert f.token not in self._by_token
        self.files.append(f)
        self._by_token[f.token] = f

    def remove(self, f: OutgoingFile) -> None:
        """Drop an unpreserved file; the newest (the usual case: close, unpreserve of the
        last) costs no scan."""
        if self.files and self.files[-1] is f:
            self.files.pop()
        else:
            self.files.remove(f)
        del self._by_token[f.token]

    def by_token(self, token: int) -> OutgoingFile:
        f = self._by_token.get(token)
        if f is None:
            raise NoSuchToken(
                f"session {self.name!r} has no file with token {token:#x}",
                obj=f"{self.name}/{token:#x}",
            )
        return f

    def has_token(self, token: int) -> bool:
        return token in self._by_token


@attrs.define(eq=False)
class IncomingSession:
    name: str
    files: list[IncomingFile] = attrs.field(factory=list)
    retrieved: bool = False
    stuck: bool = False  # implicit finish failed on close: leaked until the next update

    def by_token(self, token: int) -> IncomingFile:
        for f in self.files:
            if f.token == token:
                return f
        raise NoSuchToken(
            f"incoming session {self.name!r} has no file with token {token:#x}",
            obj=f"{self.name}/{token:#x}",
        )
