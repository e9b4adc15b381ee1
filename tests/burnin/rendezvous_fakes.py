"""EMULATION of what trn_burnin.rendezvous talks to: S3, OpenSSH between pods, and time. No AWS, no sshd.

- FakeS3: the three S3 calls the rendezvous makes, on a dict behind a lock (pods run as threads).
  Like S3, a listing without keys has no "Contents", and long listings come in pages.
- FakeNetwork / FakeSsh: which pod runs an sshd letting in which key; a probe answers with the
  last line real ssh prints when it cannot log in.
- FakeTime: a clock that moves only when slept on, so deadlines pass without waiting; what another
  pod does meanwhile can be set to happen at a given time.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from typing import Callable

from trn_burnin.rendezvous import Clock, SshError


class FakeS3:
    def __init__(self, page_size: int = 1000):
        self.objects: dict[tuple[str, str], bytes] = {}
        self.puts: list[str] = []
        self.page_size = page_size
        self._lock = threading.Lock()

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str) -> dict:  # noqa: N803 - boto3's names
        with self._lock:
            self.objects[(Bucket, Key)] = bytes(Body)
            self.puts.append(Key)
        return {}

    def get_object(self, Bucket: str, Key: str) -> dict:  # noqa: N803
        with self._lock:
            return {"Body": io.BytesIO(self.objects[(Bucket, Key)])}

    def list_objects_v2(self, Bucket: str, Prefix: str, ContinuationToken: str = "0") -> dict:  # noqa: N803
        with self._lock:
            keys = sorted(key for bucket, key in self.objects if bucket == Bucket and key.startswith(Prefix))
        start = int(ContinuationToken)
        page = keys[start:start + self.page_size]
        answer: dict = {"KeyCount": len(page), "IsTruncated": start + self.page_size < len(keys)}
        if page:
            answer["Contents"] = [{"Key": key} for key in page]
        if answer["IsTruncated"]:
            answer["NextContinuationToken"] = str(start + self.page_size)
        return answer

    def text(self, bucket: str, key: str) -> str:
        return self.objects[(bucket, key)].decode()


@dataclass
class FakeNetwork:
    servers: dict[str, str] = field(default_factory=dict)  # pod IP -> the one key its sshd lets in


@dataclass
class FakeSsh:
    network: FakeNetwork
    ip: str
    start_error: str | None = None
    key: str | None = None

    def create_key(self) -> str:
        self.key = f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5{self.ip.replace('.', '')} root@{self.ip}"
        return self.key

    def start_server(self, authorized_key: str) -> None:
        if self.start_error:
            raise SshError(self.start_error)
        self.network.servers[self.ip] = authorized_key.strip()

    def probe(self, ip: str) -> str | None:
        if ip not in self.network.servers:
            return f"ssh: connect to host {ip} port 22: Connection refused"
        return None if self.network.servers[ip] == self.key else f"root@{ip}: Permission denied (publickey)."


@dataclass
class FakeTime:
    now_s: float = 0.0
    naps: list[float] = field(default_factory=list)
    events: list[tuple[float, Callable[[], None]]] = field(default_factory=list)

    def at(self, seconds: float, event: Callable[[], None]) -> None:
        """Run ``event`` once the time is ``seconds``: now, or when a nap reaches it."""
        if seconds <= self.now_s:
            event()
        else:
            self.events.append((seconds, event))

    def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.now_s += seconds
        due = [event for event in self.events if event[0] <= self.now_s]
        for event in due:
            self.events.remove(event)
            event[1]()

    def clock(self) -> Clock:
        return Clock(now=lambda: self.now_s, sleep=self.sleep)
