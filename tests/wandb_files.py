"""What an offline W&B run holds, read from its run-ID.wandb file (wandb 0.31 ships no Python reader for it).

The file is a LevelDB-style log: a 7-byte header, then 32 KiB blocks of records, each a 7-byte header (crc32,
length as 2 bytes, type: 1 full, 2 first, 3 middle, 4 last) and its data; a block's tail shorter than a header
is padding. The payloads are `wandb.proto.wandb_internal_pb2.Record` messages.
"""

import json
import struct
import time
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7


def payloads(path):
    data = Path(path).read_bytes()
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        if kind == 0:  # zero padding at a block's end
            pos += left
            continue
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk


def records(path):
    """The file's records; a last record still being written (cut short) ends them, so the run reads as
    incomplete (no exit record) and offline_runs reads it again."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    for payload in payloads(path):
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(payload)
        except DecodeError:
            return
        yield record


def _value(item):
    return json.loads(item.value_json)


def _key(item):
    return "/".join(item.nested_key) if item.nested_key else item.key


class OfflineRun:
    """The parts of one offline run the tests look at."""

    def __init__(self, folder):
        self.folder = Path(folder)
        (self.file,) = self.folder.glob("run-*.wandb")
        self.config, self.summary, self.history, self.artifacts, self.metrics = {}, {}, [], [], []
        self.run, self.complete = None, False
        for r in records(self.file):
            kind = r.WhichOneof("record_type")
            self.complete |= kind == "exit"  # the writer's last record: the file is whole
            if kind == "run":
                self.run = r.run
                self.config.update({u.key: _value(u) for u in r.run.config.update})
            elif kind == "config":
                self.config.update({u.key: _value(u) for u in r.config.update})
            elif kind == "summary":
                self.summary.update({_key(u): _value(u) for u in r.summary.update})
            elif kind == "history":
                self.history.append({_key(i): _value(i) for i in r.history.item})
            elif kind == "artifact":
                self.artifacts.append(r.artifact)
            elif kind == "metric":
                self.metrics.append(r.metric)

    @property
    def job_type(self):
        return self.run.job_type

    @property
    def name(self):
        return self.run.display_name

    def artifact_files(self, artifact):
        """{name in the artifact: local path its content is read from at `wandb sync`}."""
        return {c.path: Path(c.local_path) for c in artifact.manifest.contents}


def offline_runs(out, wait_s: float = 10.0):
    """The offline runs below OUT/wandb, in the order they started. wandb's writer process may still be
    flushing a run's file for a moment after `finish()` returned (seen: a file without its run record yet,
    complete when read again), so the files are read again until each ends in its exit record, for up to
    wait_s."""
    deadline = time.monotonic() + wait_s
    while True:
        runs = [OfflineRun(p) for p in (Path(out) / "wandb").glob("offline-run-*")]
        if all(r.complete for r in runs) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return sorted(runs, key=lambda r: (r.run.start_time.seconds, r.run.start_time.nanos))


def download_layout(artifact, root):
    """An artifact's files laid out as `artifact.download(root=...)` lays them out: each at root/its name."""
    root = Path(root)
    for c in artifact.manifest.contents:
        target = root / c.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(Path(c.local_path).read_bytes())
    return root
