"""opcd.quiet: exactly the known messages are dropped, from exactly their loggers; the rest stays visible.
And every entry still points at a real module and message of the installed vLLM."""
import importlib.util
import logging
import re
import warnings
from pathlib import Path

import pytest

from opcd import quiet


@pytest.fixture
def installed(monkeypatch):
    """quiet.install() on fresh logger state; filters removed afterwards."""
    monkeypatch.delenv("OPCD_SHOW_ALL_WARNINGS", raising=False)
    names = set(quiet.by_logger())
    before = {n: list(logging.getLogger(n).filters) for n in names}
    for n in names:
        logging.getLogger(n).filters = [f for f in before[n] if not isinstance(f, quiet.KnownFilter)]
    yield
    for n in names:
        logging.getLogger(n).filters = before[n]


def emitted(caplog, logger: str, msg: str, *args) -> bool:
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        logging.getLogger(logger).warning(msg, *args)
    return any(r.name == logger for r in caplog.records)


def test_known_messages_are_dropped_and_others_kept(installed, caplog):
    quiet.install()
    quiet.install()  # idempotent: one filter per logger
    layerwise = "vllm.model_executor.model_loader.reload.layerwise"
    assert sum(isinstance(f, quiet.KnownFilter) for f in logging.getLogger(layerwise).filters) == 1
    assert not emitted(caplog, layerwise, "%s: Failed to load weights", "RotaryEmbedding")
    assert not emitted(caplog, layerwise, "%s: Failed to load weights", "ParallelLMHead")
    # Another layer failing to load is a real problem: it must still show.
    assert emitted(caplog, layerwise, "%s: Failed to load weights", "QKVParallelLinear")
    worker = "vllm.v1.worker.cpu_worker"
    assert not emitted(caplog, worker, "CPU backend doesn't allow to use `torch.set_num_threads` after the thread "
                                       "binding, skip it.")
    assert emitted(caplog, worker, "Available memory on node 0 is less than desired CPU memory utilization")
    utils = "vllm.model_executor.models.utils"
    narrowing = "Attempted to load weight %s with dtype %s into parameter with dtype %s"
    assert not emitted(caplog, utils, narrowing, "norm.weight", "torch.float32", "torch.bfloat16")  # opcd's choice
    assert emitted(caplog, utils, narrowing, "norm.weight", "torch.float16", "torch.bfloat16")  # not opcd's doing
    # The same text from a logger not listed is not ours to hide.
    assert emitted(caplog, "vllm.somewhere_else", "RotaryEmbedding: Failed to load weights")


def test_switch_shows_everything(installed, caplog, monkeypatch):
    monkeypatch.setenv("OPCD_SHOW_ALL_WARNINGS", "1")
    quiet.install()
    assert emitted(caplog, "vllm.model_executor.model_loader.reload.layerwise", "RotaryEmbedding: Failed to load weights")


def test_python_warning_dropped_only_from_its_module():
    category, message, module, _ = quiet.KNOWN_WARNINGS[0]
    text = "`torch.distributed.reduce_op` is deprecated, please use `torch.distributed.ReduceOp` instead"
    assert re.search(message, text)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet.install()
        warnings.warn_explicit(text, category, "dispatcher.py", 138, module="vllm.triton_utils.dispatcher")
        warnings.warn_explicit(text, category, "mine.py", 1, module="mypackage.mine")
    assert [w.filename for w in caught] == ["mine.py"]


def _source(module: str) -> str:
    """An installed module's source with adjacent string literals joined (without importing it)."""
    package, *rest = module.split(".")
    path = Path(importlib.util.find_spec(package).origin).parent.joinpath(*rest).with_suffix(".py")
    assert path.exists(), f"{module}: no such module installed (renamed? its filter would be dead)"
    return re.sub(r'"\s*\n\s*f?"', "", path.read_text())


@pytest.mark.parametrize("known", quiet.KNOWN, ids=lambda k: k.text[:40])
def test_each_entry_matches_the_installed_library(known):
    assert known.why and known.logger.split(".")[0] in ("vllm", "ray")
    text = known.source or known.text  # as written in the source (%s placeholders)
    assert text in _source(known.logger), f"{known.logger} no longer logs {text!r}"


def test_padding_read_only_arrays_warns_nothing():
    """Rollout arrays arrive from Ray's object store read-only; padding them must not warn."""
    import numpy as np
    import torch

    from opcd.batch import pad_2d, pad_3d

    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    ids = np.array([4, 5, 6])
    a.setflags(write=False)
    ids.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = pad_3d([a, np.zeros((0, 0), np.float32)], 4, 3, -1.0, torch.float32)
        y = pad_2d([ids, []], 4, 0, torch.long)
    assert x[0, :3, :2].tolist() == a.tolist() and (x[0, 3] == -1).all() and (x[1] == -1).all()
    assert y.tolist() == [[4, 5, 6, 0], [0, 0, 0, 0]]
