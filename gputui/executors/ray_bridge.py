"""The Ray bridge: the one Ray driver of a run, shared by every attempt that runs on the cluster.

    scheduler ──kept unix socket: run requests──► bridge ──ray task──► node_runner.run on a node
       ▲  (journal, exits copy, wake pipe handed over once)  │             ▲
       └──── start and exit records, as a waiter writes ────┘             │
    control verbs ──► the attempt's signal file (STOP, CONT, TERM, KILL) ──┘

Connecting to Ray costs seconds and a hundred MB, so one long-lived driver per run submits every
attempt. It holds each attempt as a waiter holds a local worker: the scheduler hands it the journal,
the journal's copy of exits and its wake pipe when it attaches, and the bridge records each attempt's
start and end there, so no local process stands for an attempt (one per attempt cost more CPU than
Ray's own work for a short task). Pause, resume and kill write words into the attempt's signal file,
which the runner on the node applies to the command's whole tree. The bridge lives in its own session:
a scheduler that detaches or is killed leaves it and its tasks running, their ends recorded, and the
next scheduler finds them in the journal. It owns the Ray tasks it submitted: killed, Ray ends them
and nobody records their end, so the scheduler retries them through a new bridge. It leaves once no
scheduler is attached and nothing has run for IDLE_S seconds. With address "local" it starts a private
cluster, which stops with it. The run's side of it (start, attach, ask, tell) is ray_client.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

from gputui.executors import journal, ownership
from gputui.executors.ray_client import RayUnavailable, address_of, folder

IDLE_S = 30.0  # a bridge nobody has needed this long leaves (and a private cluster stops)
PROBE_S = 2.0  # the nodes' GPUs are read at most this often, however many apps ask


def join(address: str, num_gpus: int | None):
    """ray.init for this run, or RayUnavailable saying why it cannot be done."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable("[executor] kind = 'ray' needs Ray: pip install 'gputui[ray]'") from None
    if address not in ("local", "auto") and not address.startswith("ray://"):
        _reachable(address)  # else ray.init waits minutes for a cluster that is not there
    kwargs: dict = {"namespace": "gputui", "log_to_driver": False, "configure_logging": False}
    if address == "local":
        kwargs |= {"include_dashboard": False, "num_gpus": num_gpus}
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except Exception as e:
        where = "start a private Ray cluster" if address == "local" else f"reach the Ray cluster at {address!r}"
        hint = "" if address == "local" else "; start one with `ray start --head`, or set [executor].address"
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RayUnavailable(f"cannot {where}: {why}{hint}") from None
    return ray


