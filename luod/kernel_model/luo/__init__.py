"""The Live Update Orchestrator inside the emulated kernel, one module per concept, each
importing only those above it in this list:

- `state`: the global state machine (NORMAL, PREPARED, FROZEN, UPDATED) and the limits.
- `file`: preserved files (outgoing, incoming), the file-handler op set and what a handler
  may use of its kernel and of LUO.
- `flb`: File-Lifecycle-Bound global objects and the FLB table with its reference counts.
- `session`: outgoing and incoming sessions and their files.
- `serialize`, `serialize_v2`: the LUO root, session, file and FLB tables in emulated
  memory (`luo-v1`, `luo-v2`).
- `faultpoints`: the fault hook every step calls first.
- `update`: the global phases prepare, freeze and cancel.
- `incoming`: deserialize, retrieve and finish what the last kernel preserved.
- `core`: `Luo`, which drives all of it for one kernel instance.
- `uapi`: the ioctl interface of /dev/liveupdate and session fds, over bytes.
"""
