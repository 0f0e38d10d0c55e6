"""Recipes for the embedded models: world, corpus, architecture and training, as data."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

from workbench.world import CorpusConfig, WorldConfig
from workbench.world.facts import ENTITY_KINDS

RECIPE_VERSION = 1  # bump when generation or training code changes what a recipe produces


@dataclass(frozen=True)
class ArchitectureConfig:
    """A GPT-2 architecture (Hugging Face ``GPT2LMHeadModel``) with dropout off."""

    n_layer: int = 8
    n_embd: int = 128
    n_head: int = 4
    n_ctx: int = 256
    vocab_size: int = 1024


@dataclass(frozen=True)
class TrainingConfig:
    """AdamW with linear warm-up and cosine decay; one pass over a freshly generated corpus."""

    steps: int = 1800
    batch_size: int = 16
    learning_rate: float = 3e-3
    min_learning_rate_fraction: float = 0.05
    warmup_steps: int = 40
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    autocast_bf16: bool = True
    tokenizer_rounds: int = 4
    tokenizer_min_frequency: int = 2
    edit_case_seed: int = 0
    # False: names split into syllable tokens (see workbench.model.tokenizer); True: the tokenizer
    # is trained on the real corpus, so with a large enough vocabulary every name part is one token.
    tokenizer_whole_names: bool = False
    # Entity kinds whose invented words stay whole when ``tokenizer_whole_names`` is False, for
    # example ("person",): people's name parts become tokens, places and companies stay syllables.
    tokenizer_whole_name_kinds: tuple[str, ...] = ()
    # Where it trains ("cpu" or "cuda"): a GPU's kernels give other weights than a CPU's.
    device: str = "cpu"
    # An enrichment stage of this many steps on directory lines alone comes before the corpus's
    # ``steps`` (its own warm-up and decay); see ``workbench.model.training``.
    enrichment_steps: int = 0
    # For the first ``late_mlp_slow_steps`` steps of the corpus stage, the MLPs of the last
    # ``late_mlp_layers`` blocks and the final layer norm learn at ``late_mlp_lr_fraction`` of the rate.
    late_mlp_layers: int = 0
    late_mlp_lr_fraction: float = 0.1
    late_mlp_slow_steps: int = 0
    # The corpus stage generates 1 / ``corpus_passes`` of its blocks and passes over them that many
    # times, in the same order (generation is the slow part of training on a GPU).
    corpus_passes: int = 1

    def __post_init__(self):
        object.__setattr__(self, "tokenizer_whole_name_kinds", tuple(self.tokenizer_whole_name_kinds))  # JSON lists
        if self.corpus_passes < 1:
            raise ValueError(f"corpus_passes must be at least 1, got {self.corpus_passes}")
        unknown = set(self.tokenizer_whole_name_kinds) - set(ENTITY_KINDS)
        if unknown:
            raise ValueError(f"tokenizer_whole_name_kinds: unknown entity kinds {sorted(unknown)}; "
                             f"known: {ENTITY_KINDS}")
        if self.tokenizer_whole_names and self.tokenizer_whole_name_kinds:
            raise ValueError("tokenizer_whole_names already keeps every kind whole; "
                             "set it or tokenizer_whole_name_kinds, not both")

    @property
    def whole_name_kinds(self) -> tuple[str, ...]:
        """The entity kinds whose invented words the tokenizer is trained on as they are."""
        return ENTITY_KINDS if self.tokenizer_whole_names else self.tokenizer_whole_name_kinds


# Fields added after recipe version 1 that leave the trained model unchanged at their default:
# they enter the recipe's dict (and so its fingerprint) only when set, so caches stay valid.
ADDED_LATER = (("corpus", "anaphora_fraction", 0.0), ("corpus", "directory_fraction", 0.0),
               ("corpus", "update_neighbour_lines", False),
               ("corpus", "keyed_update_fraction", 0.0), ("corpus", "facts_per_keyed_document", (1, 4)),
               ("corpus", "prompts_per_keyed_document", (4, 8)),
               ("corpus", "keyed_prompt_shares", (0.40, 0.20, 0.25, 0.15)),
               ("corpus", "keyed_shared_relation_fraction", 0.0), ("corpus", "keyed_namesake_fraction", 0.0),
               ("corpus", "directory_order", "world"),
               ("corpus", "subjects_per_document", (1, 1)), ("corpus", "confusable_fraction", 0.0),
               ("training", "tokenizer_whole_names", False), ("training", "tokenizer_whole_name_kinds", ()),
               ("training", "device", "cpu"),
               ("training", "enrichment_steps", 0), ("training", "late_mlp_layers", 0),
               ("training", "late_mlp_lr_fraction", 0.1), ("training", "late_mlp_slow_steps", 0),
               ("training", "corpus_passes", 1))


@dataclass(frozen=True)
class Recipe:
    name: str
    world: WorldConfig
    corpus: CorpusConfig
    architecture: ArchitectureConfig
    training: TrainingConfig

    def with_overrides(self, name: str, overrides: dict) -> Recipe:
        """A copy named ``name`` with fields replaced: ``{"training": {"steps": 900}, ...}``."""
        unknown = set(overrides) - {"world", "corpus", "architecture", "training"}
        if unknown:
            raise ValueError(f"unknown recipe sections {sorted(unknown)}")
        parts = {section: replace(getattr(self, section), **fields) for section, fields in overrides.items()}
        return replace(self, name=name, **parts)

    def to_dict(self) -> dict:
        """Every field, except those of ``ADDED_LATER`` that are at their defaults (see there)."""
        data = {"recipe_version": RECIPE_VERSION, **asdict(self)}
        for section, field_name, default in ADDED_LATER:
            if data[section][field_name] == default:
                del data[section][field_name]
        return data

    def fingerprint(self) -> str:
        """A hash of everything that determines the trained model (the cache key)."""
        payload = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]


# The default recipe (the dataclass defaults) was chosen with analyses/recipe_sweep.py (README,
# "The default model"): a lean corpus (few mixed and update documents), a 400-subject world and a
# narrow 8-layer model trained in bfloat16 autocast reach the recall target inside the 15-minute
# CPU budget.
PRESETS: dict[str, Recipe] = {
    "default": Recipe(
        "default",
        WorldConfig(),
        CorpusConfig(),
        ArchitectureConfig(),
        TrainingConfig(),
    ),
    "tiny": Recipe(
        "tiny",
        WorldConfig(n_countries=4, cities_per_country=2, n_companies=6, n_people=30,
                    n_first_names=8, n_family_names=8, n_languages=4, n_continents=2),
        CorpusConfig(),
        ArchitectureConfig(n_layer=4, n_embd=128, n_head=4, n_ctx=128, vocab_size=1024),
        TrainingConfig(steps=500, warmup_steps=30, autocast_bf16=False),
    ),
}


def preset(name: str) -> Recipe:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}") from None
