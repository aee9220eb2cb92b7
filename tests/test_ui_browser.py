"""The built-in web UI in a real browser: Debian's Chromium driven by Playwright.

aiport runs on a real loopback port, mounted under ``/ai/`` in a parent app (so every
browser test also checks that the UI works under a prefix), with the scripted chat
provider and a ``comfyui`` media provider pointing at the fake ComfyUI. A screenshot of
every page is saved in ``test-artifacts/screenshots/`` for people to look at.

Playwright's own browser download is never used: Chromium comes from Debian
(``apt-get install chromium``; ``scripts/setup.sh --test`` installs it).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiport.core import create_app
from aiport.core.config import Config
from fakes.comfyui_server import FakeComfyUI, png_bytes
from playwright.async_api import Browser, Page, async_playwright, expect
from wand.image import Image

CHROMIUM = Path("/usr/bin/chromium")
# The machine has no internet: without the background-networking flags Chromium keeps
# trying (and failing) to reach Google's services.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
ADMIN_SECRET = "ui-test-admin-secret-0123456789"
PREFIX = "/ai/"

needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason="Debian's chromium is not installed (/usr/bin/chromium); "
                                           "`sh scripts/setup.sh --test` installs it")

FEATURE_PAGES = ["chat", "text-to-image", "image-to-image", "image-with-mask", "image-upscale", "image-to-text",
                 "speech-to-text", "text-to-speech", "convert-audio", "scale-image", "crop-image", "watermark-image",
                 "convert-image", "scale-video", "crop-video", "watermark-video", "convert-video", "trim-video"]
ADMIN_PAGES = {"dashboard": "admin", "providers": "admin/providers", "models": "admin/models", "jobs": "admin/jobs",
               "keys": "admin/keys", "analytics": "admin/analytics"}


# --------------------------------------------------------------------------- fixtures


def ui_config(make_config: Callable[..., Config], comfy_url: str) -> Config:
    return make_config({
        "plugins": {"load": ["scripted_provider"]},
        "auth": {"admin_secret": ADMIN_SECRET, "require_api_keys": True},
        "providers": [
            {"name": "alpha", "type": "scripted", "concurrency": 4, "models": ["echo-1", "llama3.1:8b"]},
            {"name": "comfy", "type": "comfyui", "base_url": comfy_url, "history_poll_interval": 0.1},
        ],
    })


@pytest.fixture
async def comfy() -> AsyncIterator[FakeComfyUI]:
    async with FakeComfyUI() as fake:
        yield fake


@pytest.fixture
async def gateway(make_config: Callable[..., Config], comfy: FakeComfyUI) -> AsyncIterator[str]:
    """aiport under ``/ai/`` of a parent app on a loopback port; yields its URL (ending in ``/``)."""
    parent = web.Application()
    parent.add_subapp(PREFIX, create_app(ui_config(make_config, comfy.base_url), environ={}))
    server = TestServer(parent, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url(PREFIX))
    finally:
        await server.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh tab; the test fails on any uncaught script error in it."""
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    # Refused requests (a 401 while signing in) are logged by Chromium as "Failed to load
    # resource"; they are expected. Anything else logged as an error is a bug.
    tab.on("console", lambda msg: errors.append(msg.text)
           if msg.type == "error" and "Failed to load resource" not in msg.text else None)
    tab.set_default_timeout(10_000)
    yield tab
    await context.close()
    assert not errors, errors


async def admin_call(base: str, name: str, body: dict[str, Any] | None = None, token: str = ADMIN_SECRET) -> Any:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{base}api/{name}", json=body or {}, headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def new_key(base: str, name: str = "browser") -> str:
    return str((await admin_call(base, "CreateApiKey", {"Name": name}))["key"])


