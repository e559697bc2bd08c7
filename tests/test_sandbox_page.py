"""The sandbox page in a real browser: Playwright drives Debian's Chromium (`.ci/run` installs the `chromium`
package; Playwright's own browser download cannot work here) against the stand-in and the real `MoodringBot`.

Screenshots of each step are saved in the test's tmp_path; docs/sandbox.png is one of them. A second test opens a
page of another site (another local port) that tries to drive the sandbox, and a name rebound to it (DNS rebinding).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import discord
import pytest
from aiohttp import web
from bot_fixtures import BotFactory
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Locator, Page, async_playwright, expect
from test_bot_emotions import reacting_text

from bot.learning.corrections import PICK_CLOSEST_ID, PICK_OTHERS_ID
from bot.learning.progress_text import first_training_line
from bot.learning.retrain import RetrainStatus
from model import EmotionClassifier
from moodring.sandbox_command import furnish, post_welcome
from sandbox import DiscordStandIn
from sandbox import payloads as p

CHROMIUM = os.environ.get("MOODRING_CHROMIUM", "/usr/bin/chromium")
#: The bot answers within a second or two; a loaded 2-core machine gets more.
STEP_TIMEOUT_MS = 30_000
#: The mood alert test's clock: half past an hour.
ALERT_NOW = 1_796_000_000 - 1_796_000_000 % 3600 + 1800


async def run_command(page: Page, name: str, *, typed: bool = False, **options: str) -> None:
    """Type `/name` in the composer, pick it from the command list (or, `typed`, press Enter on the whole name, as
    a member who does not see it listed can), fill in its options and run it."""
    await page.fill("#composer", "/" + name)
    if typed:
        await page.press("#composer", "Enter")
    else:
        await page.click(f'#command-list [data-command="{name}"]')
    form = page.locator("#command-form")
    for option, value in options.items():
        field = form.locator(f'[name="{option}"]')
        if await field.evaluate("node => node.tagName") == "SELECT":
            await field.select_option(value)
        else:
            await field.fill(value)
    await form.locator('button[type="submit"]').click()
    await expect(form).to_be_hidden()


async def scroll_to_top(page: Page) -> None:
    """Scroll the message list up, as a member reading back does (and check that it did)."""
    assert await page.locator("#messages").evaluate("box => { box.scrollTop = 0; return box.scrollTop; }") == 0


async def scroll_into_view(locator: Locator, attempts: int = 5) -> None:
    """Scroll a message into view for its snapshot. The page redraws its messages on every change the bot makes, so
    the element found may be replaced while Playwright waits for it to be stable; then scroll to its successor."""
    for attempt in range(attempts):
        try:
            await locator.scroll_into_view_if_needed()
            return
        except PlaywrightError as error:
            if "not attached to the DOM" not in str(error) or attempt == attempts - 1:
                raise


def seed_old_messages(standin: DiscordStandIn, author: int, count: int) -> None:
    """`count` earlier messages in #general, as a sandbox loaded with --state has: enough to scroll."""
    world = standin.world
    for number in range(count):
        message = p.message(p.snowflake(), standin.channel_id, world.user(author), f"an earlier message, {number}")
        world.store_message(message)


