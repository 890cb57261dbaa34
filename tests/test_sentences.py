"""Sentence splitting for BERT pre-training: pysbd on abbreviations, numbers, quotes, ellipses
and paragraphs (each case one the regex gets wrong); the regex fallback is the old rule; the
unknown-splitter error; pysbd's exponential numbered-reference regex, replaced."""

import importlib
import random
import re
import signal
import sys
import threading

import pytest

import fixed_head.data
from fixed_head.data import bert_pretraining as bp
from fixed_head.data import sentences
from fixed_head.errors import UsageError


def split_by_pysbd_only(text, expected):
  """pysbd gives ``expected``; the regex does not (so the case tests pysbd's rules)."""
  assert sentences.split_sentences(text) == expected
  assert sentences.split_sentences(text, 'regex') != expected


@pytest.mark.parametrize('text, expected', [
    ('Dr. No is a 1962 film. It stars Sean Connery.',
     ['Dr. No is a 1962 film.', 'It stars Sean Connery.']),
    ('Mr. Smith went to Washington, D.C. on Monday. He stayed a week.',
     ['Mr. Smith went to Washington, D.C. on Monday.', 'He stayed a week.']),
    ('The U.S. economy grew 3.5 percent in 2019. Growth slowed after that.',
     ['The U.S. economy grew 3.5 percent in 2019.', 'Growth slowed after that.']),
    ('Use a tool, e.g. a hammer. Then stop.', ['Use a tool, e.g. a hammer.', 'Then stop.']),
])
def test_abbreviations_end_no_sentence(text, expected):
  split_by_pysbd_only(text, expected)


@pytest.mark.parametrize('text, expected', [
    ('It cost $2.50 at 5 p.m. yesterday. Cheap!', ['It cost $2.50 at 5 p.m. yesterday.', 'Cheap!']),
    ('Pi is about 3.14159 in the U.S. too. That is all.',
     ['Pi is about 3.14159 in the U.S. too.', 'That is all.']),
    ('The temperature was 98.6 F. at noon. Then it fell.',
     ['The temperature was 98.6 F. at noon.', 'Then it fell.']),
])
def test_decimals_and_money_stay_whole(text, expected):
  split_by_pysbd_only(text, expected)


@pytest.mark.parametrize('text, expected', [
    ('"Are you coming? Now?" she asked. He said no.',
     ['"Are you coming? Now?" she asked.', 'He said no.']),
    ('She asked, "Are you coming? Or not?" He said no.',
     ['She asked, "Are you coming? Or not?"', 'He said no.']),
])
def test_question_inside_quotes_ends_no_sentence(text, expected):
  split_by_pysbd_only(text, expected)


@pytest.mark.parametrize('text, expected', [
    ('He paused... then he left. The end.', ['He paused... then he left.', 'The end.']),
    ('He waited . . . and then left. The end.', ['He waited . . . and then left.', 'The end.']),
    ('I watched Jeopardy! on TV. Why? It was fun!',
     ['I watched Jeopardy! on TV.', 'Why?', 'It was fun!']),
    ('Yahoo! is a company. Is it old? Yes.', ['Yahoo! is a company.', 'Is it old?', 'Yes.']),
])
def test_ellipses_exclamations_and_questions(text, expected):
  split_by_pysbd_only(text, expected)


def test_lines_are_paragraphs_and_sentences_are_stripped():
  text = ('  Dr. No is a film. It stars Sean Connery.  \n\n   \n\tThe U.S. is big.\r\n'
          'So is Dr. Who.\n')
  split_by_pysbd_only(text, ['Dr. No is a film.', 'It stars Sean Connery.', 'The U.S. is big.',
                             'So is Dr. Who.'])
  # A line is never joined to the next one, even without a full stop.
  assert sentences.split_sentences('A heading\nDr. No is a film') == [
      'A heading', 'Dr. No is a film']


@pytest.mark.parametrize('splitter', sentences.SPLITTERS)
@pytest.mark.parametrize('text', ['', ' ', '\n', ' \t\n\n  \r\n', '\u3000\n\u00a0'])
def test_blank_text_has_no_sentences(text, splitter):
  assert sentences.split_sentences(text, splitter) == []


