"""A record's text -> sentences, as Google BERT's pre-training input wants (one real sentence
per line), so that next-sentence pairs break where sentences end.

``split_sentences(text, splitter)`` splits at newlines first (each line a paragraph), then each
line with the chosen splitter (``SPLITTERS``; config field ``data.sentence_splitter``):

- ``'pysbd'`` (the default): pysbd 0.3.4, a rule-based segmenter (the "Golden Rules" of
  pragmatic_segmenter) in pure Python that needs no download at run time. It keeps "Dr. No",
  "the U.S. economy", "e.g. a hammer", "5 p.m. yesterday", "3.14159" and '"Are you coming?" she
  asked.' whole. It was chosen over blingfire 0.1.8 (C++, a 42 MB wheel, ~19 M chars/s), which
  splits 'Dr.' | 'No is ...' and '"Are you coming?"' | 'she asked.': a BERT sentence split in
  the wrong place moves every next-sentence boundary after it, which matters more than speed.
- ``'regex'``: the old rule, a split at whitespace after '.', '!' or '?' (``(?<=[.!?])\\s+``).
  It is fast but splits "Dr. No" too. It is kept as a fallback.

Speed was measured on 2026-12-03 on one core of an "AMD EPYC" (``grep -m1 'model name'
/proc/cpuinfo``) with Python 3.11. The text was 1.0 MB of the repository's README.md and
docs/*.md, repeated: 14,724 lines, or 225 paragraphs (median 310 chars) joined into lines.
Through ``split_sentences``, pysbd did 180-215 k chars/s (wall and CPU time) and the regex
34-54 M chars/s. Texts dense in abbreviations gave 255-310 k chars/s. English Wikipedia,
assuming ~20 GB of article text (~2e10 characters, mostly ASCII), takes ~26-31 hours on one
core with pysbd, and ~0.1-0.2 hours with the regex. At 54 k chars/s (measured earlier on the
same kind of machine), it would take ~100 hours. So run pysbd in parallel over records (Beam
or Grain workers).

Known pysbd problems:
- Its time per line grows with the square of the paragraph's length: for every abbreviation
  candidate it runs one ``re.sub`` over the whole paragraph. A 100 KB paragraph of 1,500 short
  sentences takes ~7 s (14 k chars/s), and ~24 s when the sentences repeat. A 10 KB one takes
  ~0.1 s. Lines of a few KB cost little, but a record that is one very long line costs
  seconds.
- Its ``NUMBERED_REFERENCE_REGEX`` backtracks exponentially (github.com/nipunsadvilkar/pySBD
  issue 79, still open). A period before a bracketed run of numbers that is not followed by a
  capital letter, e.g. Wikipedia's Clojure article "...[484 216 622 139 651 592 379 228 242
  355] more", takes ~8x longer per number (8 numbers: ~3 s; 10: over a minute). Here that
  regex is replaced by ``_NUMBERED_REFERENCE`` (the same matches, without the nested
  ambiguity), only while pysbd's regex is the one 0.3.4 ships.
- Whitespace: it drops a line's leading whitespace and keeps each sentence's trailing
  whitespace. The sentences are stripped here. Otherwise it lost no character of any of the
  1,211 non-blank lines of README.md and docs/*.md.
- A ``Segmenter`` is not thread-safe: ``segment`` keeps its text on the object while it
  works. With two threads sharing one, 52 of 60 results were wrong (sentences lost), so each
  thread gets its own (``_pysbd_segmenter``).
"""

from __future__ import annotations

import functools
import re
import threading

from fixed_head.errors import UsageError

SPLITTERS = ('pysbd', 'regex')

_SENTENCE_END = re.compile(r'(?<=[.!?])\s+')

# pysbd 0.3.4's regex (lang/common/common.py): '\d{1,3}' repeated with all-optional separators
# splits one digit run, and one space (either '\s?'), in many ways.
_PYSBD_NUMBERED_REFERENCE = (
    r'(?<=[^\d\s])(\.|∯)((\[(\d{1,3},?\s?-?\s?)*\b\d{1,3}\])+|((\d{1,3}\s?)?\d{1,3}))(\s)'
    r'(?=[A-Z])')
# The same language: a whole digit run, then a non-empty separator matched one way only (a run
# of items with empty separators is one digit run; '\b' holds after a separator or '['). It has
# the same 7 groups, since pysbd substitutes r'∯\2\r\7'.
_SEPARATOR = r'(?:,(?:\s-?\s?|-\s?)?|\s-?\s?|-\s?)'
_NUMBERED_REFERENCE = (
    r'(?<=[^\d\s])(\.|∯)((\[((?:\d+' + _SEPARATOR + r')*)\d{1,3}\])+|((\d{1,3}\s?)?\d{1,3}))'
    r'(\s)(?=[A-Z])')


@functools.cache
def _pysbd_english():
  """pysbd's English rules, its numbered-reference regex replaced while it is 0.3.4's."""
  from pysbd.languages import Language  # pylint: disable=import-outside-toplevel

  english = Language.get_language_code('en')
  if getattr(english, 'NUMBERED_REFERENCE_REGEX', None) != _PYSBD_NUMBERED_REFERENCE:
    return english
  return type('English', (english,), {'NUMBERED_REFERENCE_REGEX': _NUMBERED_REFERENCE})


_PER_THREAD = threading.local()


def _pysbd_segmenter():
  """This thread's pysbd segmenter, made once. ``segment`` keeps its text on the segmenter,
  so threads that share one get each other's sentences."""
  segmenter = getattr(_PER_THREAD, 'pysbd', None)
  if segmenter is None:
    import pysbd  # pylint: disable=import-outside-toplevel

    segmenter = pysbd.Segmenter(language='en', clean=False)
    segmenter.language_module = _pysbd_english()
    _PER_THREAD.pysbd = segmenter
  return segmenter


def _split_line(line: str, splitter: str) -> list[str]:
  if splitter == 'pysbd':
    return _pysbd_segmenter().segment(line)
  return _SENTENCE_END.split(line)


def check_splitter(splitter: str) -> None:
  """A one-line UsageError unless ``splitter`` is one of ``SPLITTERS``."""
  if splitter not in SPLITTERS:
    raise UsageError(f'data.sentence_splitter={splitter!r} is not one of {list(SPLITTERS)} '
                     '(how TFDS text is cut into sentences); use one of those.')


def split_sentences(text: str, splitter: str = 'pysbd') -> list[str]:
  """``text`` -> its sentences, stripped: split at newlines, then each line with ``splitter``
  (one of ``SPLITTERS``). Empty ones are dropped; the caller filters further."""
  check_splitter(splitter)
  return [s for line in text.splitlines() if line.strip()
          for s in (s.strip() for s in _split_line(line, splitter)) if s]
