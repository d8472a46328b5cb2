"""The earlyphase application: data, model, trainer, jobs, CLI, W&B logging and reports.

Importing it imports nothing heavy, so that the CLI refuses bad input without loading torch; the CIFAR ResNets
and VGGs are registered with timm by `import earlyphase.studies.engine.models` (every job that builds a model does it).
"""
