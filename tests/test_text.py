"""The one text preparation (model/text_preparation.py): `clean_markup` makes Discord text look like the Reddit text
the model learned from, `prepare` is the model's own versioned input normalisation; training and serving apply it
alike."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import datasets
import emoji
import numpy as np
import pytest
from transformers import AutoTokenizer

from bot.text import shorten
from model import EmotionClassifier, ModelMetadata
from model.cli import format_prediction
from model.metadata import METADATA_FILE
from model.text_preparation import LATEST_TEXT_PREPARATION, clean_markup, prepare
from training.backbones import minilm_directory
from training.config import TrainArgs
from training.data import encode

#: The readings issue 24 tried in the sandbox, and what a version-2 model reads instead.
ISSUE_EXAMPLES = {
    "i'm so done with this 🙄": "i'm so done with this face with rolling eyes",
    "😂😂😂 bro": "face with tears of joy bro",
    "💀": "skull",
    "ily guys ❤️": "ily guys red heart",
    "xD that was great :)": "grinning squinting face that was great slightly smiling face",
    "<3 u": "red heart u",
    "😂😂😂 omg": "face with tears of joy omg",
    "💀💀": "skull",
}
#: No emoji, and `[UNK]` to the MiniLM tokenizer (Egyptian hieroglyphs).
UNKNOWN_CHARACTERS = "𓀀𓀁"


@pytest.fixture(scope="module")
def minilm_tokenizer():
    return AutoTokenizer.from_pretrained(minilm_directory())


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
def test_clean_markup(content: str, expected: str) -> None:
    assert clean_markup(content) == expected


@pytest.mark.parametrize(
    "content", ["", "   ", "https://example.com", "```code only```", "<@123>", "<#1> <@2>", "!!! ..."]
)
def test_messages_left_empty_are_skipped(content: str) -> None:
    assert clean_markup(content) == ""


def test_long_messages_are_bounded() -> None:
    assert len(clean_markup("word " * 10_000)) == 2000
    assert shorten("abcdef", 4) == "abc…" and shorten("abc", 4) == "abc"


@pytest.mark.parametrize("text", [*ISSUE_EXAMPLES, "lots   of\t spaces :) <3", "[NAME] ok", ""])
def test_version_1_is_the_text_as_it_is(text: str) -> None:
    assert prepare(text, 1) == text


@pytest.mark.parametrize(("text", "expected"), ISSUE_EXAMPLES.items())
def test_version_2_spells_emoji_and_emoticons_out(text: str, expected: str, minilm_tokenizer) -> None:
    assert prepare(text, 2) == expected
    assert "[UNK]" not in minilm_tokenizer.tokenize(prepare(text, 2))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":-) :( :D :P ;) :/ </3 :'( XD", "slightly smiling face slightly frowning face grinning face face with tongue "
         "winking face confused face broken heart crying face grinning squinting face"),
        ("so happy :)))", "so happy slightly smiling face"),  # a repeated last character is the same emoticon
        ("xDDD ok <333", "grinning squinting face ok red heart"),
        ("fine :(.", "fine slightly frowning face ."),
        ("😂 😂 💀😂", "face with tears of joy skull face with tears of joy"),  # only a run of one emoji is one name
        ("👍🏽👍🏿 ok 🤷🏼‍♀️", "thumbs up ok woman shrugging"),  # skin tones dropped, so the two are one run
        ("🏳️‍🌈 pride", "rainbow flag pride"),
    ],
)  # fmt: skip
def test_version_2_examples(text: str, expected: str) -> None:
    assert prepare(text, 2) == expected


@pytest.mark.parametrize(
    "text",
    [
        "see http://example.com/a:b",
        "at 10:30 or 9:00",
        "f(:x) and g(x):",
        "ratio:P note:Do it",
        "the dict a:b, c:d",
        "x <3y",
        "this ^^",  # points up at the message above as often as it smiles
        "C:/Users and D:",
    ],
)
def test_version_2_leaves_text_that_only_looks_like_an_emoticon(text: str) -> None:
    assert prepare(text, 2) == text


def test_every_emoji_reads_as_known_words_once(minilm_tokenizer) -> None:
    """Each emoji of the table, skin tones and variation selectors included, becomes words the tokenizer knows, and a
    prepared text prepared again stays the same (so the one path through the classifier never changes it twice)."""
    for character in emoji.EMOJI_DATA:
        prepared = prepare(character, 2)
        assert emoji.emoji_count(prepared) == 0, (character, prepared)
        assert "[UNK]" not in minilm_tokenizer.tokenize(prepared), (character, prepared)
        assert "skin tone" not in prepared and prepare(prepared, 2) == prepared, (character, prepared)


def test_an_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown text preparation 3"):
        prepare("hi", 3)


def test_new_trainings_record_the_latest_version_and_old_models_read_as_version_1(tmp_path: Path) -> None:
    assert TrainArgs().text_preparation == LATEST_TEXT_PREPARATION == 2
    metadata = ModelMetadata(["joy", "neutral"], [0.5, 0.5], 0.5, {}, {}, "minilm", 64)
    data = json.loads(metadata.save(tmp_path).read_text(encoding="utf-8"))
    assert data["text_preparation"] == 1
    del data["text_preparation"]  # a moodring.json written before the field existed
    (tmp_path / METADATA_FILE).write_text(json.dumps(data), encoding="utf-8")
    assert ModelMetadata.load(tmp_path).text_preparation == 1
    with pytest.raises(ValueError, match="text preparation 3 is unknown to this moodring"):
        ModelMetadata(**{**data, "text_preparation": 3})


SERVED_TEXTS = [
    "😂😂😂 bro",
    "[NAME] xD that was great :)",
    "ily guys ❤️ <3",
    "👍🏽 fine by me 🤷🏼‍♀️",
    "plain words, nothing else",
]


def test_training_and_serving_prepare_a_text_identically(tiny_model_dir: Path) -> None:
    """The same raw text becomes the same token ids through the training dataset path (`encode`, as `train` calls it
    with the recorded version) and through the classifier (what its scorer receives)."""
    classifier = EmotionClassifier.load(tiny_model_dir, backend="torch")
    metadata = classifier.metadata
    assert metadata.text_preparation == 2 == metadata.training_args["text_preparation"]
    rows = datasets.Dataset.from_list([{"text": text, "labels": [0], "id": "x"} for text in SERVED_TEXTS])
    version = metadata.text_preparation
    training_tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)  # what `train` tokenizes with
    trained = encode(rows, training_tokenizer, metadata.max_length, 1, text_preparation=version)["input_ids"]

    served: list[list[int]] = []
    score = classifier.scorer.scores

    def recording(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        served.extend(ids[mask.astype(bool)].tolist() for ids, mask in zip(input_ids, attention_mask, strict=True))
        return score(input_ids, attention_mask)

    classifier.scorer.scores = recording
    for text in SERVED_TEXTS:  # one at a time (`predict`), then as one padded batch (`predict_scores`)
        classifier.predict([text])
    assert served == list(trained)
    served.clear()
    classifier.predict_scores(SERVED_TEXTS)
    assert sorted(served) == sorted(trained)
    assert all(training_tokenizer.unk_token_id not in ids for ids in trained)


def test_a_text_of_unknown_tokens_and_punctuation_is_unreadable(tiny_classifier: EmotionClassifier) -> None:
    """Not scored and not neutral: flagged. An emoji is readable to a version-2 model, not to a version-1 one."""
    as_version_1 = EmotionClassifier(
        tiny_classifier.scorer, tiny_classifier.tokenizer, replace(tiny_classifier.metadata, text_preparation=1)
    )
    texts = [f"{UNKNOWN_CHARACTERS} !!! ...", "💀", "💀 lol", "", "?!", "\ufe0f🏽"]  # the last prepares to ""
    version_2 = tiny_classifier.predict(texts)
    version_1 = as_version_1.predict(texts)
    assert [p.unreadable for p in version_2] == [True, False, False, False, True, True]
    assert [p.unreadable for p in version_1] == [True, True, False, False, True, True]
    for prediction in [*version_2, *version_1]:
        assert bool(prediction.top) != (prediction.unreadable or not prediction.text)
        if prediction.unreadable:
            assert prediction.labels == prediction.ekman == prediction.sentiment == []
    assert "(unreadable: no words or emoji the model knows)" in format_prediction(version_2[0])
