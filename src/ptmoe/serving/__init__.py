"""The OpenAI-compatible server (`ptmoe serve`): routes, request batching, the hf and vllm engines."""