async def shot(tab: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await tab.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def sign_in(tab: Page, base: str, key: str) -> None:
    await tab.goto(base)
    await tab.get_by_label("API key").fill(key)
    await tab.get_by_role("button", name="Sign in", exact=True).click()
    await expect(tab.get_by_role("heading", name="Chat", exact=True)).to_be_visible()


async def admin_sign_in(tab: Page, base: str) -> None:
    await tab.goto(base + "admin")
    await tab.get_by_label("Admin secret").fill(ADMIN_SECRET)
    await tab.get_by_role("button", name="Sign in", exact=True).click()
    await expect(tab.get_by_role("heading", name="Dashboard")).to_be_visible()


# --------------------------------------------------------------------------- the tests


@needs_chromium
async def test_sign_in_and_chat_streams(gateway: str, page: Page) -> None:
    key = await new_key(gateway)
    await page.goto(gateway)
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await shot(page, "features-sign-in")

    # A wrong key: the server's own message is shown, and the field is marked invalid.
    await page.get_by_label("API key").fill("not-a-real-key-0000000000")
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await expect(page.get_by_role("alert")).to_contain_text("missing, invalid, expired or revoked")
    await expect(page.get_by_label("API key")).to_have_attribute("aria-invalid", "true")

    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await expect(page.get_by_role("heading", name="Chat", exact=True)).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('aiport.apiKey')") == key
    await expect(page.get_by_label("Model")).to_have_value("echo-1")

    # "slowstream 8" makes the provider send w0 ... w7, 50 ms apart: the answer must be
    # seen part-written before it is complete, i.e. streamed.
    await page.get_by_label("Message").fill("slowstream 8")
    await page.get_by_label("Message").press("Enter")
    answer = page.locator(".msg.assistant .body").last
    await page.wait_for_function(
        "() => { const t = document.querySelector('.msg.assistant .body')?.textContent || '';"
        " return t.includes('w1') && !t.includes('w7'); }", polling="raf")
    await expect(answer).to_have_text(re.compile(r"w0 w1 w2 w3 w4 w5 w6 w7"))
    await expect(page.locator(".msg.assistant .meta").last).to_contain_text("via alpha")

    # A second turn, answered in full by the echoing provider, joins the history.
    await page.get_by_label("Message").fill("hello from the browser")
    await page.get_by_role("button", name="Send").click()
    await expect(answer).to_have_text(re.compile("alpha says hello from the browser"))
    await expect(page.get_by_role("list", name="Saved conversations").get_by_role("button")).to_have_count(1)
    await shot(page, "features-chat-conversation")

    # The same through the queue: QueueOpenAiChatCompletion, then GetOpenAiChatStatus until done.
    await page.get_by_text("Options").click()
    await page.get_by_label("Run as a background job").check()
    await page.get_by_label("Message").fill("queued hello")
    await page.get_by_label("Message").press("Enter")
    await expect(answer).to_have_text("alpha says queued hello")

    # A conversation survives a reload (localStorage), and opens again from the history.
    await page.reload()
    await page.get_by_role("list", name="Saved conversations").get_by_role("button").first.click()
    await expect(page.locator(".msg.user")).to_have_count(3)


@needs_chromium
async def test_text_to_image_shows_thumbnails(gateway: str, page: Page) -> None:
    await sign_in(page, gateway, await new_key(gateway))
    await page.get_by_role("link", name="Text to image").click()
    await expect(page.get_by_role("heading", name="Text to image")).to_be_visible()
    await expect(page.locator("select[name=Model] option[value='sdxl-lightning']")).to_be_attached()

    # Server-side validation: an empty prompt is refused with a field error beside the field.
    await page.get_by_role("button", name="Generate").click()
    prompt = page.get_by_role("textbox", name="Prompt", exact=True)
    await expect(prompt).to_have_attribute("aria-invalid", "true")
    await expect(prompt).to_be_focused()
    await expect(page.locator(".field-error:visible")).to_have_text("'Positive Prompt' must not be empty.")

    await page.get_by_role("textbox", name="Prompt", exact=True).fill("a lighthouse at dawn")
    await page.get_by_label("Model").select_option("sdxl-lightning")
    await page.get_by_label("Size").select_option("512x512")
    await page.get_by_label("Batch").fill("2")
    await page.get_by_role("button", name="Generate").click()
    thumb = page.locator(".latest .gallery img").first
    await expect(thumb).to_be_visible()
    src = await thumb.get_attribute("src")
    assert src is not None and f"{PREFIX}variants/width=256/" in src
    await page.wait_for_function("() => { const i = document.querySelector('.latest .gallery img');"
                                 " return i && i.complete && i.naturalWidth > 0; }")
    await expect(page.locator(".history .gallery img").first).to_be_visible()
    await shot(page, "features-text-to-image-results")


@needs_chromium
async def test_mask_painted_on_the_canvas_is_sent(gateway: str, comfy: FakeComfyUI, page: Page,
                                                 tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(png_bytes(96, 64))
    await sign_in(page, gateway, await new_key(gateway))
    await page.get_by_role("link", name="Image with mask").click()
    await page.locator("input[name=Image]").set_input_files(photo)
    canvas = page.locator(".mask-editor canvas")
    await expect(canvas).to_be_visible()
    box = await canvas.bounding_box()
    assert box is not None
    # Paint a stroke across the left half of the image.
    await page.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.5)
    await page.mouse.down()
    await page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.5, steps=8)
    await page.mouse.up()
    await shot(page, "features-image-with-mask-painted")
    await page.get_by_role("textbox", name="Prompt", exact=True).fill("a red door")
    await page.get_by_role("button", name="Generate").click()
    await expect(page.locator(".latest .gallery img").first).to_be_visible()

    # What reached ComfyUI: the photo, and a mask of the photo's size, white only where painted.
    uploaded = [p for p in comfy.dirs["input"].rglob("*") if p.is_file()]
    masks = []
    for path in uploaded:
        with Image(filename=str(path)) as img:
            red = list(img.export_pixels(channel_map="R")) if (img.width, img.height) == (96, 64) else []
        if {0, 255} <= set(red):  # black and white (grey only at the brush's soft edge)
            masks.append(red)
    assert len(masks) == 1, f"no painted mask among {[p.name for p in uploaded]}"
    middle_row = masks[0][32 * 96:33 * 96]
    assert middle_row[15] == 255 and middle_row[90] == 0  # painted on the left, untouched on the right


