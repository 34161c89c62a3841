"""latentbridge's built-in plugins, one module per plugin, grouped by kind.

They register through the same hooks a third-party package uses (see ``latentbridge.api.hookspecs``);
the registry imports the modules listed in ``BUILTIN_PLUGINS`` explicitly.
"""

BUILTIN_PLUGINS = [
    "latentbridge.plugins.objectives.contrastive_prompt",
    "latentbridge.plugins.objectives.dit_flow",
    "latentbridge.plugins.objectives.format_penalty",
    "latentbridge.plugins.objectives.kl",
    "latentbridge.plugins.objectives.nll",
    "latentbridge.plugins.objectives.probe_head",
    "latentbridge.plugins.objectives.prompt_alignment",
    "latentbridge.plugins.objectives.rope_phase",
    "latentbridge.plugins.translators.ac",
    "latentbridge.plugins.translators.c2c",
    "latentbridge.plugins.translators.dit",
    "latentbridge.plugins.translators.identity",
    "latentbridge.plugins.translators.kv_prefix",
    "latentbridge.plugins.translators.kvcomm",
    "latentbridge.plugins.translators.linear",
    "latentbridge.plugins.translators.mlp",
    "latentbridge.plugins.translators.resampler",
    "latentbridge.plugins.injection.adapter",
    "latentbridge.plugins.injection.after_cache",
    "latentbridge.plugins.injection.fused_prompt",
    "latentbridge.plugins.injection.patched_prompt",
    "latentbridge.plugins.injection.soft_only",
    "latentbridge.plugins.injection.soft_plus_text",
    "latentbridge.plugins.tasks.arith",
    "latentbridge.plugins.tasks.facts",
    "latentbridge.plugins.tasks.gsm8k",
    "latentbridge.plugins.tasks.multiple_choice",
    "latentbridge.plugins.loggers.jsonl",
    "latentbridge.plugins.loggers.tensorboard",
    "latentbridge.plugins.loggers.wandb",
    "latentbridge.plugins.loggers.mlflow",
    "latentbridge.plugins.quantities.step",
    "latentbridge.plugins.systems.text",
    "latentbridge.plugins.systems.bridged",
    "latentbridge.plugins.systems.controls",
]
