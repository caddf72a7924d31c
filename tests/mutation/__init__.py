"""Mutation suite of the Caffe-free core: planted bugs that the core's tests must catch (see README.md here).

    python -m tests.mutation               # every mutant
    python -m tests.mutation --subset ci   # the fixed subset CI runs

Every new loss, miner, reducer or fast path adds its own mutants in its own module of mutants/, one per rule its
header states.
"""
