"""`hyena-hf` command line: one entry point with subcommands. Errors exit non-zero with a one-line message."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from hyena_hf.thresholds import DISTILL_MAX_ERROR


def _model_location(name: str) -> str:
    """A local model folder, or a hub repo id; a missing local path is reported as such (not as a bad repo id)."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ValueError(f"{name} is not a model folder (it has no config.json)")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise ValueError(f"model folder not found: {name}")
    return name


def _demo_train(args, task, tokenizer) -> Path:
    from transformers import set_seed

    from hyena_hf import HyenaConfig, HyenaForCausalLM
    from hyena_hf.synthetic import answer_accuracy, build_dataset, train_on_task

    set_seed(args.seed)
    train = build_dataset(task, tokenizer, args.train_examples, seed=args.seed)
    held_out = build_dataset(task, tokenizer, 1000, seed=args.seed + 1)
    config = HyenaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        num_hidden_layers=2,
        intermediate_size=2 * args.hidden_size,
        max_position_embeddings=task.seq_len,
        hyena_order=2,
        filter_order=64,
        filter_emb_dim=5,
        filter_sin_freq=10.0,
        modulate=True,
        embd_pdrop=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = HyenaForCausalLM(config)
    print(
        f"[1/3] training a {model.num_parameters() / 1e3:.0f}K-parameter Hyena on associative recall "
        f"({task.num_pairs} pairs, {task.num_keys} keys, {task.num_queries} queries, length {task.seq_len}) "
        f"for {args.steps} steps"
    )
    start = time.perf_counter()
    train_on_task(
        model,
        train,
        str(Path(args.output_dir) / "trainer"),
        max_steps=args.steps,
        learning_rate=args.learning_rate,
        seed=args.seed,
    )
    train_seconds = time.perf_counter() - start
    accuracy = answer_accuracy(model, held_out)
    print(
        f"      done in {train_seconds:.0f}s; held-out recall accuracy {accuracy:.1%} "
        f"(chance {1 / task.num_values:.1%})"
    )
    out = Path(args.output_dir) / "model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "demo_metrics.json").write_text(
        json.dumps({"held_out_accuracy": accuracy, "train_seconds": train_seconds, "steps": args.steps}, indent=2)
    )
    print(f"[2/3] saved with save_pretrained to {out}")
    return out


