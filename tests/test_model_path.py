"""Start-up checks of model.path / model.teacher_path (opcd.modeling.check_model_path): one line each,
and no hub look-up unless the value reads as a hub id and model.hub allows it."""
import shutil

import pytest

from opcd.checkpoint import write_checkpoint
from opcd.modeling import check_model_path, load_tokenizer, looks_like_hub_id


@pytest.fixture
def no_hub(monkeypatch):
    """Fails the test if the hub is asked anything."""
    import huggingface_hub

    def asked(*a, **k):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(huggingface_hub, "model_info", asked)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", asked)


def test_hub_id_shape():
    assert looks_like_hub_id("Qwen/Qwen3-1.7B") and looks_like_hub_id("models/mine")
    for not_hub in ("./models/mine", "/abs/mine", "../x/y", "a/b/c", "mine", "~/x", "a b/c"):
        assert not looks_like_hub_id(not_hub), not_hub


def test_missing_absolute_or_nested_path_is_one_line(tmp_path, no_hub):
    with pytest.raises(FileNotFoundError) as e:
        check_model_path(str(tmp_path / "missing"))
    assert str(e.value) == (f"model.path={str(tmp_path / 'missing')!r} does not exist (looked for "
                            f"{tmp_path / 'missing'}); pass an HF model directory")


def test_missing_relative_path_is_not_sent_to_the_hub(tmp_path, monkeypatch, no_hub):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        check_model_path("models/mine", hub=False, what="model.teacher_path")
    assert str(e.value) == (f"model.teacher_path='models/mine' does not exist (looked for {tmp_path}/models/mine); "
                            "if it is a Hugging Face hub id, add model.hub=true to download it")


def test_hub_id_with_hub_allowed_asks_once_and_reports_in_one_line(monkeypatch):
    import huggingface_hub

    calls = []

    def offline(repo, timeout=None):
        calls.append((repo, timeout))
        raise OSError("Failed to resolve 'huggingface.co'\nmore detail")

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, f: None)
    monkeypatch.setattr(huggingface_hub, "model_info", offline)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(FileNotFoundError) as e:
        check_model_path("org/model", hub=True)
    assert calls == [("org/model", 15)]
    assert str(e.value) == ("model.path='org/model' is not a local directory, and the Hugging Face hub did not "
                            "confirm it (OSError: Failed to resolve 'huggingface.co'); check the id and the network "
                            "(gated models also need HF_TOKEN)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE is set"):
        check_model_path("org/model", hub=True)
    assert len(calls) == 1
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, f: "/cache/config.json")
    check_model_path("org/model", hub=True)  # downloaded before: fine, offline too


def test_model_dir_without_tokenizer_files_names_them(tmp_path, tiny_model_dir):
    d = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, d)
    (d / "tokenizer.json").unlink()
    for check in (check_model_path, load_tokenizer):
        with pytest.raises(FileNotFoundError) as e:
            check(str(d))
        assert str(e.value).startswith(f"model directory {str(d)!r} has no tokenizer files (none of "
                                       "tokenizer.json, tokenizer.model, vocab.json, vocab.txt); copy them")
    check_model_path(tiny_model_dir)  # the intact directory passes


def test_damaged_checkpoint_as_model_path_is_named(tmp_path, tiny_model_dir):
    ckpt = write_checkpoint(tmp_path, 4, {"step": 4}, {"model": {}},
                            lambda tmp: shutil.copytree(tiny_model_dir, tmp, dirs_exist_ok=True), keep=0)
    (ckpt / "deepspeed").mkdir()
    (ckpt / "deepspeed" / "optim.pt").write_text("resume state")
    ckpt = write_checkpoint(tmp_path, 5, {"step": 5}, {"model": {}},
                            lambda tmp: shutil.copytree(ckpt, tmp, dirs_exist_ok=True), keep=0)
    shutil.rmtree(ckpt / "deepspeed")  # dropped to save space (benchmarks do): the model still loads
    check_model_path(str(ckpt))
    w = ckpt / "model.safetensors"
    size = w.stat().st_size
    w.write_bytes(w.read_bytes()[: size // 2])
    with pytest.raises(ValueError) as e:
        check_model_path(str(ckpt))
    assert str(e.value) == (f"model.path={ckpt} is a damaged opcd checkpoint: model.safetensors is truncated "
                            f"({size // 2:,} of {size:,} bytes); use another checkpoints/step_<N>")