def _reachable(address: str) -> None:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=10).close()
    except (OSError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        raise RayUnavailable(
            f"cannot reach the Ray cluster at {address!r} ({why}); start one with `ray start --head`, "
            "or set [executor].address to its head's host:port"
        ) from None


class _Recorder:
    """Where one attached scheduler has the attempts it sends recorded (journal.py): the journal, its copy
    of exits (written first), and its wake pipe, written without blocking (a scheduler stopped with
    Ctrl-Z must not stop the bridge) and not at all once nobody reads it. A record that cannot be written
    yet (a full disk, a full pipe) is kept, in order, and written again on the bridge's next pass."""

    def __init__(self, journal: int, exits: int, wake: int):
        self.journal, self.exits = journal, exits
        try:  # the pipe opened again: flags of its own, the scheduler's and waiters' copies stay blocking
            self.wake = os.open(f"/proc/self/fd/{wake}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.close(wake)
        except OSError:  # no /proc: blocking, as a waiter writes it
            self.wake = wake
        self.unwritten: dict[int, list[bytes]] = {}
        self.users = 1  # its connection, and each attempt sent through it that has not ended

    def record(self, *fields: object, copy: bool = False) -> None:
        data = journal.line(*fields)
        for fd in ([self.exits] if copy else []) + [self.journal, self.wake]:
            self.unwritten.setdefault(fd, []).append(data)
        self.flush()

    def flush(self) -> None:
        for fd, queue in list(self.unwritten.items()):
            while queue:
                try:
                    os.write(fd, queue[0])
                except BlockingIOError:
                    break
                except OSError:
                    if fd != self.wake:
                        break  # the disk is full: tried again on the next pass
                    queue.clear()  # the scheduler is gone: the journal alone says it
                    break
                queue.pop(0)
            if not queue:
                del self.unwritten[fd]

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            self.flush()
            for fd in (self.journal, self.exits, self.wake):
                os.close(fd)


class Bridge:
    def __init__(self, run_dir: Path, address: str, num_gpus: int | None, ray) -> None:
        import selectors

        from gputui.executors import node_runner

        self.ray = ray
        self.remote = ray.remote(max_retries=0)(node_runner.run)
        self.probe = ray.remote(num_cpus=0, max_retries=0)(node_runner.probe_gpus)
        self.me = (os.getpid(), ownership.start_of(os.getpid()) or 0)
        self.nodes: dict[str, dict] = {}  # node id -> what its last GPU probe found
        self.probed_at = -PROBE_S
        self.sel = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(address_of(run_dir, address, num_gpus))
        self.listener.listen(256)
        self.readable = selectors.EVENT_READ
        self.sel.register(self.listener, self.readable, self._accept)
        self.done_r, self.done_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.sel.register(self.done_r, self.readable, self._finished)
        self.buffers: dict[socket.socket, bytes] = {}
        self.recorders: dict[socket.socket, _Recorder] = {}  # attached schedulers' connections
        self.running: dict[tuple[str, int], tuple[dict, _Recorder]] = {}  # attempt -> (its request, recorder)
        self.ended: list[tuple[tuple[str, int], dict]] = []  # ends seen in Ray's threads, recorded in ours
        self.last_used = time.monotonic()
        self.leaving = False  # the run ended: leave as soon as nothing runs

    def serve(self) -> None:
        while self.running or self.buffers or (not self.leaving and time.monotonic() - self.last_used < IDLE_S):
            for key, _ in self.sel.select(timeout=0.05 if self._behind() else 1.0):
                key.data(key.fileobj)
            for recorder in self._behind():  # after the handlers: none released since
                recorder.flush()
            if self.running:
                self.last_used = time.monotonic()

    def _behind(self) -> list[_Recorder]:
        """Recorders in use holding records they could not write yet."""
        in_use = {*self.recorders.values(), *(recorder for _, recorder in self.running.values())}
        return [recorder for recorder in in_use if recorder.unwritten]

    def _accept(self, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        # An abstract socket has no file permissions: only this user's processes may ask anything of it.
        _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if uid != os.getuid():
            conn.close()
            return
        self.buffers[conn] = b""
        self.sel.register(conn, self.readable, self._read)

    def _read(self, conn: socket.socket) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        except OSError:
            data, fds = b"", []
        if len(fds) == 3 and conn not in self.recorders:
            self.recorders[conn] = _Recorder(*fds)
        else:
            for fd in fds:
                os.close(fd)
        if not data:
            self._gone(conn)
            return
        self.buffers[conn] += data
        while b"\n" in self.buffers.get(conn, b""):
            line, self.buffers[conn] = self.buffers[conn].split(b"\n", 1)
            try:
                self._handle(conn, json.loads(line))
            except Exception as e:  # a bad request, or Ray refusing a task: that caller is told, others go on
                with contextlib.suppress(OSError):
                    _send(conn, {"exit": 255, "why": f"the Ray bridge could not run it: {type(e).__name__}: {e}"})

    def _handle(self, conn: socket.socket, req: dict) -> None:
        if req.get("op") != "gpus":  # an app looking at the cluster's GPUs does not keep the bridge
            self.last_used = time.monotonic()
        if req.get("op") == "capacity":
            total = self.ray.cluster_resources()
            nodes = [n for n in self.ray.nodes() if n.get("Alive")]
            largest = max((n.get("Resources", {}).get("GPU", 0) for n in nodes), default=0)
            found = {"gpus": total.get("GPU", 0), "cpus": total.get("CPU", 0), "nodes": len(nodes)}
            _send(conn, found | {"node_gpus": largest})  # a task's GPUs must fit on one node
        elif req.get("op") == "gpus":
            if time.monotonic() - self.probed_at >= PROBE_S:
                self._probe_nodes(req.get("simulate"))
            _send(conn, {"nodes": sorted(self.nodes.values(), key=lambda n: n["node"])})
        elif req.get("op") == "leave":
            self.leaving = True
            _send(conn, {"ok": True})
        elif req.get("op") == "attach":
            attached = conn in self.recorders
            _send(conn, {"pid": self.me[0], "start": self.me[1]} if attached else {"error": "no descriptors came"})
        elif req.get("op") == "run" and conn in self.recorders:
            self._run(self.recorders[conn], req)
        else:
            _send(conn, {"error": f"unknown request {req.get('op')!r}"})

    def _run(self, recorder: _Recorder, req: dict) -> None:
        """Record the attempt's start under the bridge's pid (its end will be recorded while the bridge
        lives), then submit it; it runs whatever happens to the scheduler that sent it."""
        key = (req["task"], int(req["n"]))
        recorder.record("start", *key, *self.me, "-", "-", "-")
        recorder.users += 1
        self.running[key] = (req, recorder)
        gpus = float(req["gpus"])
        try:
            ref = self.remote.options(
                num_gpus=gpus, num_cpus=0 if gpus else 1, name=f"gputui:{req['task']}.{req['n']}"
            ).remote(
                req["argv"], req["env"], req["log"], req["cwd"], req["signals"], float(req["grace"])
            )  # fmt: skip
        except Exception as e:  # Ray refused it: the attempt failed, and says why
            self._end(key, {"exit": 255, "why": f"Ray refused it: {type(e).__name__}: {e}"})
            return
        ref.future().add_done_callback(lambda f, k=key: self._done(k, f))

    def _probe_nodes(self, simulate: str | None) -> None:
        """A light GPU read on every alive node (a zero-CPU task pinned to it); answers come as they
        come, so an app asking is never held up by a slow node."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.probed_at = time.monotonic()
        alive = {n["NodeID"]: n for n in self.ray.nodes() if n.get("Alive")}
        for node_id in [n for n in self.nodes if n not in alive]:
            del self.nodes[node_id]
        for node_id, n in alive.items():
            name = n.get("NodeManagerHostname") or n.get("NodeManagerAddress") or node_id[:8]
            declared = n.get("Resources", {}).get("GPU", 0)
            self.nodes.setdefault(node_id, {"node": name, "id": node_id, "declared": declared, "why": "probing…"})
            where = NodeAffinitySchedulingStrategy(node_id, soft=False)
            ref = self.probe.options(scheduling_strategy=where).remote(simulate)

            def probed(future, node_id=node_id, name=name, declared=declared) -> None:
                try:
                    found = future.result()
                except Exception as e:
                    found = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                key = "why" if isinstance(found, str) else "gpus"
                self.nodes[node_id] = {"node": name, "id": node_id, "declared": declared, key: found}

            ref.future().add_done_callback(probed)

    def _done(self, key: tuple[str, int], future) -> None:
        """In one of Ray's threads: note the end, wake the loop."""
        try:
            answer = {"exit": int(future.result())}
        except Exception as e:  # the task could not run or its worker died: the attempt failed
            answer = {"exit": 255, "why": f"Ray: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        self.ended.append((key, answer))
        with contextlib.suppress(BlockingIOError):
            os.write(self.done_w, b".")

    def _finished(self, _fd) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.done_r, 1 << 12)
        while self.ended:
            self._end(*self.ended.pop(0))

    def _end(self, key: tuple[str, int], answer: dict) -> None:
        held = self.running.pop(key, None)
        if held is None:
            return
        req, recorder = held
        if answer.get("why"):
            with contextlib.suppress(OSError), open(req["log"], "a") as log:
                log.write(f"gputui: {answer['why']}\n")
        recorder.record("exit", *key, *journal.exit_fields(answer["exit"], 0), copy=True)
        recorder.release()

    def _gone(self, conn: socket.socket) -> None:
        """A client left: a scheduler that detached, ended or was killed. Its attempts run on, and their
        ends are recorded all the same."""
        self.sel.unregister(conn)
        self.buffers.pop(conn, None)
        conn.close()
        recorder = self.recorders.pop(conn, None)
        if recorder is not None:
            recorder.release()


def _send(conn: socket.socket, answer: dict) -> None:
    conn.sendall(json.dumps(answer).encode() + b"\n")


def main(argv: list[str], say: Callable[[str], None] = print) -> int:
    import fcntl

    run_dir, address, num_gpus = Path(argv[0]), argv[1], int(argv[2]) if len(argv) > 2 and argv[2] else None
    folder(run_dir).mkdir(parents=True, exist_ok=True)
    name = address_of(run_dir, address, num_gpus).removeprefix("\0")
    lock = os.open(folder(run_dir) / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another bridge serves this run
    try:
        ray = join(address, num_gpus)
    except RayUnavailable as e:
        say(f"gputui: {e}")
        return 2
    say(f"gputui: Ray bridge (pid {os.getpid()}) joined {address}: {ray.cluster_resources()}")
    try:
        Bridge(run_dir, address, num_gpus, ray).serve()
    finally:
        ray.shutdown()
    say("gputui: Ray bridge idle; leaving")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], lambda text: print(text, flush=True)))
