"""The types and mechanics every other layer shares: edit requests, edits and weight deltas, edit
sites, edit cases and their readers, cache paths, fingerprints, atomic writes, progress bars and
figure files. Nothing here imports another package of the workbench."""
