"""The synthetic fact world: entities, facts, phrasings, corpus and edit-case export."""

from workbench.world.cases import export_edit_cases, facts_changed_by
from workbench.world.corpus import CorpusConfig, corpus_rounds, directory_rounds
from workbench.world.facts import Entity, Fact, World, WorldConfig, build_world
from workbench.world.relations import RELATIONS, Relation, relation

__all__ = ["RELATIONS", "CorpusConfig", "Entity", "Fact", "Relation", "World", "WorldConfig",
           "build_world", "corpus_rounds", "directory_rounds", "export_edit_cases", "facts_changed_by", "relation"]