async def test_a_newcomer_tries_the_bot_in_a_browser(
    discord_standin: DiscordStandIn, make_moodring_bot: BotFactory, tiny_classifier: EmotionClassifier, tmp_path: Path
) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: `apt-get install chromium` (.ci/run does) or set MOODRING_CHROMIUM")
    standin = discord_standin
    cast = furnish(standin)
    post_welcome(standin, cast)
    seed_old_messages(standin, cast.owner, 40)
    reacting, emojis = reacting_text(tiny_classifier)
    expect.set_options(timeout=STEP_TIMEOUT_MS)
    errors: list[str] = []
    failed_loads: list[str] = []  # what the browser console reports as a failed load (a 404...)
    async with make_moodring_bot() as bot, async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 860})
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on(
                "response", lambda answer: answer.status >= 400 and failed_loads.append(f"{answer.status} {answer.url}")
            )
            page.on("console", lambda line: line.type == "error" and failed_loads.append(line.text))
            step = 0

            async def snapshot(name: str) -> None:
                nonlocal step
                step += 1
                await page.screenshot(path=tmp_path / f"{step:02d}-{name}.png")

            # 1. The page opens, and the bot is online with its commands; the sandbox's welcome says what to try.
            await page.goto(standin.base_url)
            await expect(page.locator("#bot-status")).to_have_class("online")
            welcome = page.locator(".message", has=page.locator(".author", has_text="Sandbox")).first
            await expect(welcome.locator(".bot-tag")).to_have_text("SYSTEM")
            cast_names = [standin.world.users[uid]["global_name"] for uid in (cast.member, cast.admin, cast.owner)]
            for hint in ("#general", "#feelings", "You are", *cast_names, "/emotion", "/moodring"):
                await expect(welcome.locator(".content")).to_contain_text(hint)
            await page.select_option("#member", str(cast.member))
            await snapshot("opened")

            # 2. A member sends a message while scrolled up: the list jumps to it.
            await scroll_to_top(page)
            await page.fill("#composer", "What a lovely morning, thank you all!")
            await page.press("#composer", "Enter")
            await expect(page.locator(".message .content", has_text="What a lovely morning")).to_be_in_viewport()
            await snapshot("message")

            # 3. /emotion, run while scrolled up, answers in view with an embed listing 5 emotions.
            await scroll_to_top(page)
            await run_command(page, "emotion", text="I can't believe you remembered my birthday!")
            answer = page.locator(".message", has=page.locator(".used", has_text=f"{cast_names[0]} used /emotion")).last
            await expect(answer.locator(".embed .embed-field").first.locator(".line")).to_have_count(5)
            await expect(answer.locator(".embed")).to_be_in_viewport()
            await snapshot("emotion")

            # 4. The member's message, through its "Analyze emotions" menu: an answer only they can see.
            mine = page.locator(".message", has=page.locator(".content", has_text="What a lovely morning")).first
            await mine.hover()
            await mine.locator('.actions [data-menu="Analyze emotions"]').click()
            private = page.locator(".message.ephemeral", has=page.locator(".embed-title", has_text="Emotions in"))
            await expect(private.locator(".ephemeral-note")).to_have_text("👁 Only you can see this")
            await expect(private.locator(".used")).to_have_text(
                f"{cast_names[0]} used Analyze emotions"
            )  # a menu, not a /command

            # 5. A reply to that message that mentions the bot: the bot reads the message replied to.
            await mine.hover()
            await mine.locator(".actions .reply").click()
            await page.fill("#composer", "@MoodRing what do you make of this?")
            await page.press("#composer", "Enter")
            asked = page.locator(".message", has=page.locator(".mention", has_text="@MoodRing")).last
            await expect(asked.locator(".reference")).to_contain_text("What a lovely morning")
            await expect(page.locator(".message .reference", has_text="what do you make of this")).to_be_visible()
            await snapshot("reply")

            # 6. The admin turns auto-reactions on; a new message gets the bot's reaction.
            await page.select_option("#member", str(cast.admin))
            await run_command(page, "moodring channel", reactions="true")
            confirmation = page.locator(".message.ephemeral", has_text="Updated.")
            await expect(confirmation.locator(".ephemeral-note")).to_have_text("👁 Only you can see this")
            await expect(confirmation.locator(".used")).to_have_text(f"{cast_names[1]} used /moodring channel")
            await page.fill("#composer", reacting)
            await page.press("#composer", "Enter")
            reacted = page.locator(".message", has=page.locator(".content", has_text=reacting)).last
            await expect(reacted.locator(".reaction").first).to_contain_text(emojis[0])
            await snapshot("reaction")

            # 7. /mood shows the channel's chart.
            await run_command(page, "mood")
            chart = page.locator(".message .embed img.embed-image").last
            await expect(chart).to_be_visible()
            await chart.evaluate("img => img.decode()")  # rejects if the image does not load
            assert await chart.evaluate("img => img.naturalWidth") > 0
            await scroll_into_view(chart)
            await snapshot("mood")

            # 8. The admin turns corrections on; the member corrects the /emotion reading with "Not quite?", picking
            # two emotions in one list and one in the other, as many as the component allows (it keeps the picks).
            await run_command(page, "moodring corrections", action="enable")
            await expect(page.locator(".message.ephemeral", has_text="Corrections are on")).to_be_visible()
            await page.select_option("#member", str(cast.member))
            await answer.locator('button[data-custom-id="moodring:not-quite"]').click()
            picker = page.locator(".message.ephemeral", has=page.locator(f'select[data-custom-id="{PICK_CLOSEST_ID}"]'))
            closest = picker.locator(f'select[data-custom-id="{PICK_CLOSEST_ID}"]')
            others = picker.locator(f'select[data-custom-id="{PICK_OTHERS_ID}"]')
            await expect(others).to_be_visible()
            closest_labels = await closest.locator("option").evaluate_all("options => options.map(o => o.value)")
            other_labels = await others.locator("option").evaluate_all("options => options.map(o => o.value)")
            assert len(closest_labels) >= 2 and len(other_labels) >= 4, (closest_labels, other_labels)
            await closest.select_option(closest_labels[:2])
            await others.select_option(other_labels[:1])
            await expect(others).to_have_values(other_labels[:1])
            await page.evaluate("refresh()")  # a redraw, as every change the bot makes brings, keeps the picks
            await expect(closest).to_have_values(closest_labels[:2])
            await expect(others).to_have_values(other_labels[:1])
            await others.select_option(other_labels[:4])  # more than the list's max_values (3): refused
            await expect(page.locator("#notice")).to_contain_text("up to 3")
            await expect(others).to_have_values(other_labels[:1])
            await scroll_into_view(picker)
            await snapshot("correction")
            await picker.locator('button[data-custom-id="moodring:correction:send"]').click()
            thanks = page.locator(".message.ephemeral", has_text="Thank you! I'll learn from your correction")
            for label in [*closest_labels[:2], other_labels[0]]:
                await expect(thanks).to_contain_text(label)

            # 9. A plain member does not see the admin commands (Discord hides what their permissions do not allow);
            # typed anyway, the bot itself refuses.
            await page.fill("#composer", "/")
            await expect(page.locator('#command-list [data-command="emotion"]')).to_be_visible()
            await expect(page.locator('#command-list [data-command^="moodring"]')).to_have_count(0)
            await run_command(page, "moodring channel", typed=True, reactions="false")
            refusal = page.locator(".message.ephemeral", has_text="Manage Server")
            await expect(refusal).to_be_visible()
            await snapshot("refused")

            # 10. The member opts out with /privacy, picking the choice the page lists; the menu on their own message
            # then says politely that this member opted out, and reads nothing.
            await run_command(page, "privacy", choice="opt-out")
            opted_out = page.locator(".message.ephemeral", has_text="I no longer read your messages")
            await expect(opted_out.locator(".used")).to_have_text(f"{cast_names[0]} used /privacy")
            await mine.hover()
            await mine.locator('.actions [data-menu="Analyze emotions"]').click()
            refused = page.locator(".message.ephemeral", has_text="This member has opted out")
            await expect(refused.locator(".used")).to_have_text(f"{cast_names[0]} used Analyze emotions")
            await expect(refused.locator(".embed")).to_have_count(0)
            await scroll_into_view(refused)
            await snapshot("opted-out")

            # 11. The bot's status shows under its name in the sidebar, as Discord shows a bot's presence (gateway
            # opcode 3): a first training's progress (bot/app.py sets it), and nothing once it is cleared.
            training = RetrainStatus(first=True, stage="full", phase="training", epoch=1, epochs=2, step=700)
            training.total_steps, training.eta_s = 2000, 1500
            await bot.change_presence(activity=discord.CustomActivity(name=first_training_line(training)))
            activity = page.locator("#bot-activity")
            await expect(activity).to_have_text(
                "Learning: full model, epoch 1/2, step 700/2000 (35%), about 25m 00s left"
            )
            await expect(activity).to_be_visible()
            await snapshot("status")
            await bot.change_presence(activity=None)
            await expect(activity).to_be_hidden()
        finally:
            await browser.close()
    assert not errors, errors
    assert not failed_loads, failed_loads
    assert not standin.errors


