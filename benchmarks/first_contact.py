"""A newcomer's first contact, timed: from a fresh clone to the first real reading in the sandbox.

    python benchmarks/first_contact.py CLONE [--port 8765] [--timeout-s 3600] [--until-full] [--json OUT]

CLONE is a fresh clone of this repository (no .venv, no models/, no runs/; the script refuses one that has them).
In it, the script runs `make install`, then `make demo` (`moodring sandbox` on 127.0.0.1:8765, training its first
model), and from the start of `make demo` asks `/emotion` through the sandbox page's API (sandbox/page.py: the
state, `POST /sandbox/api/commands`, then the channel's messages) every `--every-s` seconds, as a plain member in
#general, until an answer is a reading (an embed) rather than "I'm still learning ...". With `--until-full` it goes
on until a reading comes from the full model (its footer does not say "starter model").

It records, in `--json` (default: benchmarks/first_contact.json beside this script): the seconds from the start of
the install to the first real reading and from the start of `make demo` to it, the install's own seconds, the
footer of that reading (which model answered), the "still learning" answers seen on the way (with their times), the
same for the full model with `--until-full`, and the CPU: `lscpu`'s model name and core count, and whether its
flags have `avx512_vnni` (the int8 kernels' fast path). `make demo` is stopped with SIGINT (Ctrl-C) at the end, its
output kept in CLONE/first_contact.log.

Standard library only: it runs before anything is installed. Never run by the tests (it installs and trains).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_JSON = Path(__file__).resolve().parent / "first_contact.json"
TEXT = "I finally got the job, I can't stop smiling!"
#: What a fresh clone must not have: the sandbox would find a trained model, or the install would be skipped.
NOT_FRESH = (".venv", "models", "runs")


def cpu() -> dict[str, object]:
    """The machine's CPU, as `lscpu` names it, and whether it has the VNNI instructions int8 inference uses."""
    fields = {}
    for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return {
        "model_name": fields.get("Model name"),
        "cpus": fields.get("CPU(s)"),
        "avx512_vnni": "avx512_vnni" in fields.get("Flags", "").split(),
    }


class Page:
    """The sandbox page's API, as the page uses it (its own origin on every request)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> object:
        return self._call(urllib.request.Request(self.base + path, headers={"Origin": self.base}))

    def post(self, path: str, body: dict) -> object:
        data = json.dumps(body).encode()
        headers = {"Origin": self.base, "Content-Type": "application/json"}
        return self._call(urllib.request.Request(self.base + path, data=data, headers=headers, method="POST"))

    @staticmethod
    def _call(request: urllib.request.Request) -> object:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


def ask_emotion(page: Page, channel: str, member: str, timeout_s: float) -> dict | None:
    """Run `/emotion` as `member` in `channel`; the bot's answer (a message in REST shape), or None without one
    within `timeout_s` (the bot not connected yet, or busy)."""
    try:
        started = page.post(
            "/sandbox/api/commands",
            {"channel_id": channel, "user_id": member, "name": "emotion", "options": {"text": TEXT}},
        )
    except urllib.error.HTTPError as error:  # 400: not connected, or the command not registered yet
        print(f"  /emotion refused: {error.read().decode(errors='replace')}", file=sys.stderr)
        return None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for message in page.get(f"/sandbox/api/channels/{channel}/messages?viewer={member}"):
            if (message.get("interaction_metadata") or {}).get("id") == started["interaction_id"]:
                return message
        time.sleep(0.2)
    return None


def wait_for_page(page: Page, deadline: float) -> tuple[str, str]:
    """Once the bot is online with `/emotion` registered: (#general's id, a plain member's id)."""
    while time.monotonic() < deadline:
        try:
            state = page.get("/sandbox/api/state")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
            continue
        if state["bot"]["online"] and any(c["name"] == "emotion" for c in state["commands"]):
            channel = next(c["id"] for c in state["channels"] if c["name"] == "general")
            member = next(m["id"] for m in state["members"] if m["role"] == "member")
            return channel, member
        time.sleep(0.5)
    raise TimeoutError("the sandbox's bot did not come online")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clone", type=Path, help="a fresh clone of this repository")
    parser.add_argument("--port", type=int, default=8765, help="where `make demo` serves the sandbox (its default)")
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="give up after this long")
    parser.add_argument("--every-s", type=float, default=5.0, help="seconds between two `/emotion` calls")
    parser.add_argument("--until-full", action="store_true", help="go on until the full model answers")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the figures")
    args = parser.parse_args()
    clone = args.clone.resolve()
    if not (clone / "Makefile").is_file():
        parser.error(f"{clone} is not a clone of moodring (no Makefile)")
    if leftovers := [name for name in NOT_FRESH if (clone / name).exists()]:
        parser.error(f"{clone} is not fresh: it has {', '.join(leftovers)}")
    record: dict[str, object] = {"cpu": cpu(), "clone": str(clone), "text": TEXT}

    started = time.monotonic()
    subprocess.run(["make", "install"], cwd=clone, check=True)
    record["install_s"] = round(time.monotonic() - started, 1)
    print(f"installed in {record['install_s']} s; starting make demo", flush=True)

    demo_log = (clone / "first_contact.log").open("wb")
    demo_started = time.monotonic()
    demo = subprocess.Popen(
        ["make", "demo"], cwd=clone, stdout=demo_log, stderr=subprocess.STDOUT, start_new_session=True
    )
    page = Page(args.port)
    still_learning: list[dict] = []
    try:
        deadline = started + args.timeout_s
        channel, member = wait_for_page(page, deadline)
        record["bot_online_after_demo_s"] = round(time.monotonic() - demo_started, 1)
        while time.monotonic() < deadline:
            if demo.poll() is not None:
                raise RuntimeError(f"make demo exited with status {demo.returncode}; see {demo_log.name}")
            answer = ask_emotion(page, channel, member, timeout_s=30)
            now = time.monotonic()
            if answer is not None and answer.get("embeds"):
                footer = answer["embeds"][0].get("footer", {}).get("text", "")
                reading = {
                    "since_install_s": round(now - started, 1),
                    "since_demo_s": round(now - demo_started, 1),
                    "footer": footer,
                }
                record.setdefault("first_reading", reading)
                print(f"reading after {reading['since_install_s']} s: {footer}", flush=True)
                if "starter model" not in footer:
                    record["full_model_reading"] = reading
                    break
                if not args.until_full:
                    break
            elif answer is not None:
                still_learning.append({"since_demo_s": round(now - demo_started, 1), "content": answer.get("content")})
                print(f"  {still_learning[-1]['since_demo_s']} s: {answer.get('content')}", flush=True)
            time.sleep(args.every_s)
        else:
            record["timed_out"] = True
    finally:
        record["still_learning_answers"] = still_learning
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C, as a newcomer stops it
            try:
                demo.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGKILL)
                demo.wait()
        demo_log.close()
        record["demo_exit_status"] = demo.returncode
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}", flush=True)
    return 0 if "first_reading" in record else 1


if __name__ == "__main__":
    raise SystemExit(main())
