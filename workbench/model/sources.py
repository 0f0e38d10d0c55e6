"""What a model is trained on: a recipe's synthetic world, or the true facts of an edit-case file.

A source gives ``train_model`` its tokenizer, its endless corpus rounds, the recall numbers of
its training report and the companion files written next to the weights (``files``): the
world's ``world.json``, or for a case file ``facts.json`` (where the facts came from and how the
records were split) and ``corpus.txt`` (one corpus round, one document per line: the texts ROME's
key statistics are read from).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from workbench.core.cases import EditCase, read_cases
from workbench.model.presets import Recipe
from workbench.model.recall import fact_recall
from workbench.model.record_corpus import record_rounds, true_facts
from workbench.model.tokenizer import anonymised_texts, train_tokenizer
from workbench.model.tokens import score_targets
from workbench.world import build_world, corpus_rounds
from workbench.world.cases import edit_triples

WORLD_FILE = "world.json"
FACTS_FILE = "facts.json"
CORPUS_FILE = "corpus.txt"
COMPANION_FILES = (WORLD_FILE, FACTS_FILE, CORPUS_FILE)
NO_TRAINING_FACTS = ("needs facts the model learned outside the evaluated cases (a workbench world's train split, or "
                     "the train records of the case file it was trained on); this model has neither")


class WorldSource:
    """The synthetic world of ``recipe`` (the embedded presets)."""

    files = (WORLD_FILE,)

    def __init__(self, recipe: Recipe):
        self.recipe, self.world = recipe, build_world(recipe.world)

    def tokenizer(self):
        """Trained on rounds of the world's corpus, anonymised (names stay multi-token) except for
        the entity kinds the recipe keeps whole."""
        cfg = self.recipe.training
        documents = itertools.chain.from_iterable(
            itertools.islice(corpus_rounds(self.world, self.recipe.corpus, set()), cfg.tokenizer_rounds))
        texts = anonymised_texts(self.world, documents, cfg.seed, keep_kinds=cfg.whole_name_kinds)
        return train_tokenizer(texts, self.recipe.architecture.vocab_size, cfg.tokenizer_min_frequency)

    def rounds(self) -> Iterator[list[str]]:
        excluded = edit_triples(self.world, self.recipe.training.edit_case_seed)
        return corpus_rounds(self.world, self.recipe.corpus, excluded)

    def recall(self, model, tokenizer) -> dict:
        return {"recall_corpus": fact_recall(model, tokenizer, self.world, "corpus"),
                "recall_heldout": fact_recall(model, tokenizer, self.world, "heldout")}

    def write(self, out_dir: Path) -> None:
        (out_dir / WORLD_FILE).write_text(json.dumps(self.world.to_dict()))


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class RecordSource:
    """The true facts of the edit cases read from ``cases_file`` (``record_corpus``); the first
    ``n_test`` records are the evaluated ones."""

    files = (FACTS_FILE, CORPUS_FILE)

    def __init__(self, recipe: Recipe, cases_file: str | Path, cases: Sequence[EditCase], n_test: int):
        if not 0 < n_test <= len(cases):
            raise ValueError(f"n_test must be between 1 and the {len(cases)} records of {cases_file}, got {n_test}")
        self.recipe, self.cases, self.n_test = recipe, list(cases), n_test
        self.description = {"cases_file": str(Path(cases_file).resolve()), "sha256": file_digest(cases_file),
                            "n_records": len(cases), "n_test": n_test, "format": cases[0].source}

    def tokenizer(self):
        cfg = self.recipe.training
        texts = itertools.chain.from_iterable(itertools.islice(self.rounds(), cfg.tokenizer_rounds))
        return train_tokenizer(texts, self.recipe.architecture.vocab_size, cfg.tokenizer_min_frequency)

    def rounds(self) -> Iterator[list[str]]:
        return record_rounds(self.cases, self.n_test, self.recipe.corpus)

    def recall(self, model, tokenizer) -> dict:
        """Top-1 recall of the answers' first tokens: of the edit prompts, of their paraphrases and
        of the neighbourhood prompts, over all records."""
        groups = {"recall_edit_prompts": [(c.request.prompt, c.request.ground_truth) for c in self.cases],
                  "recall_paraphrases": [(p.prompt, c.request.ground_truth) for c in self.cases for p in c.paraphrases],
                  "recall_neighbourhood": [(p.prompt, p.answer) for c in self.cases for p in c.neighbours]}
        report = {}
        for name, pairs in groups.items():
            if pairs:
                hits = score_targets(model, tokenizer, *zip(*pairs)).first_token_is_top1
                report[name] = {"recall": hits.float().mean().item(), "n_prompts": len(pairs)}
        report["n_true_facts"] = sum(len(true_facts(c)) for c in self.cases)
        return report

    def write(self, out_dir: Path) -> None:
        (out_dir / FACTS_FILE).write_text(json.dumps(self.description, indent=1))
        lines = (document.replace("\n", " ") for document in next(self.rounds()))
        (out_dir / CORPUS_FILE).write_text("\n".join(lines) + "\n")


class TrainRecords(Sequence[EditCase]):
    """The train records of the case file the model in ``model_dir`` was trained on (named in its
    ``facts.json``): what MEND's training edits and IKE's demonstrations are drawn from. The file is
    read on first use and only if its SHA-256 is the one the model was trained on, so a model whose
    file has moved still edits with the methods that do not need it."""

    def __init__(self, model_dir: str | Path):
        self.model_dir = Path(model_dir)
        self._cases: list[EditCase] | None = None

    def cases(self) -> list[EditCase]:
        if self._cases is None:
            description = json.loads((self.model_dir / FACTS_FILE).read_text())
            cases_file = Path(description["cases_file"])
            if not cases_file.is_file():
                raise ValueError(f"{self.model_dir} was trained on the records of {cases_file}, which is not there "
                                 "any more; its train records (for MEND and IKE) cannot be read")
            if file_digest(cases_file) != description["sha256"]:
                raise ValueError(f"{cases_file} has changed since {self.model_dir} was trained on it (its SHA-256 "
                                 "differs); its train records would not be the ones the model learned")
            self._cases = read_cases(cases_file)[description["n_test"]:]
        return self._cases

    def __getitem__(self, index):
        return self.cases()[index]

    def __len__(self) -> int:
        return len(self.cases())
