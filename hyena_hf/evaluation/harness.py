"""lm-evaluation-harness for Hyena models: the SuperGLUE set, with the official task definitions.

Online, the official tasks read the hub data; ReCoRD runs as ``record_hyena`` (``tasks/record_hyena.yaml``: the
official prompts and data with the project's scorer, as lm-eval's own ``record`` needs a module transformers 5
removed). Offline, :func:`write_local_tasks` writes task YAMLs that ``include`` those definitions (same prompts,
choices and metrics) and only swap the data for local JSON lines files in the same schema (``dataset_path: json``);
the project ships a tiny such data set (``superglue_tiny/``). ``hyena-hf eval-tasks DIR`` writes them for the
standard ``lm_eval --include_path DIR`` command.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

SUPERGLUE_TASKS = ("boolq", "cb", "copa", "multirc", "record", "sglue_rte", "wic", "wsc")
TASKS_DIR = Path(__file__).parent / "tasks"  # record_hyena.yaml and its scorer
# lm-eval's task names where ours differ (lm-eval's `record` cannot run on transformers 5)
_RUN_AS = {"record": "record_hyena"}
# official task name -> folder of its default.yaml in lm_eval/tasks/super_glue and of our data file
_FOLDERS = {
    "boolq": "boolq",
    "cb": "cb",
    "copa": "copa",
    "multirc": "multirc",
    "record": "record",
    "sglue_rte": "rte",
    "wic": "wic",
    "wsc": "wsc",
}
TINY_DATA = Path(__file__).parent / "superglue_tiny"
LOCAL_SUFFIX = "_local"


def write_local_tasks(
    data_dir: str | Path = TINY_DATA, out_dir: str | Path | None = None, tasks=SUPERGLUE_TASKS
) -> Path:
    """Write ``<task>_local`` YAMLs (the task's definition + local ``<folder>.jsonl`` data) for ``tasks`` into an
    include dir; ``data_dir`` needs the data of those tasks only."""
    import lm_eval

    official = Path(lm_eval.__file__).parent / "tasks" / "super_glue"
    out = Path(out_dir or tempfile.mkdtemp(prefix="hyena_hf_tasks_"))
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data_dir).resolve()
    for task in tasks:
        task = task.removesuffix(LOCAL_SUFFIX)
        if task not in _FOLDERS:
            raise ValueError(f"no local SuperGLUE task {task!r}; choose from {sorted(_FOLDERS)}")
        folder = _FOLDERS[task]
        data = data_dir / f"{folder}.jsonl"
        if not data.is_file():
            raise FileNotFoundError(f"no local data for {task}: {data}")
        definition = TASKS_DIR / "record_hyena.yaml" if task == "record" else official / folder / "default.yaml"
        (out / f"{task}{LOCAL_SUFFIX}.yaml").write_text(
            f"include: {definition}\n"
            f"task: {task}{LOCAL_SUFFIX}\n"
            "tag: [superglue_local]\n"
            "dataset_path: json\n"
            "dataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    validation: {data}\n"
            "training_split: null\n"
            "fewshot_split: validation\n"
            "validation_split: validation\n"
        )
    return out


def make_lm(model, tokenizer=None, batch_size: int = 8):
    """An lm-eval ``HFLM`` around a Hyena model (a path / hub id, or a model object plus its tokenizer)."""
    from hyena_hf import register_auto_classes

    register_auto_classes()
    from lm_eval.models.huggingface import HFLM

    if isinstance(model, str):
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        return HFLM(pretrained=model, backend="causal", batch_size=batch_size, device=device)
    return HFLM(pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=batch_size)


def evaluate(
    model,
    tokenizer=None,
    tasks=None,
    num_fewshot: int = 0,
    local: bool = False,
    limit=None,
    batch_size: int = 8,
    data_dir: str | Path | None = None,
    seed: int = 1234,
) -> dict:
    """Run lm-eval's ``simple_evaluate``; ``local=True`` runs the offline ``*_local`` tasks on ``data_dir``."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    tasks = list(tasks or SUPERGLUE_TASKS)
    if local:
        tasks = [t if t.endswith(LOCAL_SUFFIX) else t + LOCAL_SUFFIX for t in tasks]
    else:
        tasks = [_RUN_AS.get(t, t) for t in tasks]
    with tempfile.TemporaryDirectory(prefix="hyena_hf_tasks_") as include:  # the generated YAMLs live for this run
        if local:
            write_local_tasks(data_dir or TINY_DATA, include, tasks)
        manager = TaskManager(include_path=[str(TASKS_DIR), include])
        return simple_evaluate(
            model=make_lm(model, tokenizer, batch_size),
            tasks=tasks,
            num_fewshot=num_fewshot,
            task_manager=manager,
            limit=limit,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
            log_samples=True,
        )


METRIC_PATH = Path(__file__).parent / "metrics" / "hyena_superglue"


def load_metric(config_name: str):
    """The local `evaluate` module of SuperGLUE metrics / perplexity (no hub access)."""
    import evaluate as hf_evaluate

    return hf_evaluate.load(str(METRIC_PATH), config_name)
