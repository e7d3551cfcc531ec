"""User-facing conversion: SOURCE (local file / folder / hub repo id / preset) -> a transformers model folder.

The folder holds ``config.json``, ``model.safetensors`` (sharded above ``max_shard_size``), tokenizer files and a
model card recording the source, its format, the source file's SHA-256 (and hub commit), and parity figures when a
reference was given. It is written to a temporary sibling folder and moved into place only when complete.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hyena_hf.model_card import converted_model_card
from hyena_hf.output_folder import check_output, write_folder

from .checkpoint_io import ConversionError, extract_state_dict, load_checkpoint
from .convert import convert_state_dict, detect_format, read_original_config
from .presets import Preset, get_preset, merge_original_config

WEIGHT_FILES = ("weights.ckpt", "model.pt", "model.safetensors", "pytorch_model.bin", "model.ckpt")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


@dataclass
class ResolvedSource:
    weights: Path
    config_file: Path | None
    description: str
    hub_commit: str | None = None
    extra: dict = field(default_factory=dict)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _find_weights(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(folder.glob("*.ckpt")) + sorted(folder.glob("*.pt")) + sorted(folder.glob("*.safetensors"))
    if len(candidates) == 1:
        return candidates[0]
    raise ConversionError(
        f"cannot tell which file in {folder} holds the weights (found {[c.name for c in candidates]})"
    )


def download_from_hub(repo_id: str, filename: str | None) -> Path:
    """Download a hub repo's weights (+ config.json); huggingface_hub shows its own progress bars."""
    from huggingface_hub import snapshot_download

    patterns = [filename] if filename else list(WEIGHT_FILES) + ["*.ckpt", "*.pt"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns + ["config.json"]))
    except Exception as exc:  # offline, unknown repo, auth: one line naming the cause
        raise ConversionError(f"cannot download {repo_id!r} from the hub: {str(exc).splitlines()[0]}") from None


def resolve_source(source: str | None, preset: Preset | None) -> ResolvedSource:
    if source is None:
        if preset is None:
            raise ConversionError("give a SOURCE or a --preset")
        source = preset.hub_id
    path = Path(source)
    if path.is_file():
        config = path.parent / "config.json"
        return ResolvedSource(path, config if config.is_file() else None, str(path))
    if path.is_dir():
        weights = path / preset.filename if preset and (path / preset.filename).is_file() else _find_weights(path)
        config = path / "config.json"
        return ResolvedSource(weights, config if config.is_file() else None, str(path))
    if source.count("/") != 1 or source.startswith((".", "/")):
        raise ConversionError(f"SOURCE {source!r} is neither a local file or folder nor a hub repo id (owner/name)")
    folder = download_from_hub(source, preset.filename if preset else None)
    weights = folder / preset.filename if preset else _find_weights(folder)
    config = folder / "config.json"
    return ResolvedSource(weights, config if config.is_file() else None, f"hf://{source}", hub_commit=folder.name)


def _tokenizer_for(family: str, config, tokenizer_path: str | None):
    from hyena_hf.tokenization_hyenadna import HyenaDNATokenizer

    if tokenizer_path:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(tokenizer_path), None
    if family == "hyenadna":
        return HyenaDNATokenizer(model_max_length=config.max_position_embeddings), None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained("gpt2"), None
    except Exception:
        return None, (
            "GPT-2 tokenizer not reachable: add it with `AutoTokenizer.from_pretrained('gpt2')"
            ".save_pretrained(OUTPUT_DIR)` on a machine with internet (or pass --tokenizer PATH)"
        )


