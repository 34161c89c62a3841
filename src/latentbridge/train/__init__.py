"""Training a translator: the loop, step building, loss weights, schedules, precision, distributed."""
