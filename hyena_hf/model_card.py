"""Model cards of converted and distilled models, through ``huggingface_hub.ModelCard`` (a metadata block the hub
reads: library, tags, base model, license, pipeline tag; provenance and quality figures in the body)."""

from __future__ import annotations

from huggingface_hub import ModelCard, ModelCardData

# The original code of each family (its license governs the released weights; the card links it rather than guess).
SOURCE_REPOSITORIES = {
    "safari": "https://github.com/HazyResearch/safari",
    "hyenadna": "https://github.com/HazyResearch/hyena-dna",
    "h3": "https://github.com/HazyResearch/H3",
}
PIPELINE_TAG = "text-generation"


def _card(data: ModelCardData, body: str) -> ModelCard:
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n")


def _usage(name: str) -> list[str]:
    return [
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM",
        f'model = AutoModelForCausalLM.from_pretrained("{name}", trust_remote_code=True)  # or import hyena_hf first',
        "```",
        "",
    ]


def converted_model_card(info: dict) -> ModelCard:
    """Card of a converted checkpoint; ``info`` is what ``convert_to_folder`` records (conversion.json)."""
    family = "hyenadna" if info["format"].startswith("hyenadna") else info["format"]
    hub_source = info["source"][len("hf://") :] if info["source"].startswith("hf://") else None
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        tags=["hyena", "long-convolution", family, "hyena-hf"],
        base_model=hub_source,
        license="other",
        license_link=f"https://huggingface.co/{hub_source}" if hub_source else SOURCE_REPOSITORIES[family],
    )
    lines = [
        f"# {info['output_name']}",
        "",
        f"The original **{info['format']}** checkpoint converted to a native transformers model by hyena-hf "
        f"(code: {SOURCE_REPOSITORIES[family]}). Its license is the source's.",
        "",
        "## Provenance",
        "",
        "| | |",
        "|---|---|",
        f"| source | `{info['source']}` |",
        f"| file | `{info['file']}` |",
        f"| sha256 | `{info['sha256']}` |",
    ]
    if info.get("hub_commit"):
        lines.append(f"| hub commit | `{info['hub_commit']}` |")
    lines += [
        f"| format | {info['format']} |",
        f"| dtype | {info['dtype']} (long-filter tensors float32) |",
        f"| modulation shift | {info['modulation_shift']} |",
        "",
    ]
    if info.get("parity"):
        lines += [
            "## Parity with the reference logits",
            "",
            "| tensor | max abs diff | relative L2 error | argmax agreement |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {k} | {v:.3e} | {info['parity_agreement'][k]['relative_l2']:.2e} | "
            f"{info['parity_agreement'][k]['argmax_agreement']:.1%} |"
            for k, v in info["parity"].items()
        ]
        lines.append("")
    return _card(data, "\n".join(lines + _usage(info["output_name"])))


def distilled_model_card(
    source: str, name: str, report_table: str, state_size: int, max_error: float, forced: bool
) -> ModelCard:
    """Card of a modal (distilled) model: the per-layer report and whether it met the error threshold."""
    base = None if source.startswith((".", "/", "~")) or source.count("/") != 1 else source
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        base_model=base,
        tags=["hyena", "long-convolution", "modal", "distilled", "hyena-hf"],
    )
    verdict = "every layer within" if not forced else "written with --force although a layer exceeds"
    body = "\n".join(
        [
            f"# {name}",
            "",
            f"`{source}` with its implicit Hyena filters distilled into {state_size} damped complex modes per channel "
            '(`filter_type="modal"`): decoding costs the same per token at any context length.',
            "",
            f"## Distillation report ({verdict} the relative L2 error threshold {max_error:g})",
            "",
            report_table,
            "",
            "Relative L2 error of each layer's filters; s[N], s[2N]: normalised Hankel singular values at N and 2N; "
            "suggested N: the smallest N whose s[2N] is below 1e-3. Full figures: `distill_report.json`.",
            "",
            *_usage(name),
        ]
    )
    return _card(data, body)
