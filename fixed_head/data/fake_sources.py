"""Small stand-ins for the original files of the TFDS datasets the configs read.

``python prepare.py NAME --fake_sources --data_dir=DIR`` runs the real TFDS
builder of NAME (its ``_split_generators`` and ``_generate_examples``, its features, its
ArrayRecord writer) on files written here instead of the downloads, so the whole chain from
preparation to training can be checked offline in seconds, as TFDS's own builder tests do
with their dummy data. Each stand-in has the layout and format of the real source (LM1B's
tokenised news shards inside the archive's folders, MNLI's TSV files, SQuAD's JSON, a
Wikipedia XML dump compressed with bz2 and its dumpstatus.json), filled with seeded
pseudo-English, so the numbers trained on it mean nothing.

``write(name, root)`` writes one stand-in and returns ``{file name: local path}``, the file
names being those of the URLs the builder downloads; ``redirect_downloads`` answers the
builder's ``download`` and ``download_and_extract`` calls from that map and refuses any
other URL, so a builder that starts asking for another file fails loudly.
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import json
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from xml.sax import saxutils

import numpy as np

from fixed_head.errors import UsageError

SEED = 0
_ONSETS = ('b', 'c', 'd', 'f', 'g', 'h', 'l', 'm', 'n', 'p', 'r', 's', 't', 'v', 'w', 'st',
           'tr', 'br', 'pl', 'sh', 'th', 'ch')
_VOWELS = ('a', 'e', 'i', 'o', 'u', 'ea', 'ou', 'ai')
_CODAS = ('', '', 'n', 'r', 's', 't', 'l', 'nd', 'st', 'ng')
NUM_WORDS = 600


def _words(rng: np.random.Generator) -> list[str]:
  """NUM_WORDS distinct pseudo-words of one to three syllables."""
  words: dict[str, None] = {}
  while len(words) < NUM_WORDS:
    syllables = rng.integers(1, 4)
    words[''.join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                  for _ in range(syllables))] = None
  return list(words)


class _Text:
  """Seeded sentences of pseudo-words drawn with Zipf-like frequencies."""

  def __init__(self, seed: int):
    self.rng = np.random.default_rng(seed)
    self.words = _words(self.rng)
    weights = 1.0 / np.arange(1, len(self.words) + 1)
    self.p = weights / weights.sum()

  def words_of(self, low: int, high: int) -> list[str]:
    return list(self.rng.choice(self.words, size=self.rng.integers(low, high + 1), p=self.p))

  def sentence(self, low: int = 4, high: int = 18) -> str:
    words = self.words_of(low, high)
    return ' '.join([words[0].capitalize()] + words[1:]) + self.rng.choice(['.', '.', '?', '!'])

  def paragraph(self, sentences: int) -> str:
    return ' '.join(self.sentence() for _ in range(sentences))


def _tokenised(sentence: str) -> str:
  return f'{sentence[:-1]} {sentence[-1]}'  # LM1B's style: 'It rains .'


def _lm1b(root: str, text: _Text) -> dict[str, str]:
  # The archive 1-billion-word-language-modeling-benchmark-r13output.tar.gz, extracted: 100
  # training shards and 50 held-out ones of one tokenised sentence a line (3 and 1 here).
  top = os.path.join(root, 'lm1b')
  shards = {'training-monolingual.tokenized.shuffled': [f'news.en-{i:05d}-of-00100'
                                                        for i in (1, 2, 3)],
            'heldout-monolingual.tokenized.shuffled': ['news.en.heldout-00000-of-00050']}
  for folder, names in shards.items():
    directory = os.path.join(top, '1-billion-word-language-modeling-benchmark-r13output', folder)
    os.makedirs(directory)
    for name in names:
      lines = 200 if 'heldout' in name else 1000
      with open(os.path.join(directory, name), 'w', encoding='utf-8') as f:
        f.writelines(_tokenised(text.sentence()) + '\n' for _ in range(lines))
  return {'1-billion-word-language-modeling-benchmark-r13output.tar.gz': top}


MNLI_LABELS = ('entailment', 'neutral', 'contradiction')


def _mnli(root: str, text: _Text) -> dict[str, str]:
  # MNLI.zip, extracted: MNLI/train.tsv, dev_{matched,mismatched}.tsv (gold labels) and
  # test_{matched,mismatched}.tsv (none), tab-separated with a header, no quoting.
  top = os.path.join(root, 'mnli')
  os.makedirs(os.path.join(top, 'MNLI'))
  # As many as configs/bert.py's runlocal reads: train[:2000], validation_*[:500].
  sizes = {'train': 2000, 'dev_matched': 500, 'dev_mismatched': 500, 'test_matched': 100,
           'test_mismatched': 100}
  for split, rows in sizes.items():
    labelled = not split.startswith('test')
    header = ['index', 'genre', 'sentence1', 'sentence2'] + (['gold_label'] if labelled else [])
    with open(os.path.join(top, 'MNLI', f'{split}.tsv'), 'w', encoding='utf-8',
              newline='') as f:
      writer = csv.writer(f, delimiter='\t', quoting=csv.QUOTE_NONE, lineterminator='\n')
      writer.writerow(header)
      for i in range(rows):
        premise = text.sentence(6, 20)
        hypothesis = ' '.join(premise.split()[:text.rng.integers(3, 7)]) + '.'
        row = [i, 'fiction' if 'mismatched' not in split else 'letters', premise, hypothesis]
        writer.writerow(row + ([MNLI_LABELS[i % 3]] if labelled else []))
  return {'MNLI.zip': top}


def _squad(root: str, text: _Text) -> dict[str, str]:
  # train-v1.1.json and dev-v1.1.json: articles of paragraphs of questions whose answers
  # are spans of the paragraph (three gold answers per dev question, one per train one).
  os.makedirs(os.path.join(root, 'squad'))
  paths = {}
  # 2,040 and 312 questions: at least runlocal's train[:2000] and validation[:300].
  for name, articles, answers_per_question in (('train-v1.1.json', 170, 1),
                                               ('dev-v1.1.json', 26, 3)):
    data = []
    for a in range(articles):
      paragraphs = []
      for p in range(3):
        context = text.paragraph(5)
        qas = []
        for q in range(4):
          words = context.split()
          start_word = int(text.rng.integers(0, len(words) - 3))
          answer = ' '.join(words[start_word:start_word + int(text.rng.integers(1, 4))])
          start = context.index(answer, len(' '.join(words[:start_word])))
          qas.append({'id': f'{name[:3]}-{a}-{p}-{q}',
                      'question': ' '.join(text.words_of(4, 9)).capitalize() + '?',
                      'answers': [{'answer_start': start, 'text': answer}] * answers_per_question})
        paragraphs.append({'context': context, 'qas': qas})
      data.append({'title': text.words_of(1, 1)[0].capitalize(), 'paragraphs': paragraphs})
    paths[name] = os.path.join(root, 'squad', name)
    with open(paths[name], 'w', encoding='utf-8') as f:
      json.dump({'version': '1.1', 'data': data}, f)
  return paths


WIKIPEDIA_DUMP = 'enwiki-20230601-pages-articles-multistream1.xml-p1p41242.bz2'


def _wiki_page(page_id: int, title: str, wikitext: str, namespace: int = 0) -> str:
  return (f'  <page>\n    <title>{saxutils.escape(title)}</title>\n    <ns>{namespace}</ns>\n'
          f'    <id>{page_id}</id>\n    <revision>\n      <id>{1000 + page_id}</id>\n'
          '      <timestamp>2023-06-01T00:00:00Z</timestamp>\n'
          '      <contributor><username>fake</username><id>1</id></contributor>\n'
          '      <model>wikitext</model>\n      <format>text/x-wiki</format>\n'
          f'      <text bytes="{len(wikitext)}" xml:space="preserve">'
          f'{saxutils.escape(wikitext)}</text>\n      <sha1>0</sha1>\n    </revision>\n'
          '  </page>\n')


def _wikipedia(root: str, text: _Text) -> dict[str, str]:
  # dumpstatus.json, which names the dump's files, and one multistream XML part, bz2: pages
  # of wikitext with markup that the builder strips (bold, links, a template, a heading),
  # a redirect and a talk page that it skips.
  top = os.path.join(root, 'wikipedia')
  os.makedirs(top)
  pages = []
  for i in range(1, 41):
    sections = [text.paragraph(4) for _ in range(3)]
    body = (f"'''{text.words_of(1, 1)[0].capitalize()}''' {sections[0]} "
            f'[[{text.words_of(1, 1)[0]}|{text.words_of(1, 1)[0]}]] {{{{cite|x}}}}\n\n'
            f'== {text.words_of(1, 1)[0].capitalize()} ==\n{sections[1]}\n\n{sections[2]}')
    pages.append(_wiki_page(i, f'Page {i}', body))
  pages.append(_wiki_page(41, 'Page 41 redirect', '#REDIRECT [[Page 1]]'))
  pages.append(_wiki_page(42, 'Talk:Page 1', text.paragraph(2), namespace=1))
  xml = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" '
         'xml:lang="en">\n  <siteinfo>\n    <sitename>Wikipedia</sitename>\n'
         '    <dbname>enwiki</dbname>\n    <base>https://en.wikipedia.org/wiki/Main_Page</base>\n'
         '    <generator>MediaWiki 1.41</generator>\n    <case>first-letter</case>\n'
         '    <namespaces>\n      <namespace key="0" case="first-letter" />\n'
         '      <namespace key="1" case="first-letter">Talk</namespace>\n    </namespaces>\n'
         '  </siteinfo>\n' + ''.join(pages) + '</mediawiki>\n')
  dump = os.path.join(top, WIKIPEDIA_DUMP)
  with open(dump, 'wb') as f:
    f.write(bz2.compress(xml.encode('utf-8')))
  status = os.path.join(top, 'dumpstatus.json')
  with open(status, 'w', encoding='utf-8') as f:
    json.dump({'jobs': {'articlesmultistreamdump': {
        'status': 'done', 'files': {WIKIPEDIA_DUMP: {'size': os.path.getsize(dump)},
                                    'enwiki-20230601-pages-articles-multistream-index1.txt'
                                    '-p1p41242.bz2': {'size': 1}}}}}, f)
  return {'dumpstatus.json': status, WIKIPEDIA_DUMP: dump}


# TFDS name (as given to tfds.builder, before any ':version') -> its stand-in.
WRITERS: dict[str, Callable[[str, _Text], dict[str, str]]] = {
    'lm1b': _lm1b, 'glue/mnli': _mnli, 'squad': _squad, 'squad/v1.1': _squad,
    'wikipedia/20230601.en': _wikipedia}


def write(name: str, root: str, seed: int = SEED) -> dict[str, str]:
  """Writes the stand-in of dataset ``name`` under ``root``; ``{file name: local path}``."""
  writer = WRITERS.get(name.split(':')[0])
  if writer is None:
    raise UsageError(f'--fake_sources: there is no stand-in for {name!r}; it has them for '
                     f'{sorted(WRITERS)}.')
  return writer(root, _Text(seed))


def _resolve(urls: Any, sources: Mapping[str, str], asked: list[str]) -> Any:
  """``urls`` (a URL, or a dict or list of them, as builders pass) mapped to local paths;
  appends each URL's file name to ``asked``."""
  if isinstance(urls, Mapping):
    return {k: _resolve(v, sources, asked) for k, v in urls.items()}
  if isinstance(urls, (list, tuple)):
    return [_resolve(v, sources, asked) for v in urls]
  url = str(getattr(urls, 'url', urls))  # a tfds.download.Resource, or a str
  name = url.rstrip('/').rsplit('/', 1)[-1]
  if name not in sources:
    raise KeyError(f'the fake sources have no stand-in for {url} (they have {sorted(sources)})')
  asked.append(name)
  return sources[name]


@contextlib.contextmanager
def redirect_downloads(sources: Mapping[str, str]) -> Iterator[list[str]]:
  """Within the block, TFDS's DownloadManager answers ``download`` and
  ``download_and_extract`` from ``sources`` (``write``'s map) and downloads nothing. Yields
  the list of file names the builder asked for."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  asked: list[str] = []

  def answer(self, urls):
    del self
    return _resolve(urls, sources, asked)

  manager = tfds.download.DownloadManager
  saved = manager.download, manager.download_and_extract
  manager.download = manager.download_and_extract = answer
  try:
    yield asked
  finally:
    manager.download, manager.download_and_extract = saved

