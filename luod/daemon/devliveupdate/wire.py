"""The interposer's wire: fixed little headers on SOCK_SEQPACKET sockets, one message per
call and one per answer (the C side is `clients/luod_run/interposer.c`; the two must agree).

A request is `Request` (op, cmd, size, flags) then up to PAYLOAD_MAX bytes of the caller's
ioctl argument, with at most one fd (SCM_RIGHTS: PRESERVE_FD's file on a session; on the
gateway, the socket the answer goes to, so that processes sharing the gateway never take
each other's answers) and the sender's SCM_CREDENTIALS. An answer is `Answer` (err: 0 or a
positive errno; len: how many bytes of the argument to copy back; fd_at: where in them the
number of the answer's fd goes, -1 for none) then those bytes, with at most one fd.
`OP_HELLO` (a process announcing itself: at start and in every forked child) gets no
answer.
"""

from __future__ import annotations

import struct
from typing import Final

OP_HELLO: Final = 1
OP_OPEN: Final = 2
OP_IOCTL: Final = 3
OP_REBOOT: Final = 4
OP_RESIZE: Final = 5

F_TAIL: Final = 1  # bytes past PAYLOAD_MAX that are not zero
F_FD: Final = 2  # PRESERVE_FD's fd is attached
F_BADFD: Final = 4  # PRESERVE_FD names an fd that is not open
F_FAULT: Final = 8  # the argument pointer is NULL

PAYLOAD_MAX: Final = 4096
REQUEST: Final = struct.Struct("<IIII")
ANSWER: Final = struct.Struct("<iIiI")
UCRED: Final = struct.Struct("<iII")


def answer(err: int, data: bytes = b"", fd_at: int = -1) -> bytes:
    return ANSWER.pack(err, len(data), fd_at, 0) + data
