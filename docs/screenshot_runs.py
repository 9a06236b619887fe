"""Screenshot a sweep's MLflow runs table in headless Chromium, with the stages' child runs expanded.

    python docs/screenshot_runs.py URL OUT.png

URL is what `sweep-engine ui` (or `launch`, with a tracking server) prints. Chromium (Debian's `chromium`) runs
headless with the flags below and is driven over its DevTools protocol on loopback: load the URL, wait for the
table, click each stage run's expander (MLflow keeps that state in the browser, not in the URL), then capture.
Used for docs/mlflow-runs.png (docs/cluster.md says how it was made).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import subprocess
import sys
import time
import urllib.request
from itertools import count
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--window-size=1800,900",
]
# Expand every parent row: its expander is the icon button of the run name cell.
EXPAND = """
(() => {
  const buttons = [...document.querySelectorAll('button[data-component-id*="runnamecellrenderer"]')];
  buttons.forEach(b => b.click());
  return buttons.length;
})()
"""
ROWS = "document.querySelectorAll('.ag-center-cols-container .ag-row').length"
CLOSE_ASSISTANT = """
(() => { const b = document.querySelector('button[data-component-id="mlflow.assistant.chat_panel.close"]');
  if (b) b.click(); return Boolean(b); })()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _shoot(debug_port: int, url: str, out: Path) -> None:
    ids = count(1)
    with urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json") as r:
        page = next(t for t in json.load(r) if t["type"] == "page")
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws,
    ):

        async def call(method: str, **params: Any) -> dict[str, Any]:
            i = next(ids)
            await ws.send_json({"id": i, "method": method, "params": params})
            async for msg in ws:
                data = json.loads(msg.data)
                if data.get("id") == i:
                    return dict(data.get("result", {}))
            raise RuntimeError("the browser closed the connection")

        async def evaluate(js: str) -> Any:
            return (await call("Runtime.evaluate", expression=js, returnByValue=True))["result"].get("value")

        await call("Page.navigate", url=url)
        deadline = time.time() + 60
        while time.time() < deadline and not await evaluate(ROWS):
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)
        await evaluate(CLOSE_ASSISTANT)
        expanded = await evaluate(EXPAND)
        await asyncio.sleep(3)
        rows = await evaluate(ROWS)
        print(f"expanded {expanded} stage runs; {rows} rows shown", flush=True)
        shot = await call("Page.captureScreenshot", format="png")
        out.write_bytes(base64.b64decode(shot["data"]))


def main(url: str, out: str) -> None:
    port = _free_port()
    chrome = subprocess.Popen(
        [
            "chromium",
            *FLAGS,
            f"--remote-debugging-port={port}",
            "--remote-debugging-address=127.0.0.1",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(60):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        asyncio.run(_shoot(port, url, Path(out)))
    finally:
        chrome.terminate()
        chrome.wait(timeout=10)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
