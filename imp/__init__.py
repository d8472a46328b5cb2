"""Iterative magnitude pruning with rewinding, as a library (no dependency on earlyphase.studies).

- `masks`: the prunable set (all conv and linear weights), dense masks, densities, nesting checks.
- `pruning`: global magnitude pruning (one ranking across layers), random pruning (global, layer-wise).
- `rewinding`: the ticket's start state (the whole network at the rewind point, pruned weights at 0)
  and the optional rewound, masked optimiser state.
- `controls`: random reinitialisation and random pruning baselines.
- `perturb`: perturbations of the rewind point (sign/magnitude swaps, random magnitudes, permutations, noise).

The IMP loop itself (levels, run directories, training) is the application's `earlyphase imp` job.
"""
