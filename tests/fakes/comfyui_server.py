"""A protocol-faithful fake ComfyUI (plus the AI Server agent's nodes), on loopback.

It follows ComfyUI's ``server.py``/``execution.py`` as documented in the spec
(anchors section 5):

* ``POST /prompt`` validates like ``validate_prompt``: a node without
  ``class_type`` or of an unknown class is ``invalid_prompt``; no output node is
  ``prompt_no_outputs``; a missing required input (``required_input_missing``),
  a combo value not among its options (``value_not_in_list``, e.g. a checkpoint
  that is not installed), a number out of range, or a ``LoadImage`` file that
  does not exist (``custom_validation_failed``) fail the outputs depending on
  them (``prompt_outputs_failed_validation`` with ``node_errors``) -- the 400 body
  is ``{"error": {...}, "node_errors": {...}}`` (a plain string ``error`` with
  :attr:`FakeComfyUI.legacy_errors`). ``GET /prompt`` is the queue size.
* ``GET /ws?clientId=`` sends ``status`` with ``sid`` first; execution events
  go to the socket whose sid is the prompt's ``client_id``: ``execution_start``,
  ``execution_cached``, ``executing`` per node, ``progress`` per sampler step (and
  a binary preview frame), ``executed`` with the node's UI output,
  ``execution_success``, then ``executing`` with ``node: null``; or
  ``execution_error`` / ``execution_interrupted``. As in ComfyUI, the history entry
  is stored just *after* ``executing: null`` is sent.
* ``GET /history[/{id}]`` (``{id: entry}``, ``{}`` while queued or unknown), ``POST /history``
  ``{"delete": [...]}`` / ``{"clear": true}``; ``GET /view`` (400 on ``..``, 403 when
  the subfolder escapes, 404 when missing); ``POST /upload/image`` (renames a
  clash ``name (1).png`` unless ``overwrite``; an identical file is reused);
  ``GET /object_info[/{class}]``, ``GET /system_stats``, ``POST /interrupt``,
  ``GET``/``POST /queue``. Every route is also served under ``/api``.

It runs one prompt at a time from a queue and *produces real files*: PNGs of
the requested size and batch (a tiny PNG writer, no dependencies), an upscale
doubles (x2 model) or quadruples (x4) the input's size, Piper writes a WAV (sine),
Florence-2 and Whisper answer with texts derived from their inputs.

Knobs: :attr:`stall_ws` (send nothing after ``execution_start``; history still
completes), :attr:`fail_node` (a node id or class that raises ``execution_error``),
:attr:`offline` (503 to everything) -- or :meth:`close` for refused connections --,
:attr:`api_key` (Bearer or ``?apiKey=``; :attr:`guard_all` False guards only
``/prompt`` like the agent's ``RESTRICT_APIS_ONLY``), :attr:`step_delay` (slow
sampling), :attr:`history_delay`, :attr:`close_ws_after_status`, :attr:`rename_uploads`,
:attr:`legacy_errors`, :attr:`missing_classes` and the installed ``checkpoints``/``upscalers``/``voices``. Requests are
recorded in :attr:`requests`.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import math
import os
import re
import shutil
import struct
import tempfile
import time
import uuid
import wave
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

# --------------------------------------------------------------------------- real files


def png_bytes(width: int, height: int, rgb: tuple[int, int, int] = (90, 140, 200)) -> bytes:
    """A valid RGB PNG of one colour (what a "generated" image looks like here)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * width
    raw = row * height
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR (``None`` for anything else)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def wav_bytes(seconds: float, rate: int = 22050, freq: float = 440.0) -> bytes:
    """A mono 16-bit WAV of a sine tone."""
    import io

    frames = max(1, int(seconds * rate))
    samples = b"".join(struct.pack("<h", int(12000 * math.sin(2 * math.pi * freq * i / rate)))
                       for i in range(frames))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples)
    return buf.getvalue()


# --------------------------------------------------------------------------- node definitions

