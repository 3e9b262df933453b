"""The Live Update Orchestrator inside the emulated kernel.

- `state`: the global state machine (NORMAL, PREPARED, FROZEN, UPDATED) and the limits.
- `handler`: the file-handler op set and FLB global objects.
- `session`: outgoing and incoming sessions and their files.
- `serialize`: the LUO root, session, file and FLB tables in emulated memory (`luo-v1`).
- `core`: `Luo`, which drives all of it for one kernel instance.
- `uapi`: the 6.19 ioctl interface of /dev/liveupdate and session fds, over bytes.
"""
