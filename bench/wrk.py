"""Load from wrk (a C load generator: it costs the machine far less than a Python client,
so more of the CPU goes to the server measured), one route at a time.

Each route is a Lua script: which request to send next (a random CVM id, a rotating
filter, a unique name for a create), and, when done, one JSON line with the counts and
the latency percentiles.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

RESULT_MARK = "WRK-RESULT "

# Shared by every route: the bearer token and, for views, the ids to choose from.
_COMMON = r"""
local token, ids_file, run = nil, nil, nil
local ids = {}
local counter = 0

function init(args)
  token, ids_file, run = args[1], args[2], args[3]
  if ids_file ~= "" then
    for line in io.lines(ids_file) do ids[#ids + 1] = line end
  end
  math.randomseed(os.time() + (wrk.thread and wrk.thread:get("index") or 0))
  wrk.headers["Authorization"] = "Bearer " .. token
  wrk.headers["Content-Type"] = "application/json"
end

local threads = {}
function setup(thread)
  thread:set("index", #threads + 1)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    "%(mark)s", summary.requests, summary.duration, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""

REQUESTS = {
    "view": r"""
function request()
  return wrk.format("GET", "%(cvms)s/" .. ids[math.random(#ids)])
end
""",
    "create": r"""
function request()
  counter = counter + 1
  local name = string.format("w-%%s-%%d-%%d", run, wrk.thread:get("index"), counter)
  return wrk.format("POST", "%(cvms)s/external/2/sev-snp", nil, '{"name":"' .. name .. '"}')
end
""",
    "rotate": r"""
local choices = {%(choices)s}
function request()
  counter = counter + 1
  return wrk.format("GET", "%(cvms)s?" .. choices[(counter %% #choices) + 1])
end
""",
}


# Appended for a run that wants its throughput second by second: each thread counts
# its responses per wall-clock second (a global, so that done() can read it).
_PER_SECOND = r"""
per_second = {}
function response(status, headers, body)
  local now = os.time()
  per_second[now] = (per_second[now] or 0) + 1
end

local summary_done = done
function done(summary, latency, requests)
  summary_done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for second, count in pairs(thread:get("per_second")) do
      io.write(string.format("%(mark)sSECOND %%d %%d\n", second, count))
    end
  end
end
"""


@dataclass(frozen=True)
class WrkRun:
    requests: int
    seconds: float
    errors: int  # sockets' errors and statuses >= 400
    p50_ms: float
    p99_ms: float
    max_ms: float
    # Responses per wall-clock second (Unix time), for scripts made with per_second=True.
    per_wall_second: dict[int, int] | None = None

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def lua_script(
    kind: str, cvms_path: str, queries: list[str] | None = None, *, per_second: bool = False
) -> str:
    """``kind``: view, create, or rotate (GET the list with each query string in turn);
    ``per_second`` also counts the responses of every wall-clock second."""
    choices = ", ".join(json.dumps(q) for q in (queries or [""]))
    body = REQUESTS[kind] % {"cvms": cvms_path, "choices": choices}
    script = _COMMON.replace("%(mark)s", RESULT_MARK) + body
    if per_second:
        script += _PER_SECOND % {"mark": RESULT_MARK}
    return script


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (or your system's package)")
    return found


def run_wrk(
    base: str,
    script: Path,
    *,
    token: str,
    ids_file: Path | None,
    run_id: str,
    seconds: float,
    connections: int,
    threads: int,
) -> WrkRun:
    command = [
        require_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        base,
        "--",
        token,
        str(ids_file or ""),
        run_id,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 120, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    seconds_lines = [line for line in lines if line.startswith(f"{RESULT_MARK}SECOND ")]
    lines = [line for line in lines if line not in seconds_lines]
    if not lines:
        raise RuntimeError(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")
    per_wall_second: dict[int, int] = {}
    for line in seconds_lines:
        _, second, count = line.removeprefix(RESULT_MARK).split()
        per_wall_second[int(second)] = per_wall_second.get(int(second), 0) + int(count)
    found = json.loads(lines[-1].removeprefix(RESULT_MARK))
    errors = sum(found[key] for key in ("connect", "read", "write", "status", "timeout"))
    return WrkRun(
        requests=found["requests"],
        seconds=found["duration_us"] / 1e6,
        errors=errors,
        p50_ms=found["p50_us"] / 1000,
        p99_ms=found["p99_us"] / 1000,
        max_ms=found["max_us"] / 1000,
        per_wall_second=per_wall_second or None,
    )