@pytest.mark.parametrize('text', [
    'First one. Second?  Third!\nFourth line\n\n\u200b\nv1.2 ok',
    'Dr. No is a 1962 film. It stars Sean Connery.',
    '  He paused... then he left.\tThe end.  \n\nThe U.S. economy grew 3.5 percent.',
])
def test_regex_is_the_old_rule(text):
  """The old rule (bert_pretraining.split_sentences before pysbd), before its has_text filter."""
  old = [s.strip() for line in text.splitlines() for s in re.split(r'(?<=[.!?])\s+', line)
         if bp.has_text(s)]
  assert [s for s in sentences.split_sentences(text, 'regex') if bp.has_text(s)] == old
  assert bp.split_sentences(text, 'regex') == old
  assert sentences.split_sentences('Dr. No is a 1962 film.', 'regex') == [
      'Dr.', 'No is a 1962 film.']


def test_unknown_splitter_is_a_usage_error():
  with pytest.raises(UsageError, match=r"^data\.sentence_splitter='nltk' is not one of "
                                       r"\['pysbd', 'regex'\]"):
    sentences.split_sentences('Hi.', 'nltk')


def test_threads_get_their_own_sentences():
  """pysbd's Segmenter keeps the text it works on: threads must not share one."""
  texts = [' '.join(f'Dr. Adams wrote note {i}. It was long.' for i in range(40)),
           ' '.join(f'Mr. Brown read page {i}. He slept.' for i in range(40))]
  want = [sentences.split_sentences(t) for t in texts]
  got = [[], []]

  def split(k):
    got[k] = [sentences.split_sentences(texts[k]) for _ in range(30)]
  threads = [threading.Thread(target=split, args=(k,)) for k in (0, 1)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert got == [[want[0]] * 30, [want[1]] * 30]


def test_module_imports_without_pysbd(monkeypatch):
  monkeypatch.setitem(sys.modules, 'pysbd', None)  # `import pysbd` raises ImportError
  monkeypatch.delitem(sys.modules, 'fixed_head.data.sentences')
  monkeypatch.setattr(fixed_head.data, 'sentences', sentences)  # put back afterwards
  fresh = importlib.import_module('fixed_head.data.sentences')
  assert fresh.split_sentences('Dr. No. Hi.', 'regex') == ['Dr.', 'No.', 'Hi.']
  with pytest.raises(ImportError):
    fresh.split_sentences('Dr. No. Hi.')


def test_pysbd_ships_the_regex_that_is_replaced():
  """If a pysbd upgrade changes its regex, this says to look again; pysbd's class is untouched."""
  from pysbd.lang.english import English  # pylint: disable=import-outside-toplevel
  language = sentences._pysbd_segmenter().language_module
  assert language is sentences._pysbd_english()
  assert language.NUMBERED_REFERENCE_REGEX == sentences._NUMBERED_REFERENCE
  assert English.NUMBERED_REFERENCE_REGEX == sentences._PYSBD_NUMBERED_REFERENCE


def test_numbered_reference_regex_matches_as_pysbd_does():
  """On random short texts (where pysbd's regex is fast) both substitute the same."""
  old, new = re.compile(sentences._PYSBD_NUMBERED_REFERENCE), re.compile(
      sentences._NUMBERED_REFERENCE)
  rng = random.Random(0)
  alphabet = ['.', '∯', '[', ']', '1', '2', ',', ' ', '\r', '-', 'A', 'a', '\u0663']
  for _ in range(20_000):
    text = ''.join(rng.choice(alphabet) for _ in range(rng.randint(1, 14)))
    assert old.sub(r'∯\2\r\7', text) == new.sub(r'∯\2\r\7', text), repr(text)
  assert sentences.split_sentences('See the paper.[12, 14] Then stop.') == [
      'See the paper.[12, 14]', 'Then stop.']


def test_numbers_in_brackets_after_a_period_are_fast():
  """pysbd issue 79 (Wikipedia's Clojure article): minutes with pysbd's own regex."""
  def too_slow(*_):
    raise TimeoutError('pysbd backtracks on a bracketed run of numbers')
  previous = signal.signal(signal.SIGALRM, too_slow)
  signal.alarm(10)
  try:
    text = 'Text...[484 216 622 139 651 592 379 228 242 355 101 202 303 404 505] more.'
    assert sentences.split_sentences(text) == [text]
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
