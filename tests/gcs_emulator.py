"""A local Google Cloud Storage JSON API for tests: gcp-storage-emulator, in memory, in a
thread of the test process, with the environment that points every client at it.

  STORAGE_EMULATOR_HOST          gcsfs (etils.epath's gs://), google-cloud-storage
                                 (tensorboardX's gs:// writer)
  TENSORSTORE_GCS_HTTP_URL       TensorStore's gcs driver (Orbax's arrays)
  GOOGLE_AUTH_TOKEN_FOR_TESTING  TensorStore: a fixed bearer token instead of credentials

It grants everything; ``start(..., read_only=...)`` adds buckets whose uploads are refused
with 403, as Cloud Storage refuses an account without ``storage.objects.create``.

The emulator leaves out one header real GCS sends with every object download,
``x-goog-generation``; TensorStore reads it to version what it read (OCDBT's manifest is
read, then written conditionally) and fails with "Malformed StorageGeneration" without it.
``start`` adds it to the emulator's download handlers.
"""

from __future__ import annotations

import contextlib
import functools
import http
import logging
import os
import socket

from gcp_storage_emulator import server as emulator_server
from gcp_storage_emulator.handlers import buckets, objects

READ_ONLY: set[str] = set()  # buckets whose uploads get 403


def _with_generation(handler):
  @functools.wraps(handler)
  def wrapped(request, response, storage, *args, **kwargs):
    handler(request, response, storage, *args, **kwargs)
    if response.status.value in (200, 206) and 'object_id' in request.params:
      try:
        obj = storage.get_file_obj(request.params['bucket_name'], request.params['object_id'])
      except Exception:  # pylint: disable=broad-except
        return
      response['x-goog-generation'] = str(obj['generation'])
      response['x-goog-metageneration'] = str(obj['metageneration'])
  wrapped.patched = True
  return wrapped


def _forbidden_in_read_only_buckets(handler):
  @functools.wraps(handler)
  def wrapped(request, response, storage, *args, **kwargs):
    if request.params.get('bucket_name') in READ_ONLY:
      response.status = http.HTTPStatus.FORBIDDEN
      response.json({'error': {'code': 403, 'message': 'test@example.com does not have '
                               'storage.objects.create access to the Google Cloud Storage '
                               'object.'}})
      return
    handler(request, response, storage, *args, **kwargs)
  wrapped.patched = True
  return wrapped


def _patch_handlers() -> None:
  for _, methods in emulator_server.HANDLERS:
    for method, handler in list(methods.items()):
      if getattr(handler, 'patched', False):
        continue
      if handler in (objects.download, objects.get):
        methods[method] = _with_generation(handler)
      elif handler in (objects.insert, objects.upload_partial, objects.xml_upload):
        methods[method] = _forbidden_in_read_only_buckets(handler)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def start(bucket: str, read_only: tuple[str, ...] = ()):
  """(server, environment variables) of a fresh in-memory emulator holding ``bucket`` and
  the ``read_only`` buckets."""
  _patch_handlers()
  logging.getLogger('gcp_storage_emulator').setLevel(logging.CRITICAL)
  port = free_port()
  server = emulator_server.create_server('127.0.0.1', port, in_memory=True,
                                         default_bucket=bucket)
  server.start()
  for name in read_only:
    buckets.create_bucket(name, server._storage)  # pylint: disable=protected-access
    READ_ONLY.add(name)
  # A client that closes its connection early (a killed train.py) is no error of ours.
  httpd = server._api._httpd  # pylint: disable=protected-access
  httpd.handle_error = lambda request, address: None
  url = f'http://127.0.0.1:{port}'
  env = {'STORAGE_EMULATOR_HOST': url, 'TENSORSTORE_GCS_HTTP_URL': url,
         'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'test-token'}
  return server, env


@contextlib.contextmanager
def running(bucket: str, read_only: tuple[str, ...] = ()):
  """An emulator holding ``bucket``, with this process's environment pointed at it for the
  duration (and restored after). Yields the environment for child processes."""
  server, env = start(bucket, read_only)
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    yield dict(os.environ)
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
    server.stop()
