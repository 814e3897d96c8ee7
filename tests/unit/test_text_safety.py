"""The sanitiser every display of a worker's text goes through: no control character a terminal acts on
ever comes out, and ordinary text comes out as it went in."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from gputui.text_safety import BIDI, UNSAFE, log_line, one_line, sgr_only, visible

ATTACK = "\x1b]0;PWNED-TITLE\x07\x1b[2J\x1b[HFAKE: all 4 tasks done\x1b[8m hidden"
BAD = {chr(c) for c in UNSAFE}
SGR = re.compile(r"\x1b\[[0-9;:]*m")
# Any code point, the nasty ones (controls, bidi, surrogates, escape-sequence bytes) drawn often.
nasty = st.text(
    st.one_of(
        st.characters(codec=None),
        st.sampled_from([chr(c) for c in UNSAFE[:200]] + [chr(c) for c in BIDI] + list("[]();?0123456789m\\")),
    )
)
plain = st.text(st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="".join(map(chr, BIDI))))


@given(nasty)
def test_nothing_a_terminal_acts_on_comes_out(text):
    out = visible(text)
    assert not BAD & set(out)
    out.encode("utf-8")  # a lone surrogate cannot stop a print


@given(nasty)
def test_kept_characters_are_the_only_controls_left(text):
    assert set(visible(text, keep="\n\t")) & BAD <= {"\n", "\t"}


@given(plain)
def test_printable_text_is_unchanged(text):
    assert visible(text) == text
    assert sgr_only(text) == text


@given(nasty, st.booleans())
def test_a_log_line_keeps_only_colours(text, colour):
    out = sgr_only(text, colour=colour)
    rest = SGR.sub("", out) if colour else out
    assert set(rest) & BAD <= {"\t"}


def test_the_attack_is_made_visible_or_dropped():
    assert visible(ATTACK) == "␛]0;PWNED-TITLE␇␛[2J␛[HFAKE: all 4 tasks done␛[8m hidden"
    assert sgr_only(ATTACK, colour=False) == "FAKE: all 4 tasks done hidden"
    assert sgr_only(ATTACK) == "FAKE: all 4 tasks done\x1b[8m hidden"  # SGR only: no title, no clear


def test_sequences_rich_lets_through_are_dropped_and_c1_is_shown():
    # ESC c resets the terminal, ESC # 8 fills the screen with E, 8-bit CSI clears it, DCS/APC carry payloads.
    for seq in ("\x1bc", "\x1b#8", "\x1b%G", "\x9b2J", "\x1bPq#0\x1b\\", "\x1b_Gf=1\x1b\\", "\x1b]8;;x\x07"):
        assert sgr_only(f"a{seq}b") == "ab", seq
    assert visible("a\x9bb\u202ec\x7f") == "a\\x9bb\\u202ec␡"
    assert sgr_only("\x1b[1;31mred\x1b[0m \x1b") == "\x1b[1;31mred\x1b[0m ␛"  # a lone ESC is shown


@given(nasty)
def test_one_line_is_one_line_of_nothing_a_terminal_acts_on(text):
    out = one_line(text)
    assert not BAD & set(out) and out == " ".join(out.split())  # no break, no run of spaces, no edge space
    assert one_line(out) == out


@given(nasty, st.booleans())
def test_a_log_line_is_one_line_with_colours_at_most(text, colour):
    out = log_line(text, colour=colour)
    rest = SGR.sub("", out) if colour else out
    assert set(rest) & BAD <= {"\t"}


def test_one_line_and_log_line_on_what_workers_print():
    assert one_line(None) == one_line("") == ""
    assert (
        one_line(f"  oom:\n\t{ATTACK}\x9b2J\u202e  ")
        == "oom: ␛]0;PWNED-TITLE␇␛[2J␛[HFAKE: all 4 tasks done hidden\\x9b2J\\u202e"
    )
    # What follows the last CR (a progress bar's latest state), a trailing CR or LF being the line's end.
    assert log_line("10%\r\x1b[2K\x1b[32m80%\x1b[0m\r\n", colour=True) == "\x1b[32m80%\x1b[0m"
    assert log_line("10%\r\x1b[2K\x1b[32m80%\x1b[0m", colour=False) == "80%"
    assert log_line("a\x0bb\x0cc\u2028d\te\x00", colour=False) == "a b c d\te␀"  # breaks are spaces, tabs stay
