"""The ``comfyui`` media provider type: every generation task run as a ComfyUI workflow.

One run (:meth:`ComfyUIProvider.generate`), as ComfyUI's own API documents it:

1. choose the task's workflow (see :func:`.comfyui_workflows.select_workflow`) and
   fill in its placeholders;
2. check every node class and every combo value (checkpoint, upscaler, voice,
   sampler...) against ``GET /object_info/{class}`` (cached per provider, fetched
   again once before a mismatch is reported): a node or model the server lacks
   is a 400 naming it, instead of a vague ``prompt_outputs_failed_validation``;
3. upload the inputs with ``POST /upload/image`` (audio too, as AI Server does)
   and put the **returned** name into the graph;
4. open ``GET /ws?clientId=...`` *before* ``POST /prompt``, so no event is missed,
   and report ``progress``/``executing`` events; the websocket is only a hint:
   ``GET /history/{id}`` is polled all along (it can stall, or be refused by a
   proxy) and is what decides success or failure;
5. download the outputs (``GET /view``) into the task's ``workdir``, read the
   ``text`` outputs (JSON-looking texts last, as AI Server orders them), and
   delete the history entry (ComfyUI keeps history in memory until restarted).

Failures: a node's ``execution_error`` is not retryable (the same graph fails the
same way) unless it ran out of memory; ``execution_interrupted``, connection
errors, 5xx and timeouts are. On timeout or cancellation the prompt is removed
from the queue, or interrupted if it is the one running, so a dead job does not
keep the GPU busy. With an ``api_key``, it is sent as ``Authorization: Bearer``
and, on the websocket, also as ``?apiKey=`` (the AI Server agent takes either).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import attrs
import structlog
from aiport.core.errors import ProviderError
from aiport.core.media import (
    GENERATION_TASKS,
    TEXT_TASKS,
    GeneratedOutput,
    GenerationTask,
    MediaInput,
    ProgressReporter,
)
from aiport.core.sdk import HttpOptions, MediaProviderType, ProviderContext, WorkflowSpec, clip, hookimpl

from . import comfyui_workflows as wf
from .media_common import HttpMediaProvider

log = structlog.get_logger("aiport.plugins.comfyui")

TYPE_NAME = "comfyui"
DEFAULT_BASE_URL = "http://127.0.0.1:8188"

#: After the websocket says the prompt ended, history is polled this often until the entry appears
#: (ComfyUI sends ``executing: null`` just before it stores the history entry).
_FAST_POLL = 0.1
#: How long that may take before the websocket's word is taken without history's.
_HINT_GRACE = 5.0
#: How long best-effort clean-up calls (interrupt, queue delete, history delete) may take.
_CLEANUP_TIMEOUT = 5.0


class PromptFailed(ProviderError):
    """ComfyUI ran the prompt and reports that it failed (its history entry's status is ``error``)."""


class NodeExecutionError(PromptFailed):
    """A node raised while the prompt ran (ComfyUI's ``execution_error``); carries the node and its message."""

    def __init__(self, message: str, *, provider: str, node_id: str, node_type: str, exception_message: str,
                 retryable: bool = False) -> None:
        super().__init__(message, provider=provider, retryable=retryable)
        self.node_id = node_id
        self.node_type = node_type
        self.exception_message = exception_message


class PromptInterrupted(PromptFailed):
    """The prompt was interrupted on the server (``execution_interrupted``); retryable."""


def _positive(_inst: Any, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be more than 0, got {value!r}")


@attrs.frozen
class ComfyUIOptions(HttpOptions):
    """Extra config keys of the ``comfyui`` type (``providers[].<key>``)."""

    #: A folder of API-format workflow files (``NAME.json``) that add to or replace
    #: the registered workflows of the same name; relative to the config file.
    workflows_dir: str | None = None
    #: ComfyUI model name -> workflow name, for models the catalog does not know.
    model_workflows: dict[str, str] = attrs.field(factory=dict)
    #: Task (``TextToImage``...) -> workflow name, replacing the task's default one.
    default_workflows: dict[str, str] = attrs.field(factory=dict)
    #: Listen on ``/ws`` for progress; off, results come from polling ``/history`` alone.
    use_websocket: bool = True
    #: Seconds between ``/history`` polls (the fallback when the websocket is quiet).
    history_poll_interval: float = attrs.field(default=1.0, validator=_positive)
    #: Check workflows against ``/object_info`` before submitting them.
    validate_workflows: bool = True
    #: The ``/upload/image`` subfolder inputs are put in ("" for the input folder itself).
    upload_subfolder: str = "aiport"
    #: Remove the prompt's ``/history`` entry once its outputs are copied.
    delete_history: bool = True


# --------------------------------------------------------------------------- history parsing


def history_outputs(entry: Mapping[str, Any]) -> tuple[list[dict[str, str]], list[str]]:
    """Files (``{"filename", "subfolder", "type"}``) and texts of a ``/history`` entry's outputs.

    Output nodes are read in the order of the entry's ``outputs_to_execute``
    (``prompt[4]``), then any others by id. Files come from ``images``, ``gifs``,
    ``audio``, ``video`` and ``previews`` (Piper's), texts from ``text``; texts that
    look like JSON (Whisper's timestamps) are put last, as AI Server does.
    """
    outputs = entry.get("outputs") or {}
    prompt = entry.get("prompt")
    order: list[str] = []
    if isinstance(prompt, list) and len(prompt) > 4 and isinstance(prompt[4], list):
        order = [str(n) for n in prompt[4] if str(n) in outputs]
    order += sorted((n for n in outputs if n not in order), key=lambda n: (not n.isdigit(), n.zfill(12)))
    files: list[dict[str, str]] = []
    seen: set[tuple[str, str, str]] = set()
    texts: list[str] = []
    for node_id in order:
        out = outputs.get(node_id) or {}
        for key in ("images", "gifs", "audio", "video", "previews"):
            for item in out.get(key) or ():
                if isinstance(item, dict) and item.get("filename"):
                    ref = (str(item["filename"]), str(item.get("subfolder") or ""), str(item.get("type") or "output"))
                    if ref not in seen:
                        seen.add(ref)
                        files.append({"filename": ref[0], "subfolder": ref[1], "type": ref[2]})
        for text in out.get("text") or ():
            texts.append(text if isinstance(text, str) else json.dumps(text))
    texts.sort(key=_looks_like_json)  # stable: plain texts keep their order, JSON ones go last
    return files, texts


def _looks_like_json(text: str) -> bool:
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return False
    try:
        json.loads(stripped)
    except ValueError:
        return False
    return True


def _status_messages(entry: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    status = entry.get("status") or {}
    for message in status.get("messages") or ():
        if isinstance(message, list | tuple) and len(message) == 2 and isinstance(message[1], dict):
            yield str(message[0]), message[1]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(functools.partial(f.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- the provider


class ComfyUIProvider(HttpMediaProvider):
    """One ComfyUI server (or AI Server ComfyUI agent). See the module docs for the flow.

    It reuses :class:`~.media_common.HttpMediaProvider` for what every HTTP provider
    shares (base URL and key handling, error mapping, redaction, probing, deadlines,
    size-capped downloads measured from their headers).
    """

    options_class = ComfyUIOptions

    def __init__(self, ctx: ProviderContext, *, type_name: str = TYPE_NAME,
                 default_base_url: str | None = DEFAULT_BASE_URL) -> None:
        super().__init__(ctx, type_name=type_name, default_base_url=default_base_url)
        self.options: ComfyUIOptions
        self.workflows: dict[str, WorkflowSpec] = {w.name: w for w in _registered_workflows(ctx)}
        if self.options.workflows_dir:
            folder = ctx.config.resolve_path(self.options.workflows_dir)
            label = f"providers[{self.name}].workflows_dir"
            for spec in wf.load_workflows_dir(folder, self.workflows, label=label):
                self.workflows[spec.name] = spec
        #: class_type -> its /object_info entry (None: the server does not have it).
        self._object_info: dict[str, dict[str, Any] | None] = {}

    # ----------------------------------------------------------------- HTTP details

    def error_message(self, data: Any) -> str | None:
        """ComfyUI's ``/prompt`` errors: ``{"error": {...} | "...", "node_errors": {...}}``, node messages included."""
        if not isinstance(data, dict) or "error" not in data:
            return super().error_message(data)
        err = data.get("error")
        parts: list[str] = []
        if isinstance(err, dict):
            parts.append(str(err.get("message") or err.get("type") or "error"))
            if err.get("details"):
                parts.append(str(err["details"]))
        elif err:
            parts.append(str(err))
        node_errors = data.get("node_errors")
        if isinstance(node_errors, dict):
            for node_id, node in node_errors.items():
                if not isinstance(node, dict):
                    continue
                for e in node.get("errors") or ():
                    if isinstance(e, dict):
                        text = ": ".join(str(x) for x in (e.get("message"), e.get("details")) if x)
                        parts.append(f"node {node_id} ({node.get('class_type', '?')}): {text}")
        return "; ".join(parts) or None

    def probe_url(self) -> str:
        return self.url("/system_stats")

    async def probe(self) -> None:
        """Healthy when ``GET /system_stats`` (or the ``heartbeat_url``) answers 200 with JSON."""
        if self.heartbeat_url:
            await super().probe()
            return
        data = await self.request_json("GET", self.probe_url())
        if not isinstance(data, dict):
            raise self.malformed("/system_stats did not answer with a JSON object")

    def _ws_url(self, client_id: str) -> str:
        query = {"clientId": client_id}
        if self._key:
            query["apiKey"] = self._key
        return f"{self.url('/ws')}?{urlencode(query)}"

    async def _get_json(self, path: str) -> Any:
        return await self.request_json("GET", self.url(path))

    async def _post_json(self, path: str, body: Any) -> Any:
        async with self.open("POST", self.url(path), json_body=body) as resp:
            text = await resp.text(errors="replace")
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise self.malformed(f"{path} did not answer with JSON") from None

    # ----------------------------------------------------------------- the run

    async def generate(self, task: GenerationTask, progress: ProgressReporter) -> list[GeneratedOutput]:
        """Run ``task`` as a workflow and return its outputs (files written into ``task.workdir``)."""
        if task.task not in GENERATION_TASKS:
            raise self.error(f"the comfyui type does not run {task.task!r}", status=400)
        try:
            spec = wf.select_workflow(self.workflows, task.task, task.model,
                                      model_workflows=self.options.model_workflows,
                                      default_workflows=self.options.default_workflows)
            needed = wf.placeholders(spec.template)
            # Render once without files to report missing values before anything is uploaded.
            dummy_files = {f: f"<{f}>" for f in wf.FILE_VARIABLES if f in task.inputs}
            wf.render(spec.template, wf.build_variables(task, spec, files=dummy_files), workflow=spec.name)
        except wf.WorkflowError as exc:
            raise self.error(str(exc), status=400) from None
        async with self.deadline(task.timeout, "the ComfyUI prompt"):
            # On timeout _run is cancelled first, which abandons the prompt on the server.
            return await self._run(task, spec, needed, progress)

    async def _run(self, task: GenerationTask, spec: WorkflowSpec, needed: set[str],
                   progress: ProgressReporter) -> list[GeneratedOutput]:
        try:
            # Placeholder names for the files first: the graph is checked before anything is uploaded.
            variables = wf.build_variables(task, spec, files={f: f"<{f}>" for f in wf.FILE_VARIABLES})
            if self.options.validate_workflows:
                await self._validate(wf.render(spec.template, variables, workflow=spec.name), spec.name)
            for field in wf.FILE_VARIABLES:
                if field in needed and field in task.inputs:
                    variables[field] = await self._upload(task.inputs[field])
            prompt = wf.render(spec.template, variables, workflow=spec.name)
        except wf.WorkflowError as exc:
            raise self.error(str(exc), status=400) from None

        client_id = uuid.uuid4().hex
        ws = await self._open_ws(client_id) if self.options.use_websocket else None
        prompt_id: str | None = None
        finished = False
        try:
            prompt_id = await self._submit(prompt, client_id)
            log.debug("comfyui prompt queued", provider=self.name, prompt_id=prompt_id, workflow=spec.name)
            await self._report(progress, 0.0, "Queued")
            entry = await self._wait(prompt_id, ws, prompt, progress)
            finished = True
            return await self._collect(task, spec, entry)
        except PromptFailed:
            raise  # the server has settled the prompt: nothing to take back
        except BaseException:
            if prompt_id is not None and not finished:
                # Timed out, cancelled or lost track of it: take the prompt off the GPU (and out of
                # the queue, so a retry elsewhere does not run twice); never wait long for that.
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.shield(asyncio.wait_for(self._abandon(prompt_id), _CLEANUP_TIMEOUT))
            raise
        finally:
            if ws is not None:
                with contextlib.suppress(Exception):
                    await ws.close()
            if prompt_id is not None and self.options.delete_history:
                # Shielded so a cancellation arriving now still lets the delete reach the server.
                with contextlib.suppress(Exception):
                    await asyncio.shield(asyncio.wait_for(self._delete_history(prompt_id), _CLEANUP_TIMEOUT))

    async def _report(self, progress: ProgressReporter, value: float | None, status: str) -> None:
        try:
            await progress(value, status)
        except Exception as exc:  # a broken progress sink must not fail the generation
            log.warning("progress reporter failed", provider=self.name, error=repr(exc))

    # ----------------------------------------------------------------- steps

    async def _upload(self, item: MediaInput) -> str:
        """``POST /upload/image``; returns the name to put into ``LoadImage``/``LoadAudio``.

        Files are named by content hash, so a retried or repeated input reuses its file
        instead of piling up copies in ComfyUI's input folder.
        """
        ext = item.extension or ("wav" if item.field == "audio" else "png")
        digest = await asyncio.to_thread(_file_sha256, item.path)
        filename = f"{item.field}_{digest[:16]}.{ext}"
        url = self.url("/upload/image")
        try:
            source = item.path.open("rb")
        except OSError as exc:
            raise self.error(f"cannot read the {item.field!r} input: {exc.strerror or exc}") from None
        with source:
            form = aiohttp.FormData()
            form.add_field("image", source, filename=filename, content_type=item.content_type)
            form.add_field("type", "input")
            form.add_field("overwrite", "true")
            if self.options.upload_subfolder:
                form.add_field("subfolder", self.options.upload_subfolder)
            async with self.open("POST", url, data=form) as resp:
                text = await resp.text(errors="replace")
        try:
            data = json.loads(text)
            name = str(data["name"])
        except (ValueError, KeyError, TypeError):
            raise self.malformed("/upload/image did not answer with {name, subfolder, type}") from None
        subfolder = str(data.get("subfolder") or "")
        kind = str(data.get("type") or "input")
        ref = f"{subfolder}/{name}" if subfolder else name
        # LoadImage reads from the input folder; files elsewhere are named "x.png [temp]".
        return ref if kind == "input" else f"{ref} [{kind}]"

    async def _node_info(self, classes: set[str], refresh: bool = False) -> dict[str, Any]:
        for cls in sorted(classes):
            if refresh or cls not in self._object_info:
                data = await self._get_json(f"/object_info/{quote(cls, safe='')}")
                info = data.get(cls) if isinstance(data, dict) else None
                self._object_info[cls] = info if isinstance(info, dict) else None
        return {cls: self._object_info.get(cls) for cls in classes}

    async def _validate(self, prompt: Mapping[str, Any], workflow: str) -> None:
        """Raise a 400 naming what the server lacks; cached answers are checked again once first."""
        classes = {str(node.get("class_type")) for node in prompt.values()}
        fresh = classes - self._object_info.keys()
        problems = wf.check_prompt(prompt, await self._node_info(classes))
        if problems and fresh != classes:
            # Some answers came from the cache: the server may have gained the model since.
            problems = wf.check_prompt(prompt, await self._node_info(classes, refresh=True))
        if problems:
            raise self.error(f"workflow {workflow!r} cannot run on this ComfyUI server: " + "; ".join(problems),
                             status=400)

    async def _open_ws(self, client_id: str) -> aiohttp.ClientWebSocketResponse | None:
        """The websocket, or ``None`` (then /history polling alone) when the server refuses it."""
        try:
            return await self._http.ws_connect(self._ws_url(client_id), headers=self.headers(), heartbeat=30.0,
                                               timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                                               max_msg_size=0)
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise self.error(f"the websocket refused the credentials (HTTP {exc.status}); "
                                 "check the provider's api_key", status=exc.status) from None
            log.warning("comfyui websocket unavailable; polling /history only",
                        provider=self.name, status=exc.status)
            return None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self.transport_error(exc) from None

    async def _submit(self, prompt: dict[str, Any], client_id: str) -> str:
        wanted = str(uuid.uuid4())
        # prompt_id is honoured by newer builds only; the answer's id is the one to use.
        data = await self._post_json("/prompt", {"prompt": prompt, "client_id": client_id, "prompt_id": wanted,
                                                 "extra_data": {}})
        if not isinstance(data, dict) or not data.get("prompt_id"):
            raise self.malformed("/prompt did not answer with a prompt_id")
        node_errors = data.get("node_errors")
        if node_errors:  # accepted with some output nodes dropped: say so, as ComfyUI prints it
            log.warning("comfyui dropped invalid output nodes", provider=self.name, node_errors=node_errors)
        return str(data["prompt_id"])

    async def _history(self, prompt_id: str) -> dict[str, Any] | None:
        data = await self._get_json(f"/history/{quote(prompt_id, safe='')}")
        if not isinstance(data, dict):
            raise self.malformed("/history did not answer with an object")
        entry = data.get(prompt_id)
        return entry if isinstance(entry, dict) else None

    def _outcome(self, entry: Mapping[str, Any]) -> bool:
        """True when the entry says the prompt succeeded; raises when it failed; False while unfinished."""
        status = entry.get("status") or {}
        status_str = status.get("status_str")
        if status_str == "error":
            for event, data in _status_messages(entry):
                if event == "execution_error":
                    raise self._node_error(data)
            for event, data in _status_messages(entry):
                if event == "execution_interrupted":
                    raise self._interrupted(data)
            raise PromptFailed(self._text("the prompt failed without an error message"), provider=self.name)
        if status.get("completed") or status_str == "success":
            return True
        # Builds before the status field wrote history only once a prompt had finished.
        return not status and bool(entry.get("outputs"))

    def _text(self, message: str) -> str:
        """``message`` as :meth:`error` words it: provider name first, key scrubbed, length capped."""
        return f"{self.name}: {clip(self.redact(message))}"

    def _node_error(self, data: Mapping[str, Any]) -> NodeExecutionError:
        node_id, node_type = str(data.get("node_id", "?")), str(data.get("node_type", "?"))
        kind = str(data.get("exception_type") or "")
        message = str(data.get("exception_message") or "no message").strip()
        # Out of memory depends on what else the GPU holds: another try (or server) may succeed.
        oom = "OutOfMemory" in kind or "out of memory" in message.lower()
        label = f"{kind.rsplit('.', 1)[-1]}: " if kind else ""
        return NodeExecutionError(self._text(f"node {node_id} ({node_type}) failed: {label}{message}"),
                                  provider=self.name, node_id=node_id, node_type=node_type,
                                  exception_message=message, retryable=oom)

    def _interrupted(self, data: Mapping[str, Any]) -> PromptInterrupted:
        node = f" at node {data['node_id']} ({data.get('node_type', '?')})" if data.get("node_id") else ""
        return PromptInterrupted(self._text(f"the prompt was interrupted on the ComfyUI server{node}"),
                                 provider=self.name, retryable=True)

    async def _wait(self, prompt_id: str, ws: aiohttp.ClientWebSocketResponse | None, prompt: Mapping[str, Any],
                    progress: ProgressReporter) -> dict[str, Any]:
        """Follow the websocket for progress while polling ``/history``, which alone decides the outcome."""
        loop = asyncio.get_running_loop()
        interval = self.options.history_poll_interval
        next_poll = loop.time() + interval
        hint: tuple[str, dict[str, Any], float] | None = None  # (event, data, when) of a terminal ws event
        while True:
            now = loop.time()
            if now >= next_poll:
                entry = await self._history(prompt_id)
                if entry is not None and self._outcome(entry):
                    return entry
                if hint is not None and now - hint[2] > _HINT_GRACE:
                    if hint[0] == "execution_error":
                        raise self._node_error(hint[1])
                    if hint[0] == "execution_interrupted":
                        raise self._interrupted(hint[1])
                next_poll = loop.time() + (_FAST_POLL if hint is not None else interval)
                continue
            if ws is None or ws.closed:
                await asyncio.sleep(next_poll - now)
                continue
            try:
                msg = await ws.receive(timeout=next_poll - now)
            except TimeoutError:
                continue
            if msg.type == aiohttp.WSMsgType.TEXT:
                event, data = self._parse_event(msg.data, prompt_id)
                if event is None:
                    continue
                if event in ("execution_success", "execution_error", "execution_interrupted") or (
                        event == "executing" and data.get("node") is None):
                    if hint is None or event != "executing":
                        hint = (event, data, loop.time())
                    next_poll = loop.time()  # ask history now
                else:
                    await self._on_event(event, data, prompt, progress)
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                              aiohttp.WSMsgType.ERROR):
                log.info("comfyui websocket closed; polling /history", provider=self.name, prompt_id=prompt_id)
                ws = None
            # Binary frames are previews (type 1) or SaveImageWebsocket images: not needed.

    @staticmethod
    def _parse_event(text: str, prompt_id: str) -> tuple[str | None, dict[str, Any]]:
        try:
            message = json.loads(text)
        except ValueError:
            return None, {}
        if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
            return None, {}
        data = message["data"]
        if data.get("prompt_id") != prompt_id:
            return None, data  # another prompt's event, or the broadcast queue status
        return str(message.get("type")), data

    async def _on_event(self, event: str, data: Mapping[str, Any], prompt: Mapping[str, Any],
                        progress: ProgressReporter) -> None:
        if event == "execution_start":
            await self._report(progress, 0.0, "Started")
        elif event == "executing" and data.get("node") is not None:
            node = str(data["node"])
            cls = (prompt.get(node) or {}).get("class_type", "node")
            await self._report(progress, None, f"Running {cls} (node {node})")
        elif event == "progress":
            value, maximum = data.get("value"), data.get("max")
            if isinstance(value, int | float) and isinstance(maximum, int | float) and maximum > 0:
                node = str(data.get("node") or "")
                cls = str((prompt.get(node) or {}).get("class_type", ""))
                label = "Sampling" if "Sampler" in cls or not cls else cls
                await self._report(progress, min(1.0, value / maximum), f"{label} {value:g}/{maximum:g}")

    async def _collect(self, task: GenerationTask, spec: WorkflowSpec, entry: Mapping[str, Any]
                       ) -> list[GeneratedOutput]:
        files, texts = history_outputs(entry)
        if task.task in TEXT_TASKS:
            if not texts:
                raise self.error(f"workflow {spec.name!r} finished without a text output")
            return [GeneratedOutput(text=t) for t in texts]
        if not files:
            raise self.error(f"workflow {spec.name!r} finished without a file output")
        task.workdir.mkdir(parents=True, exist_ok=True)
        return [await self._download(ref, task.workdir) for ref in files]

    async def _download(self, ref: Mapping[str, str], workdir: Path) -> GeneratedOutput:
        name = ref["filename"]
        suffix = Path(name).suffix.lower().lstrip(".")
        url = f"{self.url('/view')}?{urlencode(ref)}"
        async with self.open("GET", url, stream=True) as resp:
            return await self.save_response(resp, workdir, stem=Path(name).stem,
                                            fallback_ext=suffix if suffix.isalnum() else None)

    # ----------------------------------------------------------------- clean-up

    async def _abandon(self, prompt_id: str) -> None:
        """Remove a pending prompt from the queue, or interrupt it if it is the one running.

        Asked first because ``/interrupt`` without a prompt id (older builds ignore
        it) stops whatever runs, possibly someone else's prompt.
        """
        queue = await self._get_json("/queue")
        running = {str(item[1]) for item in (queue or {}).get("queue_running") or () if len(item) > 1}
        pending = {str(item[1]) for item in (queue or {}).get("queue_pending") or () if len(item) > 1}
        if prompt_id in pending:
            await self._post_json("/queue", {"delete": [prompt_id]})
        if prompt_id in running:
            await self._post_json("/interrupt", {"prompt_id": prompt_id})
        log.info("comfyui prompt abandoned", provider=self.name, prompt_id=prompt_id,
                 was_running=prompt_id in running, was_pending=prompt_id in pending)

    async def _delete_history(self, prompt_id: str) -> None:
        await self._post_json("/history", {"delete": [prompt_id]})

    async def queue_remaining(self) -> int:
        """How many prompts the server has queued or running (``GET /prompt``), for balancing."""
        data = await self._get_json("/prompt")
        return int(((data or {}).get("exec_info") or {}).get("queue_remaining") or 0)

    async def aclose(self) -> None:
        """Nothing to release: the HTTP session is the app's, websockets close after each run."""


def _registered_workflows(ctx: ProviderContext) -> list[WorkflowSpec]:
    """The app's registered workflows when the context carries them, else the built-in ones.

    ``ProviderContext`` has no registry today; when core passes one (``ctx.registry``
    or ``ctx.workflows``), workflows other plugins registered are used too.
    """
    registry = getattr(ctx, "registry", None)
    found = getattr(registry, "workflows", None) if registry is not None else getattr(ctx, "workflows", None)
    if found is None:
        return list(wf.builtin_workflows())
    items = found.values() if isinstance(found, Mapping) else found
    return [w for w in items if isinstance(w, WorkflowSpec)]


# --------------------------------------------------------------------------- hooks


@hookimpl
def register_media_providers(register: Callable[[MediaProviderType], None]) -> None:
    """Register the ``comfyui`` media provider type with its model catalog."""
    register(MediaProviderType(
        name=TYPE_NAME,
        factory=functools.partial(ComfyUIProvider, type_name=TYPE_NAME, default_base_url=DEFAULT_BASE_URL),
        tasks=frozenset(GENERATION_TASKS),
        options=ComfyUIOptions,
        description="ComfyUI (or the AI Server ComfyUI agent): every generation task as an API-format workflow",
        default_base_url=DEFAULT_BASE_URL,
        api_models=wf.api_models(),
        model_tasks=wf.model_tasks(),
    ))


@hookimpl
def register_workflows(register: Callable[[WorkflowSpec], None]) -> None:
    """Register the built-in workflow templates shipped in ``data/comfyui/workflows``."""
    for spec in wf.builtin_workflows():
        register(spec)
