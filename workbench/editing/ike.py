"""IKE, in-context knowledge editing (Zheng et al. 2023): the new fact and retrieved demonstrations
go before the prompt; no weight changes.

Demonstrations are written in the format of the world corpus's update documents, which the
default model learned in training::

    New fact: <a counterfactual statement>
    Prompt: <a prompt> <its answer under the new fact>

They come from a pool of facts the model learned but is never evaluated on. From a world's
``train`` split: every base fact of a train subject with one counterfactual object (drawn under
``IkeHparams.seed``, never an exported edit case). From a case file's train records (CounterFact,
zsRE): each record with a paraphrase and a neighbourhood prompt, with its own counterfactual
target. Each pool entry can serve as one of the paper's three kinds:

- ``copy``: asked with the new fact's own prompt, answered with the new object;
- ``update``: asked with another phrasing of the same fact (another corpus phrasing of the
  relation, or the record's paraphrase), answered with the new object;
- ``retain``: asked about another subject, answered with its true object (the new fact must not
  spread to it): a subject with the same relation, or one of the record's neighbourhood prompts.

Retrieval: the ``k`` pool entries whose new-fact statements are most similar to the request's
new fact. Similarity is the cosine of the model's own final-layer residual stream
(``blocks.{n_layers-1}.hook_resid_post``), mean-pooled over the statement's tokens (BOS excluded).
The kinds are assigned along the similarity order in the paper's proportions
copy:update:retain = 1:3:4 (``kind_sequence``: any number of the most similar keeps the
proportions as well as it can); demonstrations are written in increasing similarity, so the most
similar stands next to the new fact.

The context is the demonstrations, then (``request_demonstration``, the default, as the authors'
code adds it) the request itself as a copy demonstration, then ``New fact: <request prompt>
<target_new>.`` and ``Prompt: ``; the prompt asked follows. ``retrieval = "random"`` draws the
demonstrations at random from the pool instead (an ablation of the retrieval).

If the context and ``reserve_tokens`` (room for the prompt
and its answer) exceed the model's context length, the least similar demonstrations are dropped,
never the new fact; ``Edit.details`` records how many were used and dropped.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from workbench.core.cases import EditCase
from workbench.core.edit import Edit, EditRequest
from workbench.core.sites import stream_hook
from workbench.editing.hparams import IkeHparams
from workbench.editing.method import EditingMethod, Resources
from workbench.model.hooks import hooks_suspended
from workbench.model.sources import NO_TRAINING_FACTS
from workbench.model.tokens import encode_prompt, encode_target, pad_id_of, pad_right
from workbench.world import World, relation
from workbench.world.cases import edit_triples
from workbench.world.corpus import NEW_FACT_PREFIX, PROMPT_PREFIX
from workbench.world.facts import statement

KINDS = ("copy", "update", "retain")
DEMONSTRATION_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class PoolEntry:
    """A train fact with a counterfactual object, and the three prompts it can teach with."""

    new_fact: str
    update: str
    retain: str
    subject: str
    relation: str = ""  # the world relation; empty for a case-file record

    def demonstration(self, kind: str) -> str:
        """The block teaching ``kind``: ``copy`` asks the new fact itself."""
        asked = self.new_fact if kind == "copy" else getattr(self, kind)
        return f"{NEW_FACT_PREFIX}{self.new_fact}\n{PROMPT_PREFIX}{asked}"


def kind_sequence(k: int, proportions: tuple[int, ...]) -> list[str]:
    """``k`` kinds in ``proportions`` (copy, update, retain), apportioned by largest remainder and
    interleaved so that every prefix of the list keeps the proportions as well as it can."""
    total = sum(proportions)
    quotas = [k * p / total for p in proportions]
    counts = [int(q) for q in quotas]
    for index in sorted(range(len(KINDS)), key=lambda i: counts[i] - quotas[i])[:k - sum(counts)]:
        counts[index] += 1
    sequence, used = [], [0] * len(KINDS)
    for position in range(k):
        index = max(range(len(KINDS)), key=lambda i: (counts[i] * (position + 1) / k - used[i], -i))
        sequence.append(KINDS[index])
        used[index] += 1
    return sequence


def demonstration_pool(facts: World | Sequence[EditCase], seed: int) -> list[PoolEntry]:
    """The pool of a world's train split or of train records (see the module docstring)."""
    if isinstance(facts, World):
        return world_pool(facts, seed)
    return record_pool(facts, seed)


