"""EMULATION of nccom-test's documented behaviour, for tests. Not nccom-test, and no collective runs.

It reads the argv trn_burnin.collective builds and answers the way the Neuron docs
(tools/neuron-sys-tools/nccom-test.rst) describe: one row per message size from -b to -e by -f,
written to --report-to-json-file as {"results": [{"size(B)", "count(elems)", "type", "algbw(GB/s)",
"busbw(GB/s)", "time:avg(us)"}]}, the same rows printed as a table, and on failure the
"Failure running neuron-bench" and "N errors found - test failed" lines with a non-zero exit.
Bandwidths are GiB/s, and busbw = algbw x 2(r-1)/r, as documented for all-reduce.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from trn_burnin.collective import NccomRun, read_json_file

_UNITS = {"KB": 2**10, "MB": 2**20, "GB": 2**30}  # binary, as the docs' 32MB = 33554432 shows
TABLE_COLUMNS = ("size(B)", "count(elems)", "type", "time:avg(us)", "algbw(GB/s)", "busbw(GB/s)")
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "uint8": 1}


def size_bytes(text: str) -> int:
    unit = text[-2:].upper()
    return int(text[:-2]) * _UNITS[unit] if unit in _UNITS else int(text)


def _option(argv: Sequence[str], flag: str) -> str:
    return argv[list(argv).index(flag) + 1]


@dataclass
class EmulatedNccomTest:
    """Reaches ``busbw_gibps`` at the largest size (less at smaller ones) unless told otherwise."""

    busbw_gibps: float = 150.0
    exit_code: int = 0
    write_json: bool = True
    skip_sizes: tuple[int, ...] = ()
    calls: list = field(default_factory=list)

    def rows(self, argv: Sequence[str]) -> list[dict]:
        ranks, dtype = int(_option(argv, "-r")), _option(argv, "-d")
        largest, factor = size_bytes(_option(argv, "-e")), int(_option(argv, "-f"))
        sizes, size = [], size_bytes(_option(argv, "-b"))
        while size <= largest:
            sizes.append(size)
            size *= factor
        rows = []
        for size in (s for s in sizes if s not in self.skip_sizes):
            busbw = self.busbw_gibps * (size / largest) ** 0.25  # latency-bound small sizes
            algbw = busbw * ranks / (2 * (ranks - 1))
            rows.append({"size(B)": size, "count(elems)": size // DTYPE_BYTES[dtype], "type": dtype,
                         "algbw(GB/s)": round(algbw, 3), "busbw(GB/s)": round(busbw, 3),
                         "time:avg(us)": round(size / (algbw * 2**30) * 1e6, 2)})
        return rows

    def run(self, argv: Sequence[str], env: Mapping[str, str], json_path: Path) -> NccomRun:
        self.calls.append((list(argv), dict(env)))
        rows = self.rows(argv)
        table = ["".join(f"{column:>16}" for column in TABLE_COLUMNS)]
        table += ["".join(f"{row.get(column, '-'):>16}" for column in TABLE_COLUMNS) for row in rows]
        if self.exit_code:
            table += ["Failure running neuron-bench - log file /tmp/nccom_test_log_x.log",
                      "1 errors found - test failed"]
        if self.write_json:
            json_path.write_text(json.dumps({"results": rows}))
        return NccomRun(self.exit_code, "\n".join(table) + "\n", read_json_file(json_path))
