"""Student rollouts: Ray actors holding vLLM engines that sample responses without the context."""
