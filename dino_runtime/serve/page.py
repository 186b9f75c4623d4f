"""The live page: one tile per stream with its overlay and figures, fed by one WebSocket.

Self-contained (no file, font or script from elsewhere: edge boxes are often offline). The
script is inline and allowed by its hash in the Content-Security-Policy, which also forbids
every other origin. The access token, when the page was opened with ``?token=...``, is passed on
to the WebSocket and is not kept anywhere else.
"""
from __future__ import annotations

import base64
import hashlib

SCRIPT = r"""
const token = new URLSearchParams(location.search).get("token") || "";
const query = token ? "?token=" + encodeURIComponent(token) : "";
const grid = document.getElementById("grid"), head = document.getElementById("head");
const tiles = [];

function tile(i, s) {
  if (!tiles[i]) {
    const el = document.createElement("figure"), img = document.createElement("img");
    const cap = document.createElement("figcaption");
    el.className = "tile"; el.dataset.stream = s.name; el.dataset.frames = "0";
    img.alt = s.name; el.append(img, cap); grid.append(el);
    tiles[i] = {el, img, cap, frames: 0};
  }
  return tiles[i];
}

function showStatus(st) {
  head.textContent = `${st.streams.length} streams, ${st.fps.toFixed(1)} frames/s, ` +
    `${st.batches} batches, ${st.viewers.connected} viewer(s)`;
  st.streams.forEach((s, i) => {
    const t = tile(i, s), d = s.dropped.stale + s.dropped.corrupt;
    t.cap.textContent = `${s.name}: ${s.fps.toFixed(1)} fps, latency p50 ` +
      `${s.latency_ms.p50.toFixed(0)} ms p99 ${s.latency_ms.p99.toFixed(0)} ms, ` +
      `dropped ${d}, reconnects ${s.reconnects}` + (s.state === "running" ? "" : ` (${s.state})`);
  });
}

function showFrame(data) {
  const t = tiles[new DataView(data).getUint16(0)];
  if (!t) return;
  const url = URL.createObjectURL(new Blob([new Uint8Array(data, 2)], {type: "image/jpeg"}));
  const old = t.img.src;
  t.img.onload = () => { if (old.startsWith("blob:")) URL.revokeObjectURL(old); };
  t.img.src = url;
  t.frames += 1; t.el.dataset.frames = String(t.frames);
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + location.host + "/ws" + query);
  ws.binaryType = "arraybuffer";
  ws.onmessage = (ev) => typeof ev.data === "string" ? showStatus(JSON.parse(ev.data))
                                                     : showFrame(ev.data);
  ws.onclose = () => { head.textContent += " (disconnected, retrying)"; setTimeout(connect, 2000); };
}
connect();
"""

STYLE = """
body { margin: 0; background: #111; color: #ddd; font: 14px system-ui, sans-serif; }
#head { padding: 8px 12px; }
#grid { display: grid; gap: 8px; padding: 8px;
        grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); }
.tile { margin: 0; background: #000; }
.tile img { width: 100%; display: block; aspect-ratio: 16 / 9; object-fit: contain; }
.tile figcaption { padding: 4px 6px; font-size: 12px; }
"""

PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>dino-run live</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style></head>
<body><div id="head">connecting</div><main id="grid"></main>
<script>{SCRIPT}</script></body></html>
""".encode()

_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = (f"default-src 'none'; script-src 'sha256-{_HASH}'; "
                           f"style-src 'sha256-{STYLE_HASH}'; img-src blob:; connect-src 'self'; "
                           "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
