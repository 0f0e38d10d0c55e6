"""Training a MEND editor on facts the model learned but is never evaluated on (the model stays
frozen and unchanged): the world's ``train`` split, or the train records of a case file.

From a world, each training edit is a base fact of a train-split subject with a random
counterfactual object, asked in one corpus phrasing (the edit prompt, whose fine-tuning gradient
the editor transforms) and answered in another (the paraphrase, where the edit loss is measured).
The locality loss is measured on two statements of other train-split subjects: an unrelated fact,
and a neighbour (the same relation, with the same object where another subject has it), the hard
case for an edit that learns "relation -> new object" instead of "this subject's relation -> new
object". From case-file records (CounterFact, zsRE), a training edit is a record's own request
(its prompt and counterfactual target), measured on one of its paraphrases; the neighbour is one of
its neighbourhood (locality) prompts with its answer, the unrelated statement a true fact of
another record.

A tenth of the training facts is held out for validation: every tenth train-split subject (in
name order) of a world, the last tenth of the usable train records. The validation edits are drawn
from them alone, the same ones at every validation, and the editor kept is the one of the lowest
validation loss. Deterministic under ``MendHparams.seed`` on a given device and thread count.
"""

from __future__ import annotations

import copy
import io
import itertools
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from workbench.core.cases import EditCase
from workbench.core.edit import EditRequest, delta_hooks
from workbench.core.io import write_text_atomic
from workbench.core.journal import RunInterrupted
from workbench.editing.hparams import MendHparams
from workbench.editing.mend import MendNetwork, edit_gradients, edited_sites, mend_deltas, new_network
from workbench.editing.target_loss import target_batch
from workbench.model.frozen import frozen_weights
from workbench.model.record_corpus import true_facts
from workbench.world import World, relation
from workbench.world.facts import statement


@dataclass(frozen=True)
class TrainingEdit:
    request: EditRequest
    paraphrase: str
    unrelated: str
    neighbour: str


PARTS = ("train", "validation")


def training_edits(facts: World | Sequence[EditCase], seed: int, part: str = "train") -> Iterator[TrainingEdit]:
    """An endless, seeded stream of training edits from a world or from train records, from the
    facts of ``part`` (``"train"`` or the held-out ``"validation"``; see the module docstring)."""
    if part not in PARTS:
        raise ValueError(f"part is one of {PARTS}, not {part!r}")
    if isinstance(facts, World):
        return world_training_edits(facts, seed, part)
    return record_training_edits(facts, seed, part)