@needs_chromium
async def test_transform_and_speech_show_input_and_output(gateway: str, page: Page, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(png_bytes(96, 64))
    await sign_in(page, gateway, await new_key(gateway))
    await page.get_by_role("link", name="Scale image").click()
    await page.locator("input[name=Image]").set_input_files(photo)
    await expect(page.locator(".input-preview img")).to_be_visible()
    await page.get_by_role("spinbutton", name="Width").fill("48")
    await page.get_by_role("button", name="Scale").click()
    preview = page.locator(".latest .preview")
    await expect(preview.get_by_text("Input: Image")).to_be_visible()
    output = preview.locator("figure").last.locator("img")
    await expect(output).to_be_visible()
    await page.wait_for_function("() => { const i = [...document.querySelectorAll('.latest .preview img')].pop();"
                                 " return i && i.complete && i.naturalWidth === 48; }")
    await shot(page, "features-scale-image-result")

    await page.get_by_role("link", name="Text to speech").click()
    await page.get_by_label("Model").select_option("espeak")
    await page.get_by_role("textbox", name="Text").fill("Hello from aiport.")
    await page.get_by_role("button", name="Speak").click()
    player = page.locator(".latest audio")
    await expect(player).to_be_visible()
    await page.wait_for_function("() => { const a = document.querySelector('.latest audio');"
                                 " return a && a.readyState >= 1 && a.duration > 0.3; }")
    await shot(page, "features-text-to-speech-result")


@needs_chromium
async def test_admin_creates_and_revokes_a_key(gateway: str, page: Page) -> None:
    await page.goto(gateway + "admin/keys")
    await expect(page.get_by_role("heading", name="Admin sign-in")).to_be_visible()
    await shot(page, "admin-sign-in")
    await page.get_by_label("Admin secret").fill(ADMIN_SECRET)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await expect(page.get_by_role("heading", name="API keys")).to_be_visible()

    await page.get_by_role("textbox", name="Name", exact=True).fill("ci robot")
    await page.get_by_label("Requests / minute").fill("60")
    await page.get_by_role("button", name="Create key").click()
    secret_box = page.get_by_label("Secret of key ci robot")
    await expect(secret_box).to_be_visible()
    secret = await secret_box.input_value()
    assert len(secret) >= 20
    await shot(page, "admin-keys-created")

    async with aiohttp.ClientSession() as http:
        ok = await http.get(f"{gateway}api/ActiveAiModels", headers={"Authorization": f"Bearer {secret}"})
        assert ok.status == 200

    await page.get_by_role("button", name="I have saved it").click()
    await expect(secret_box).to_have_count(0)
    row = page.locator("tr", has_text="ci robot")
    await expect(row.get_by_text("Active", exact=True)).to_be_visible()
    await expect(row).to_contain_text("60 rpm")
    await row.get_by_role("button", name="Revoke").click()
    await row.get_by_role("button", name="Yes, revoke").click()
    await expect(row.get_by_text("Revoked", exact=True)).to_be_visible()
    await expect(page.get_by_role("status").filter(has_text="was revoked")).to_be_visible()
    await shot(page, "admin-keys-revoked")

    async with aiohttp.ClientSession() as http:
        refused = await http.get(f"{gateway}api/ActiveAiModels", headers={"Authorization": f"Bearer {secret}"})
        assert refused.status == 401


@needs_chromium
async def test_every_page_renders(gateway: str, page: Page) -> None:
    """Each feature and admin page opens without script errors; all are screenshotted."""
    key = await new_key(gateway, "screenshots")
    # Some traffic, so the dashboard, jobs and analytics have something to show.
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
        for text in ("hello", "reject this"):
            await http.post(f"{gateway}v1/chat/completions", json={"model": "echo-1",
                                                                     "messages": [{"role": "user", "content": text}]})
        await http.post(f"{gateway}api/TextToImage", json={"PositivePrompt": "a cat", "Width": 512, "Height": 512})
        queued = await http.post(f"{gateway}api/QueueOpenAiChatCompletion",
                                 json={"Request": {"model": "echo-1",
                                                   "messages": [{"role": "user", "content": "sleep 30"}]}})
        assert queued.status == 200

    await sign_in(page, gateway, key)
    # Keyboard: on a freshly loaded page the first Tab reaches the skip link, which moves
    # the focus to the page's content.
    await page.goto(f"{gateway}#/text-to-image")
    await page.reload()
    await expect(page.locator("main h1")).to_have_text("Text to image")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.className") == "skip-link"
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.id") == "main"

    for name in FEATURE_PAGES:
        await page.goto(f"{gateway}#/{name}")
        heading = page.locator("main h1")
        await expect(heading).to_be_visible()
        await expect(page.locator(".sidebar a[aria-current=page]")).to_have_text(await heading.inner_text())
        if name != "chat":
            await expect(page.locator("main form button[type=submit]")).to_be_visible()
        await shot(page, f"features-{name}")

    await admin_sign_in(page, gateway)
    await expect(page.locator("table").first).to_contain_text("alpha")
    for name, path in ADMIN_PAGES.items():
        # Through the sidebar (the SPA's own navigation), then reloaded at its own URL.
        await page.locator(f".sidebar a[href='{path}']").click()
        await expect(page).to_have_url(gateway + path)
        await page.reload()
        await expect(page.locator("main h1")).to_be_visible()
        if name == "jobs":
            await expect(page.locator("tbody")).to_contain_text("OpenAiChatCompletion")
        elif name == "providers":
            await expect(page.locator("tbody").first).to_contain_text("alpha")
            await expect(page.locator("tbody").nth(1)).to_contain_text("comfy")
        elif name == "analytics":
            await expect(page.locator(".chart svg").first).to_contain_text("alpha")
        elif name == "models":
            await expect(page.locator("tbody").first).to_contain_text("echo-1")
        await shot(page, f"admin-{name}")

    # The dashboard's request rate counts traffic (not the console's own polling).
    await page.locator(".sidebar a[href='admin']").click()
    await expect(page.get_by_text(re.compile("^Updated"))).to_be_visible()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
        for _ in range(20):
            await http.get(f"{gateway}v1/models")
    rate = page.locator(".card", has_text="Requests / second").locator(".value")
    await expect(rate).not_to_have_text("0.00", timeout=6000)
    # Both colour schemes are styled.
    await page.emulate_media(color_scheme="dark")
    await shot(page, "admin-dashboard-dark")
    await page.goto(f"{gateway}#/chat")
    await shot(page, "features-chat-dark")


@needs_chromium
async def test_admin_providers_add_disable_and_take_offline(gateway: str, page: Page) -> None:
    await admin_sign_in(page, gateway)
    await page.get_by_role("link", name="Providers").click()
    ai_table = page.locator("section", has=page.get_by_role("heading", name="AI providers"))
    alpha = ai_table.locator("tbody tr", has_text="alpha")
    await expect(alpha.locator(".badge").last).to_have_text("Online")

    # Force the config provider offline, and back.
    await alpha.get_by_role("button", name="Take offline").click()
    await expect(alpha.get_by_text("Offline", exact=True)).to_be_visible()
    await alpha.get_by_role("button", name="Bring online").click()
    await expect(alpha.get_by_text("Online", exact=True)).to_be_visible()

    # Add one at run time (an aiport plugin type), then disable it.
    await page.get_by_text("Add a provider").click()
    await page.get_by_role("textbox", name="Name", exact=True).fill("beta")
    await page.get_by_role("textbox", name="Models").fill("echo-2, echo-3")
    await page.get_by_text("Advanced").click()
    await page.get_by_role("textbox", name="aiport plugin type").fill("scripted")
    await page.get_by_role("button", name="Add provider").click()
    await expect(page.get_by_text("Provider beta was added.")).to_be_visible()
    await expect(page.get_by_label("Enabled", exact=True)).to_be_checked()  # the form is back to its defaults
    beta = ai_table.locator("tbody tr", has_text="beta")
    await expect(beta).to_contain_text("runtime")
    await expect(beta).to_contain_text("echo-2, echo-3")
    await shot(page, "admin-providers-added")
    await beta.get_by_role("button", name="Disable").click()
    await expect(beta.get_by_text("Disabled", exact=True)).to_be_visible()

    # A bad provider: the server's field error appears beside the field.
    await page.get_by_role("textbox", name="Name", exact=True).fill("gamma")
    await page.get_by_role("button", name="Add provider").click()
    await expect(page.locator(".field-error:visible")).to_contain_text("must not be empty")


@needs_chromium
async def test_keys_are_optional_when_not_required(make_config: Callable[..., Config],
                                                   page: Page) -> None:
    config = make_config({"plugins": {"load": ["scripted_provider"]},
                          "providers": [{"name": "alpha", "type": "scripted", "models": ["echo-1"]}]})
    server = TestServer(create_app(config, environ={}), host="127.0.0.1")
    await server.start_server()
    try:
        await page.goto(str(server.make_url("/")))
        await expect(page.get_by_role("heading", name="Chat", exact=True)).to_be_visible()
        await expect(page.get_by_text("Not signed in (keys are optional)")).to_be_visible()
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("button", name="Continue without a key")).to_be_visible()
        await page.get_by_role("button", name="Continue without a key").click()
        await page.get_by_label("Message").fill("anyone")
        await page.get_by_label("Message").press("Enter")
        await expect(page.locator(".msg.assistant .body")).to_have_text(re.compile("alpha says anyone"))
        # No admin secret configured: the console says why it cannot sign in.
        await page.goto(str(server.make_url("/admin")))
        await page.get_by_label("Admin secret").fill("anything-at-all")
        await page.get_by_role("button", name="Sign in", exact=True).click()
        await expect(page.get_by_role("alert")).to_contain_text("not accepted")
    finally:
        await server.close()


