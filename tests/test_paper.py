"""fixed_head/paper.py: the paper's BERT reads Google's released WordPiece vocabulary."""

from fixed_head import paper


def test_bert_vocabulary_is_the_released_wordpiece_one():
  assert paper.bert_config(1024, 16).vocab_size == 30_522
