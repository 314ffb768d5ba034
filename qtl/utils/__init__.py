"""Plumbing every part of qtl uses.

allocator   `keep_freed_memory`: glibc and torch set to reuse a training step's freed memory
atomic      files that appear whole or not at all (`atomic_write`, `atomic_save`)
devices     `resolve_device`: the torch device a name means here, refused in one line where there is none
download    streamed downloads checked by size and SHA-256, bounded in time; offline mode
jobs        `JobRunner`: background work in one thread, one job at a time, progress, cancel
processes   `die_with_parent`: a child process that ends with its parent (Linux)
seeds       `seeded`: random draws fixed by a seed in a block, the caller's streams untouched
threads     `side_by_side`: a few CPU tasks at once, each on one torch thread; `share_cores`: a
            pool's threads, a share of torch's each
words       `count`: '1 qubit', '2 qubits'; `duration`: '0.35 ms', '12.0 s', '2.5 min', '1.4 h';
            `error_line`: an error's message on one line, or its type's name
"""