@needs_chromium
async def test_admin_jobs_cancel_and_requeue(gateway: str, page: Page) -> None:
    key = await new_key(gateway)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
        queued = await http.post(f"{gateway}api/QueueOpenAiChatCompletion",
                                 json={"Request": {"model": "echo-1",
                                                   "messages": [{"role": "user", "content": "hang"}]}})
        job_id = (await queued.json())["id"]
    await admin_sign_in(page, gateway)
    await page.get_by_role("link", name="Jobs").click()
    row = page.locator("tbody tr", has=page.locator(f"th:text-is('{job_id}')"))
    await expect(row.locator(".badge")).to_have_text(re.compile("Queued|Started"))
    await row.get_by_role("button", name="Cancel").click()
    await row.get_by_role("button", name="Yes, cancel").click()
    await expect(row.locator(".badge")).to_have_text("Cancelled")
    await row.get_by_role("button", name="Requeue").click()
    await expect(row.locator(".badge")).to_have_text(re.compile("Queued|Started"))
    await row.get_by_role("button", name="Details").click()
    await expect(page.locator("tr.details pre")).to_contain_text('"hang"')
    await shot(page, "admin-jobs-details")


# --------------------------------------------------------------------------- without a browser


async def test_pages_static_files_and_cache_headers(make_client: Callable[..., Any]) -> None:
    client = await make_client()
    page = await client.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    assert page.headers["Cache-Control"] == "no-cache"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    html = await page.text()
    assert '<base href="./">' in html and "{{" not in html
    # Nothing is loaded from another site.
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    static = re.search(r'href="(ui/static/b-[0-9a-f]{12}/)app.css"', html)
    assert static is not None

    for path, base in (("/admin", "./"), ("/admin/", "../"), ("/admin/jobs", "../"), ("/admin/jobs/7", "../../")):
        resp = await client.get(path)
        assert resp.status == 200 and f'<base href="{base}">' in await resp.text(), path

    versioned = await client.get("/" + static.group(1) + "js/features.js")
    assert versioned.status == 200 and "javascript" in versioned.content_type
    assert versioned.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    etag = versioned.headers["ETag"]
    again = await client.get("/" + static.group(1) + "js/features.js", headers={"If-None-Match": etag})
    assert again.status == 304

    plain = await client.get("/ui/static/app.css")
    assert plain.status == 200 and plain.headers["Cache-Control"] == "public, max-age=300"
    old_build = await client.get("/ui/static/b-000000000000/app.css")
    assert old_build.status == 200 and old_build.headers["Cache-Control"] == "public, max-age=300"
    for bad in ("/ui/static/../index.html", "/ui/static/%2e%2e/index.html", "/ui/static/js", "/ui/static/nope.js",
                "/ui/static/"):
        resp = await client.get(bad)
        assert resp.status == 404, bad
        assert "responseStatus" in await resp.json()


async def test_every_static_reference_resolves(make_client: Callable[..., Any]) -> None:
    """Each module import and asset named in the UI exists, so no page breaks on a missing file."""
    client = await make_client()
    html = await (await client.get("/")).text()
    static = re.search(r'"(ui/static/b-[0-9a-f]{12}/)', html)
    assert static is not None
    root = Path(__file__).resolve().parent.parent / "core" / "data" / "ui" / "static"
    for js in sorted(root.glob("js/*.js")):
        for ref in re.findall(r'from "\./([\w.-]+)"', js.read_text()):
            resp = await client.get(f"/{static.group(1)}js/{ref}")
            assert resp.status == 200, f"{js.name} imports missing {ref}"
