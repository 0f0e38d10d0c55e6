"""A training corpus made of the true facts of an edit-case file (CounterFact, zsRE, ...).

A file's records are split by position: the first ``n_test`` are the evaluated (test) records,
the rest the train records (for MEND's editor and IKE's demonstrations). The model learns the
true facts of all of them. Each record's true facts (``true_facts``) are its prompt with its
ground truth, its paraphrases with the ground truth and its neighbourhood (locality) prompts
with their own answers; a statement is ``"<prompt> <answer>."``.

Each corpus round holds, shuffled: one document per record stating its true facts in random
order; mixed documents of statements from random records (so unrelated text before a prompt is
in distribution); and in-context update documents built from train records only, in the form
of the world corpus (``New fact: <prompt> <new target>.`` then ``Prompt:`` lines: a paraphrase
answered with the new target and a neighbourhood prompt keeping its answer).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from workbench.core.cases import EditCase
from workbench.world import CorpusConfig
from workbench.world.corpus import NEW_FACT_PREFIX, PROMPT_PREFIX
from workbench.world.facts import statement


def true_facts(case: EditCase) -> list[tuple[str, str]]:
    """``(prompt, answer)`` for every true fact a record states (see the module docstring)."""
    truth = case.request.ground_truth
    facts = [(case.request.prompt, truth), *((p.prompt, truth) for p in case.paraphrases)]
    return facts + [(p.prompt, p.answer) for p in (*case.neighbours, *case.same_subject)]


def update_block(rng: random.Random, case: EditCase) -> str:
    """One ``New fact`` block for a train record's counterfactual."""
    new = case.request.target_new
    lines = [NEW_FACT_PREFIX + statement(case.request.prompt, new)]
    lines += [PROMPT_PREFIX + statement(p.prompt, new) for p in case.paraphrases[:1]]
    kept = rng.sample(case.neighbours, min(1, len(case.neighbours)))
    lines += [PROMPT_PREFIX + statement(p.prompt, p.answer) for p in kept]
    return "\n".join(lines)


def record_rounds(cases: Sequence[EditCase], n_test: int, config: CorpusConfig) -> Iterator[list[str]]:
    """An endless stream of corpus rounds, deterministic under ``config.seed``."""
    rng = random.Random(config.seed)
    statements = [[statement(prompt, answer) for prompt, answer in true_facts(case)] for case in cases]
    every_statement = [s for record in statements for s in record]
    train_cases = list(cases[n_test:])
    n_mixed = round(config.mixed_documents_per_subject * len(cases))
    n_update = round(config.update_documents_per_subject * len(cases)) if train_cases else 0
    low, high = config.demonstrations_per_update_document
    while True:
        documents = [" ".join(rng.sample(record, len(record))) for record in statements]
        documents += [" ".join(rng.choice(every_statement) for _ in range(config.statements_per_mixed_document))
                      for _ in range(n_mixed)]
        documents += ["\n\n".join(update_block(rng, rng.choice(train_cases)) for _ in range(rng.randint(low, high)))
                      for _ in range(n_update)]
        rng.shuffle(documents)
        yield documents
