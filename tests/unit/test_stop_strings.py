"""StopStringMatcher: streamed matching equals a one-shot search, nothing emitted is taken back."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmdeploy_sdk.stop_strings import StopStringMatcher


def one_shot(text: str, stop_words: list[str], include: bool) -> tuple[str, bool]:
    """The definition: stop where the first stop string ends; cut before the longest one ending there."""
    ends = [(text.find(w) + len(w), len(w)) for w in stop_words if w in text]
    if not ends:
        return text, False
    end = min(e for e, _ in ends)
    longest = max(n for e, n in ends if e == end)
    return (text[:end] if include else text[: end - longest]), True


def feed(matcher: StopStringMatcher, chunks: list[str]) -> tuple[str, bool, list[str]]:
    pieces, stopped = [], False
    for c in chunks:
        piece, stopped = matcher.update(c)
        pieces.append(piece)
    if not stopped:
        pieces.append(matcher.flush())
    return "".join(pieces), stopped, pieces


def test_no_stop_words_pass_through():
    m = StopStringMatcher([])
    assert m.update("abc") == ("abc", False)
    assert m.update("") == ("", False)
    assert m.flush() == ""
    assert m.text == "abc"


def test_stop_string_spanning_updates():
    m = StopStringMatcher(["###"])
    assert m.update("Hello #") == ("Hello ", False)
    assert m.update("#") == ("", False)
    assert m.update("# world") == ("", True)
    assert m.update("more") == ("", True)
    assert m.flush() == ""
    assert m.text == "Hello "


def test_include_stop_str():
    m = StopStringMatcher(["</s>", "END"], include_stop_str=True)
    assert feed(m, ["ab</", "s>cd"])[:2] == ("ab</s>", True)
    assert m.text == "ab</s>"


def test_held_back_prefix_released_when_it_diverges_and_at_flush():
    m = StopStringMatcher(["STOP"])
    assert m.update("go ST") == ("go ", False)
    assert m.update("ay S") == ("STay ", False)
    assert m.flush() == "S"
    assert m.text == "go STay S"


def test_first_ending_match_wins_and_longest_is_cut_on_ties():
    assert feed(StopStringMatcher(["abcd", "bc"]), ["ab", "c", "d"])[:2] == ("a", True)
    assert feed(StopStringMatcher(["bc", "abc"]), ["xab", "c"])[:2] == ("x", True)
    assert feed(StopStringMatcher(["bc", "abc"], include_stop_str=True), ["xab", "cz"])[:2] == ("xabc", True)


def test_stop_in_first_update():
    assert StopStringMatcher(["\n\n"]).update("a\n\nb") == ("a", True)


@pytest.mark.parametrize("bad", ["", None, 3])
def test_invalid_stop_word_is_named(bad):
    with pytest.raises(ValueError, match=repr(bad)):
        StopStringMatcher(["ok", bad])


def test_held_back_text_is_bounded_on_long_streams():
    m = StopStringMatcher(["<|stop|>", "\n\nUser:"])
    chunk = "some text with < and \n\n and User: but no full stop string.\n\nUs"
    for i in range(2000):
        assert m.update(chunk)[1] is False
        assert (i + 1) * len(chunk) - len(m.text) < len("\n\nUser:")
    m.flush()
    assert m.text == chunk * 2000


alphabet = "abc"
words = st.lists(st.text(alphabet, min_size=1, max_size=4), max_size=3)


@settings(max_examples=400, deadline=None)
@given(text=st.text(alphabet, max_size=30), stop_words=words, include=st.booleans(), data=st.data())
def test_random_chunking_matches_one_shot(text, stop_words, include, data):
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=10)))
    chunks = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
    expected = one_shot(text, stop_words, include)
    m = StopStringMatcher(stop_words, include)
    seen, emitted = "", ""
    for c in chunks:
        piece, stopped = m.update(c)
        seen += c
        emitted += piece
        assert expected[0].startswith(emitted)  # never emitted something later retracted
        if not stopped and stop_words:
            # Held back only what could still begin a stop string.
            assert len(seen) - len(emitted) < max(map(len, stop_words))
    if not m.stopped:
        emitted += m.flush()
    assert (emitted, m.stopped) == expected
    assert m.text == emitted
    assert feed(StopStringMatcher(stop_words, include), [text])[:2] == expected