def record_pool(cases: Sequence[EditCase], seed: int) -> list[PoolEntry]:
    """One entry per train record that has a paraphrase and a neighbourhood prompt."""
    rng = random.Random(seed)
    pool = []
    for case in cases:
        if not case.paraphrases or not case.neighbours:
            continue
        request, kept = case.request, rng.choice(case.neighbours)
        pool.append(PoolEntry(new_fact=statement(request.prompt, request.target_new),
                              update=statement(rng.choice(case.paraphrases).prompt, request.target_new),
                              retain=statement(kept.prompt, kept.answer), subject=request.subject))
    return pool


def world_pool(world: World, seed: int) -> list[PoolEntry]:
    """Every base fact of a train-split subject, with a counterfactual object."""
    rng = random.Random(seed)
    excluded = edit_triples(world)
    subjects_of_relation: dict[str, list[str]] = defaultdict(list)
    for fact in world.facts:
        subjects_of_relation[fact.relation].append(fact.subject)
    pool = []
    for fact in world.facts:
        rel = relation(fact.relation)
        if not rel.is_base or world.split_of(fact.subject) != "train":
            continue
        candidates = [o for o in world.objects_of_relation(fact.relation)
                      if o != fact.object and (fact.subject, fact.relation, o) not in excluded]
        others = [s for s in subjects_of_relation[fact.relation] if s != fact.subject]
        if not candidates or not others or len(rel.corpus) < 2:
            continue
        new_object = rng.choice(candidates)
        own, paraphrase = rng.sample(rel.corpus, 2)
        other = rng.choice(others)
        pool.append(PoolEntry(
            new_fact=statement(own.format(fact.subject), new_object),
            update=statement(paraphrase.format(fact.subject), new_object),
            retain=statement(rng.choice(rel.corpus).format(other), world.object_of(other, fact.relation)),
            subject=fact.subject, relation=fact.relation))
    return pool


