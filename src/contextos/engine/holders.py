"""Who holds a piece of work, and whether that process still runs.

A hold on shared work (an offload storing rotated turns,
:mod:`contextos.engine.offload`; a wrapped call's commit owed to memory,
:mod:`contextos.engine.owed`) is named by :func:`holder_claim`, which names the
holder's process where ``/proc`` tells it. Another process on the same machine then
sees at once that the holder died (:func:`holder_died`: ``kill -9``, an out-of-memory
kill, a deploy) and takes the work over, instead of waiting out a lease. A holder on
another machine cannot be told dead this way: its lease (judged by the store's clock,
:func:`~contextos.store.base.lease_runs`) is the wait for it.

One module because both holds judge their holders by the same rule: two copies of it
drifted apart would take over a live hold in one place and not the other.
"""

from __future__ import annotations

import os
import uuid

#: Where a process's ``/proc`` is (:func:`holder_claim`, :func:`holder_died`).
_PROC = "/proc"


def _machine() -> str | None:
    """The boot and pid namespace this process runs in (``<boot id>/<namespace>``): two
    processes that share it see each other's pids. None where ``/proc`` does not tell
    them (not Linux), or tells the pids of another namespace than this process's."""
    try:
        with open(f"{_PROC}/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        namespace = os.readlink(f"{_PROC}/self/ns/pid")  # "pid:[4026531836]"
        if os.readlink(f"{_PROC}/self") != str(os.getpid()):
            return None
    except (OSError, ValueError):
        return None
    return f"{boot}/{namespace.strip('pid:[]')}"


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``pid``'s ``/proc/<pid>/stat`` after its name (state first, start
    time at 19), None when it cannot be read."""
    try:
        with open(f"{_PROC}/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return fields if len(fields) > 19 else None


#: This process's name in a hold (``<boot id>/<pid namespace>/<pid>/<start time>``, None
#: where ``/proc`` does not tell it), by pid: a forked child names itself.
_THIS_PROCESS: dict[int, str | None] = {}


def _this_process() -> str | None:
    """This process, as :func:`holder_claim` names it (read once: ~0.2 ms a time)."""
    pid = os.getpid()
    if pid not in _THIS_PROCESS:
        machine = _machine()
        fields = _proc_stat(pid) if machine is not None else None
        _THIS_PROCESS[pid] = None if fields is None else f"{machine}/{pid}/{fields[19]}"
    return _THIS_PROCESS[pid]


def holder_claim() -> str:
    """A fresh name for one hold on some work (an offload's on the turns it stores, a
    wrapped call's on the commit it owes): unique across processes and hosts, and where
    ``/proc`` tells them, naming the holder's process
    (``<uuid>@<boot id>/<pid namespace>/<pid>/<start time>``) so that a process on the
    same machine sees when it died (:func:`holder_died`)."""
    claim, process = uuid.uuid4().hex, _this_process()
    return claim if process is None else f"{claim}@{process}"


def holder_died(archiver: str) -> bool:
    """Whether the process ``archiver`` names (:func:`holder_claim`) is known to be
    gone: it ran on this machine, in this pid namespace, and no process runs as its pid
    now, or that pid's process is a zombie or started at another time (the pid was used
    again). False whenever it cannot be told (another machine, a claim by a version
    that named no process, a process of another user hidden by ``/proc``)."""
    _, at, holder = archiver.partition("@")
    machine, _, process = holder.rpartition("/")
    machine, _, pid_text = machine.rpartition("/")
    this = _this_process()
    if not at or not pid_text.isdigit() or this is None or machine != this.rsplit("/", 2)[0]:
        return False
    pid = int(pid_text)
    if pid <= 0 or holder == this:
        return False  # this process is alive (a process is checked, not a thread's hold)
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the pid exists
    except ProcessLookupError:
        return True
    except OSError:
        pass  # it exists (another user's: EPERM)
    fields = _proc_stat(pid)
    if fields is None:
        return False  # there, but hidden (hidepid): taken to be alive
    return fields[0] in ("Z", "X", "x") or fields[19] != process


__all__ = ["holder_claim", "holder_died"]