#: A page of another site that tries what any page a person opens could: post as the sandbox's owner with no-cors
#: fetches, a text/plain form (whose body is JSON, the classic trick), read the world, and open both WebSockets.
ATTACK_PAGE = """<!doctype html><title>Another site</title>
<form id="form" method="post" enctype="text/plain" target="sink"><input id="field"></form>
<iframe name="sink" id="sink"></iframe>
<script>
window.attempts = (async () => {
  const query = new URLSearchParams(location.search);
  const sandbox = query.get("sandbox"), channel = query.get("channel"), owner = query.get("owner");
  const api = sandbox + "/sandbox/api/";
  const message = {channel_id: channel, author_id: owner, content: "posted by another site"};
  const command = {channel_id: channel, user_id: owner, name: "moodring retention", options: {days: 1}};
  const post = (path, body, init) => fetch(api + path, {method: "POST", body: JSON.stringify(body), ...init})
    .then(answer => `${answer.type} ${answer.status}`, error => `failed: ${error}`);
  const socket = url => new Promise(resolve => {
    const ws = new WebSocket(url);
    ws.onopen = () => { ws.close(); resolve("open"); };
    ws.onerror = () => resolve("refused");
  });
  const attempts = {};
  attempts.message = await post("messages", message, {mode: "no-cors"});
  attempts.command = await post("commands", command, {mode: "no-cors"});
  attempts.plain = await post("messages", message, {mode: "no-cors", headers: {"Content-Type": "text/plain"}});
  attempts.read = await fetch(api + "state").then(answer => `read ${answer.status}`, error => "not readable");
  attempts.page_socket = await socket(sandbox.replace("http", "ws") + "/sandbox/ws");
  attempts.gateway = await socket(sandbox.replace("http", "ws") + "/gateway?v=10&encoding=json");
  attempts.form = await new Promise(resolve => {
    const form = document.getElementById("form"), field = document.getElementById("field");
    form.action = api + "messages";
    field.name = JSON.stringify({...message, content: "posted by a form", pad: ""}).slice(0, -2);
    field.value = '"}';
    document.getElementById("sink").onload = () => resolve("submitted");
    form.submit();
  });
  return attempts;
})();
</script>"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_another_site_open_in_the_browser_cannot_drive_the_sandbox(
    discord_standin: DiscordStandIn, make_moodring_bot: BotFactory, tmp_path: Path
) -> None:
    """The page of the issue, for real: served from another local port, it changes nothing in the sandbox (no
    message, no command, no socket), cannot read it, and a name rebound to the sandbox's address gets nothing."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: `apt-get install chromium` (.ci/run does) or set MOODRING_CHROMIUM")
    standin = discord_standin
    cast = furnish(standin)
    other_site = web.Application()
    other_site.router.add_get("/", lambda request: web.Response(text=ATTACK_PAGE, content_type="text/html"))
    runner = web.AppRunner(other_site, access_log=None)
    await runner.setup()
    other_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", other_port).start()
    try:
        async with make_moodring_bot(), async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--host-resolver-rules=MAP rebound.test 127.0.0.1"],
            )
            try:
                page = await browser.new_page()
                before = (len(standin.world.messages), len(standin.world.interactions), standin.identify_count)
                query = f"sandbox={standin.base_url}&channel={standin.channel_id}&owner={cast.owner}"
                await page.goto(f"http://127.0.0.1:{other_port}/?{query}")
                attempts = await page.evaluate("window.attempts")
                await page.screenshot(path=tmp_path / "another-site.png")
                rebound = [
                    await page.goto(f"http://rebound.test:{standin.port}{path}") for path in ("/", "/sandbox/ws")
                ]
            finally:
                await browser.close()
    finally:
        await runner.cleanup()
    assert attempts["read"] == "not readable" and attempts["form"] == "submitted", attempts
    assert (attempts["page_socket"], attempts["gateway"]) == ("refused", "refused"), attempts
    after = (len(standin.world.messages), len(standin.world.interactions), standin.identify_count)
    assert after == before, f"another site changed the sandbox: {attempts}"
    assert [answer.status if answer else None for answer in rebound] == [403, 403]
    refused = {(r.method, r.path) for r in standin.guard.refusals}
    assert refused >= {("POST", "/sandbox/api/messages"), ("POST", "/sandbox/api/commands")}, refused
    assert {("GET", "/sandbox/ws"), ("GET", "/gateway"), ("GET", "/sandbox/api/state")} <= refused, refused
    assert not standin.errors