@torch.no_grad()
def sentence_embeddings(model, texts: list[str], batch_size: int = 128) -> Tensor:
    """``[n_texts, d_model]`` unit vectors: the final layer's residual stream, mean-pooled over
    each text's tokens (BOS excluded, where the tokenizer has one)."""
    hook = stream_hook("resid", model.cfg.n_layers - 1)
    pad = pad_id_of(model.tokenizer)
    rows = []
    for begin in range(0, len(texts), batch_size):
        ids = [encode_prompt(model.tokenizer, text) for text in texts[begin:begin + batch_size]]
        tokens = pad_right(ids, pad).to(model.W_E.device)
        _, cache = model.run_with_cache(tokens, names_filter=[hook])
        mask = torch.zeros(tokens.shape, dtype=torch.bool)
        first = 1 if model.tokenizer.bos_token_id is not None else 0  # encode_prompt put BOS there
        for row, sequence in enumerate(ids):
            mask[row, first:len(sequence)] = True
        resid = cache[hook].float().cpu()
        pooled = (resid * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        rows.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(rows)


class DemonstrationRetriever:
    """The pool of a world or of train records and the model's embeddings of its new facts
    (computed once)."""

    def __init__(self, model, facts: World | Sequence[EditCase] | None, hparams: IkeHparams):
        if facts is None:
            raise ValueError(f"IKE {NO_TRAINING_FACTS}")
        self.model, self.hparams = model, hparams
        self.pool = demonstration_pool(facts, hparams.seed)
        if not self.pool:
            raise ValueError("no train facts to build IKE demonstrations from (records need a paraphrase and a "
                             "neighbourhood prompt)")
        self._embeddings: Tensor | None = None

    def chosen(self, request: EditRequest, k: int) -> list[PoolEntry]:
        """``k`` entries by ``hparams.retrieval``: the most similar first (``"knn"``), or drawn at
        random (``"random"``, seeded by ``hparams.seed`` and the request); never about the
        request's own subject."""
        if self.hparams.retrieval == "knn":
            return self.nearest(request, k)
        rng = random.Random(f"{self.hparams.seed}|{request.prompt}|{request.target_new}")
        others = [entry for entry in self.pool if entry.subject != request.subject.strip()]
        return rng.sample(others, min(k, len(others)))

    def nearest(self, request: EditRequest, k: int) -> list[PoolEntry]:
        """The ``k`` entries most similar to the request's new fact, most similar first; never an
        entry about the request's own subject (its counterfactual would compete with the new fact)."""
        with hooks_suspended(self.model):  # the cached embeddings describe the model, not a caller's edits
            if self._embeddings is None:
                self._embeddings = sentence_embeddings(self.model, [entry.new_fact for entry in self.pool])
            query = sentence_embeddings(self.model, [statement(request.prompt, request.target_new)])[0]
        order = torch.argsort(self._embeddings @ query, descending=True).tolist()
        subject = request.subject.strip()
        return [self.pool[i] for i in order if self.pool[i].subject != subject][:k]


def compute_ike_edit(model, request: EditRequest, hparams: IkeHparams, retriever: DemonstrationRetriever) -> Edit:
    """The IKE edit of ``request``: a context of retrieved demonstrations and the new fact."""
    started = time.perf_counter()
    entries = retriever.chosen(request, hparams.k)
    kinds = kind_sequence(len(entries), hparams.proportions)
    demonstrations = [entry.demonstration(kind) for entry, kind in zip(entries, kinds)]
    new_fact = statement(request.prompt, request.target_new)
    fact = f"{NEW_FACT_PREFIX}{new_fact}\n{PROMPT_PREFIX}"
    if hparams.request_demonstration:  # the request itself as a copy demonstration, as the authors' code adds
        fact = f"{NEW_FACT_PREFIX}{new_fact}\n{PROMPT_PREFIX}{new_fact}{DEMONSTRATION_SEPARATOR}{fact}"
    budget = model.cfg.n_ctx - hparams.reserve_tokens
    used = len(demonstrations)
    while True:
        context = DEMONSTRATION_SEPARATOR.join([*reversed(demonstrations[:used]), fact])
        if len(encode_prompt(model.tokenizer, context)) <= budget:
            break
        if used == 0:
            what = "the new fact and its copy demonstration" if hparams.request_demonstration else "the new fact alone"
            raise ValueError(f"{what}: {len(encode_prompt(model.tokenizer, context))} tokens leave no room for "
                             f"a prompt of {hparams.reserve_tokens} tokens in the model's context of {model.cfg.n_ctx}")
        used -= 1
    details = {"demonstrations": used, "dropped_for_context": len(demonstrations) - used,
               "kinds": kinds[:used], "context_tokens": len(encode_prompt(model.tokenizer, context))}
    return Edit(request, (), method="ike", hparams=asdict(hparams), context=context, details=details,
                timings={"total_s": time.perf_counter() - started})


class Ike(EditingMethod):
    """IKE behind the method protocol: prepares the demonstration pool and its embeddings."""

    name = "ike"
    in_context = True
    hparams_class = IkeHparams
    main_hparams = ("k", "reserve_tokens")

    def prepare(self, model, hparams: IkeHparams, resources: Resources) -> DemonstrationRetriever:
        return DemonstrationRetriever(model, resources.facts, hparams)

    def compute(self, model, request: EditRequest, hparams: IkeHparams, prepared: DemonstrationRetriever) -> Edit:
        return compute_ike_edit(model, request, hparams, prepared)

    def for_case(self, model, case: EditCase, hparams: IkeHparams) -> IkeHparams:
        """Room after the context for the longest prompt the case asks and the longest answer scored
        there, when that is more than ``reserve_tokens`` (long CounterFact paraphrases)."""
        prompts, answers = case.asked()
        tokenizer = model.tokenizer
        room = (max(len(encode_prompt(tokenizer, prompt, prepend_bos=False)) for prompt in prompts)
                + max(len(encode_target(tokenizer, answer)) for answer in answers if answer))
        return dataclasses.replace(hparams, reserve_tokens=max(hparams.reserve_tokens, room))

    def edited_layers(self, hparams: IkeHparams, n_layers: int) -> str:
        return "context"
