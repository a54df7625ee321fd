"""Developer tools: sample generation and the batch benchmark harness (not used by the engine).."""
