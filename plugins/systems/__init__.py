"""Built-in evaluation systems: the text systems (source, target, relay, skyline, two_stage) and the
bridged system with its controls (shuffled, null, covgauss, randomrot)."""
