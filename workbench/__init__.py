"""The knowledge-editing workbench: locate and edit factual knowledge in transformer language models."""
