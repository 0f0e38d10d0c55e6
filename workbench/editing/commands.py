"""The ``workbench edit`` command (argument parsing is in ``cli``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from torch import Tensor

from workbench.editing.edit import Edit, EditRequest
from workbench.editing.finetune import compute_finetune_edit
from workbench.editing.hparams import FinetuneHparams, RomeHparams
from workbench.editing.key_stats import key_second_moment
from workbench.editing.rome import compute_rome_edit
from workbench.model.loading import load_model_and_world
from workbench.model.tokens import score_targets, top_next_tokens
from workbench.tracing.locator import locate_from_trace
from workbench.tracing.trace import TraceConfig, trace_fact
from workbench.world import CorpusConfig, World, corpus_rounds, export_edit_cases

HPARAMS_DIR = Path(__file__).resolve().parents[2] / "hparams"


def statistics_texts(world: World | None, corpus_file: str | None) -> list[str]:
    """Texts for key statistics: a text file (one document per line), else the world's corpus."""
    if corpus_file:
        path = Path(corpus_file)
        if not path.is_file():
            raise ValueError(f"corpus file {path} does not exist")
        return [line for line in path.read_text().splitlines() if line.strip()]
    if world is None:
        raise ValueError("this model has no fact world: pass --stats-corpus FILE (one text per line)")
    return next(corpus_rounds(world, CorpusConfig(), set()))


METHODS = {
    "rome": (RomeHparams, compute_rome_edit, "rome-default.json"),
    "ft": (FinetuneHparams, compute_finetune_edit, "ft-default.json"),
    "ft-l": (FinetuneHparams, compute_finetune_edit, "ft-l-default.json"),
}


def chosen_layer(layer: str, model, request: EditRequest) -> int:
    """``auto`` (the locator's choice from an MLP trace of the request prompt) or a layer number."""
    if layer == "auto":
        trace = trace_fact(model, request.prompt, request.subject, config=TraceConfig(kinds=("mlp",)))
        return locate_from_trace(model, trace).site.layer
    try:
        return int(layer)
    except ValueError:
        raise ValueError(f"--layer must be 'auto' or a layer number, got {layer!r}") from None


def make_editor(method: str, model, hparams_file: str | None, layer: str | None, texts_source):
    """A function ``request -> (Edit, layer)`` running ``method`` with its hyperparameters
    (``hparams/<method>-default.json`` unless a file is given) at ``layer`` (None: the file's).

    The file is read once; for ROME, ``texts_source()`` (key-statistics texts) is called once and
    each layer's key statistic is looked up once, however many edits are made.
    """
    hparams_class, compute, default_file = METHODS[method]
    base = hparams_class.from_json(hparams_file or HPARAMS_DIR / default_file)
    moments: dict[int, Tensor] = {}
    texts: list[str] = []

    def edit(request: EditRequest) -> tuple[Edit, int]:
        hparams = base if layer is None else dataclasses.replace(base, layer=chosen_layer(layer, model, request))
        if method != "rome":
            return compute(model, request, hparams), hparams.layer
        if not texts:
            texts.extend(texts_source())
        if hparams.layer not in moments:
            moments[hparams.layer] = key_second_moment(model, hparams.layer, texts, hparams.key_stats_tokens)
        return compute(model, request, hparams, texts, moment=moments[hparams.layer]), hparams.layer

    return edit


def world_case(world: World | None, prompt: str, subject: str) -> dict | None:
    """The exported edit case of the model's world with this prompt and subject, if any."""
    if world is None:
        return None
    return next((c for c in export_edit_cases(world) if c["prompt"] == prompt and c["subject"] == subject), None)


