"""Numbers are never altered and answers are checked, not trusted.

Redaction masks a key where outside text carries it (server messages, raw bodies, labels), never by
substitution over the finished result, so a total whose digits happen to be a piece of the key still
prints exactly. Answers that cannot be right are malformed (a duplicate key, a body nested too deep)
or flagged (errors above requests, a part above its total); values read back from the history store
are validated like answers.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import fakecloud
import maas_rest_usage_stats as m

AK, SK, TOKEN = fakecloud.DEMO_AK, fakecloud.DEMO_SK, fakecloud.TEMP_TOKEN
PROPERTY = settings(deadline=None, max_examples=300)


# ----------------------------------------------------------------------------------------------
# The redactor: every piece of 8 characters, as is or escaped, and nothing else
# ----------------------------------------------------------------------------------------------

FORMS = (str, lambda t: "".join(f"\\u{ord(c):04x}" for c in t), lambda t: "".join(f"\\u{ord(c):04X}" for c in t),
         lambda t: "".join(f"%{ord(c):02X}" for c in t), lambda t: "".join(f"%{ord(c):02x}" for c in t))


def oracle_redact(text: str, secrets: tuple[str, ...]) -> str:
    """The definition, by brute force: mask every window of the text that is an 8-character piece of a
    secret in one of its forms, then write each run of masked characters as ``***``."""
    pieces = {form(s[i:i + 8]) for s in secrets for i in range(len(s) - 7) for form in FORMS}
    hidden = [False] * len(text)
    for piece in pieces:
        at = text.find(piece)
        while at >= 0:
            hidden[at:at + len(piece)] = [True] * len(piece)
            at = text.find(piece, at + 1)
    out, previous = [], False
    for char, masked in zip(text, hidden):
        if not masked:
            out.append(char)
        elif not previous:
            out.append("***")
        previous = masked
    return "".join(out)


def _fragment(draw) -> str:
    secret = draw(st.sampled_from((AK, SK, TOKEN)))
    start = draw(st.integers(0, len(secret)))
    end = draw(st.integers(start, len(secret)))
    return draw(st.sampled_from(FORMS))(secret[start:end])


TEXTS = st.lists(st.one_of(st.text(alphabet="SKfakeDemo0123456789LEAKCHECKx -{}\":,%\\u", max_size=30),
                           st.composite(_fragment)()), max_size=8).map("".join)


@PROPERTY
@given(text=TEXTS)
def test_the_redactor_masks_exactly_the_pieces_of_a_secret_in_any_form(text):
    assert m.redact(text, (AK, SK, TOKEN)) == oracle_redact(text, (AK, SK, TOKEN))


def test_a_piece_at_any_offset_of_a_long_text_is_found():
    filler = "0123456789" * 20_000
    for offset in range(0, 40):
        text = filler[:100_000 + offset] + SK[5:13] + filler
        assert m.redact(text, (SK,)) == filler[:100_000 + offset] + "***" + filler


def test_a_secret_shorter_than_a_piece_is_masked_whole():
    assert m.redact("id=abc12, again %61%62%63%31%32", ("abc12",)) == "id=***, again ***"