def _demo_generate(model_path: str, prompts: list[str], answers: list[str] | None, max_new_tokens: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    model_path = _model_location(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer, device=-1)
    start = time.perf_counter()
    with torch.no_grad():
        results = generator(
            prompts, max_new_tokens=max_new_tokens, do_sample=False, return_full_text=False, batch_size=32
        )
    seconds = time.perf_counter() - start
    outputs = [r[0]["generated_text"].strip() for r in results]
    report = {
        "prompts": len(prompts),
        "new_tokens": len(prompts) * max_new_tokens,
        "tokens_per_second": len(prompts) * max_new_tokens / seconds,
        "examples": [],
    }
    for i, (prompt, output) in enumerate(zip(prompts, outputs)):
        if i < 3:
            report["examples"].append({"prompt": prompt, "output": output})
    if answers is not None:
        report["accuracy"] = sum(o.split()[:1] == [a] for o, a in zip(outputs, answers)) / len(answers)
    return report


def cmd_demo(args) -> None:
    if args.model:
        prompts = args.prompt or ["Hello"]
        report = _demo_generate(args.model, prompts, None, args.max_new_tokens)
        for ex in report["examples"]:
            print(f"{ex['prompt']!r} -> {ex['output']!r}")
        print(f"{report['tokens_per_second']:.1f} tokens/s")
        return
    from hyena_hf.synthetic import RecallTask, build_dataset, make_tokenizer, task_words

    task = RecallTask(
        num_keys=args.num_keys, num_values=args.num_keys, num_pairs=args.num_pairs, num_queries=args.num_queries
    )
    tokenizer = make_tokenizer(task_words(task))
    model_dir = _demo_train(args, task, tokenizer)
    fresh = build_dataset(task, tokenizer, args.fresh_prompts, seed=args.seed + 2)
    print(
        f"[3/3] reloading with AutoModelForCausalLM and answering {len(fresh)} fresh recall prompts through "
        "pipeline('text-generation')"
    )
    report = _demo_generate(str(model_dir), list(fresh["prompt"]), list(fresh["answer"]), max_new_tokens=1)
    for ex in report["examples"]:
        print(f"      ...{ex['prompt'][-40:]!r} -> {ex['output']!r}")
    print(
        f"      pipeline accuracy {report['accuracy']:.1%} on fresh prompts, "
        f"{report['tokens_per_second']:.0f} generated tokens/s (batch 32, CPU)"
    )
    (model_dir / "demo_generation.json").write_text(json.dumps(report, indent=2))


def cmd_convert(args) -> None:
    from hyena_hf.conversion.export import convert_to_folder

    info = convert_to_folder(
        args.source,
        args.output_dir,
        fmt=args.format,
        original_config=args.original_config,
        preset=args.preset,
        dtype=args.dtype,
        modulation_shift=args.modulation_shift,
        reference=args.reference,
        tokenizer=args.tokenizer,
        push_to_hub=args.push_to_hub,
        overwrite=args.overwrite,
        max_shard_size=args.max_shard_size,
    )
    print(f"converted {info['source']} ({info['format']}, sha256 {info['sha256'][:12]}) -> {args.output_dir}")
    for name, diff in (info.get("parity") or {}).items():
        figures = info["parity_agreement"][name]
        print(
            f"  parity {name}: max abs diff {diff:.3e}, relative L2 {figures['relative_l2']:.2e}, "
            f"argmax agreement {figures['argmax_agreement']:.1%} (within the {args.dtype} bounds)"
        )
    if info.get("tokenizer_note"):
        print(f"  note: {info['tokenizer_note']}")


def cmd_generate(args) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location = _model_location(args.model)
    model = AutoModelForCausalLM.from_pretrained(location).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or location)
    # As the text-generation pipeline does: no special tokens, since HyenaDNA's tokenizer would end the prompt with
    # [SEP], its end-of-sequence token, and the model would continue after an ended sequence.
    inputs = tokenizer(args.prompt, return_tensors="pt", add_special_tokens=False)
    pad_token_id = tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id
    unknown = tokenizer.unk_token_id
    if unknown is not None and unknown != tokenizer.eos_token_id:  # GPT-2's unk is its eos, which a prompt may hold
        count = int((inputs["input_ids"] == unknown).sum())
        if count:
            print(
                f"hyena-hf generate: note: {count} of {inputs['input_ids'].shape[1]} prompt tokens are not in the "
                f"tokenizer's vocabulary and became {tokenizer.unk_token}",
                file=sys.stderr,
            )
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=args.max_new_tokens,
            do_sample=args.temperature > 0,
            temperature=args.temperature if args.temperature > 0 else None,
            num_beams=args.num_beams,
            use_cache=not args.no_cache,
            pad_token_id=pad_token_id,
        )
    seconds = time.perf_counter() - start
    new = out.shape[1] - inputs["input_ids"].shape[1]
    print(tokenizer.decode(out[0], skip_special_tokens=True))
    print(
        f"[{new} tokens in {seconds:.2f}s, {new / seconds:.1f} tokens/s, cache={'off' if args.no_cache else 'on'}]",
        file=sys.stderr,
    )


def cmd_distill(args) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hyena_hf.distillation import distill
    from hyena_hf.model_card import distilled_model_card
    from hyena_hf.output_folder import check_output, write_folder

    location = _model_location(args.model)
    local_input = [Path(location)] if Path(location).exists() else []
    check_output(args.output_dir, overwrite=args.overwrite, inputs=local_input)
    model = AutoModelForCausalLM.from_pretrained(location).eval()
    modal, report = distill(
        model, state_size=args.state_size, refine_steps=args.refine_steps, max_error=args.max_error, force=args.force
    )
    forced = max(report.relative_l2_error.values()) > args.max_error

    def write(folder: Path) -> None:
        modal.save_pretrained(folder)
        try:
            AutoTokenizer.from_pretrained(location).save_pretrained(folder)
        except (OSError, ValueError):
            pass  # a model folder without tokenizer files
        (folder / "distill_report.json").write_text(
            json.dumps(
                {**report.to_dict(), "source": args.model, "max_error": args.max_error, "forced": forced}, indent=2
            )
        )
        distilled_model_card(
            args.model, Path(args.output_dir).name, report.table(), args.state_size, args.max_error, forced
        ).save(folder / "README.md")

    write_folder(args.output_dir, write, overwrite=args.overwrite, inputs=local_input)
    print(f"saved the modal model to {args.output_dir}" + (" (--force: a layer exceeds --max-error)" if forced else ""))