def _probe_prompts(case: dict | None, request: EditRequest) -> list[tuple[str, str, str]]:
    """``(kind, prompt, expected answer after the edit)``: the request and, for a world case, its
    paraphrases and neighbours."""
    probes = [("edit", request.prompt, request.target_new)]
    if case is not None:
        probes += [("paraphrase", p["prompt"], p["answer"]) for p in case["paraphrase_prompts"]]
        probes += [("neighbour", n["prompt"], n["answer"]) for n in case["neighborhood_prompts"]]
    return probes


def _predictions(model, probes, request: EditRequest) -> list[dict]:
    """Top next tokens, p(expected answer), p(target_new) and p(the edited fact's old answer)."""
    rows = []
    for kind, prompt, expected in probes:
        targets = [expected, request.target_new, request.ground_truth or expected]
        probabilities = score_targets(model, model.tokenizer, [prompt] * 3, targets).log_prob.exp().tolist()
        rows.append({"kind": kind, "prompt": prompt, "expected": expected,
                     "top": [(text, round(p, 4)) for text, p in top_next_tokens(model, model.tokenizer, prompt, 3)],
                     "p_expected": probabilities[0], "p_target_new": probabilities[1],
                     "p_old_answer": probabilities[2] if request.ground_truth else None})
    return rows


def cmd_edit(args) -> int:
    model, world = load_model_and_world(args.model)
    case = world_case(world, args.prompt, args.subject)
    truth = args.ground_truth or (case["ground_truth"] if case else None)
    request = EditRequest(args.prompt, args.subject, args.target_new, truth)
    editor = make_editor(args.method, model, args.hparams, args.layer,
                         lambda: statistics_texts(world, args.stats_corpus))
    edit, layer = editor(request)
    probes = _probe_prompts(case, request)
    before = _predictions(model, probes, request)
    with edit.applied(model):
        after = _predictions(model, probes, request)
    payload = {"request": dataclasses.asdict(request), "method": edit.method, "layer": layer,
               "edit_seconds": edit.timings["total_s"], "before": before, "after": after}
    if args.json:
        print(json.dumps(payload, indent=1))
        return 0
    print(f"{edit.method.upper()} at layer {layer} ({edit.timings['total_s']:.1f} s): "
          f"{request.prompt!r} -> {request.target_new!r} (was {truth!r})")
    for old, new in zip(before, after):
        print(f"\n[{old['kind']}] {old['prompt']!r} (expected after the edit: {old['expected']!r})")
        for label, row in (("before", old), ("after", new)):
            top = ", ".join(f"{t!r} {p:.2f}" for t, p in row["top"])
            old_answer = f", p(old answer) {row['p_old_answer']:.3f}" if row["p_old_answer"] is not None else ""
            print(f"  {label:>6}: p(expected) {row['p_expected']:.3f}, p(new) {row['p_target_new']:.3f}"
                  f"{old_answer}; top: {top}")
    return 0


def cmd_eval(args) -> int:
    from workbench.evaluation.cases import parse_cases, read_cases
    from workbench.evaluation.runner import HEADLINE_METRICS, evaluate, write_results

    model, world = load_model_and_world(args.model)
    if args.cases:
        cases = read_cases(args.cases)
    elif world is not None:
        cases = parse_cases(export_edit_cases(world, "test"), "the world's test split")
    else:
        raise ValueError("this model has no fact world: pass --cases FILE")
    editor = make_editor(args.method, model, args.hparams, args.layer,
                         lambda: statistics_texts(world, args.stats_corpus))
    results, records = evaluate(model, cases[: args.n], lambda case: editor(case.request)[0])
    results["method"] = args.method
    write_results(args.out, results, records, overwrite=args.force)
    print(f"{args.method} on {results['n_cases']} cases (median edit {results['median_edit_seconds']:.2f} s) "
          f"-> {args.out}")
    for name in HEADLINE_METRICS:
        value = results.get(name, {})
        if value.get("mean") is not None:
            interval = f" ± {value['ci95']:.3f}" if value["ci95"] is not None else ""
            print(f"  {name:>14}: {value['mean']:.3f}{interval} (n={value['n']})")
    return 0