SAMPLERS = ["euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
            "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_sde",
            "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu",
            "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "ddim", "uni_pc", "uni_pc_bh2"]
SCHEDULERS = ["normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta",
              "linear_quadratic", "kl_optimal"]
FLORENCE_MODELS = ["microsoft/Florence-2-base", "microsoft/Florence-2-base-ft", "microsoft/Florence-2-large",
                   "microsoft/Florence-2-large-ft", "HuggingFaceM4/Florence-2-DocVQA",
                   "MiaoshouAI/Florence-2-base-PromptGen-v2.0"]
FLORENCE_TASKS = ["region_caption", "dense_region_caption", "region_proposal", "caption", "detailed_caption",
                  "more_detailed_caption", "caption_to_phrase_grounding", "referring_expression_segmentation",
                  "ocr", "ocr_with_region", "docvqa", "prompt_gen_tags", "prompt_gen_mixed_caption",
                  "prompt_gen_analyze", "prompt_gen_mixed_caption_plus"]
WHISPER_MODELS = ["base", "tiny", "small", "medium", "large"]
INT_MAX = 0xFFFFFFFFFFFFFFFF


def _node(name: str, required: dict[str, Any], *, optional: dict[str, Any] | None = None,
          hidden: dict[str, Any] | None = None, outputs: tuple[str, ...] = (), names: tuple[str, ...] | None = None,
          output_node: bool = False, category: str = "", is_list: tuple[bool, ...] | None = None,
          display: str | None = None, module: str = "nodes") -> dict[str, Any]:
    """One ``/object_info`` entry, shaped as ComfyUI's ``node_info``."""
    inputs: dict[str, Any] = {"required": required}
    order: dict[str, Any] = {"required": list(required)}
    if optional:
        inputs["optional"] = optional
        order["optional"] = list(optional)
    if hidden:
        inputs["hidden"] = hidden
        order["hidden"] = list(hidden)
    return {"input": inputs, "input_order": order, "output": list(outputs),
            "output_is_list": list(is_list or (False,) * len(outputs)), "output_name": list(names or outputs),
            "name": name, "display_name": display or name, "description": "", "python_module": module,
            "category": category, "output_node": output_node, "deprecated": False, "experimental": False}


def _size(default: int = 1024) -> list[Any]:
    return ["INT", {"default": default, "min": 16, "max": 16384, "step": 8}]


def node_definitions(checkpoints: list[str], upscalers: list[str], voices: list[str],
                     input_files: list[str], audio_files: list[str]) -> dict[str, dict[str, Any]]:
    """The node classes this fake has, as ``GET /object_info`` describes them."""
    latent = {"width": _size(), "height": _size(), "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}]}
    save_hidden = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    return {
        "CheckpointLoaderSimple": _node("CheckpointLoaderSimple", {"ckpt_name": [checkpoints, {}]},
                                        outputs=("MODEL", "CLIP", "VAE"), category="loaders"),
        "CLIPTextEncode": _node("CLIPTextEncode", {"text": ["STRING", {"multiline": True, "dynamicPrompts": True}],
                                                   "clip": ["CLIP"]},
                                outputs=("CONDITIONING",), category="conditioning"),
        "EmptyLatentImage": _node("EmptyLatentImage", latent, outputs=("LATENT",), category="latent"),
        "EmptySD3LatentImage": _node("EmptySD3LatentImage", latent, outputs=("LATENT",), category="latent/sd3",
                                     module="comfy_extras.nodes_sd3"),
        "KSampler": _node("KSampler", {
            "model": ["MODEL"],
            "seed": ["INT", {"default": 0, "min": 0, "max": INT_MAX, "control_after_generate": True}],
            "steps": ["INT", {"default": 20, "min": 1, "max": 10000}],
            "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}],
            "sampler_name": [SAMPLERS, {}], "scheduler": [SCHEDULERS, {}],
            "positive": ["CONDITIONING"], "negative": ["CONDITIONING"], "latent_image": ["LATENT"],
            "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}],
        }, outputs=("LATENT",), category="sampling"),
        "VAEDecode": _node("VAEDecode", {"samples": ["LATENT"], "vae": ["VAE"]}, outputs=("IMAGE",),
                           category="latent"),
        "VAEEncode": _node("VAEEncode", {"pixels": ["IMAGE"], "vae": ["VAE"]}, outputs=("LATENT",),
                           category="latent"),
        "RepeatLatentBatch": _node("RepeatLatentBatch", {"samples": ["LATENT"],
                                                         "amount": ["INT", {"default": 1, "min": 1, "max": 64}]},
                                   outputs=("LATENT",), category="latent/batch"),
        "SetLatentNoiseMask": _node("SetLatentNoiseMask", {"samples": ["LATENT"], "mask": ["MASK"]},
                                    outputs=("LATENT",), category="latent/inpaint"),
        "SaveImage": _node("SaveImage", {"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]},
                           hidden=save_hidden, output_node=True, category="image"),
        "PreviewImage": _node("PreviewImage", {"images": ["IMAGE"]}, hidden=save_hidden, output_node=True,
                              category="image"),
        "LoadImage": _node("LoadImage", {"image": [input_files, {"image_upload": True}]},
                           outputs=("IMAGE", "MASK"), category="image"),
        "LoadImageMask": _node("LoadImageMask", {"image": [input_files, {"image_upload": True}],
                                                 "channel": [["alpha", "red", "green", "blue"], {}]},
                               outputs=("MASK",), category="mask"),
        "UpscaleModelLoader": _node("UpscaleModelLoader", {"model_name": [upscalers, {}]},
                                    outputs=("UPSCALE_MODEL",), category="loaders",
                                    module="comfy_extras.nodes_upscale_model"),
        "ImageUpscaleWithModel": _node("ImageUpscaleWithModel", {"upscale_model": ["UPSCALE_MODEL"],
                                                                 "image": ["IMAGE"]},
                                       outputs=("IMAGE",), category="image/upscaling",
                                       module="comfy_extras.nodes_upscale_model"),
        "DownloadAndLoadFlorence2Model": _node(
            "DownloadAndLoadFlorence2Model",
            {"model": [FLORENCE_MODELS, {"default": "microsoft/Florence-2-base"}],
             "precision": [["fp16", "bf16", "fp32"], {"default": "fp16"}],
             "attention": [["flash_attention_2", "sdpa", "eager"], {"default": "sdpa"}]},
            optional={"lora": ["PEFTLORA"], "convert_to_safetensors": ["BOOLEAN", {"default": False}]},
            outputs=("FL2MODEL",), names=("florence2_model",), category="Florence2",
            module="custom_nodes.ComfyUI-Florence2"),
        "Florence2Run": _node(
            "Florence2Run",
            {"image": ["IMAGE"], "florence2_model": ["FL2MODEL"],
             "text_input": ["STRING", {"default": "", "multiline": True}], "task": [FLORENCE_TASKS, {}],
             "fill_mask": ["BOOLEAN", {"default": True}]},
            optional={"keep_model_loaded": ["BOOLEAN", {"default": False}],
                      "max_new_tokens": ["INT", {"default": 1024, "min": 1, "max": 4096}],
                      "num_beams": ["INT", {"default": 3, "min": 1, "max": 64}],
                      "do_sample": ["BOOLEAN", {"default": True}],
                      "output_mask_select": ["STRING", {"default": ""}],
                      "seed": ["INT", {"default": 1, "min": 1, "max": INT_MAX}]},
            outputs=("IMAGE", "MASK", "STRING", "JSON", "INT"),
            names=("image", "mask", "caption", "data", "bbox_count"), category="Florence2",
            module="custom_nodes.ComfyUI-Florence2"),
        "ShowText|pysssss": _node("ShowText|pysssss", {"text": ["STRING", {"forceInput": True}]},
                                  hidden={"unique_id": "UNIQUE_ID", "extra_pnginfo": "EXTRA_PNGINFO"},
                                  outputs=("STRING",), is_list=(True,), output_node=True, category="utils",
                                  display="Show Text 🐍", module="custom_nodes.ComfyUI-Custom-Scripts"),
        "PiperTTS": _node("PiperTTS", {"text": ["STRING", {"default": "", "multiline": True}],
                                       "voice": [voices, {}],
                                       "quality": [["high", "medium", "low"], {"default": "high"}]},
                          outputs=("STRING",), names=("audio_path",), output_node=True, category="PiperTTS",
                          display="Piper TTS", module="custom_nodes.ComfyUI-PiperTTS"),
        "LoadAudio": _node("LoadAudio", {"audio": [audio_files, {"audio_upload": True}]}, outputs=("AUDIO",),
                           category="audio", module="comfy_extras.nodes_audio"),
        "SaveAudio": _node("SaveAudio", {"audio": ["AUDIO"],
                                         "filename_prefix": ["STRING", {"default": "audio/ComfyUI"}]},
                           hidden=save_hidden, output_node=True, category="audio", module="comfy_extras.nodes_audio"),
        "AudioToTextWhisper": _node("AudioToTextWhisper", {"audio": ["AUDIO"], "model": [WHISPER_MODELS, {}]},
                                    outputs=("STRING", "STRING"), names=("text", "text_with_timestamps"),
                                    category="ai-agent", module="custom_nodes.ai-agent-extension"),
    }


# --------------------------------------------------------------------------- bookkeeping


@dataclass
class Recorded:
    """One request the fake received (multipart bodies as a dict of fields; files as name and size)."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    body: Any = None


@dataclass
class QueueItem:
    number: int
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


class _Interrupted(Exception):
    pass


class _NodeFailed(Exception):
    def __init__(self, node_id: str, node_type: str, message: str, kind: str = "RuntimeError") -> None:
        super().__init__(message)
        self.node_id, self.node_type, self.message, self.kind = node_id, node_type, message, kind


@dataclass
class _Run:
    item: QueueItem
    sid: str | None
    messages: list[list[Any]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    stalled: bool = False


_DEFAULT_CHECKPOINTS = ["sdxl_lightning_4step.safetensors", "flux1-schnell-fp8.safetensors",
                        "sd_xl_base_1.0.safetensors", "juggernautXL_v9Rdphoto2Lightning.safetensors",
                        "dreamshaperXL_lightningDPMSDE.safetensors"]
_DEFAULT_UPSCALERS = ["RealESRGAN_x2.pth", "RealESRGAN_x4plus.pth"]
_DEFAULT_VOICES = ["en_US-lessac", "en_US-amy", "en_GB-alan", "de_DE-thorsten"]


#: Where a handler finds its request's :class:`Recorded`, to attach the body it parsed.
REC = web.RequestKey("rec", Recorded)


class FakeComfyUI:
    """ComfyUI's HTTP/websocket API on loopback (see the module docs)."""

    def __init__(self, *, api_key: str | None = None, checkpoints: list[str] | None = None,
                 upscalers: list[str] | None = None, voices: list[str] | None = None,
                 missing_classes: tuple[str, ...] = ()) -> None:
        self.api_key = api_key
        #: With an api_key: guard every route (True) or only ``/prompt`` (the agent's RESTRICT_APIS_ONLY).
        self.guard_all = True
        self.checkpoints = list(_DEFAULT_CHECKPOINTS if checkpoints is None else checkpoints)
        self.upscalers = list(_DEFAULT_UPSCALERS if upscalers is None else upscalers)
        self.voices = list(_DEFAULT_VOICES if voices is None else voices)
        #: Node classes to pretend are not installed.
        self.missing_classes = set(missing_classes)
        # knobs
        self.stall_ws = False
        self.fail_node: str | None = None
        self.fail_message = "Simulated failure in the fake"
        self.fail_type = "RuntimeError"
        self.offline = False
        self.legacy_errors = False
        self.step_delay = 0.0
        self.history_delay = 0.0
        self.close_ws_after_status = False
        #: Save uploads under another name (as a proxy or a clash would): clients must use the answer's name.
        self.rename_uploads = False
        # state
        self.root = Path(tempfile.mkdtemp(prefix="fake-comfyui-"))
        self.dirs = {kind: self.root / kind for kind in ("input", "output", "temp")}
        for d in self.dirs.values():
            d.mkdir()
        self.requests: list[Recorded] = []
        self.history: dict[str, dict[str, Any]] = {}
        self.deleted_history: list[str] = []
        self.interrupts: list[dict[str, Any]] = []
        self.queue_deletes: list[str] = []
        self.ws_connections: list[dict[str, str]] = []
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.pending: list[QueueItem] = []
        self.running: _Run | None = None
        self.number = 0
        self._counter = 0
        self._interrupt = False
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self.base_url = ""
        self.server: TestServer | None = None
        self.app = web.Application(middlewares=[self._middleware], client_max_size=100 * 1024 * 1024)
        for prefix in ("", "/api"):
            r = self.app.router
            r.add_post(prefix + "/prompt", self.post_prompt)
            r.add_get(prefix + "/prompt", self.get_prompt)
            r.add_get(prefix + "/ws", self.websocket)
            r.add_get(prefix + "/history", self.get_history)
            r.add_get(prefix + "/history/{prompt_id}", self.get_history_item)
            r.add_post(prefix + "/history", self.post_history)
            r.add_get(prefix + "/view", self.view)
            r.add_post(prefix + "/upload/image", self.upload_image)
            r.add_get(prefix + "/object_info", self.object_info)
            r.add_get(prefix + "/object_info/{node_class}", self.object_info_node)
            r.add_get(prefix + "/system_stats", self.system_stats)
            r.add_post(prefix + "/interrupt", self.post_interrupt)
            r.add_get(prefix + "/queue", self.get_queue)
            r.add_post(prefix + "/queue", self.post_queue)
        self.app.router.add_get("/", self.index)

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> str:
        """Serve on a free loopback port and start the queue worker; returns :attr:`base_url`."""
        self._wakeup = asyncio.Event()
        self._worker = asyncio.create_task(self._work())
        self.server = TestServer(self.app, host="127.0.0.1")
        await self.server.start_server()
        self.base_url = str(self.server.make_url("")).rstrip("/")
        return self.base_url

    async def close(self) -> None:
        """Stop serving (later connections are refused) and the worker."""
        for ws in list(self.sockets.values()):
            await ws.close()
        if self.server is not None:
            await self.server.close()
            self.server = None
        if self._worker is not None:
            self._worker.cancel()
            with _suppress():
                await self._worker
            self._worker = None

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    async def __aenter__(self) -> FakeComfyUI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
        self.cleanup()

    # ----------------------------------------------------------------- helpers for tests

    def paths(self, path: str) -> list[Recorded]:
        """The recorded requests to ``path`` (with or without ``/api``)."""
        return [r for r in self.requests if r.path in (path, "/api" + path)]

    def definitions(self) -> dict[str, dict[str, Any]]:
        defs = node_definitions(self.checkpoints, self.upscalers, self.voices, self._input_files(),
                                self._input_files(audio=True))
        return {k: v for k, v in defs.items() if k not in self.missing_classes}

    def _input_files(self, audio: bool = False) -> list[str]:
        base = self.dirs["input"]
        exts = (".wav", ".mp3", ".flac", ".ogg", ".m4a") if audio else (".png", ".jpg", ".jpeg", ".webp")
        return sorted(str(p.relative_to(base)).replace(os.sep, "/") for p in base.rglob("*")
                      if p.is_file() and p.suffix.lower() in exts)

    # ----------------------------------------------------------------- middleware

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]) -> Any:
        rec = Recorded(request.method, request.path, dict(request.query), CIMultiDict(request.headers))
        self.requests.append(rec)
        request[REC] = rec
        if self.offline:
            return web.Response(status=503, text="Service Unavailable")
        if self.api_key is not None:
            guarded = self.guard_all or request.path in ("/prompt", "/api/prompt")
            ok = (request.headers.get("Authorization") == f"Bearer {self.api_key}"
                  or request.query.get("apiKey") == self.api_key)
            if guarded and not ok:
                return web.json_response({"error": "Unauthorized"}, status=401)
        return await handler(request)

    async def _json(self, request: web.Request) -> Any:
        try:
            body = await request.json()
        except ValueError:
            body = None
        request[REC].body = body
        return body

    # ----------------------------------------------------------------- websocket

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        self.ws_connections.append(dict(request.query))
        old = self.sockets.get(sid)
        if old is not None:
            await old.close()
        self.sockets[sid] = ws
        try:
            await ws.send_json({"type": "status", "data": {"status": self._status(), "sid": sid}})
            if self.close_ws_after_status:
                await ws.close()
                return ws
            run = self.running
            if run is not None and run.sid == sid and not run.stalled:
                await ws.send_json({"type": "executing", "data": {"node": None, "prompt_id": run.item.prompt_id}})
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            if self.sockets.get(sid) is ws:
                del self.sockets[sid]
        return ws

    def _status(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": len(self.pending) + (1 if self.running else 0)}}

    async def _send(self, run: _Run | None, event: str, data: dict[str, Any]) -> None:
        if run is not None and (run.stalled or run.sid is None):
            return
        targets = [self.sockets.get(run.sid)] if run is not None else list(self.sockets.values())
        for ws in targets:
            if ws is not None and not ws.closed:
                with _suppress():
                    await ws.send_json({"type": event, "data": data})

    async def _send_bytes(self, run: _Run, data: bytes) -> None:
        ws = self.sockets.get(run.sid or "")
        if ws is not None and not ws.closed and not run.stalled:
            with _suppress():
                await ws.send_bytes(data)

    async def _message(self, run: _Run, event: str, data: dict[str, Any]) -> None:
        """ComfyUI's ``add_message``: kept in the history status and sent to the client."""
        data = {**data, "timestamp": int(time.time() * 1000)}
        run.messages.append([event, data])
        await self._send(run, event, data)

    # ----------------------------------------------------------------- /prompt

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response({"exec_info": self._status()["exec_info"]})

    async def post_prompt(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if not isinstance(body, dict):
            return web.json_response({"error": "invalid json"}, status=400)
        if "number" in body:
            number = int(float(body["number"]))
        else:
            number = self.number
            if body.get("front"):
                number = -number
            self.number += 1
        if "prompt" not in body:
            error = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                     "extra_info": {}}
            return self._error(error, {})
        prompt = body["prompt"]
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        ok, error, outputs, node_errors = self.validate_prompt(prompt)
        extra_data = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        if not ok:
            return self._error(error, node_errors)
        self.pending.append(QueueItem(number, prompt_id, copy.deepcopy(prompt), extra_data, outputs))
        self.pending.sort(key=lambda i: i.number)
        assert self._wakeup is not None
        self._wakeup.set()
        await self._send(None, "status", {"status": self._status()})
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    def _error(self, error: dict[str, Any] | None, node_errors: Any) -> web.Response:
        assert error is not None
        if self.legacy_errors:  # older builds: a bare string
            return web.json_response({"error": error["message"], "node_errors": node_errors}, status=400)
        return web.json_response({"error": error, "node_errors": node_errors}, status=400)

    def validate_prompt(self, prompt: Any) -> tuple[bool, dict[str, Any] | None, list[str], dict[str, Any]]:
        """``execution.validate_prompt``: (ok, error, good outputs, node_errors)."""
        if not isinstance(prompt, dict):
            return False, {"type": "invalid_prompt", "message": "Prompt must be an object", "details": "",
                           "extra_info": {}}, [], {}
        defs = self.definitions()
        outputs = []
        for node_id, node in prompt.items():
            if not isinstance(node, dict) or "class_type" not in node:
                return False, {"type": "invalid_prompt",
                               "message": "Cannot execute because a node is missing the class_type property.",
                               "details": f"Node ID '#{node_id}'", "extra_info": {}}, [], {}
            class_type = node["class_type"]
            if class_type not in defs:
                return False, {"type": "invalid_prompt",
                               "message": f"Cannot execute because node {class_type} does not exist.",
                               "details": f"Node ID '#{node_id}'", "extra_info": {}}, [], {}
            if defs[class_type]["output_node"]:
                outputs.append(node_id)
        if not outputs:
            return False, {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
                           "extra_info": {}}, [], {}
        validated: dict[str, tuple[bool, list[dict[str, Any]]]] = {}
        good: list[str] = []
        node_errors: dict[str, Any] = {}
        failures: list[tuple[str, list[dict[str, Any]]]] = []
        for out in outputs:
            valid, reasons = self._validate_inputs(prompt, out, validated, defs)
            if valid:
                good.append(out)
                continue
            failures.append((out, reasons))
            for node_id, (ok, node_reasons) in validated.items():
                if not ok and node_reasons:
                    entry = node_errors.setdefault(node_id, {"errors": node_reasons, "dependent_outputs": [],
                                                             "class_type": prompt[node_id]["class_type"]})
                    if out not in entry["dependent_outputs"]:
                        entry["dependent_outputs"].append(out)
        if not good:
            details = "\n".join(f"{e['message']}: {e['details']}" for _, errs in failures for e in errs)
            return False, {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                           "details": details, "extra_info": {}}, [], node_errors
        return True, None, good, node_errors

    def _validate_inputs(self, prompt: dict[str, Any], node_id: str,
                         validated: dict[str, tuple[bool, list[dict[str, Any]]]],
                         defs: dict[str, dict[str, Any]]) -> tuple[bool, list[dict[str, Any]]]:
        if node_id in validated:
            return validated[node_id]
        node = prompt[node_id]
        info = defs[node["class_type"]]
        inputs = node.get("inputs") or {}
        required = info["input"]["required"]
        known = {**info["input"].get("optional", {}), **required}
        errors: list[dict[str, Any]] = []
        valid = True
        for name in required:
            if name not in inputs:
                errors.append({"type": "required_input_missing", "message": "Required input is missing",
                               "details": name, "extra_info": {"input_name": name}})
                valid = False
        for name, value in inputs.items():
            spec = known.get(name)
            if spec is None:
                continue
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                source = value[0]
                if source not in prompt:
                    errors.append({"type": "bad_linked_input", "message": "Bad linked input, must be a length-2 list "
                                   "of [node_id, slot_index]", "details": name, "extra_info": {"input_name": name}})
                    valid = False
                    continue
                source_ok, _ = self._validate_inputs(prompt, source, validated, defs)
                valid = valid and source_ok
                continue
            kind = spec[0]
            opts = spec[1] if len(spec) > 1 else {}
            if isinstance(kind, list):
                if node["class_type"] in ("LoadImage", "LoadImageMask") and name == "image":
                    path = self._annotated(str(value), "input")
                    if path is None or not path.is_file():
                        errors.append({"type": "custom_validation_failed",
                                       "message": "Custom validation failed for node",
                                       "details": f"{name} - Invalid image file: {value}",
                                       "extra_info": {"input_name": name}})
                        valid = False
                    continue
                if value not in kind:
                    errors.append({"type": "value_not_in_list", "message": "Value not in list",
                                   "details": f"{name}: '{value}' not in {kind}",
                                   "extra_info": {"input_name": name, "input_config": spec,
                                                  "received_value": value}})
                    valid = False
                continue
            if kind in ("INT", "FLOAT"):
                try:
                    number = int(value) if kind == "INT" else float(value)
                except (TypeError, ValueError):
                    errors.append({"type": "invalid_input_type",
                                   "message": f"Failed to convert an input value to a {kind} value",
                                   "details": f"{name}, {value}", "extra_info": {"input_name": name}})
                    valid = False
                    continue
                if "min" in opts and number < opts["min"]:
                    errors.append({"type": "value_smaller_than_min",
                                   "message": f"Value {number} smaller than min of {opts['min']}",
                                   "details": name, "extra_info": {"input_name": name}})
                    valid = False
                if "max" in opts and number > opts["max"]:
                    errors.append({"type": "value_bigger_than_max",
                                   "message": f"Value {number} bigger than max of {opts['max']}",
                                   "details": name, "extra_info": {"input_name": name}})
                    valid = False
        validated[node_id] = (valid and not errors, errors)
        return validated[node_id]

    # ----------------------------------------------------------------- the worker

    async def _work(self) -> None:
        assert self._wakeup is not None
        while True:
            while not self.pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            item = self.pending.pop(0)
            run = _Run(item, item.extra_data.get("client_id"))
            self.running = run
            self._interrupt = False
            try:
                await self._execute(run)
            finally:
                self.running = None
            await self._send(None, "status", {"status": self._status()})

    async def _execute(self, run: _Run) -> None:
        pid = run.item.prompt_id
        status = "success"
        await self._message(run, "execution_start", {"prompt_id": pid})
        run.stalled = self.stall_ws
        await self._message(run, "execution_cached", {"nodes": [], "prompt_id": pid})
        values: dict[str, tuple[Any, ...]] = {}
        executed: list[str] = []
        current: tuple[str, str] | None = None
        try:
            for node_id in self._order(run.item.prompt, run.item.outputs):
                await self._send(run, "executing", {"node": node_id, "display_node": node_id, "prompt_id": pid})
                node = run.item.prompt[node_id]
                current = (node_id, node["class_type"])
                if self.fail_node in (node_id, node["class_type"]):
                    raise _NodeFailed(node_id, node["class_type"], self.fail_message, self.fail_type)
                inputs = {k: (values[v[0]][v[1]] if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)
                              else v) for k, v in (node.get("inputs") or {}).items()}
                try:
                    result, ui = await self._run_node(run, node_id, node["class_type"], inputs)
                except (_Interrupted, _NodeFailed):
                    raise
                except Exception as exc:
                    raise _NodeFailed(node_id, node["class_type"], str(exc), type(exc).__name__) from exc
                values[node_id] = result
                executed.append(node_id)
                if ui is not None:
                    run.outputs[node_id] = ui
                    await self._send(run, "executed", {"node": node_id, "display_node": node_id, "output": ui,
                                                       "prompt_id": pid})
            await self._message(run, "execution_success", {"prompt_id": pid})
        except _Interrupted:
            status = "error"
            await self._message(run, "execution_interrupted", {
                "prompt_id": pid, "node_id": current[0] if current else None,
                "node_type": current[1] if current else None, "executed": executed})
        except _NodeFailed as exc:
            status = "error"
            await self._message(run, "execution_error", {
                "prompt_id": pid, "node_id": exc.node_id, "node_type": exc.node_type, "executed": executed,
                "exception_message": exc.message, "exception_type": exc.kind,
                "traceback": ["Traceback (most recent call last):\n", f"  {exc.kind}: {exc.message}\n"],
                "current_inputs": {}, "current_outputs": {}})
        await self._send(run, "executing", {"node": None, "prompt_id": pid})
        if self.history_delay:
            await asyncio.sleep(self.history_delay)
        else:
            await asyncio.sleep(0)  # as in ComfyUI, history lands just after "executing: null"
        self.history[pid] = {
            "prompt": run.item.as_list(),
            "outputs": run.outputs,
            "status": {"status_str": status, "completed": status == "success", "messages": run.messages},
            "meta": {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n}
                     for n in run.outputs},
        }

    @staticmethod
    def _order(prompt: dict[str, Any], outputs: list[str]) -> list[str]:
        order: list[str] = []
        seen: set[str] = set()

        def visit(node_id: str) -> None:
            if node_id in seen:
                return
            seen.add(node_id)
            for value in (prompt[node_id].get("inputs") or {}).values():
                if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                    visit(value[0])
            order.append(node_id)

        for out in sorted(outputs, key=lambda n: (len(n), n)):
            visit(out)
        return order

    def _check_interrupt(self) -> None:
        if self._interrupt:
            self._interrupt = False
            raise _Interrupted()

    async def _run_node(self, run: _Run, node_id: str, cls: str, inp: dict[str, Any]
                        ) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
        self._check_interrupt()
        await asyncio.sleep(0)
        if cls == "CheckpointLoaderSimple":
            name = inp["ckpt_name"]
            return ({"model": name}, {"clip": name}, {"vae": name}), None
        if cls == "CLIPTextEncode":
            return ({"text": inp["text"]},), None
        if cls in ("EmptyLatentImage", "EmptySD3LatentImage"):
            return ({"width": int(inp["width"]), "height": int(inp["height"]), "batch": int(inp["batch_size"])},), None
        if cls == "KSampler":
            steps = int(inp["steps"])
            for step in range(1, steps + 1):
                self._check_interrupt()
                if self.step_delay:
                    await asyncio.sleep(self.step_delay)
                await self._send(run, "progress", {"value": step, "max": steps, "prompt_id": run.item.prompt_id,
                                                   "node": node_id})
                if step == 1:  # a live preview: binary frame type 1, format 2 (PNG)
                    await self._send_bytes(run, struct.pack(">II", 1, 2) + png_bytes(8, 8))
            latent = dict(inp["latent_image"])
            latent["seed"] = int(inp["seed"])
            return (latent,), None
        if cls == "VAEDecode":
            return (dict(inp["samples"]),), None
        if cls == "VAEEncode":
            return (dict(inp["pixels"]),), None
        if cls == "RepeatLatentBatch":
            latent = dict(inp["samples"])
            latent["batch"] = latent.get("batch", 1) * int(inp["amount"])
            return (latent,), None
        if cls == "SetLatentNoiseMask":
            return ({**inp["samples"], "mask": inp["mask"]},), None
        if cls in ("SaveImage", "PreviewImage"):
            kind = "output" if cls == "SaveImage" else "temp"
            prefix = inp.get("filename_prefix", "ComfyUI") if kind == "output" else "ComfyUI_temp"
            images = await asyncio.to_thread(self._save_images, inp["images"], prefix, kind)
            return (), {"images": images}
        if cls in ("LoadImage", "LoadImageMask"):
            path = self._annotated(str(inp["image"]), "input")
            assert path is not None
            data = path.read_bytes()
            width, height = png_size(data) or _other_size(path)
            image = {"width": width, "height": height, "batch": 1, "source": path.name}
            return ((image, {"width": width, "height": height}) if cls == "LoadImage"
                    else ({"width": width, "height": height},)), None
        if cls == "UpscaleModelLoader":
            name = inp["model_name"]
            scale = 4 if re.search(r"x4|4x", name) else 2
            return ({"scale": scale, "name": name},), None
        if cls == "ImageUpscaleWithModel":
            image, scale = inp["image"], inp["upscale_model"]["scale"]
            return ({**image, "width": image["width"] * scale, "height": image["height"] * scale},), None
        if cls == "DownloadAndLoadFlorence2Model":
            return ({"model": inp["model"], "precision": inp["precision"]},), None
        if cls == "Florence2Run":
            image = inp["image"]
            caption = f"A fake {inp['task'].replace('_', ' ')} of a {image['width']}x{image['height']} image"
            if inp.get("text_input"):
                caption += f" about {inp['text_input']}"
            return (image, {}, caption, json.dumps({"caption": caption}), 0), None
        if cls == "ShowText|pysssss":
            text = inp["text"]
            texts = text if isinstance(text, list) else [text]
            return (texts,), {"text": texts}
        if cls == "PiperTTS":
            text = str(inp["text"])
            if not text:
                raise ValueError("Text cannot be empty.")
            name = f"{re.sub('[^A-Za-z]', ' ', text).strip()[:15]}.wav"
            folder = self.dirs["output"] / "piper_tts"
            folder.mkdir(exist_ok=True)
            seconds = min(3.0, 0.05 * max(1, len(text.split())))
            await asyncio.to_thread((folder / name).write_bytes, wav_bytes(seconds))
            return (str(folder / name),), {"previews": [{"filename": name, "subfolder": "piper_tts", "type": "output"}]}
        if cls == "LoadAudio":
            path = self._annotated(str(inp["audio"]), "input")
            if path is None or not path.is_file():
                raise FileNotFoundError(f"No such audio file: {inp['audio']}")
            try:
                with wave.open(str(path), "rb") as w:
                    duration = w.getnframes() / w.getframerate()
            except (wave.Error, EOFError):
                duration = 1.0
            return ({"duration": duration, "source": path.name},), None
        if cls == "AudioToTextWhisper":
            duration = inp["audio"]["duration"]
            text = f"Fake transcript of {duration:.2f} seconds of audio by whisper {inp['model']}"
            return (text, json.dumps([{"text": text, "start": 0.0, "end": round(duration, 2)}])), None
        if cls == "SaveAudio":
            sub, _, prefix = str(inp.get("filename_prefix", "audio/ComfyUI")).rpartition("/")
            folder = self.dirs["output"] / sub
            folder.mkdir(parents=True, exist_ok=True)
            self._counter += 1
            name = f"{prefix}_{self._counter:05}_.wav"
            (folder / name).write_bytes(wav_bytes(inp["audio"].get("duration", 1.0)))
            return (), {"audio": [{"filename": name, "subfolder": sub, "type": "output"}]}
        raise NotImplementedError(f"the fake cannot execute {cls}")

    def _save_images(self, image: dict[str, Any], prefix: str, kind: str) -> list[dict[str, str]]:
        sub, _, stem = prefix.rpartition("/")
        folder = self.dirs[kind] / sub
        folder.mkdir(parents=True, exist_ok=True)
        seed = int(image.get("seed", 0))
        colour = (seed % 256, (seed // 256) % 256, 180)
        found = []
        for _ in range(int(image.get("batch", 1))):
            self._counter += 1
            name = f"{stem}_{self._counter:05}_.png"
            (folder / name).write_bytes(png_bytes(int(image["width"]), int(image["height"]), colour))
            found.append({"filename": name, "subfolder": sub, "type": kind})
        return found

    def _annotated(self, name: str, default: str) -> Path | None:
        """``folder_paths.get_annotated_filepath``: ``sub/x.png [temp]`` -> the file, inside its root."""
        kind = default
        m = re.fullmatch(r"(.*) \[(input|output|temp)\]", name)
        if m:
            name, kind = m.group(1), m.group(2)
        root = self.dirs[kind].resolve()
        path = (root / name).resolve()
        return path if path.is_relative_to(root) else None

    # ----------------------------------------------------------------- history, queue, interrupt

    async def get_history(self, request: web.Request) -> web.Response:
        return web.json_response(self.history)

    async def get_history_item(self, request: web.Request) -> web.Response:
        pid = request.match_info["prompt_id"]
        return web.json_response({pid: self.history[pid]} if pid in self.history else {})

    async def post_history(self, request: web.Request) -> web.Response:
        body = await self._json(request) or {}
        if body.get("clear"):
            self.history.clear()
        for pid in body.get("delete") or ():
            self.deleted_history.append(pid)
            self.history.pop(pid, None)
        return web.Response(status=200)

    async def get_queue(self, request: web.Request) -> web.Response:
        running = [self.running.item.as_list()] if self.running else []
        return web.json_response({"queue_running": running, "queue_pending": [i.as_list() for i in self.pending]})

    async def post_queue(self, request: web.Request) -> web.Response:
        body = await self._json(request) or {}
        if body.get("clear"):
            self.pending.clear()
        for pid in body.get("delete") or ():
            self.queue_deletes.append(pid)
            self.pending = [i for i in self.pending if i.prompt_id != pid]
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.Response:
        body = await self._json(request) or {}
        self.interrupts.append(body)
        wanted = body.get("prompt_id")
        if self.running is not None and (wanted is None or wanted == self.running.item.prompt_id):
            self._interrupt = True
        return web.Response(status=200)

    # ----------------------------------------------------------------- files

    async def view(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        if "filename" not in query:
            return web.Response(status=404)
        filename = query["filename"]
        kind = query.get("type", "output")
        m = re.fullmatch(r"(.*) \[(input|output|temp)\]", filename)
        if m:
            filename, kind = m.group(1), m.group(2)
        if not filename or filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        if kind not in self.dirs:
            return web.Response(status=400)
        root = str(self.dirs[kind].resolve())
        folder = root
        if "subfolder" in query:
            full = os.path.join(root, query["subfolder"])
            if os.path.commonpath((os.path.abspath(full), root)) != root:
                return web.Response(status=403)
            folder = full
        path = Path(folder) / os.path.basename(filename)
        if not path.is_file():
            return web.Response(status=404)
        return web.FileResponse(path, headers={"Content-Disposition": f'filename="{path.name}"'})

    async def upload_image(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        fields = {k: (v if isinstance(v, str) else {"filename": v.filename}) for k, v in post.items()}
        request[REC].body = fields
        if image is None or isinstance(image, str) or not image.filename:
            return web.Response(status=400)
        data = image.file.read()
        fields["image"]["size"] = len(data)
        kind = str(post.get("type") or "input")
        if kind not in self.dirs:
            kind = "input"
        root = str(self.dirs[kind].resolve())
        subfolder = str(post.get("subfolder") or "")
        folder = os.path.join(root, os.path.normpath(subfolder))
        filename = image.filename
        filepath = os.path.abspath(os.path.join(folder, filename))
        if os.path.commonpath((root, filepath)) != root:
            return web.Response(status=400)
        os.makedirs(folder, exist_ok=True)
        stem, ext = os.path.splitext(filename)
        if self.rename_uploads:
            filename = f"renamed-{stem}{ext}"
            filepath = os.path.join(folder, filename)
        duplicate = False
        if str(post.get("overwrite")) not in ("true", "1"):
            i = 1
            while os.path.exists(filepath):
                if hashlib.sha256(Path(filepath).read_bytes()).digest() == hashlib.sha256(data).digest():
                    duplicate = True
                    break
                filename = f"{stem} ({i}){ext}"
                filepath = os.path.join(folder, filename)
                i += 1
        if not duplicate:
            Path(filepath).write_bytes(data)
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    # ----------------------------------------------------------------- introspection

    async def object_info(self, request: web.Request) -> web.Response:
        return web.json_response(self.definitions())

    async def object_info_node(self, request: web.Request) -> web.Response:
        cls = request.match_info["node_class"]
        defs = self.definitions()
        return web.json_response({cls: defs[cls]} if cls in defs else {})

    async def system_stats(self, request: web.Request) -> web.Response:
        return web.json_response({
            "system": {"os": "posix", "ram_total": 32 * 2**30, "ram_free": 16 * 2**30, "comfyui_version": "0.3.30",
                       "python_version": "3.12.3", "pytorch_version": "2.7.0+cu128", "embedded_python": False,
                       "argv": ["main.py", "--listen", "0.0.0.0", "--port", "7860"]},
            "devices": [{"name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync", "type": "cuda", "index": 0,
                         "vram_total": 24 * 2**30, "vram_free": 20 * 2**30, "torch_vram_total": 2**30,
                         "torch_vram_free": 2**29}],
        })

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(text="<html><body>ComfyUI</body></html>", content_type="text/html")


def _other_size(path: Path) -> tuple[int, int]:
    """Size of a non-PNG input, through ImageMagick's ping (JPEG/WebP inputs)."""
    from wand.image import Image

    with Image.ping(filename=str(path)) as img:
        return int(img.width), int(img.height)


class _suppress:
    """``contextlib.suppress`` for everything a closing socket or a cancelled task may raise."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> bool:
        return kind is not None and issubclass(kind, Exception | asyncio.CancelledError)