def record_training_edits(cases: Sequence[EditCase], seed: int, part: str = "train") -> Iterator[TrainingEdit]:
    """Training edits from case-file records that have a paraphrase and a neighbourhood prompt."""
    rng = random.Random(seed)
    usable = [case for case in cases if case.paraphrases and case.neighbours]
    held_out = max(2, len(usable) // 10)
    if len(usable) < held_out + 2:
        raise ValueError(f"MEND needs four or more train records with a paraphrase and a neighbourhood prompt "
                         f"(two of them held out for validation); {len(usable)} of the {len(cases)} have both")
    usable = usable[-held_out:] if part == "validation" else usable[:-held_out]
    while True:
        case, other = rng.sample(usable, 2)
        neighbour = rng.choice(case.neighbours)
        yield TrainingEdit(case.request, rng.choice(case.paraphrases).prompt,
                           statement(*rng.choice(true_facts(other))), statement(neighbour.prompt, neighbour.answer))


def validation_subjects(world: World) -> set[str]:
    """The train-split subjects held out for validation: every tenth, in name order."""
    return set(sorted({f.subject for f in world.facts if world.split_of(f.subject) == "train"})[9::10])


def world_training_edits(world: World, seed: int, part: str = "train") -> Iterator[TrainingEdit]:
    """Training edits from the base facts of the world's train split."""
    rng = random.Random(seed)
    held_out = validation_subjects(world)
    train = [f for f in world.facts if world.split_of(f.subject) == "train"
             and (f.subject in held_out) == (part == "validation")]
    facts = [f for f in train if relation(f.relation).is_base and len(relation(f.relation).corpus) >= 2
             and len(world.objects_of_relation(f.relation)) >= 2]
    if not facts:
        raise ValueError(f"the world's train split has no {part} facts to train a MEND editor on")
    by_relation: dict[str, list] = {}
    for fact in train:
        by_relation.setdefault(fact.relation, []).append(fact)

    def stated(fact) -> str:
        return statement(rng.choice(relation(fact.relation).corpus).format(fact.subject), fact.object)

    while True:
        fact = rng.choice(facts)
        new_object = rng.choice([o for o in world.objects_of_relation(fact.relation) if o != fact.object])
        own, other = rng.sample(relation(fact.relation).corpus, 2)
        unrelated = rng.choice([f for f in train if f.subject != fact.subject])
        peers = [f for f in by_relation[fact.relation] if f.subject != fact.subject]
        same_object = [f for f in peers if f.object == fact.object]
        neighbour = rng.choice(same_object or peers or [unrelated])
        yield TrainingEdit(EditRequest(own.format(fact.subject), fact.subject, new_object, fact.object),
                           other.format(fact.subject), stated(unrelated), stated(neighbour))


def edit_losses(model, network: MendNetwork, sites, example: TrainingEdit, neighbour_locality: bool = True,
                observe: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(edit NLL, locality KL)`` of one training edit made by ``network`` (differentiable in its
    parameters; the KL is averaged over the tokens of the unrelated statement and, with
    ``neighbour_locality``, the neighbour's); ``observe`` first folds the edit's gradient pairs into
    the input statistics."""
    pairs = edit_gradients(model, example.request, sites)
    if observe:
        for index, (keys, grads) in enumerate(pairs):
            network.observe(index, keys, grads)
    statements = (example.unrelated, example.neighbour) if neighbour_locality else (example.unrelated,)
    batch = target_batch(model.tokenizer, [example.paraphrase], example.request.target_new, model.W_E.device,
                         others=statements)
    mask = torch.zeros(len(statements), batch.tokens.shape[1], dtype=torch.bool, device=batch.tokens.device)
    for row, length in enumerate(batch.lengths[1:]):
        mask[row, :length] = True
    with torch.no_grad():
        original = model(batch.tokens[1:])[mask].float().log_softmax(-1)
    with model.hooks(fwd_hooks=delta_hooks(mend_deltas(network, sites, pairs))):
        logits = model(batch.tokens)
    nll = batch.nll(logits)
    kl = torch.nn.functional.kl_div(logits[1:][mask].float().log_softmax(-1), original, log_target=True,
                                    reduction="batchmean")
    return nll, kl


def batch_loss(model, network: MendNetwork, sites, examples: Sequence[TrainingEdit], hparams: MendHparams,
               observe: bool = False) -> tuple[torch.Tensor, float, float]:
    """``(loss, mean NLL, mean KL)`` of ``examples``: ``edit_weight`` x NLL + ``locality_weight`` x KL."""
    nlls, kls = zip(*(edit_losses(model, network, sites, example, hparams.neighbour_locality, observe=observe)
                      for example in examples))
    nll, kl = torch.stack(nlls).mean(), torch.stack(kls).mean()
    return hparams.edit_weight * nll + hparams.locality_weight * kl, nll.item(), kl.item()


def validation_loss(model, network: MendNetwork, sites, examples: Sequence[TrainingEdit],
                    hparams: MendHparams) -> float:
    """The training loss on the validation edits, without a gradient, in batches of ``batch_size``."""
    batches = [examples[start:start + hparams.batch_size] for start in range(0, len(examples), hparams.batch_size)]
    with torch.no_grad():
        total = sum(batch_loss(model, network, sites, batch, hparams)[0].item() * len(batch) for batch in batches)
    return total / len(examples)


@dataclass
class TrainingState:
    """Where a MEND training run stands after ``step`` steps: the network and optimiser states, the
    best validation so far ``(loss, step, network state)``, the losses and the seconds spent."""

    step: int
    network: dict
    optimizer: dict
    best: tuple
    history: list
    validations: list
    seconds: float


def save_training_state(path: Path, state: TrainingState, identity: dict) -> None:
    """``state`` and what it belongs to (``identity``: the model's fingerprint, the hyperparameters),
    written atomically to ``path``."""
    buffer = io.BytesIO()
    torch.save({"identity": identity, "state": asdict(state)}, buffer)
    write_text_atomic(path, buffer.getvalue(), overwrite=True)


def load_training_state(path: Path, identity: dict) -> TrainingState:
    """The state ``save_training_state`` wrote to ``path``; missing, unreadable or belonging to
    another model or other hyperparameters, a clear error."""
    if not path.is_file():
        raise FileNotFoundError(f"there is no interrupted MEND training to resume: {path} does not exist")
    try:
        saved = torch.load(path, weights_only=False)
        state = TrainingState(**saved["state"])
    except Exception as error:  # noqa: BLE001 - any unreadable file: one clear error naming it
        raise ValueError(f"{path} is not a readable MEND training checkpoint ({type(error).__name__}: {error}); "
                         "start over with --force") from None
    differing = sorted(key for key in identity if saved["identity"].get(key) != identity[key])
    if differing:
        raise ValueError(f"the MEND training checkpoint {path} belongs to another run ({', '.join(differing)} "
                         "differ); resume with the same model and hyperparameters, or start over with --force")
    return state


def train_mend(model, facts: World | Sequence[EditCase], hparams: MendHparams, progress: bool = True,
               checkpoint: Path | None = None, resume: bool = False, identity: dict | None = None
               ) -> tuple[MendNetwork, dict]:
    """A MEND editor for ``model`` trained on ``facts`` (a world's train split or train records),
    the one of the lowest validation loss, and its training report.

    ``checkpoint``: a file where the training state is saved at every validation (atomically), so
    that an interrupted training continues from there with ``resume`` (``identity`` says whose
    state it is: the model's fingerprint and the hyperparameters; a mismatch is refused). The
    resumed run replays the training stream to the saved step, so it ends with the editor of an
    uninterrupted run on the same device and thread count. Ctrl-C raises ``RunInterrupted``
    naming the checkpoint."""
    started = time.perf_counter()
    sites = edited_sites(model, hparams)
    network = new_network(model, hparams)
    others = [p for name, p in network.named_parameters() if name != "log_step_size"]
    optimizer = torch.optim.Adam([{"params": others},
                                  {"params": [network.log_step_size], "lr": hparams.step_size_lr}], lr=hparams.lr)
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    identity = identity or {}
    state = TrainingState(0, {}, {}, (float("inf"), 0, copy.deepcopy(network.state_dict())), [], [], 0.0)
    if resume:
        state = load_training_state(checkpoint, identity)
        network.load_state_dict(state.network)
        optimizer.load_state_dict(state.optimizer)
    stream = itertools.islice(training_edits(facts, hparams.seed), state.step * hparams.batch_size, None)
    validation = list(itertools.islice(training_edits(facts, hparams.seed + 1, "validation"),
                                       hparams.validation_edits))
    bar = tqdm(range(state.step + 1, hparams.train_steps + 1), desc="training the MEND editor",
               disable=not progress)
    try:
        with frozen_weights(model):
            for step in bar:
                loss, nll, kl = batch_loss(model, network, sites, [next(stream) for _ in range(hparams.batch_size)],
                                           hparams, observe=True)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"MEND training loss became {loss.item()} at step {step}")
                for parameter, grad in zip(parameters, torch.autograd.grad(loss, parameters, allow_unused=True)):
                    parameter.grad = grad
                if hparams.grad_clip:
                    torch.nn.utils.clip_grad_norm_(parameters, hparams.grad_clip)
                optimizer.step()
                state.history.append((nll, kl))
                bar.set_postfix(nll=f"{nll:.3f}", kl=f"{kl:.4f}")
                if step % hparams.validation_every == 0 or step == hparams.train_steps:
                    state.validations.append((step, round(validation_loss(model, network, sites, validation,
                                                                          hparams), 4)))
                    if state.validations[-1][1] < state.best[0]:
                        state.best = (state.validations[-1][1], step, copy.deepcopy(network.state_dict()))
                    if checkpoint is not None:
                        state.step, state.network, state.optimizer = step, network.state_dict(), optimizer.state_dict()
                        state.seconds += time.perf_counter() - started
                        started = time.perf_counter()
                        save_training_state(checkpoint, state, identity)
    except KeyboardInterrupt:
        where = (f"the state of step {state.step} is saved in {checkpoint}; run the same command with --resume "
                 "to continue" if checkpoint is not None and state.step else "nothing was saved")
        raise RunInterrupted(f"MEND training interrupted: {where}") from None
    network.load_state_dict(state.best[2])
    network.eval()

    def window_means(rows):
        return [[round(sum(r[i] for r in rows) / len(rows), 4) for i in range(2)]] if rows else []

    history = state.history
    report = {
        "trained_on": "the world's train split" if isinstance(facts, World) else f"{len(facts)} train records",
        "train_steps": hparams.train_steps,
        "train_seconds": round(state.seconds + time.perf_counter() - started, 1),
        "edits_seen": hparams.train_steps * hparams.batch_size,
        "nll_kl_every_50_steps": [m for i in range(0, len(history), 50) for m in window_means(history[i:i + 50])],
        "validation_loss_by_step": state.validations, "kept_step": state.best[1],
        "step_sizes": network.log_step_size.exp().tolist(),
    }
    return network, report