def cmd_eval(args) -> None:
    from hyena_hf.evaluation.harness import evaluate

    out = evaluate(
        _model_location(args.model),
        tasks=args.tasks,
        num_fewshot=args.num_fewshot,
        local=args.local,
        limit=args.limit,
        batch_size=args.batch_size,
        data_dir=args.data_dir or None,
    )
    rows = []
    for task, metrics in out["results"].items():
        for key, value in metrics.items():
            if "," in key and "stderr" not in key and isinstance(value, (int, float)):
                rows.append((task, key.split(",")[0], float(value)))
                print(f"{task:20s} {key.split(',')[0]:6s} {float(value):.4f}")
    if args.output:
        Path(args.output).write_text(json.dumps({"num_fewshot": args.num_fewshot, "results": rows}, indent=2))


def cmd_eval_tasks(args) -> None:
    from hyena_hf.evaluation.harness import SUPERGLUE_TASKS, TASKS_DIR, TINY_DATA, write_local_tasks

    out = write_local_tasks(args.data_dir or TINY_DATA, args.output_dir, args.tasks or SUPERGLUE_TASKS)
    for item in TASKS_DIR.glob("record_*"):  # the record_hyena definition and its scorer, for --tasks record_hyena
        (out / item.name).write_bytes(item.read_bytes())
    names = ",".join(f"{t}_local" for t in (args.tasks or SUPERGLUE_TASKS))
    print(
        f"wrote lm-eval task definitions to {out}; run for example:\n  lm_eval --model hf --model_args "
        f"pretrained=MODEL_DIR,trust_remote_code=True --include_path {out} --tasks {names}"
    )


def cmd_synthetic(args) -> None:
    from hyena_hf.synthetic import InductionTask, RecallTask, compare_models

    task = (
        RecallTask(num_keys=args.vocab, num_values=args.vocab, num_pairs=args.num_pairs, num_queries=args.num_queries)
        if args.task == "recall"
        else InductionTask(num_tokens=args.vocab, seq_len=args.seq_len)
    )
    rows = compare_models(
        task,
        kinds=args.models,
        steps=args.steps,
        hidden_size=args.hidden_size,
        num_layers=args.layers,
        train_examples=args.train_examples,
        learning_rate=args.learning_rate,
        output_dir=args.output_dir,
    )
    print(f"{'model':8s} {'params':>9s} {'steps':>6s} {'seconds':>8s} {'accuracy':>9s}")
    for r in rows:
        print(
            f"{r['model']:8s} {r['parameters']:9d} {r['steps']:6d} {r['train_seconds']:8.0f} "
            f"{r['held_out_accuracy']:9.1%}"
        )
    print(f"saved {args.output_dir}/synthetic_results.json (+ .png)")


BENCHMARKS = {
    "generate": "bench_generate",
    "distill": "distill_quality",
    "long-conv": "bench_long_conv",
    "model": "bench_model",
}


def cmd_bench(args) -> None:
    """Runs the installed benchmark module (``hyena_hf.benchmarks``), never a file from the current directory."""
    import runpy

    module = f"hyena_hf.benchmarks.{BENCHMARKS[args.which]}"
    sys.argv = [module, *args.rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def _number_in_range(kind: type, lowest: float, what: str, strict: bool = False):
    """An argparse type: a ``kind`` number >= ``lowest`` (> with ``strict``), else a usage error (exit 2) naming the
    value."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not (value > lowest if strict else value >= lowest):  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    parse.__name__ = what  # argparse names the type in its "invalid ... value" message
    return parse


POSITIVE_INT = _number_in_range(int, 1, "a positive integer")
NON_NEGATIVE_INT = _number_in_range(int, 0, "an integer >= 0")
POSITIVE_FLOAT = _number_in_range(float, 0.0, "a number > 0", strict=True)
NON_NEGATIVE_FLOAT = _number_in_range(float, 0.0, "a number >= 0")


def _shard_size(text: str) -> str:
    """An argparse type: a positive size with a unit, as ``save_pretrained(max_shard_size=)`` reads it ("2GB")."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]B)\s*", text, flags=re.IGNORECASE)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive size with a unit (KB, MB, GB or TB), got {text!r}")
    return text.strip()


