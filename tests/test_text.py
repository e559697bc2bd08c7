"""`prepare_text`: Discord text made to look like the Reddit text the model learned from."""

from __future__ import annotations

import pytest

from bot.text import prepare_text, shorten


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("<@123> you are the best", "[NAME] you are the best"),
        ("<@!123> and <@&456> rock", "[NAME] and [NAME] rock"),
        ("@everyone listen up", "[NAME] listen up"),
        ("that was <:pogchamp:123456789> amazing", "that was pogchamp amazing"),
        ("<a:party_parrot:42> yay", "party parrot yay"),
        ("look https://example.com/x?y=1 lol", "look lol"),
        ("see <https://example.com> now", "see now"),
        ("fix:\n```py\nprint('hi')\n```\nplease", "fix:\nplease"),
        ("run `rm -rf` carefully", "run carefully"),
        ("meet in <#987> at <t:1700000000:R>", "meet in at"),
        ("  lots   of\t spaces  ", "lots of spaces"),
        ("😂😂", "😂😂"),
    ],
)
def test_prepare_text(content: str, expected: str) -> None:
    assert prepare_text(content) == expected


@pytest.mark.parametrize(
    "content", ["", "   ", "https://example.com", "```code only```", "<@123>", "<#1> <@2>", "!!! ..."]
)
def test_messages_left_empty_are_skipped(content: str) -> None:
    assert prepare_text(content) == ""


def test_long_messages_are_bounded() -> None:
    assert len(prepare_text("word " * 10_000)) == 2000
    assert shorten("abcdef", 4) == "abc…" and shorten("abc", 4) == "abc"