def parity_against_reference(model, reference: Path) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Every ``input_ids*`` / ``logits*`` pair of a safetensors reference file: the max |logits - reference| per pair,
    and the relative L2 error and argmax agreement per pair (bounded per dtype by ``PARITY_BOUNDS``)."""
    from safetensors.torch import load_file

    from hyena_hf.precision import logits_agreement

    tensors = load_file(str(reference))
    max_abs, agreement = {}, {}
    vocab = model.config.vocab_size
    for key in sorted(k for k in tensors if k.startswith("input_ids")):
        suffix = key[len("input_ids") :]
        target = tensors.get("logits" + suffix)
        if target is None:
            continue
        with torch.no_grad():
            logits = model(tensors[key].to(model.device)).logits.float().cpu()
        target = target[..., :vocab].float()
        max_abs["logits" + suffix] = (logits - target).abs().max().item()
        relative, argmax = logits_agreement(logits.flatten(0, -2), target.flatten(0, -2))
        agreement["logits" + suffix] = {"relative_l2": relative, "argmax_agreement": argmax}
    if not max_abs:
        raise ConversionError(f"reference {reference} holds no input_ids*/logits* pairs")
    return max_abs, agreement


def check_parity_bounds(agreement: dict[str, dict[str, float]], dtype: torch.dtype) -> None:
    """A conversion whose logits stray from the reference beyond what ``dtype`` allows must not look successful."""
    from hyena_hf.precision import PARITY_BOUNDS

    max_relative, min_argmax = PARITY_BOUNDS[dtype]
    for name, figures in agreement.items():
        if figures["relative_l2"] > max_relative or figures["argmax_agreement"] < min_argmax:
            raise ConversionError(
                f"parity check failed for {name} in {str(dtype).replace('torch.', '')}: relative L2 "
                f"error {figures['relative_l2']:.2e} (bound {max_relative:.0e}), argmax agreement "
                f"{figures['argmax_agreement']:.1%} (bound {min_argmax:.0%}); nothing was written"
            )


def push_converted(model, tokenizer, card, folder: Path, repo_id: str) -> None:
    """Push with the ``push_to_hub`` every transformers user knows: the model (weights, config, remote code), the
    tokenizer, the model card, then the conversion record. The folder is already complete on disk, so a failed
    upload leaves it usable."""
    from huggingface_hub import HfApi

    message = "Upload model converted by hyena-hf"
    model.push_to_hub(repo_id, commit_message=message)
    if tokenizer is not None:
        tokenizer.push_to_hub(repo_id, commit_message=message)
    card.push_to_hub(repo_id, commit_message=message)
    HfApi().upload_file(
        path_or_fileobj=str(folder / "conversion.json"),
        path_in_repo="conversion.json",
        repo_id=repo_id,
        commit_message=message,
    )


def convert_to_folder(
    source: str | None,
    output_dir: str | Path,
    fmt: str = "auto",
    original_config: str | Path | None = None,
    preset: str | None = None,
    dtype: str = "float32",
    modulation_shift: float | None = None,
    reference: str | Path | None = None,
    tokenizer: str | None = None,
    push_to_hub: str | None = None,
    overwrite: bool = False,
    max_shard_size: str = "2GB",
) -> dict:
    """Convert and write the model folder; returns the recorded conversion info."""
    output_dir = Path(output_dir)
    user_inputs = [Path(p) for p in (source, original_config, reference, tokenizer) if p and Path(p).exists()]
    check_output(output_dir, overwrite=overwrite, inputs=user_inputs)
    if dtype not in DTYPES:
        raise ConversionError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    preset_obj = get_preset(preset) if preset else None
    with tqdm(total=4 + bool(push_to_hub), desc="convert", unit="step") as steps:  # closes on errors too
        steps.set_postfix_str("resolve source")
        resolved = resolve_source(source, preset_obj)
        steps.update()

        steps.set_postfix_str(f"load {resolved.weights.name}")
        state_dict = extract_state_dict(load_checkpoint(resolved.weights))
        if fmt == "auto":
            fmt = detect_format(state_dict)
        original = dict(preset_obj.original_config) if preset_obj else {}
        config_file = Path(original_config) if original_config else resolved.config_file
        if config_file is not None:
            original = merge_original_config(original, read_original_config(config_file))
        steps.update()

        steps.set_postfix_str("convert")
        model = convert_state_dict(state_dict, original, fmt, modulation_shift)
        model = model.to(DTYPES[dtype])
        family = "hyenadna" if fmt.startswith("hyenadna") else fmt
        tok, tokenizer_note = _tokenizer_for(family, model.config, tokenizer)
        if tok is not None and len(tok) > model.config.vocab_size:
            raise ConversionError(
                f"the tokenizer has {len(tok)} tokens but the model's vocab_size is "
                f"{model.config.vocab_size}: ids from {model.config.vocab_size} up would have no "
                "logits (check the original config's vocab_size)"
            )
        info = {
            "output_name": output_dir.name,
            "source": resolved.description,
            "file": resolved.weights.name,
            "sha256": sha256_of(resolved.weights),
            "hub_commit": resolved.hub_commit,
            "format": fmt,
            "dtype": dtype,
            "modulation_shift": model.config.modulation_shift,
            "original_config": str(config_file) if config_file else None,
            "preset": preset,
        }
        if reference:
            info["parity"], info["parity_agreement"] = parity_against_reference(model, Path(reference))
            check_parity_bounds(info["parity_agreement"], DTYPES[dtype])
        steps.update()

        steps.set_postfix_str("save")
        inputs = user_inputs + [resolved.weights, config_file]
        card = converted_model_card(info)

        def write(folder: Path) -> None:
            model.save_pretrained(folder, max_shard_size=max_shard_size)
            if tok is not None:
                tok.save_pretrained(folder)
            card.save(folder / "README.md")
            (folder / "conversion.json").write_text(json.dumps(info, indent=2))

        write_folder(output_dir, write, overwrite=overwrite, inputs=inputs)
        steps.update()
        if push_to_hub:
            steps.set_postfix_str(f"push to {push_to_hub}")
            push_converted(model, tok, card, output_dir, push_to_hub)
            steps.update()
    if tokenizer_note:
        info["tokenizer_note"] = tokenizer_note
    return info
