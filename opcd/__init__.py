"""opcd: on-policy context distillation."""
