"""docs/paper.md: present, cited by its arXiv id, its figures consistent with the code."""

import pathlib
import re
import subprocess

from fixed_head import accounting, paper

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / 'docs' / 'paper.md'


def _repo_files(*suffixes):
  """Tracked and untracked-but-not-ignored files of the repository with these suffixes."""
  listing = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard'],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout
  return [ROOT / p for p in listing.splitlines()
          if p.endswith(suffixes) and (ROOT / p).is_file()]


def test_paper_page_exists_and_cites_arxiv_id():
  text = DOC.read_text()
  assert '2002.07028' in text
  assert 'Low-Rank Bottleneck in Multi-head Attention Models' in text


def test_nothing_cites_the_old_paper_file():
  old_name = 'PAPER' + '.md'  # spelled apart so this file does not match itself
  files = _repo_files('.py', '.md')
  assert DOC in files
  offenders = [str(f.relative_to(ROOT)) for f in files if old_name in f.read_text()]
  assert not offenders, f'{old_name} is cited by {offenders}; cite docs/paper.md instead.'


def test_published_totals_round_from_the_real_vocabulary():
  text = DOC.read_text()
  short = 0
  for table, d, h, dp, published in paper.PUBLISHED_BERT_PARAMS:
    assert f'{published // 1_000_000}M' in text, (table, d, h, dp)
    real = accounting.count_params(paper.bert_config(d, h, dp, vocab_size=30_522))
    assert round(real / 1e6) == published // 1_000_000, (table, d, h, dp, real)
    stated = accounting.count_params(paper.bert_config(d, h, dp, vocab_size=30_000))
    short += round(stated / 1e6) == published // 1_000_000 - 1
  # The page says three totals come out one million short with 30,000 words.
  assert short == 3
  assert re.search(r'with 30,000 three of\s+them \(168M, 252M, 290M\)', text)


def test_relative_links_in_the_markdown_files_resolve():
  """README.md, RESULTS.md and docs/: every [text](path) and ![figure](path) in the repo exists."""
  broken = []
  for page in _repo_files('.md'):
    for target in re.findall(r'\]\(([^)\s]+)\)', page.read_text()):
      if re.match(r'[a-z]+:', target) or target.startswith('#'):
        continue  # a URL or an anchor
      if not (page.parent / target.split('#')[0]).exists():
        broken.append(f'{page.relative_to(ROOT)}: {target}')
  assert not broken, broken


def contents_line(text: str) -> str:
  """README's Contents line, made from its '## ' headings (their '### ' in brackets)."""
  link = lambda title: (f'[{title}](#' + re.sub(r'[^\w\- ]', '', title.lower()).replace(' ', '-')
                        + ')')
  sections = []  # [(## title, [### titles])]
  for line in text.splitlines():
    if line.startswith('## '):
      sections.append((line[3:].strip(), []))
    elif line.startswith('### ') and sections:
      sections[-1][1].append(line[4:].strip())
  return 'Contents: ' + ' · '.join(
      link(title) + (f' ({", ".join(map(link, subs))})' if subs else '')
      for title, subs in sections)


def test_readme_contents_line_is_made_from_its_headings():
  """The Contents line links every '## ' and '### ' heading, in the order of the page:
  `python tests/test_docs.py` writes it."""
  text = (ROOT / 'README.md').read_text()
  (contents,) = [line for line in text.splitlines() if line.startswith('Contents: ')]
  assert contents == contents_line(text), 'run `python tests/test_docs.py` to rewrite it'


def test_readme_is_a_manual_of_at_most_350_lines():
  assert len((ROOT / 'README.md').read_text().splitlines()) <= 350


def test_a_virtual_environment_in_the_clone_is_ignored_by_git():
  for path in ('.venv/bin/python', 'venv/lib/x.py'):
    done = subprocess.run(['git', 'check-ignore', '-q', path], cwd=ROOT, check=False)
    assert done.returncode == 0, f'{path} would be committed by git add -A'


def test_ci_runs_the_readmes_test_line_and_the_inner_loop_leaves_out_only_slow_tests():
  """README opens with two command lines; `.ci/run` runs the second (the tests) verbatim. The
  Tests section's inner loop is the same command with `-m "not slow"`, a marker pytest.ini
  declares (unknown markers are errors)."""
  readme = (ROOT / 'README.md').read_text()
  block = readme.split('```bash\n', 1)[1].split('```', 1)[0].splitlines()
  assert len(block) == 2 and block[1].startswith('pip install -r requirements.txt && ')
  ci = (ROOT / '.ci' / 'run').read_text().strip().splitlines()
  assert ci[-1] == block[1]
  test_line = block[1].split(' && ', 1)[1]
  assert '--durations=25' in test_line  # every CI log shows what is slow
  tests = readme.split('\n## Tests\n', 1)[1].split('\n## ', 1)[0]
  assert test_line in tests and 'python -m pytest -q -n 2 -m "not slow"' in tests
  ini = (ROOT / 'pytest.ini').read_text()
  assert '--strict-markers' in ini and '\n    slow:' in ini


if __name__ == '__main__':  # rewrites README's Contents line from its headings
  readme = ROOT / 'README.md'
  lines = readme.read_text().split('\n')
  (at,) = [i for i, line in enumerate(lines) if line.startswith('Contents: ')]
  lines[at] = contents_line('\n'.join(lines))
  readme.write_text('\n'.join(lines))