def _training_options(parser: argparse.ArgumentParser, steps: int) -> None:
    """What the demo and the synthetic comparison train with: steps, AdamW rate, width, training set size."""
    parser.add_argument("--steps", type=POSITIVE_INT, default=steps, help="training steps (per model)")
    parser.add_argument("--learning-rate", type=POSITIVE_FLOAT, default=3e-3, help="AdamW learning rate")
    parser.add_argument("--hidden-size", type=POSITIVE_INT, default=128, help="model width")
    parser.add_argument("--train-examples", type=POSITIVE_INT, default=20000, help="training set size")


def _parser(sub, name: str, help: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    from hyena_hf import __version__

    parser = argparse.ArgumentParser(
        prog="hyena-hf",
        description="Hyena / HyenaDNA / H3 as transformers models: "
        "convert, generate, distil, evaluate, benchmark. Exit codes: 0 done, 1 failed "
        "(one line on stderr), 2 bad usage.",
    )
    parser.add_argument("--version", action="version", version=f"hyena-hf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    convert = _parser(sub, "convert", "convert an original safari / HyenaDNA / H3 checkpoint into a model folder")
    convert.add_argument("source", nargs="?", help="local file or folder, or hub repo id (default: the preset's)")
    convert.add_argument("output_dir", help="folder to write (must not hold the source)")
    convert.add_argument(
        "--format",
        default="auto",
        choices=["auto", "safari", "hyenadna", "hyenadna-hf", "h3"],
        help="checkpoint format (auto: detected from the tensor names)",
    )
    convert.add_argument(
        "--original-config",
        help="YAML/JSON with the ORIGINAL model's constructor fields "
        "(default: config.json beside the weights, or the preset's)",
    )
    convert.add_argument("--preset", help="named released checkpoint (see hyena_hf.conversion.presets.PRESETS)")
    convert.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16", "float64"],
        help="dtype of the dense layers (long-filter tensors stay float32)",
    )
    convert.add_argument(
        "--modulation-shift",
        type=float,
        default=None,
        help="override the modulation shift (HyenaDNA: 0.0 as trained; 0.05 = standalone/-hf code)",
    )
    convert.add_argument(
        "--reference",
        help="safetensors with input_ids*/logits* pairs: record parity figures and fail outside the dtype's bounds",
    )
    convert.add_argument("--tokenizer", help="local tokenizer folder to save with the model (default: the family's)")
    convert.add_argument(
        "--push-to-hub", metavar="REPO", help="also push the model, tokenizer and card to this hub repo"
    )
    convert.add_argument("--max-shard-size", type=_shard_size, default="2GB", help="largest safetensors shard")
    convert.add_argument("--overwrite", action="store_true", help="replace an earlier hyena-hf output in OUTPUT_DIR")
    convert.set_defaults(func=cmd_convert)

    gen = _parser(sub, "generate", "generate text with a saved or converted model")
    gen.add_argument("model", help="model folder or hub repo id")
    gen.add_argument("prompt", help="text to continue")
    gen.add_argument("--tokenizer", help="tokenizer folder or hub id (default: the model's)")
    gen.add_argument("--max-new-tokens", type=POSITIVE_INT, default=50, help="tokens to generate")
    gen.add_argument("--temperature", type=NON_NEGATIVE_FLOAT, default=0.0, help="sampling temperature; 0 = greedy")
    gen.add_argument("--num-beams", type=POSITIVE_INT, default=1, help="beam search width")
    gen.add_argument("--no-cache", action="store_true", help="recompute the full forward for every token")
    gen.set_defaults(func=cmd_generate)

    dist = _parser(sub, "distill", "distil implicit Hyena filters into modal (recurrent) filters")
    dist.add_argument("model", help="model folder or hub repo id with implicit filters")
    dist.add_argument("output_dir", help="folder to write the modal model, its report and card to")
    dist.add_argument("--state-size", type=POSITIVE_INT, default=16, help="modes per channel (N)")
    dist.add_argument("--refine-steps", type=NON_NEGATIVE_INT, default=0, help="Adam steps refining poles and residues")
    dist.add_argument(
        "--max-error",
        type=NON_NEGATIVE_FLOAT,
        default=DISTILL_MAX_ERROR,
        help="largest per-layer relative L2 filter error accepted without --force",
    )
    dist.add_argument("--force", action="store_true", help="write the model even when a layer exceeds --max-error")
    dist.add_argument("--overwrite", action="store_true", help="replace an earlier hyena-hf output in OUTPUT_DIR")
    dist.set_defaults(func=cmd_distill)

    ev = _parser(sub, "eval", "lm-evaluation-harness on SuperGLUE (or any lm-eval tasks)")
    ev.add_argument("model", help="model folder or hub repo id")
    ev.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        help="lm-eval task names (default: boolq cb copa multirc record sglue_rte wic wsc)",
    )
    ev.add_argument("--num-fewshot", type=NON_NEGATIVE_INT, default=0, help="in-context examples per question")
    ev.add_argument("--local", action="store_true", help="offline: the *_local tasks on local SuperGLUE-format data")
    ev.add_argument(
        "--data-dir",
        help="folder of <task>.jsonl files for --local, only the named tasks needed (default: the shipped tiny set)",
    )
    ev.add_argument("--limit", type=POSITIVE_INT, default=None, help="questions per task (default: all)")
    ev.add_argument("--batch-size", type=POSITIVE_INT, default=8, help="lm-eval batch size")
    ev.add_argument("--output", help="write the metrics as JSON here")
    ev.set_defaults(func=cmd_eval)

    tasks = _parser(sub, "eval-tasks", "write SuperGLUE task definitions on local data for `lm_eval --include_path`")
    tasks.add_argument("output_dir", help="folder for the <task>_local.yaml files (and record_hyena.yaml)")
    tasks.add_argument("--data-dir", help="folder of <task>.jsonl files (default: the shipped tiny set)")
    tasks.add_argument("--tasks", nargs="+", default=None, help="SuperGLUE tasks (default: all)")
    tasks.set_defaults(func=cmd_eval_tasks)

    syn = _parser(sub, "synthetic", "associative recall / induction heads: Hyena vs H3 vs GPT-2")
    syn.add_argument("--task", choices=["recall", "induction"], default="recall", help="synthetic task")
    syn.add_argument(
        "--models",
        nargs="+",
        default=["hyena", "h3", "gpt2"],
        choices=["hyena", "h3", "gpt2"],
        help="models to train and compare",
    )
    syn.add_argument("--vocab", type=POSITIVE_INT, default=8, help="keys and values (recall) or tokens (induction)")
    syn.add_argument("--num-pairs", type=POSITIVE_INT, default=4, help="key-value pairs per example (recall)")
    syn.add_argument("--num-queries", type=POSITIVE_INT, default=8, help="queries per example (recall)")
    syn.add_argument("--seq-len", type=POSITIVE_INT, default=32, help="sequence length (induction)")
    _training_options(syn, steps=2000)
    syn.add_argument("--layers", type=POSITIVE_INT, default=2, help="model depth")
    syn.add_argument("--output-dir", default="synthetic_output", help="folder for the table, JSON and plot")
    syn.set_defaults(func=cmd_synthetic)

    bench = _parser(sub, "bench", "run an installed benchmark (its own --help lists its options)")
    bench.add_argument("which", choices=sorted(BENCHMARKS), help="benchmark")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed to the benchmark")
    bench.set_defaults(func=cmd_bench)

    demo = _parser(sub, "demo", "train a small Hyena on associative recall offline, save, reload, generate")
    demo.add_argument("--output-dir", default="demo_output", help="folder for the trained model and reports")
    _training_options(demo, steps=3000)
    demo.add_argument("--num-keys", type=POSITIVE_INT, default=8, help="distinct keys (and values)")
    demo.add_argument("--num-pairs", type=POSITIVE_INT, default=4, help="key-value pairs per example")
    demo.add_argument("--num-queries", type=POSITIVE_INT, default=8, help="queries per example")
    demo.add_argument("--fresh-prompts", type=POSITIVE_INT, default=256, help="fresh prompts answered after reloading")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--model", help="skip training: generate with this local folder or hub id")
    demo.add_argument("--prompt", action="append", help="prompt for --model (repeatable)")
    demo.add_argument("--max-new-tokens", type=POSITIVE_INT, default=20, help="tokens to generate for --model")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 failed (one line naming the cause on stderr), 2 bad usage (argparse)."""
    args = build_parser().parse_args(argv)
    try:
        from hyena_hf import register_auto_classes

        register_auto_classes()  # deferred until here so that --help and usage errors answer at once
        args.func(args)
    except KeyboardInterrupt:
        print(f"hyena-hf {args.command}: interrupted", file=sys.stderr)
        return 1
    except Exception as exc:  # one line naming the cause, never a traceback
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, (KeyError, ImportError, AttributeError, TypeError, IndexError)):
            message = f"{type(exc).__name__}: {message}"
        print(f"hyena-hf {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