async def test_a_mood_alert_and_its_buttons_in_a_browser(
    discord_standin: DiscordStandIn, make_moodring_bot: BotFactory, tmp_path: Path
) -> None:
    """An admin sets up alerts from the page; a channel turns angry (its statistics seeded, the clock held); the
    alert shows in #mods with its role mention and buttons; a member's press is refused, the admin's acknowledge,
    snooze and less-sensitive presses edit the alert."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: `apt-get install chromium` (.ci/run does) or set MOODRING_CHROMIUM")
    standin = discord_standin
    cast = furnish(standin)
    guild, general = standin.guild_id, standin.channel_id
    mods = int(standin.world.add_text_channel(guild, "mods")["id"])
    role = int(standin.world.add_role(guild, "Moderators")["id"])
    expect.set_options(timeout=STEP_TIMEOUT_MS)
    errors: list[str] = []
    async with make_moodring_bot() as bot, async_playwright() as playwright:
        bot.clock = lambda: ALERT_NOW
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 860})
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(standin.base_url)
            await expect(page.locator("#bot-status")).to_have_class("online")
            await page.select_option("#member", str(cast.admin))
            await run_command(page, "moodring alerts", channel=str(mods), role=str(role))
            await expect(page.locator(".message.ephemeral", has_text="Mood alerts: on")).to_be_visible()

            for day in range(1, 11):  # ten calm days in #general, then an angry half hour
                for i in range(40):
                    labels = [("anger", 0.9)] if i % 10 == 0 else [("joy", 0.8)]
                    bot.store.record(guild, general, labels, at=ALERT_NOW - day * 86400 + i)
            for i in range(30):
                labels = [("anger", 0.9), ("annoyance", 0.7)] if i < 15 else [("joy", 0.8)]
                bot.store.record(guild, general, labels, at=ALERT_NOW - 1800 + i * 60)
            await bot.store.flush()
            assert await bot.get_cog("Alerts").check_alerts(ALERT_NOW) == 1

            await page.click(f'#channels [data-channel-id="{mods}"]')
            alert = page.locator(".message", has=page.locator(".embed-title", has_text="Mood alert")).last
            await expect(alert.locator(".content .mention").first).to_have_text("@Moderators")
            await expect(alert.locator(".embed")).to_contain_text("#general")
            await expect(alert.locator(".embed")).to_contain_text("(15 of 30)")
            await expect(alert.locator(".components button")).to_have_count(4)
            await page.screenshot(path=tmp_path / "alert.png")

            await page.select_option("#member", str(cast.member))  # no Manage Server: refused, politely
            await alert.locator('button[data-custom-id="moodring:alert:acknowledge"]').click()
            await expect(page.locator(".message.ephemeral", has_text="Manage Server")).to_be_visible()

            await page.select_option("#member", str(cast.admin))
            admin = standin.world.users[cast.admin]["global_name"]
            await alert.locator('button[data-custom-id="moodring:alert:acknowledge"]').click()
            await expect(alert.locator(".embed")).to_contain_text(f"Acknowledged by @{admin}")
            await expect(alert.locator('button[data-custom-id="moodring:alert:acknowledge"]')).to_be_disabled()
            await alert.locator('button[data-custom-id="moodring:alert:snooze-1"]').click()
            await expect(alert.locator(".embed")).to_contain_text("Snoozed for 1 h")
            await alert.locator('button[data-custom-id="moodring:alert:less-sensitive"]').click()
            await expect(alert.locator(".embed")).to_contain_text("Made less sensitive")
            await scroll_into_view(alert)
            await page.screenshot(path=tmp_path / "alert-handled.png")
            state = (await bot.store.alert_channels(guild))[general]
            assert state.acknowledged_at == ALERT_NOW and state.steps == 1 and state.snoozed_until == ALERT_NOW + 3600
        finally:
            await browser.close()
    assert not errors, errors
