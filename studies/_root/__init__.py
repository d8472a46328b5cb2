"""earlyphase: lottery tickets with rewinding, and label-free pretraining as the early phase.

Subpackages: `earlyphase.imp` (masks, pruning, rewinding, controls), `earlyphase.pretext`
(pretext tasks and their plugin interface), `earlyphase.studies` (the application).
"""

__version__ = "0.1.0"
