"""The one text preparation: what every path that trains, evaluates or serves the model does to a text first.

Two stages:

- `clean_markup(content)`: Discord markup to plain text, the kind of text the model was trained on (Reddit
  comments). Mentions become `[NAME]` (GoEmotions' own mask), custom emoji keep their names, URLs and code go.
  The bot applies it to every message it reads, and it is what a correction stores: it depends on no model.
- `prepare(text, version)`: the model's own input normalisation, applied by training to every GoEmotions and
  community row and by `EmotionClassifier` to every text it reads, with the version recorded in the model's
  `moodring.json` (`text_preparation`). A model therefore always reads text the way it was trained to:

  1. the text as it is (every model exported before versions were recorded);
  2. Unicode emoji and common emoticons spelled out as words (their CLDR names, from the `emoji` package), so
     that "😂" reads as "face with tears of joy" instead of the tokenizer's `[UNK]`.
"""

from __future__ import annotations

import re

MODEL_MAX_CHARS = 2000  # far beyond the model's 64 tokens; keeps tokenizer work bounded
#: The versions `prepare` knows; a model that records another one was made by a newer moodring.
TEXT_PREPARATIONS = (1, 2)
LATEST_TEXT_PREPARATION = TEXT_PREPARATIONS[-1]

_CODE_BLOCK = re.compile(r"```.*?(```|$)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_URL = re.compile(r"<?https?://[^\s>]+>?", re.IGNORECASE)
_USER_OR_ROLE = re.compile(r"<@[!&]?\d+>")
_CHANNEL = re.compile(r"<#\d+>")
_CUSTOM_EMOJI = re.compile(r"<a?:(\w+):\d+>")
_TIMESTAMP = re.compile(r"<t:-?\d+(:[tTdDfFR])?>")
_SLASH_MENTION = re.compile(r"</([\w -]+):\d+>")
_EVERYONE = re.compile(r"@(everyone|here)\b")
_SPACES = re.compile(r"[ \t]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


def clean_markup(content: str, max_chars: int = MODEL_MAX_CHARS) -> str:
    """Mask mentions as `[NAME]` (GoEmotions' own mask), keep custom emoji names, drop URLs and code.

    Returns "" when nothing worth classifying is left; callers skip such messages.
    """
    text = _CODE_BLOCK.sub(" ", content)
    text = _INLINE_CODE.sub(" ", text)
    text = _URL.sub(" ", text)
    text = _USER_OR_ROLE.sub("[NAME]", text)
    text = _EVERYONE.sub("[NAME]", text)
    text = _CHANNEL.sub(" ", text)
    text = _TIMESTAMP.sub(" ", text)
    text = _SLASH_MENTION.sub(r"/\1", text)
    text = _CUSTOM_EMOJI.sub(lambda m: m.group(1).replace("_", " "), text)
    text = _BLANK_LINES.sub("\n", _SPACES.sub(" ", text)).strip()
    if not any(ch.isalnum() or ord(ch) > 0x2000 for ch in text.replace("[NAME]", "")):
        return ""  # only masks and punctuation left
    return text[:max_chars]


def prepare(text: str, version: int) -> str:
    """`text` as a model trained with text preparation `version` reads it (see the module docstring).

    Idempotent, so a text prepared twice reads the same. Raises ValueError for a version it does not know.
    """
    if version == 1:
        return text
    if version == 2:
        return _spell_emoji(_EMOTICON.sub(lambda m: _EMOJI_OF_EMOTICON[_emoticon_key(m.group(0))], text))
    raise ValueError(f"unknown text preparation {version!r}; this moodring knows {TEXT_PREPARATIONS}")


#: Common emoticons, each read as the emoji it stands for (so ":)" and "🙂" read alike). The last character may
#: repeat (":)))", "xDDD", "<333"). Keys are as typed; "xd" covers xD, XD, xd and Xd. Not "^^": on Reddit and Discord
#: "^^^" as often points up at the message above ("this ^^") as it smiles.
_EMOJI_OF_EMOTICON = {
    ":)": "🙂", ":-)": "🙂", "=)": "🙂", ":]": "🙂", "(:": "🙂",
    ":(": "🙁", ":-(": "🙁", "=(": "🙁", ":[": "🙁", "):": "🙁",
    ":D": "😀", ":-D": "😀", "=D": "😀",
    "xd": "😆",
    ":P": "😛", ":-P": "😛", ":p": "😛", ":-p": "😛",
    ";)": "😉", ";-)": "😉",
    ";P": "😜", ";p": "😜",
    ":/": "😕", ":-/": "😕", ":\\": "😕",
    ":|": "😐", ":-|": "😐",
    ":O": "😮", ":o": "😮", ":-O": "😮", ":-o": "😮",
    ":'(": "😢", ":'-(": "😢",
    ">:(": "😠",
    ":*": "😘", ":-*": "😘",
    "^_^": "😊",
    "-_-": "😑",
    "T_T": "😭", ";_;": "😭",
    "<3": "❤️", "</3": "💔",
}  # fmt: skip
# An emoticon stands alone: after the start or a space, before the end, a space or a closing mark. So "http://",
# "10:30", "f(:x)" and "a:b" keep their text.
_EMOTICON = re.compile(
    r"(?<!\S)(?:"
    + "|".join(
        f"{re.escape(key[:-1])}(?:{re.escape(key[-1])})+"
        for key in sorted(_EMOJI_OF_EMOTICON, key=len, reverse=True)
        if key != "xd"
    )
    + r"|[xX][dD]+)(?=$|\s|[.,!?])"
)
#: The skin tones in an emoji's name ("thumbs_up_medium-dark_skin_tone"): they say nothing about an emotion.
_SKIN_TONES = re.compile(r"_?(?:light|medium-light|medium|medium-dark|dark)_skin_tone")
#: Left over once the emoji around them are spelled out: variation selectors, zero-width joiners, keycap marks.
_EMOJI_JOINERS = re.compile("[\ufe0e\ufe0f\u200d\u20e3]")


def _emoticon_key(emoticon: str) -> str:
    """The table's key for a matched emoticon: every xD spelled "xd", then its last character's repeats undone."""
    key = emoticon.lower() if emoticon[0] in "xX" else emoticon
    while key not in _EMOJI_OF_EMOTICON:
        key = key[:-1]
    return key


def _spell_emoji(text: str) -> str:
    """Every Unicode emoji as its name between spaces ("😂" -> " face with tears of joy "), skin tones dropped.

    A run of the same emoji ("😂😂😂") reads as one name: repeated names would take many of the model's 64 tokens
    for no new word (and the training text has few such runs to learn a count from).
    """
    import emoji  # a 50 ms table, loaded only by the models that read emoji

    pieces, end, previous = [], 0, None
    for found in emoji.emoji_list(text):
        between = text[end : found["match_start"]]
        name = _SKIN_TONES.sub("", emoji.demojize(found["emoji"], delimiters=("", ""))).replace("_", " ").strip()
        if name != previous or between.strip():
            pieces += [between, f" {name} "]
        previous, end = name, found["match_end"]
    pieces.append(text[end:])
    return _SPACES.sub(" ", _EMOJI_JOINERS.sub("", "".join(pieces))).strip()
